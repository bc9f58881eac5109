"""Metrics computed during training: macro-F1 over classes, accuracy over labelled tokens, and a
language model's cross-entropy per token, perplexity and bits per character."""

import numpy as np
import tensorflow as tf
import tf_keras as keras


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
    from tfattn.tagging import IGNORE_INDEX

    labels = tf.cast(labels, tf.int32)
    keep = tf.cast(labels != IGNORE_INDEX, tf.float32)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
    return tf.reduce_sum(correct * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)


class TokenCrossEntropy(keras.metrics.Metric):
    """Mean negative log-likelihood in nats per real token (padding labels, -100, count for
    nothing), summed over the whole epoch before dividing: exact over batches of any token
    count, and free of label smoothing (the loss may smooth; this scores the model).

    As a compile metric it adds `nats_per_token` and `val_nats_per_token` to the epoch logs.
    """

    def __init__(self, name="nats_per_token", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float64)
        self.tokens = self.add_weight(name="tokens", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.cast(y_true, tf.int32)
        real = labels >= 0
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(labels, 0), tf.cast(y_pred, tf.float32))
        self.total.assign_add(tf.reduce_sum(tf.cast(tf.where(real, nll, 0.0), tf.float64)))
        self.tokens.assign_add(tf.reduce_sum(tf.cast(real, tf.float64)))

    def result(self):
        return tf.cast(tf.math.divide_no_nan(self.total, self.tokens), tf.float32)

    def reset_state(self):
        self.total.assign(0.0)
        self.tokens.assign(0.0)


class LanguageModelScores(keras.callbacks.Callback):
    """Puts `val_perplexity` (per token) and `val_bits_per_char` into the epoch logs from
    `val_nats_per_token` (`TokenCrossEntropy`): bits per character, `nats per token x tokens per
    character / ln 2`, compare across vocabularies (a character model and a subword model, or an
    n-gram model's score on the same text)."""

    def __init__(self, tokens_per_character):
        super().__init__()
        self.tokens_per_character = float(tokens_per_character)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "val_nats_per_token" not in logs:
            return
        nats = float(logs["val_nats_per_token"])
        logs["val_perplexity"] = float(np.exp(nats))
        logs["val_bits_per_char"] = nats * self.tokens_per_character / np.log(2)
