"""Training plumbing: the streaming macro-F1 metric and the monitor direction of callbacks."""

import numpy as np
import tensorflow as tf
import tf_keras as keras
from sklearn.metrics import f1_score

from tfattn.training import MacroF1, standard_callbacks


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


def test_callbacks_maximize_scores_and_minimize_losses(tmp_path):
    def modes(monitor):
        callbacks = standard_callbacks(tmp_path, 10, 1, 10, monitor=monitor)
        return {type(c).__name__: c.monitor_op for c in callbacks if hasattr(c, "monitor_op")}

    assert set(modes("val_entity_f1").values()) == {np.greater}
    assert set(modes("val_loss").values()) == {np.less}
