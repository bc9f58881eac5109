"""Training plumbing shared by every task: device strategy, precision, callbacks, run folders."""

import json
import sys
import time
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

STRATEGIES = ("default", "mirrored", "multiworker")


def get_strategy(name="default"):
    """The `tf.distribute` strategy to build, compile and fit models under.

    Args:
        name: `"default"` (one device), `"mirrored"` (every local GPU; without GPUs every
            logical CPU device, which is how tests exercise it) or `"multiworker"` (several
            hosts, configured by the `TF_CONFIG` environment variable).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def set_mixed_precision(enabled):
    """float16 compute with float32 weights on GPU (bfloat16 on CPU), or plain float32."""
    if not enabled:
        policy = "float32"
    elif tf.config.list_physical_devices("GPU"):
        policy = "mixed_float16"
    else:
        policy = "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


class Throughput(keras.callbacks.Callback):
    """Records examples/s of every epoch (`history` gets an `examples_per_second` column)."""

    def __init__(self, examples_per_epoch):
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self.epoch_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self.epoch_seconds.append(seconds)
        if logs is not None:
            logs["examples_per_second"] = self.examples_per_epoch / seconds


class MacroF1(keras.metrics.Metric):
    """Macro-averaged F1 of class predictions, accumulated over batches through a confusion
    matrix; classes never seen nor predicted score 0, as scikit-learn's `zero_division=0`.

    As a compile metric it adds `macro_f1` and `val_macro_f1` to the epoch logs from the
    passes Keras makes anyway, so validation costs no second forward pass.
    """

    def __init__(self, num_classes, name="macro_f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.confusion = self.add_weight(
            name="confusion", shape=(self.num_classes, self.num_classes), initializer="zeros", dtype=tf.float64
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        predictions = tf.reshape(tf.argmax(y_pred, axis=-1, output_type=tf.int32), [-1])
        self.confusion.assign_add(
            tf.math.confusion_matrix(labels, predictions, self.num_classes, weights=sample_weight, dtype=tf.float64)
        )

    def result(self):
        true_positives = tf.linalg.diag_part(self.confusion)
        # Rows are true classes, columns predictions: F1 = 2 TP / (actual + predicted).
        denominators = tf.reduce_sum(self.confusion, axis=0) + tf.reduce_sum(self.confusion, axis=1)
        f1 = tf.math.divide_no_nan(2.0 * true_positives, denominators)
        return tf.cast(tf.reduce_mean(f1), tf.float32)

    def reset_state(self):
        self.confusion.assign(tf.zeros_like(self.confusion))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


class ProgressLog(keras.callbacks.Callback):
    """A line every `every_seconds` (batch, loss, accuracy, examples/s, epoch ETA): progress for
    logs and CI, where Keras progress bars are unreadable and per-epoch lines come too rarely."""

    def __init__(self, batches_per_epoch, batch_size, every_seconds=30.0):
        super().__init__()
        self.batches_per_epoch = batches_per_epoch
        self.batch_size = batch_size
        self.every_seconds = every_seconds

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._start = self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self._last < self.every_seconds:
            return
        self._last = now
        done = batch + 1
        rate = done * self.batch_size / (now - self._start)
        eta = (self.batches_per_epoch - done) * self.batch_size / rate
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
        print(
            f"epoch {self._epoch + 1} batch {done}/{self.batches_per_epoch}  {metrics}  "
            f"{rate:.1f} examples/s  epoch ETA {eta / 60:.1f} min",
            flush=True,
        )


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `seconds` of wall time have passed (checked after every batch)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self._start >= self.seconds:
            self.model.stop_training = True


def backup_dir(run_dir):
    return Path(run_dir) / "backup"


def is_resuming(run_dir):
    """True when an interrupted fit left a `BackupAndRestore` checkpoint in `run_dir`."""
    folder = backup_dir(run_dir)
    return folder.is_dir() and any(path.is_file() for path in folder.rglob("*"))


def standard_callbacks(
    run_dir,
    examples_per_epoch,
    batches_per_epoch,
    batch_size,
    patience=2,
    monitor="val_accuracy",
    time_budget=None,
    phase=None,
    append_history=None,
    validation_callback=None,
):
    """Throughput column, resume (`BackupAndRestore`), best-weights checkpoint and early stop on
    `monitor`, TensorBoard, CSV log, progress lines when not on a terminal, and an optional
    wall-time budget, all writing under `run_dir`.

    A run trained in phases (e.g. frozen, then fine-tuned) names each `phase`: it gets its own
    backup folder. history.csv is appended to when `append_history` (default: when resuming).
    `validation_callback`, if given, puts the monitored metrics into the epoch logs, for those
    that are not compile metrics (e.g. entity F1); it runs before the checkpoint and early stop.
    """
    run_dir = Path(run_dir)
    # Keras's "auto" mode would minimize any metric whose name lacks "acc", e.g. an F1 score.
    mode = "min" if monitor.endswith("loss") else "max"
    backup = backup_dir(run_dir) / phase if phase else backup_dir(run_dir)
    if append_history is None:
        append_history = is_resuming(run_dir)
    callbacks = [Throughput(examples_per_epoch)] + ([validation_callback] if validation_callback else []) + [
        # Saved after every epoch and removed when fit() completes: rerunning the same
        # command after an interruption continues from the last finished epoch.
        keras.callbacks.BackupAndRestore(str(backup)),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "checkpoints" / "best.weights.h5"),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs")),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=append_history),
    ]
    if not sys.stdout.isatty():
        callbacks.append(ProgressLog(batches_per_epoch, batch_size))
    if time_budget:
        callbacks.append(TimeBudget(time_budget))
    return callbacks


def start_run(run_dir, config, seed, mixed_precision=False):
    """Create the run folder, save `config` (a dict) as its config.json, say whether an
    interrupted run is being resumed, and seed Keras (same seed, same initial weights, dropout
    masks and shuffles, up to nondeterministic kernels). Returns the folder as a `Path`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_resuming(run_dir):
        print(f"resuming the interrupted run in {run_dir}")
    write_json(run_dir / "config.json", config)
    keras.utils.set_random_seed(seed)
    set_mixed_precision(mixed_precision)
    return run_dir


def fit_verbosity():
    """Keras progress bars on a terminal; in logs and CI one line per epoch plus `ProgressLog`."""
    return 1 if sys.stdout.isatty() else 2


def write_json(path, payload):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
