"""Training plumbing shared by every task: device strategy, precision, callbacks, run folders."""

import contextlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.files import write_atomically
from tfattn.run_manifest import TRAINED, TRAINING, finish_run, open_run_folder, set_status

STRATEGIES = ("default", "mirrored", "multiworker")


def get_strategy(name="default"):
    """The `tf.distribute` strategy to build, compile and fit models under.

    Args:
        name: `"default"` (one device), `"mirrored"` (every local GPU; without GPUs every
            logical CPU device, which is how tests exercise it) or `"multiworker"` (several
            workers, configured by the `TF_CONFIG` environment variable: `tfattn.workers`).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if devices:
            return tf.distribute.MirroredStrategy(devices)
        # CPU devices reduce on one device: with the default collective ops, the all-reduce of a
        # second MirroredStrategy training in the same process failed with "Shape mismatch in the
        # collective instance" (seen in the test suite: a from-scratch, then a TF-Hub model).
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multiworker":
        from tfattn.workers import check_worker_cluster

        check_worker_cluster()
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            if "program startup" not in str(error):
                raise
            # Collective ops are configured when TensorFlow's runtime starts, i.e. by the first op.
            raise ValueError(
                "the multi-worker strategy must be created before any other TensorFlow work in the process: "
                "call tfattn.tasks.train first (the tfattn command does)"
            ) from None
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


def masked_token_accuracy(labels, logits):
    """Accuracy over the positions whose label is not `IGNORE_INDEX` (NER sub-tokens, padding
    of token labels in every tfattn batch)."""
    from tfattn.ner import IGNORE_INDEX

    labels = tf.cast(labels, tf.int32)
    keep = tf.cast(labels != IGNORE_INDEX, tf.float32)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
    return tf.reduce_sum(correct * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)


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


class TrainingDiverged(ValueError):
    """The loss or the weights became NaN or infinite; nothing with them was saved."""


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


def check_finite_weights(model, what="model"):
    """`TrainingDiverged` if any weight of `model` is NaN or infinite (then it must not be saved)."""
    for weight in model.trainable_weights + model.non_trainable_weights:
        dtype = getattr(weight, "dtype", None)  # lookup tables hold handlers, not tensors
        if dtype is not None and dtype.is_floating and not np.all(np.isfinite(weight.numpy())):
            raise TrainingDiverged(f"the {what}'s weight {weight.name} holds NaN or infinite values; not saved")


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


class EpochOrder:
    """In-memory training data whose reshuffled order is a function of the run's progress alone.

    Each new iterator of a `shuffle(..., reshuffle_each_iteration=True)` dataset draws the next
    order, and Keras makes one iterator per epoch, plus one when each `fit` starts. A resumed run
    must see the orders an uninterrupted run saw, so before each fit `data_from` draws (and
    discards) the orders that the uninterrupted run drew before it: one per earlier fit and one
    per epoch of every phase before (`skip_phase` for a phase loaded, not fitted, `record` for
    one fitted) and of this phase's epochs already done.

    `StreamOrder` is the same interface for data streamed from files.
    """

    def __init__(self, dataset, batches_per_epoch, examples=None):
        self.dataset = with_epoch_length(dataset, batches_per_epoch)
        self.batches_per_epoch = batches_per_epoch
        # `(features, labels)` the dataset was made of, for passes outside the epoch order
        # (e.g. computing a frozen encoder's outputs once: `tfattn.tasks.frozen`).
        self.examples = examples
        self.fit_kwargs = {}
        self.drawn = 0  # iterators made in this process
        self.phase_start = 0  # iterators an uninterrupted run had made when the current phase began

    def sample_batch(self):
        """One batch, e.g. to build a model (does not count as an epoch's iterator)."""
        return next(iter(self.dataset))

    def data_from(self, epochs_done):
        """The data for a fit that resumes the current phase after `epochs_done` of its epochs."""
        while self.drawn < self.phase_start + epochs_done:
            iter(self.dataset)
            self.drawn += 1
        return self.dataset

    def record(self, history):
        """Count the iterators of a `fit` that ended the current phase (its returned `History`)."""
        self.drawn += 1 + len(history.epoch)
        self.phase_start = self.drawn

    def skip_phase(self, epochs):
        """A finished phase was loaded, not fitted: its fit made an iterator plus one per epoch."""
        self.phase_start += 1 + epochs


class StreamOrder:
    """Training data streamed from files (`tfattn.data.streaming`): one endless, deterministic
    stream of batches, of which every epoch takes `batches_per_epoch`.

    `make_dataset(input_context)` builds one input pipeline's stream of per-replica batches
    (`tf.distribute.InputContext`: which files this worker reads, its batch size). Every fit
    builds the stream afresh and skips the batches an uninterrupted run had consumed before it,
    so a resumed run sees the same batches; skipping replays the reading and tokenizing, not
    the training.
    """

    def __init__(self, make_dataset, batches_per_epoch):
        self.make_dataset = make_dataset
        self.batches_per_epoch = batches_per_epoch
        self.fit_kwargs = {"steps_per_epoch": batches_per_epoch}
        self.epochs_before = 0  # epochs an uninterrupted run had trained when the current phase began
        self._epochs_done = 0

    def sample_batch(self):
        return next(iter(self.make_dataset(tf.distribute.InputContext())))

    def data_from(self, epochs_done):
        self._epochs_done = epochs_done
        epochs = self.epochs_before + epochs_done

        def stream(input_context):
            # Each input pipeline feeds its local replicas one batch each per step.
            replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
            return self.make_dataset(input_context).skip(epochs * self.batches_per_epoch * replicas)

        return keras.utils.experimental.DatasetCreator(stream)

    def record(self, history):
        self.epochs_before += self._epochs_done + len(history.epoch)

    def skip_phase(self, epochs):
        self.epochs_before += epochs


def with_epoch_length(dataset, batches):
    """`dataset`, declaring that one pass yields `batches` batches (checked as it is read).

    Keras needs the length of a dataset it cannot infer (length bucketing): otherwise the first
    epoch of every `fit` ends with a step that finds no data but still advances
    `optimizer.iterations` (the increment does not wait for the data), so a resumed run's
    learning-rate schedule would run one step ahead of an uninterrupted run's.
    """
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


def phase_weights_dir(run_dir, phase):
    return Path(run_dir) / "phases" / phase


def phase_finished(run_dir, phase):
    """Whether `phase` of the run in `run_dir` has finished and kept its weights (`fit_phase`)."""
    return (phase_weights_dir(run_dir, phase) / "weights.index").is_file()


def fit_phase(model, order, run_dir, phase, first_epoch, last_epoch, callbacks, **fit_kwargs):
    """Fit epochs `first_epoch`..`last_epoch - 1` of one phase on the training data of `order`
    (an `EpochOrder` or `StreamOrder`), resumable, then keep its final weights in
    `phases/PHASE/` (written atomically).

    A phase whose weights are already kept is not trained again: its weights are loaded.
    Returns True when the phase was trained now, False when it was loaded.
    """
    weights_dir = phase_weights_dir(run_dir, phase)
    if phase_finished(run_dir, phase):
        # A finished phase's optimizer state is not needed: only the model's weights are read.
        model.load_weights(str(weights_dir / "weights")).expect_partial()
        # The epochs it ran (early stopping may have ended it before last_epoch).
        epochs_file = weights_dir / "epochs.json"
        order.skip_phase(read_json(epochs_file)["epochs"] if epochs_file.is_file() else last_epoch - first_epoch)
        return False
    start = max(first_epoch, resumed_epoch(backup_dir(run_dir) / phase))
    train_data = order.data_from(start - first_epoch)
    history = model.fit(
        train_data, initial_epoch=start, epochs=last_epoch, callbacks=callbacks, **order.fit_kwargs, **fit_kwargs
    )
    order.record(history)
    check_finite_weights(model)

    def keep(staging):
        model.save_weights(str(staging / "weights"))
        write_json(staging / "epochs.json", {"epochs": start - first_epoch + len(history.epoch)})

    write_atomically(weights_dir, keep, overwrite=True)
    return True


def compile_and_fit(
    model,
    order,
    run_dir,
    config,
    *,
    loss,
    metrics,
    monitor,
    examples_per_epoch,
    phase="train",
    first_epoch=0,
    last_epoch=None,
    learning_rate=None,
    strategy=None,
    append_history=None,
    validation_data=None,
    validation_callback=None,
    callbacks=(),
    **compile_kwargs,
):
    """One training phase of any task: compile `model` (in `strategy`'s scope) with AdamW and a
    warmup over the phase's steps, then `fit_phase` with the `standard_callbacks`.

    `config` gives the run's `learning_rate` (unless the phase has its own), `epochs` (unless
    `last_epoch` is given), `warmup_fraction`, `weight_decay`, `batch_size`, `patience` and
    `time_budget`. Returns what `fit_phase` returns.
    """
    from tfattn.optimization import create_optimizer

    last_epoch = config.epochs if last_epoch is None else last_epoch
    learning_rate = config.learning_rate if learning_rate is None else learning_rate
    with strategy.scope() if strategy else contextlib.nullcontext():
        optimizer = create_optimizer(
            learning_rate,
            order.batches_per_epoch * (last_epoch - first_epoch),
            warmup_fraction=config.warmup_fraction,
            weight_decay=config.weight_decay,
        )
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, **compile_kwargs)
    phase_callbacks = standard_callbacks(
        run_dir,
        examples_per_epoch,
        order.batches_per_epoch,
        config.batch_size,
        patience=config.patience,
        monitor=monitor,
        time_budget=config.time_budget,
        phase=phase,
        append_history=append_history,
        validation_callback=validation_callback,
    )
    return fit_phase(
        model,
        order,
        run_dir,
        phase,
        first_epoch,
        last_epoch,
        callbacks=phase_callbacks + list(callbacks),
        validation_data=validation_data,
        verbose=fit_verbosity(),
    )


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


