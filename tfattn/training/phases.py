"""One training phase: the data of each `fit` (in memory or streamed), compiled and fitted resumably."""

import contextlib
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from tfattn.files import read_json, write_atomically, write_json
from tfattn.models.weights import check_finite_weights
from tfattn.training.callbacks import backup_dir, fit_verbosity, resumed_epoch, standard_callbacks


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

    def __init__(self, dataset, batches_per_epoch, examples=None, on_replay=None):
        self.dataset = with_epoch_length(dataset, batches_per_epoch)
        # Called for each iterator replayed unread: a dataset that draws its epoch from Python
        # state, not from tf.data's own seeds, advances that state there.
        self.on_replay = on_replay
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
            if self.on_replay:
                self.on_replay()
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
    make_metrics,
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
    `time_budget`. `make_metrics()` returns the compile metrics: called in the strategy's scope,
    as Keras requires of metric objects under a distribution strategy. Returns what `fit_phase`
    returns.
    """
    from tfattn.training.optimizer import create_optimizer

    last_epoch = config.epochs if last_epoch is None else last_epoch
    learning_rate = config.learning_rate if learning_rate is None else learning_rate
    with strategy.scope() if strategy else contextlib.nullcontext():
        optimizer = create_optimizer(
            learning_rate,
            order.batches_per_epoch * (last_epoch - first_epoch),
            warmup_fraction=config.warmup_fraction,
            weight_decay=config.weight_decay,
        )
        model.compile(optimizer=optimizer, loss=loss, metrics=make_metrics(), **compile_kwargs)
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
