"""Does streaming change what the model learns? AG News trained in memory and streamed, same split.

Writes the seed-0 split that `tfattn train agnews` makes in memory (6,185 training / 687
validation rows) as files: the training rows in `--shards` CSV files, the validation rows in one.
Then trains the default from-scratch model twice in this process, on the same split and seed:
in memory (`--data train.csv`, the 10% carve) and streamed (`--stream --data 'part-*.csv'
--validation-data valid.csv`), and prints both validation reports. The two differ in data order
only (a bounded shuffle buffer over interleaved files instead of a full shuffle, 16-token
length buckets instead of quantile buckets) and in the vocabulary's source (the same texts).

    python bench/streaming_agnews.py [--data ../shared/data/ag_news/train.csv] [--work-dir DIR]
                                     [--out bench/results/streaming_agnews.json]
"""

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_split_files(config, folder, shards):
    """The in-memory run's training and validation rows as AG News CSV files (class 1..4, the
    cleaned text as the title, an empty description: read back, they give the same texts)."""
    from tfattn.tasks.registry import task_of

    train, validation = task_of(config.resolve()).load_splits()
    folder.mkdir(parents=True, exist_ok=True)

    def write(path, examples, indices):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
            writer.writerows((int(examples.labels[i]) + 1, examples.texts[i], "") for i in indices)

    for shard in range(shards):
        write(folder / f"part-{shard:02d}.csv", train, range(shard, len(train), shards))
    write(folder / "valid.csv", validation, range(len(validation)))
    # Read back, the files hold the texts of the in-memory split; cleaning is not quite
    # idempotent (one training text has a doubly escaped "&amp;apos;"), so differences are counted.
    from collections import Counter

    from tfattn.data import read_agnews_csv

    assert read_agnews_csv(folder / "valid.csv").labels.tolist() == list(validation.labels)
    reread = [text for path in sorted(folder.glob("part-*.csv")) for text in read_agnews_csv(path).texts]
    reread += read_agnews_csv(folder / "valid.csv").texts
    differing = sum((Counter(train.texts + validation.texts) - Counter(reread)).values())
    return len(train), len(validation), differing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ag_news" / "train.csv"))
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "tfattn-streaming-agnews"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "streaming_agnews.json"))
    parser.add_argument("--shards", type=int, default=10)
    args = parser.parse_args()

    from tfattn.quiet import start_tensorflow

    start_tensorflow()
    from tfattn.tasks.config import TrainConfig
    from tfattn.training.loop import train

    out = Path(args.work_dir)  # the split files and both run folders
    shutil.rmtree(out, ignore_errors=True)
    in_memory = TrainConfig(task="agnews", data=args.data, run_dir=str(out / "in_memory"))
    sizes = write_split_files(in_memory, out / "files", args.shards)
    streamed = replace(
        in_memory,
        data=str(out / "files" / "part-*.csv"),
        validation_data=str(out / "files" / "valid.csv"),
        stream=True,
        run_dir=str(out / "streamed"),
    )
    results = {"training_examples": sizes[0], "validation_examples": sizes[1], "texts_read_back_differently": sizes[2]}
    results["runs"] = {}
    for name, config in (("in_memory", in_memory), ("streamed", streamed)):
        start = time.perf_counter()
        report = train(config)
        seconds = time.perf_counter() - start
        with open(Path(config.run_dir) / "history.csv", newline="") as handle:
            epochs = list(csv.DictReader(handle))
        results["runs"][name] = {
            "accuracy": round(report.accuracy, 4),
            "macro_f1": round(report.macro_f1, 4),
            "epochs": len(epochs),
            "seconds": round(seconds, 1),
            "examples_per_second": [round(float(row["examples_per_second"])) for row in epochs],
        }
        print(f"{name}: accuracy {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}, {seconds:.0f} s", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