def start_run(run_dir, config, data_sources, seed, mixed_precision=False, overwrite=False):
    """Open the run folder for this run (`tfattn.run_manifest.open_run_folder`: refuses another run's
    folder, stops on a finished one), save `config` (a dict) as its config.json, say whether an
    interrupted run is being resumed, and seed Keras (same seed, same initial weights, dropout
    masks and shuffles, up to nondeterministic kernels).

    Returns the folder as a `Path`.
    """
    run_dir = Path(run_dir)
    status = open_run_folder(run_dir, config, data_sources, overwrite=overwrite)
    if status == TRAINING and is_resuming(run_dir):
        print(f"resuming the interrupted run in {run_dir}")
    elif status is not None:
        print(f"resuming the interrupted run in {run_dir}: training finished, saving the model")
    write_json(run_dir / "config.json", config)
    keras.utils.set_random_seed(seed)
    set_mixed_precision(mixed_precision)
    return run_dir


def mark_trained(run_dir):
    """Training is done and its weights are kept: a rerun only saves and evaluates."""
    set_status(run_dir, TRAINED)


def finish_training(run_dir, summary):
    """Mark the run finished with a one-line `summary`, and remove what only a resume needed."""
    finish_run(run_dir, summary)
    # frozen_cache: the frozen encoder's outputs (tfattn.tasks.frozen), large and now unneeded.
    for folder in (backup_dir(run_dir), Path(run_dir) / "phases", Path(run_dir) / "frozen_cache"):
        shutil.rmtree(folder, ignore_errors=True)


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
