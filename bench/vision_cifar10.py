"""The Vision Transformer against the small CNN on CIFAR-10, at equal training time on this machine.

Each variant is `tfattn train images --data ../shared/data/cifar10/train.tar` (the seeded,
stratified 10% validation carve) with its options, run one after another in its own process
with the whole machine. Every variant gets the same time budget: its epoch count is fitted to
the budget from a measured step time (the median of 20 batches of random pixels through the same
model, timed after a warm-up batch), so its learning-rate schedule runs to its end, and
`--time-budget` stops it if the estimate was short (`--epochs N` sets the count instead).
Writes each run's validation accuracy, epochs, wall time and curve (validation accuracy after
each epoch, with the elapsed time).

    python bench/vision_cifar10.py --budget 1800 --variants vit cnn --json bench/results/vision_cifar10.json \
        [--keep runs/cifar10]
    python bench/vision_cifar10.py --budget 7200 --epochs 30 --variants vit   # the 2-hour target run
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from machine import cpu_model  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cifar10" / "train.tar"
TRAINING_IMAGES = 45_000  # the training part of the 50,000 after the 10% carve
# Every ViT variant but "vit" names its tokenizer, so a variant stays the model its results were
# measured with when the defaults change (until 2026-12-07 the default tokenizer was "patches").
VARIANTS = {
    "vit": [],  # the defaults: the conv tokenizer, 6 post-norm blocks of 128
    "cnn": ["--model", "cnn"],
    "vit_patches": ["--tokenizer", "patches"],  # the original ViT's patches
    "vit_shifted": ["--tokenizer", "shifted"],
    "vit_conv": ["--tokenizer", "conv"],
    "vit_prenorm": ["--tokenizer", "patches", "--block-norm", "pre"],
    # keras.io's "Train a ViT on small datasets": both halves of the fix together.
    "vit_small_data": ["--tokenizer", "shifted", "--self-attention", "locality"],
}
# Of the budget, the share the epochs are fitted to: the rest covers reading the tar, building
# the model, validation passes and the final report.
FITTED_SHARE = 0.85


def seconds_per_epoch(options, batches=20):
    """A training epoch's seconds for the variant's model, from the median of `batches` timed
    steps (the mean of 6 steps planned 7 epochs for the plain ViT and 9 for the pre-norm one,
    whose epochs both took about 3 minutes)."""
    import numpy as np
    import tf_keras as keras

    from tfattn.tasks.images import ImageClassificationTask

    config = _config(options)
    task = ImageClassificationTask(config)
    pixels = np.random.default_rng(0).integers(0, 256, [config.batch_size, 32, 32, 3]).astype(np.uint8)
    labels = np.eye(10, dtype=np.float32)[np.arange(config.batch_size) % 10]

    class Fake:  # what `_build_model` reads of the training images
        images, label_names = pixels, [str(i) for i in range(10)]

    import tensorflow as tf

    model = task._build_model(Fake, tf.distribute.get_strategy())
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    model.train_on_batch(pixels, labels)  # traces the step
    steps = []
    for _ in range(batches):
        started = time.perf_counter()
        model.train_on_batch(pixels, labels)
        steps.append(time.perf_counter() - started)
    return float(np.median(steps)) * TRAINING_IMAGES / config.batch_size, model.count_params()


def _config(options):
    """The resolved config `tfattn train images` gives the variant's options, parsed by the CLI."""
    from tfattn.cli import build_parser, train_config

    return train_config(build_parser().parse_args(["train", "images", "--data", str(DATA), *options])).resolve()


def run_variant(name, budget, seed, folder, epochs=None):
    options = VARIANTS[name]
    calibration = subprocess.run(
        [sys.executable, __file__, "--calibrate", name], check=True, capture_output=True, text=True
    )
    epoch_seconds, weights = (float(value) for value in calibration.stdout.split()[-2:])
    epochs = epochs or max(1, int(budget * FITTED_SHARE // epoch_seconds))
    run_dir = Path(folder) / name
    command = [sys.executable, "-m", "tfattn.cli", "train", "images", "--data", str(DATA), "--run-dir", str(run_dir)]
    command += [*options, "--seed", str(seed), "--epochs", str(epochs), "--time-budget", str(budget)]
    print(f"{name}: about {epoch_seconds:.0f} s per epoch -> {epochs} epochs; {' '.join(command[2:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    scores = json.loads((run_dir / "validation_scores.json").read_text())
    with open(run_dir / "history.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    return {
        "variant": name,
        "options": options,
        "command": "tfattn train images --data ../shared/data/cifar10/train.tar "
        + " ".join([*options, "--seed", str(seed), "--epochs", str(epochs), "--time-budget", str(budget)]),
        "estimated_epoch_seconds": round(epoch_seconds),
        "epochs_planned": epochs,
        "epochs_run": len(history),
        "wall_seconds": round(wall),
        "validation_accuracy": round(scores["accuracy"], 4),
        "validation_macro_f1": round(scores["macro_f1"], 4),
        "weights": int(weights),
        "curve": _curve(history),
    }


def _curve(history):
    """Validation accuracy after each epoch, with the training seconds elapsed by then."""
    elapsed, curve = 0.0, []
    for epoch, row in enumerate(history, start=1):
        elapsed += TRAINING_IMAGES / float(row["examples_per_second"])
        curve.append({"epoch": epoch, "seconds": round(elapsed), "val_accuracy": round(float(row["val_accuracy"]), 4)})
    return curve


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["vit", "cnn"])
    parser.add_argument("--budget", type=float, default=1800, help="seconds of training per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epochs",
        type=int,
        help="run this many epochs instead of fitting them to the budget (the step-time estimate can be off by "
        "15%%: BENCHMARKS.md); --time-budget still stops the run",
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--keep", help="keep the run folders in this folder (default: a temporary one, removed)")
    parser.add_argument("--calibrate", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.calibrate:
        print(*seconds_per_epoch(VARIANTS[args.calibrate]))
        return
    started = time.perf_counter()
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "budget_seconds": args.budget,
        "seed": args.seed,
        "runs": [],
    }
    from result_file import write_result

    with tempfile.TemporaryDirectory() as temporary:
        for name in args.variants:
            result["runs"].append(run_variant(name, args.budget, args.seed, args.keep or temporary, args.epochs))
            if args.json:  # after every variant: an interrupted series keeps the runs it finished
                write_result(result, args.json, started=started, echo_keys=["runs"])
    if not args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
