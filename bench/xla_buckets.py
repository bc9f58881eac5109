"""XLA training (`--jit-compile`) on batches padded to multiples of a width: speed and compilations.

XLA compiles one program per input shape. tfattn's default batches (`make_dataset`: buckets at
length quantiles, each batch padded to its own longest row) take a new length almost every
batch, and other ones every epoch; `make_dataset(pad_to_multiple=w)` buckets by multiples of w
and pads each batch up to its bucket's multiple, so a pass has at most
2 * ceil(longest / w) shapes, the same every epoch. Three ways of training, in one process, the
same model and weights, alternating rounds (one epoch each) so that noise hits all alike:
- the default batches without XLA (what `tfattn train` does without --jit-compile);
- batches padded to multiples of w without XLA (what padding alone costs);
- the same with XLA (what `tfattn train --jit-compile` does).
For two models: the from-scratch AG News classifier of the task's default config (every training
text of the file), and MiniLM-L6-H384 fine-tuned (batch 32, max_length 128, [CLS] pooling) on
`--minilm-examples` seeded texts.

Counted per way: the distinct (batch, length) shapes of the training batches in the first epoch
and over all epochs run; the XLA compilations, read from TensorFlow's own log (the line
"Compilation of XLA executable time" of device_compiler.h, logged once per compiled program with
TF_CPP_VMODULE=device_compiler=1; its times summed), in the warm-up epoch and in the timed
rounds; and `model.train_function.experimental_get_tracing_count()`, the Python traces of the
training step. A warm-up epoch (tracing, compiling) precedes the timed rounds.

    python bench/xla_buckets.py            # about 15 minutes on 2 cores
    python bench/xla_buckets.py --quick    # smoke run, about 3 minutes
"""

import os

# Before TensorFlow starts: log every XLA compilation (read back by `XlaLog`).
os.environ["TF_CPP_VMODULE"] = "device_compiler=1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from result_file import write_result  # noqa: E402
from training_precision import DATA, minilm_parts, scratch_parts, timed_fit  # noqa: E402

from tfattn.data.pipelines import batch_shapes, make_dataset  # noqa: E402
from tfattn.pretrained import load_tokenizer, offline_minilm_path, tokenize_texts  # noqa: E402
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.tasks.registry import task_of  # noqa: E402


class XlaLog:
    """TensorFlow's C++ log (file descriptor 2, this process's stderr, sent to a file from now
    on), read back for its XLA compilations."""

    LINE = re.compile(r"Compilation of XLA executable time: .*?\((\d+) us\)")

    def __init__(self, path):
        self.path = Path(path)
        sys.stderr.flush()
        self._file = open(self.path, "w")  # open for the rest of the process
        os.dup2(self._file.fileno(), 2)

    def compilations(self):
        """The compile time (seconds) of every XLA compilation so far, in order."""
        sys.stderr.flush()
        return [int(us) / 1e6 for us in self.LINE.findall(self.path.read_text(errors="replace"))]


def ways(width):
    """name -> (pad_to_multiple, jit_compile)."""
    return {
        "default batches (length quantiles), no XLA": (None, False),
        f"multiples of {width}, no XLA": (width, False),
        f"multiples of {width}, XLA": (width, True),
    }


def distinct_shapes(dataset, epochs):
    """(distinct shapes of the first pass, distinct shapes over `epochs` passes): each pass of a
    shuffled dataset is another order, so other batches (these passes are not the ones trained
    on, but as many for every way, from the same seed)."""
    passes = [set(batch_shapes(dataset)) for _ in range(epochs)]
    return len(passes[0]), len(set().union(*passes))


def compare(name, build, compile_model, features, labels, batch_size, width, rounds, log):
    """Train `build()` models (the first's weights copied to the others) the three `ways`, one
    warm-up epoch each, then `rounds` timed epochs each in rotating order."""
    num_examples = len(labels)
    models, datasets, rows = {}, {}, {}
    for way, (multiple, jit) in ways(width).items():
        model = build()
        model(next(iter(make_dataset(features, labels, 2)))[0])
        if models:
            model.set_weights(next(iter(models.values())).get_weights())
        compile_model(model, jit)
        models[way] = model
        datasets[way] = make_dataset(features, labels, batch_size, shuffle=True, seed=0, pad_to_multiple=multiple)
        first, over_all = distinct_shapes(datasets[way], rounds + 1)
        rows[way] = {"distinct_shapes_first_epoch": first, "distinct_shapes_all_epochs": over_all}
    print(f"{name}: {num_examples} texts, batch {batch_size}, width {width}", flush=True)
    for way, model in models.items():
        before = len(log.compilations())
        start = time.perf_counter()
        model.fit(datasets[way], epochs=1, verbose=0)
        compiled = log.compilations()[before:]
        rows[way].update(
            warmup_epoch_seconds=round(time.perf_counter() - start, 1),
            xla_compilations_warmup=len(compiled),
            xla_compile_seconds_warmup=round(sum(compiled), 1),
        )
        print(f"  warm-up: {way}: {json.dumps(rows[way])}", flush=True)
    speeds = {way: [] for way in models}
    names = list(models)
    timed_compilations = {way: 0 for way in models}
    for index in range(rounds):
        for way in names[index % len(names) :] + names[: index % len(names)]:  # rotating order
            count = len(log.compilations())
            speeds[way].append(timed_fit(models[way], datasets[way], num_examples, index + 1))
            timed_compilations[way] += len(log.compilations()) - count
            print(f"  round {index + 1}: {way}: {speeds[way][-1]:,.1f} examples/s", flush=True)
    baseline = statistics.median(speeds[names[0]])
    for way, model in models.items():
        rows[way].update(
            xla_compilations_timed_rounds=timed_compilations[way],
            train_function_traces=int(model.train_function.experimental_get_tracing_count()),
            examples_per_second_rounds=[round(v, 2) for v in speeds[way]],
            examples_per_second=round(statistics.median(speeds[way]), 2),
            ratio_to_default=round(statistics.median(speeds[way]) / baseline, 3),
        )
    keras.backend.clear_session()
    return {"training_texts": num_examples, "batch_size": batch_size, "width": width, "rounds": rounds, "ways": rows}


