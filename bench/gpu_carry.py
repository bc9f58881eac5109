"""Prepare gpu_carry/: the data and MiniLM checkpoint that bench/gpu_suite.py reads on a device machine.

The device tool sends the repository's working tree to the GPU machine (64 MiB at most, carried
paths included), not ../shared/data nor the virtual environment. This copies what the suite
reads into the git-ignored folder gpu_carry/, to be named in the call's `carry`:

    gpu_carry/data/ag_news/train.csv              every row: the MiniLM steps, the from-scratch run
    gpu_carry/data/conll2003/valid.txt            the sentences the NER export serves
    gpu_carry/data/translation/spa_eng_train.tsv  the first --pairs pairs: the translator's vocabularies
    gpu_carry/data/translation/spa_eng_valid.tsv  the first 1,000 pairs: sentences decoded and served
    gpu_carry/data/translation/ABOUT_tatoeba.txt  the corpus's licence notice, kept with any copy
    gpu_carry/minilm/                             MiniLM-L6-H384, its weights rounded to float16

The float32 weights (91 MB) alone would not fit; rounded to float16 they take 45 MB and load
back as float32 (at most 5e-4 of each tensor's largest value away from the original). Every
configuration of the suite starts from these same weights, so its comparisons are unaffected.
Prints the folder's size, the rest of the working tree's, and their sum against the limit.

    python bench/gpu_carry.py
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # tfattn.pretrained imports TensorFlow

CARRY = REPO / "gpu_carry"
LIMIT_MIB = 64  # what one device call sends, working tree and carried paths together
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def copy_lines(source, target, count):
    """The first `count` lines of `source` into `target`."""
    with open(source, encoding="utf-8") as reader, open(target, "w", encoding="utf-8") as writer:
        for index, line in enumerate(reader):
            if index == count:
                break
            writer.write(line)


def float16_checkpoint(source, target):
    """The checkpoint folder `source` at `target`, its float32 weights stored as float16."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, target / name)
    weights = load_file(str(source / "model.safetensors"))
    # Only float32 tensors are rounded: integer buffers (position ids) stay exact.
    rounded = {key: value.astype(np.float16) if value.dtype == np.float32 else value for key, value in weights.items()}
    save_file(rounded, str(target / "model.safetensors"), metadata={"format": "pt"})


def size_mib(paths):
    return sum(path.stat().st_size for path in paths if path.is_file()) / 2**20


def working_tree_files():
    """The files a device call sends besides carried paths: tracked, and untracked but not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return [REPO / name.decode() for name in listed if name]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--backbone", type=Path, default=None, help="default: the offline MiniLM")
    parser.add_argument("--pairs", type=int, default=20000, help="translation training pairs (the suite's default)")
    parser.add_argument("--out", type=Path, default=CARRY)
    args = parser.parse_args()
    if args.backbone is None:
        from tfattn.pretrained import offline_minilm_path

        args.backbone = offline_minilm_path()

    data = args.out / "data"
    for folder in ("ag_news", "conll2003", "translation"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(args.data / "ag_news" / "train.csv", data / "ag_news" / "train.csv")
    shutil.copy(args.data / "conll2003" / "valid.txt", data / "conll2003" / "valid.txt")
    translation = args.data / "translation"
    copy_lines(translation / "spa_eng_train.tsv", data / "translation" / "spa_eng_train.tsv", args.pairs)
    copy_lines(translation / "spa_eng_valid.tsv", data / "translation" / "spa_eng_valid.tsv", 1000)
    shutil.copy(translation / "ABOUT_tatoeba.txt", data / "translation" / "ABOUT_tatoeba.txt")
    float16_checkpoint(Path(args.backbone), args.out / "minilm")

    carried = size_mib(args.out.rglob("*"))
    tree = size_mib(working_tree_files())
    verdict = "fits" if carried + tree <= LIMIT_MIB else "does NOT fit"
    print(f"{args.out}: {carried:.1f} MiB; working tree: {tree:.1f} MiB; together {carried + tree:.1f} MiB")
    print(f"{verdict} in the device call's {LIMIT_MIB} MiB")


if __name__ == "__main__":
    main()
