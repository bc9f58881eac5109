"""The callbacks of every training phase: throughput, progress, time budget, NaN stop, best epoch, resume."""

import math
import sys
import time
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from tfattn.files import read_json, write_atomically, write_json
from tfattn.models.weights import TrainingDiverged


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


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `TrainingDiverged`, naming the epoch and batch, as soon as the loss is NaN or
    infinite, before any checkpoint of that epoch is written: the backup of the last finished
    epoch stays, and no model is saved."""

    def __init__(self, backup_folder):
        super().__init__()
        self.backup_folder = backup_folder

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, where):
        for name in ("loss", "val_loss"):
            value = (logs or {}).get(name)
            if value is not None and not math.isfinite(float(value)):
                kept = (
                    f"the last finished epoch is kept in {self.backup_folder}"
                    if Path(self.backup_folder).is_dir()
                    else "no epoch had finished"
                )
                raise TrainingDiverged(
                    f"training diverged: {name} is {float(value)} at epoch {self._epoch + 1}{where}; stopped without "
                    f"saving a model ({kept}); try a lower --learning-rate with --overwrite"
                )

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f", batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, " (end of epoch)")


class KeepBest(keras.callbacks.Callback):
    """Best-epoch checkpoint and early stopping whose state lives on disk, so an interrupted and
    resumed run makes exactly the decisions of an uninterrupted one.

    After each epoch the `monitor` value is recorded in `best.json` (per epoch, so recomputing
    an epoch after a resume overwrites its own entry); the weights of the best epoch so far are
    kept in `best/`; training stops after `patience` epochs without improvement, and
    ends with the best weights restored.
    """

    def __init__(self, folder, monitor="val_accuracy", patience=2):
        super().__init__()
        self.folder = Path(folder)
        self.monitor = monitor
        # Keras's "auto" mode would minimize any metric whose name lacks "acc", e.g. an F1 score.
        self.sign = -1.0 if monitor.endswith("loss") else 1.0
        self.patience = patience
        # TensorFlow checkpoint format: it loads under every tf.distribute strategy.
        self.weights_dir = self.folder / "best"
        self.state_path = self.folder / "best.json"

    def _values(self):
        if not self.state_path.is_file():
            return {}
        return {int(epoch): value for epoch, value in read_json(self.state_path)["values"].items()}

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"KeepBest monitors {self.monitor!r}, which the epoch logs lack: {sorted(logs or {})}")
        values = {e: v for e, v in self._values().items() if e < epoch}
        values[epoch] = float(value)
        best_epoch = max(sorted(values), key=lambda e: self.sign * values[e])  # earliest best
        if best_epoch == epoch:
            write_atomically(self.weights_dir, lambda staging: self.model.save_weights(str(staging / "weights")), True)
        write_json(self.state_path, {"monitor": self.monitor, "best_epoch": best_epoch, "values": values})
        if epoch - best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if (self.weights_dir / "weights.index").is_file():
            self.model.load_weights(str(self.weights_dir / "weights"))


def backup_dir(run_dir):
    return Path(run_dir) / "backup"


def resumed_epoch(backup_folder):
    """The epoch an interrupted fit resumes at: one past the last epoch `BackupAndRestore`
    backed up in `backup_folder` (0 when there is no backup)."""
    latest = tf.train.latest_checkpoint(str(Path(backup_folder) / "chief"))
    if latest is None:
        return 0
    return int(tf.train.load_variable(latest, "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")) + 1


def is_resuming(run_dir):
    """True when an interrupted run left a `BackupAndRestore` checkpoint or finished phases in `run_dir`."""
    return any(
        folder.is_dir() and any(path.is_file() for path in folder.rglob("*"))
        for folder in (backup_dir(run_dir), Path(run_dir) / "phases")
    )


def standard_callbacks(
    run_dir,
    examples_per_epoch,
    batches_per_epoch,
    batch_size,
    patience=2,
    monitor="val_accuracy",
    time_budget=None,
    phase="train",
    append_history=None,
    validation_callback=None,
):
    """The callbacks of every training phase, all writing under `run_dir`: throughput column,
    a stop on a NaN/infinite loss, best-epoch checkpoint and early stop on `monitor` (`KeepBest`),
    resume (`BackupAndRestore`), TensorBoard, CSV log, progress lines when not on a terminal,
    and an optional wall-time budget.

    Each `phase` (e.g. frozen, then fine-tuned) has its own backup and best-epoch folders.
    history.csv is appended to when `append_history` (default: when resuming).
    `validation_callback`, if given, puts the monitored metrics into the epoch logs, for those
    that are not compile metrics (e.g. entity F1); it runs before the checkpoint and early stop.
    """
    run_dir = Path(run_dir)
    backup = backup_dir(run_dir) / phase
    if append_history is None:
        append_history = is_resuming(run_dir)
    callbacks = (
        [Throughput(examples_per_epoch)]
        + ([validation_callback] if validation_callback else [])
        + [
            StopOnNonFiniteLoss(backup),
            KeepBest(run_dir / "checkpoints" / phase, monitor=monitor, patience=patience),
            # After KeepBest: its on_train_end restores the best weights before fit_phase keeps them.
            # Saved after every epoch and removed when fit() completes: rerunning the same
            # command after an interruption continues from the last finished epoch.
            keras.callbacks.BackupAndRestore(str(backup)),
            keras.callbacks.TensorBoard(str(run_dir / "logs")),
            keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=append_history),
        ]
    )
    if not sys.stdout.isatty():
        callbacks.append(ProgressLog(batches_per_epoch, batch_size))
    if time_budget:
        callbacks.append(TimeBudget(time_budget))
    return callbacks


def fit_verbosity():
    """Keras progress bars on a terminal; in logs and CI one line per epoch plus `ProgressLog`."""
    return 1 if sys.stdout.isatty() else 2