def scratch_case(args, config, train_split):
    texts, labels = train_split.texts, np.asarray(train_split.labels)
    if args.scratch_examples:
        texts, labels = texts[: args.scratch_examples], labels[: args.scratch_examples]
    steps = (args.rounds + 1) * -(-len(texts) // config.batch_size)
    family, build, compile_model = scratch_parts(config, texts, train_split.label_names, steps)
    features = family.encode_texts(texts, "training texts")
    return features, labels, config.batch_size, seeded(build), compile_model


def minilm_case(args, train_split, backbone):
    batch_size, max_length = 32, 128
    order = np.random.default_rng(0).permutation(len(train_split))[: args.minilm_examples]
    texts = [train_split.texts[i] for i in order]
    labels = np.asarray(train_split.labels)[order]
    features = tokenize_texts(load_tokenizer(backbone), texts, max_length)
    steps = (args.rounds + 1) * -(-len(texts) // batch_size)
    build, compile_model = minilm_parts(backbone, max_length, len(train_split.label_names), steps)
    return features, labels, batch_size, seeded(build), compile_model


def seeded(build):
    """`build`, each model from the same seed (the ways then get the first one's weights)."""

    def build_seeded():
        keras.utils.set_random_seed(0)
        return build()

    return build_seeded


def markdown(result):
    rows = [
        "| model | batches | XLA | examples/s | vs default | shapes, 1st epoch | shapes, all epochs "
        "| XLA compilations (warm-up / timed) | compile s | warm-up epoch s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, title in (("scratch", "from scratch (AG News default)"), ("minilm", "MiniLM fine-tuning")):
        if key not in result:
            continue
        for way, row in result[key]["ways"].items():
            batches, xla = way.rsplit(", ", 1)
            rows.append(
                f"| {title} | {batches} | {'yes' if xla == 'XLA' else 'no'} | {row['examples_per_second']:,.1f} | "
                f"{row['ratio_to_default']:.2f}x | {row['distinct_shapes_first_epoch']} | "
                f"{row['distinct_shapes_all_epochs']} | {row['xla_compilations_warmup']} / "
                f"{row['xla_compilations_timed_rounds']} | {row['xla_compile_seconds_warmup']:.0f} | "
                f"{row['warmup_epoch_seconds']:.0f} |"
            )
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA), help="AG News csv (default: ../shared/data/ag_news/train.csv)")
    parser.add_argument("--backbone", default=None, help="checkpoint folder (default: the offline MiniLM)")
    parser.add_argument("--rounds", type=int, default=2, help="timed epochs per way, after the warm-up epoch")
    parser.add_argument("--scratch-examples", type=int, default=None, help="default: every training text")
    parser.add_argument("--scratch-width", type=int, default=16)
    parser.add_argument("--minilm-examples", type=int, default=640)
    parser.add_argument("--minilm-width", type=int, default=32, help="(each MiniLM compilation takes about a minute)")
    parser.add_argument("--skip", choices=["scratch", "minilm"], nargs="*", default=[])
    parser.add_argument("--quick", action="store_true", help="smoke run: small subsets, one timed round")
    parser.add_argument("--out", default=None, help="default: bench/results/xla_buckets[_quick].json")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.scratch_examples, args.minilm_examples, args.minilm_width = 1, 1000, 64, 64
    out = Path(args.out or REPO / "bench" / "results" / f"xla_buckets{'_quick' if args.quick else ''}.json")
    backbone = args.backbone or str(offline_minilm_path())

    started = time.perf_counter()
    log = XlaLog(Path(tempfile.mkdtemp(prefix="xla_buckets_")) / "tensorflow.log")
    print(f"TensorFlow's log (stderr): {log.path}", flush=True)
    config = TrainConfig(task="agnews", data=args.data).resolve()
    train_split, _ = task_of(config).load_splits()
    result = {"command": " ".join(["python", *sys.argv]), "date": datetime.now(UTC).isoformat(timespec="seconds")}
    if "scratch" not in args.skip:
        *case, build, compile_model = scratch_case(args, config, train_split)
        result["scratch"] = compare(
            "from scratch", build, compile_model, *case, width=args.scratch_width, rounds=args.rounds, log=log
        )
    if "minilm" not in args.skip:
        *case, build, compile_model = minilm_case(args, train_split, backbone)
        result["minilm"] = compare(
            "MiniLM", build, compile_model, *case, width=args.minilm_width, rounds=args.rounds, log=log
        )
    result["counted"] = (
        "distinct shapes: (batch, length) of the token ids of every training batch; XLA compilations: lines "
        "'Compilation of XLA executable time' of TensorFlow's device_compiler.h log (TF_CPP_VMODULE="
        "device_compiler=1), one per compiled program"
    )
    write_result(result, out, started, markdown)


if __name__ == "__main__":
    main()
