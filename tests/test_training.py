"""Training plumbing: the streaming macro-F1 metric, best-epoch keeping that survives a resume, and
the stop on a non-finite loss."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from sklearn.metrics import f1_score

from tfattn.data.pipelines import count_batches
from tfattn.models.weights import TrainingDiverged, check_finite_weights
from tfattn.training.callbacks import KeepBest, StopOnNonFiniteLoss
from tfattn.training.metrics import MacroF1
from tfattn.training.phases import EpochOrder, fit_phase


def test_macro_f1_matches_scikit_learn_over_batches():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    labels[labels == 3] = 2  # class 3 never occurs: it scores 0 when predicted, as in sklearn
    probabilities = rng.random((200, 4)).astype(np.float32)
    metric = MacroF1(4)
    for start in range(0, 200, 64):  # accumulates across uneven batches
        metric.update_state(tf.constant(labels[start : start + 64]), tf.constant(probabilities[start : start + 64]))
    expected = f1_score(labels, probabilities.argmax(axis=1), labels=[0, 1, 2, 3], average="macro", zero_division=0)
    np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_macro_f1_is_a_validation_column_of_fit():
    model = keras.Sequential([keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy", MacroF1(3)])
    x, y = np.random.default_rng(1).random((30, 5)).astype(np.float32), np.arange(30) % 3
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0).history
    predictions = model.predict(x, verbose=0).argmax(axis=1)
    expected = f1_score(y, predictions, average="macro", zero_division=0)
    np.testing.assert_allclose(history["val_macro_f1"][0], expected, rtol=1e-5)


def _keep_best_run(tmp_path, monitor, values, patience=2, resume_after=None):
    """Feed `values` of `monitor` to a KeepBest, one per epoch, with the model's single weight
    set to the epoch index; a new KeepBest (as in a resumed process) takes over after epoch
    `resume_after`. Returns (epochs run, the weight restored at the end)."""
    model = keras.Sequential([keras.layers.Dense(1, use_bias=False, input_shape=(1,))])
    callback = KeepBest(tmp_path / "best", monitor=monitor, patience=patience)
    callback.set_model(model)
    ran = []
    for epoch, value in enumerate(values):
        if resume_after is not None and epoch == resume_after + 1:
            callback = KeepBest(tmp_path / "best", monitor=monitor, patience=patience)
            callback.set_model(model)
        model.set_weights([np.full((1, 1), epoch, np.float32)])
        ran.append(epoch)
        callback.on_epoch_end(epoch, {monitor: value})
        if model.stop_training:
            break
    callback.on_train_end()
    return ran, float(model.get_weights()[0][0, 0])


def test_keep_best_maximizes_scores_and_minimizes_losses(tmp_path):
    # A score is best when highest (epoch 1); patience 2 stops after epochs 2 and 3 fail to beat it.
    assert _keep_best_run(tmp_path / "f1", "val_entity_f1", [0.5, 0.7, 0.6, 0.65, 0.9]) == ([0, 1, 2, 3], 1.0)
    # A loss is best when lowest.
    assert _keep_best_run(tmp_path / "loss", "val_loss", [0.9, 0.5, 0.7, 0.4]) == ([0, 1, 2, 3], 3.0)


def test_keep_best_decides_the_same_after_a_resume(tmp_path):
    values = [0.5, 0.7, 0.6, 0.65, 0.9]
    uninterrupted = _keep_best_run(tmp_path / "a", "val_accuracy", values)
    # A fresh callback after epoch 2 reads the state on disk: same stop, same restored weights.
    assert (
        _keep_best_run(tmp_path / "b", "val_accuracy", values, resume_after=2) == uninterrupted == ([0, 1, 2, 3], 1.0)
    )


def test_non_finite_loss_stops_fit_naming_epoch_and_batch(tmp_path):
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,))])
    model.compile(optimizer=keras.optimizers.SGD(1e30), loss="mse")  # diverges within a few batches
    x = np.ones((64, 1), np.float32) * 1e10
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf) at epoch 1, batch \d+; stopped without saving"):
        model.fit(x, x, batch_size=8, epochs=2, verbose=0, callbacks=[StopOnNonFiniteLoss(tmp_path / "backup")])
    with pytest.raises(TrainingDiverged, match="holds NaN or infinite values"):
        check_finite_weights(model)


# --- the order of shuffled epochs across phases and resumes ---------------------------------


class _OrderRecorder(keras.Model):
    """Records the labels of each training batch, in the order `fit` reads them."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.seen = []

    def call(self, inputs):
        return self.dense(inputs)

    def train_step(self, data):
        self.seen.append(data[1].numpy().tolist())
        return {}


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def _shuffled():
    """8 examples in one batch, reshuffled every epoch (a fresh dataset starts the same sequence)."""
    dataset = tf.data.Dataset.range(8).shuffle(8, seed=1, reshuffle_each_iteration=True)
    return dataset.map(lambda i: (tf.cast(i, tf.float32)[None], i)).batch(8)


def _phases(run_dir, phases, stop_first_phase_early=False):
    """Run `phases` ([(name, first, last)]) with `fit_phase`, as `train` does; phases whose
    weights `run_dir` already keeps are loaded. Returns the batches each epoch saw."""
    model = _OrderRecorder()
    model.compile(run_eagerly=True)
    model(tf.zeros([1, 1]))
    dataset = _shuffled()
    order = EpochOrder(dataset, count_batches(dataset))
    for index, (name, first, last) in enumerate(phases):
        callbacks = [_StopAfterFirstEpoch()] if stop_first_phase_early and index == 0 else []
        fit_phase(model, order, run_dir, name, first, last, callbacks=callbacks, verbose=0)
    return model.seen


@pytest.mark.parametrize("stop_first_phase_early", [False, True])
def test_a_run_resumed_after_a_finished_phase_sees_the_same_orders(tmp_path, stop_first_phase_early):
    phases = [("frozen", 0, 2), ("fine-tuned", 2, 4)]
    uninterrupted = _phases(tmp_path / "a", phases, stop_first_phase_early)
    assert len(uninterrupted) == (3 if stop_first_phase_early else 4)
    assert all(sorted(batch) == list(range(8)) for batch in uninterrupted)
    assert len({tuple(batch) for batch in uninterrupted}) == len(uninterrupted)  # every epoch reshuffled
    # Killed once the first phase was kept: the rerun loads it and fits only the second phase.
    first_phase = _phases(tmp_path / "b", phases[:1], stop_first_phase_early)
    assert first_phase == uninterrupted[: len(first_phase)]
    resumed = _phases(tmp_path / "b", phases)
    assert resumed == uninterrupted[len(first_phase) :]
