"""Benchmark tfattn's AG News training against the course notebook's transformer at equal wall time.

Both pipelines run one after the other in this one process, on the same train/validation
split, so the ratios between them hold even on a machine shared with other jobs:

1. ours: `tfattn.training.loop.train` of the from-scratch AG News model with its defaults,
   timed as a whole (loading, tokenizing, fitting with per-epoch validation, saving, evaluating);
2. the course model (re-implemented below; it must not use tfattn's layers, which mask
   padding), fitted on raw strings for as long as our whole `train()` call took, or for
   `--course-epochs` full epochs, then evaluated on the same validation split.

    python bench/agnews_vs_course.py [--limit 800] [--epochs N] [--course-seconds S | --course-epochs N]
"""

import argparse
import csv
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

# TensorFlow's C++ start-up chatter buries the benchmark's own output; keep warnings and errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from tfattn.evaluation import classification_metrics  # noqa: E402
from tfattn.files import write_json
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.tasks.registry import task_of  # noqa: E402
from tfattn.training.callbacks import Throughput, TimeBudget, fit_verbosity  # noqa: E402
from tfattn.training.loop import train

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "ag_news" / "train.csv"
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "agnews_vs_course.json"
SEED = 0

# The course notebook's model and training settings.
COURSE_VOCAB_SIZE = 20000
COURSE_MAX_LENGTH = 256
COURSE_EMBED_DIM = 32
COURSE_NUM_HEADS = 2
COURSE_FF_DIM = 32
COURSE_DROPOUT = 0.1
COURSE_HIDDEN_UNITS = 20
COURSE_BATCH_SIZE = 128
# "Train until the time budget runs out": more epochs than any budget here can reach.
UNLIMITED_EPOCHS = 100_000


class CourseTokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a learned embedding of every position 0..max_length-1.

    The course always feeds exactly `max_length` ids (TextVectorization pads to it), so the
    position table is added whole, and padding ids are embedded like any token (no mask).
    """

    def __init__(self, vocab_size, max_length, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.max_length = max_length
        self.token_embedding = keras.layers.Embedding(vocab_size, embed_dim)
        self.position_embedding = keras.layers.Embedding(max_length, embed_dim)

    def call(self, token_ids):
        positions = self.position_embedding(tf.range(self.max_length))
        return self.token_embedding(token_ids) + positions


class CourseTransformerBlock(keras.layers.Layer):
    """Post-norm self-attention block of the course: attention and a 2-layer FFN, each
    followed by dropout, a residual connection and LayerNormalization; padding is attended to."""

    def __init__(self, embed_dim, num_heads, ff_dim, dropout, **kwargs):
        super().__init__(**kwargs)
        self.attention = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.feed_forward = keras.Sequential(
            [keras.layers.Dense(ff_dim, activation="relu"), keras.layers.Dense(embed_dim)]
        )
        self.attention_dropout = keras.layers.Dropout(dropout)
        self.feed_forward_dropout = keras.layers.Dropout(dropout)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.feed_forward_norm = keras.layers.LayerNormalization(epsilon=1e-6)

    def call(self, inputs, training=None):
        attended = self.attention(inputs, inputs, training=training)
        x = self.attention_norm(inputs + self.attention_dropout(attended, training=training))
        transformed = self.feed_forward(x, training=training)
        return self.feed_forward_norm(x + self.feed_forward_dropout(transformed, training=training))


def build_course_model(train_texts, num_classes):
    """The course's strings-in `Sequential` model, its vocabulary adapted on `train_texts`.

    Returns:
        `(model, adapt_seconds)`.
    """
    vectorizer = keras.layers.TextVectorization(max_tokens=COURSE_VOCAB_SIZE, output_sequence_length=COURSE_MAX_LENGTH)
    start = time.perf_counter()
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(train_texts).batch(1024))
    adapt_seconds = time.perf_counter() - start
    model = keras.Sequential(
        [
            keras.Input(shape=(), dtype=tf.string),
            vectorizer,
            CourseTokenAndPositionEmbedding(COURSE_VOCAB_SIZE, COURSE_MAX_LENGTH, COURSE_EMBED_DIM),
            CourseTransformerBlock(COURSE_EMBED_DIM, COURSE_NUM_HEADS, COURSE_FF_DIM, COURSE_DROPOUT),
            # Averages over all 256 positions, padding included, as the course does.
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dropout(COURSE_DROPOUT),
            keras.layers.Dense(COURSE_HIDDEN_UNITS, activation="relu"),
            keras.layers.Dropout(COURSE_DROPOUT),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="course_transformer",
    )
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model, adapt_seconds


class BatchCounter(keras.callbacks.Callback):
    """Batches trained in each epoch, so an epoch that `TimeBudget` cuts short counts only
    the examples it actually trained on."""

    def __init__(self):
        super().__init__()
        self.batches_per_epoch = []

    def on_epoch_begin(self, epoch, logs=None):
        self.batches_per_epoch.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.batches_per_epoch[-1] += 1


def steady_state(rates):
    """Mean examples/s over the epochs after the first, which also pays for graph tracing
    (the first epoch's rate when it is the only one)."""
    return float(np.mean(rates[1:] if len(rates) > 1 else rates))


def evaluate_course_model(model, examples, batch_size):
    """A `ClassificationReport` of the course model (strings in, softmax probabilities out) on
    `TextExamples`. tfattn's own `evaluate_texts` needs a tfattn `TextClassifier`."""
    dataset = tf.data.Dataset.from_tensor_slices(examples.texts).batch(batch_size)
    probabilities = model.predict(dataset, verbose=0)
    return classification_metrics(examples.labels, np.asarray(probabilities).argmax(axis=-1), examples.label_names)


def run_ours(config):
    """Time one whole `tfattn.training.loop.train(config)` call and read its history."""
    keras.utils.set_random_seed(SEED)
    start = time.perf_counter()
    report = train(config)
    wall_seconds = time.perf_counter() - start
    with open(Path(config.run_dir) / "history.csv", newline="", encoding="utf-8") as handle:
        rates = [float(row["examples_per_second"]) for row in csv.DictReader(handle)]
    return {
        "config": asdict(config),
        "epochs_run": len(rates),
        "train_wall_seconds": wall_seconds,
        "examples_per_second_steady": steady_state(rates),
        "examples_per_second_first_epoch": rates[0],
        "examples_per_second_per_epoch": rates,
        "validation_accuracy": report.accuracy,
        "validation_macro_f1": report.macro_f1,
    }


def run_course(train_examples, validation_examples, seconds=None, epochs=None):
    """Fit the course model for `seconds` of wall time or `epochs` full epochs, then evaluate it."""
    keras.utils.set_random_seed(SEED)
    model, adapt_seconds = build_course_model(train_examples.texts, len(train_examples.label_names))
    # Raw strings go in: the model vectorizes every batch again on every step, as in the course.
    dataset = (
        tf.data.Dataset.from_tensor_slices((train_examples.texts, train_examples.labels))
        .shuffle(len(train_examples), seed=SEED, reshuffle_each_iteration=True)
        .batch(COURSE_BATCH_SIZE)
    )
    num_train = len(train_examples)
    # Throughput times every epoch; the examples/s it logs assumes full epochs, so the
    # progress line of a cut-short last epoch overstates it and the rates are recomputed below.
    timer = Throughput(num_train)
    counter = BatchCounter()
    callbacks = [timer, counter]
    if seconds is not None:
        callbacks.append(TimeBudget(seconds))
    start = time.perf_counter()
    model.fit(
        dataset,
        epochs=epochs or UNLIMITED_EPOCHS,
        callbacks=callbacks,
        verbose=fit_verbosity(),
    )
    fit_seconds = time.perf_counter() - start

    # Only an epoch's last batch is short, so this is exact also for an epoch cut mid-way.
    examples = [min(batches * COURSE_BATCH_SIZE, num_train) for batches in counter.batches_per_epoch]
    rates = [count / secs for count, secs in zip(examples, timer.epoch_seconds)]
    # A cut-short last epoch is a few batches plus the epoch start-up: keep it out of the rate.
    complete_rates = [rate for rate, count in zip(rates, examples) if count == num_train] or rates
    report = evaluate_course_model(model, validation_examples, batch_size=COURSE_BATCH_SIZE)
    return {
        "time_budget_seconds": seconds,
        "epochs_requested": epochs,
        "epochs_run": sum(examples) / num_train,
        "adapt_seconds": adapt_seconds,
        "train_wall_seconds": fit_seconds,
        "examples_per_second_steady": steady_state(complete_rates),
        "examples_per_second_first_epoch": rates[0],
        "examples_per_second_overall": sum(examples) / sum(timer.epoch_seconds),
        "examples_per_second_per_epoch": rates,
        "examples_per_epoch": examples,
        "validation_accuracy": report.accuracy,
        "validation_macro_f1": report.macro_f1,
    }


def git_state():
    """The repo's HEAD commit and whether `tfattn/` differs from it: the package changes often,
    so a result must say which code produced it."""

    def git(*arguments):
        return subprocess.run(["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "tfattn_modified": bool(git("status", "--porcelain", "--", "tfattn"))}


def format_table(ours, course):
    header = ("pipeline", "epochs run", "train wall s", "examples/s (steady)", "val accuracy", "macro-F1")
    rows = [
        (
            name,
            f"{result['epochs_run']:.2f}".rstrip("0").rstrip("."),
            f"{result['train_wall_seconds']:.1f}",
            f"{result['examples_per_second_steady']:.0f}",
            f"{result['validation_accuracy']:.4f}",
            f"{result['validation_macro_f1']:.4f}",
        )
        for name, result in (("tfattn (ours)", ours), ("course", course))
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in [header, *rows]]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def parse_args(argv=None):
    defaults = TrainConfig(task="agnews").resolve()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"AG News CSV (default: {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results JSON (default: {DEFAULT_OUT})")
    parser.add_argument("--limit", type=int, default=None, help="use a random subset of this many examples")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"our epochs (default: {defaults.epochs})")
    course = parser.add_mutually_exclusive_group()
    course.add_argument(
        "--course-seconds",
        type=float,
        default=None,
        help="course training wall time (default: as long as our whole train() call took)",
    )
    course.add_argument(
        "--course-epochs",
        type=int,
        default=None,
        help="instead train the course model for this many full epochs, with no time limit",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agnews_vs_course_") as run_dir:
        config = TrainConfig(
            task="agnews", data=str(args.data), run_dir=run_dir, limit=args.limit, epochs=args.epochs
        ).resolve()
        # The same config gives train() and the course model the same split.
        train_examples, validation_examples = task_of(config).load_splits()
        ours = run_ours(config)

    if args.course_epochs:
        course = run_course(train_examples, validation_examples, epochs=args.course_epochs)
    else:
        course = run_course(
            train_examples, validation_examples, seconds=args.course_seconds or ours["train_wall_seconds"]
        )

    speed_ratio = ours["examples_per_second_steady"] / course["examples_per_second_steady"]
    accuracy_points = 100 * (ours["validation_accuracy"] - course["validation_accuracy"])
    equal_time = args.course_epochs is None and args.course_seconds is None
    targets = {
        "speed_at_least_3x_with_equal_or_better_accuracy": speed_ratio >= 3 and accuracy_points >= 0,
        # Only meaningful when the course model had exactly our wall time.
        "accuracy_at_least_2_points_higher_at_equal_time": accuracy_points >= 2 if equal_time else None,
    }

    print()
    print(format_table(ours, course))
    print(f"examples/s ours/course: {speed_ratio:.2f}x")
    print(f"validation accuracy ours - course: {accuracy_points:+.2f} points")
    for name, met in targets.items():
        print(f"target {name}: {'n/a' if met is None else ('met' if met else 'NOT met')}")

    write_json(
        args.out,
        {
            "command": shlex.join([sys.executable, *sys.argv]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": git_state(),
            "tensorflow_version": tf.__version__,
            "tf_keras_version": keras.__version__,
            "python_version": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "data": str(args.data),
            "limit": args.limit,
            "train_examples": len(train_examples),
            "validation_examples": len(validation_examples),
            "ours": ours,
            "course": course,
            "examples_per_second_ratio_ours_over_course": speed_ratio,
            "validation_accuracy_difference_points": accuracy_points,
            "targets": targets,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
