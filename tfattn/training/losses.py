"""Losses of the generating tasks: cross-entropy over the real tokens of a batch."""

import tensorflow as tf
import tf_keras as keras

__all__ = ["MaskedCrossEntropy"]


class MaskedCrossEntropy(keras.losses.Loss):
    """Cross-entropy per target token, averaged over the real tokens of the batch, with optional
    label smoothing over the vocabulary. Labels below `first_label` count for nothing: padding
    labels, -100 in batches or 0, the padding id of tfattn's vocabularies (a pretrained
    vocabulary whose id 0 is a real token takes `first_label=0`)."""

    def __init__(self, label_smoothing=0.0, first_label=1, name="masked_cross_entropy"):
        super().__init__(name=name, reduction=keras.losses.Reduction.SUM)
        self.label_smoothing = float(label_smoothing)
        self.first_label = int(first_label)

    def call(self, labels, logits):
        labels = tf.cast(labels, tf.int32)
        mask = tf.cast(labels >= self.first_label, tf.float32)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        nll = -tf.gather(log_probs, tf.maximum(labels, 0), batch_dims=2)
        if self.label_smoothing:
            nll = (1 - self.label_smoothing) * nll - self.label_smoothing * tf.reduce_mean(log_probs, axis=-1)
        tokens = tf.reduce_sum(mask)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            # Each replica divides by the tokens of the whole global batch, so the summed
            # gradients are those of one process on that batch, however the tokens fall.
            tokens = replica.all_reduce(tf.distribute.ReduceOp.SUM, tokens)
        return tf.reduce_sum(nll * mask) / tf.maximum(tokens, 1.0)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "first_label": self.first_label}
