"""The `keras.ops` functions that `tfattn.attention_math` uses, in TensorFlow: the namespace the
tf-keras layers compute with. (Keras 3's own `keras.ops` follows the `KERAS_BACKEND` setting, which
the tf-keras layers must not depend on.)"""

from types import SimpleNamespace

import tensorflow as tf

TF_OPS = SimpleNamespace(
    arange=tf.range,
    cast=tf.cast,
    less_equal=tf.less_equal,
    logical_and=tf.logical_and,
    matmul=tf.matmul,
    not_equal=tf.not_equal,
    pad=lambda x, pad_width: tf.pad(x, pad_width),
    reshape=tf.reshape,
    # Dynamic sizes where the static ones are unknown, as keras.ops.shape gives them.
    shape=tf.shape,
    softmax=lambda x, axis=-1: tf.nn.softmax(x, axis=axis),
    swapaxes=tf.experimental.numpy.swapaxes,
    transpose=tf.transpose,
    where=tf.where,
)
