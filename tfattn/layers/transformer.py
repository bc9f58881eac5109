"""Transformer building blocks as tf-keras layers: embeddings with positions, self-attention blocks.

Everything here is a plain `tf_keras` layer (the Keras that TF-Hub, transformers TF and Model
Garden use), registered for deserialization under the package name "tfattn".
"""

import math

import tensorflow as tf
import tf_keras as keras

from tfattn.attention_math import (
    attend,
    bigram_buckets,
    locality_mask,
    merge_heads,
    residual,
    sinusoidal_position_encoding,
    split_heads,
    sublayer_input,
)
from tfattn.layer_arguments import (
    bigram_arguments,
    block_arguments,
    config_of,
    embedding_arguments,
    fresh_initializer,
    keep_arguments,
)
from tfattn.layers.tf_ops import TF_OPS

__all__ = [
    "scaled_dot_product_attention",
    "sinusoidal_position_encoding",
    "FitTokenIds",
    "HashedBigramEmbedding",
    "TokenAndPositionEmbedding",
    "TransformerBlock",
]


def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
    """Softmax attention: `softmax(q @ k^T * scale) @ v`.

    Args:
        q: queries, `[..., query_len, depth]`.
        k: keys, `[..., key_len, depth]`.
        v: values, `[..., key_len, value_depth]`.
        mask: optional boolean tensor broadcastable to `[..., query_len, key_len]`;
            `True` marks the keys a query may attend to.
        scale: multiplier of the logits; defaults to `1 / sqrt(depth)`.

    Returns:
        `(outputs, weights)`: outputs `[..., query_len, value_depth]` in the dtype of `v`, and
        the attention weights `[..., query_len, key_len]` (each row sums to 1), always float32:
        under mixed precision the softmax is computed in float32 and only its product with `v`
        runs in the compute dtype.

    Example:
    >>> x = tf.random.normal([2, 7, 16])
    >>> out, weights = scaled_dot_product_attention(x, x, x)
    >>> out.shape, weights.shape
    (TensorShape([2, 7, 16]), TensorShape([2, 7, 7]))
    """
    return attend(TF_OPS, q, k, v, mask=mask, scale=scale)


@keras.saving.register_keras_serializable(package="tfattn")
class FitTokenIds(keras.layers.Layer):
    """Token ids as a model takes them: at most `max_length` per row, padded with 0 to the
    batch's longest row, and never a row without a token.

    A text with no token left after tokenization (empty, whitespace or punctuation only) is
    given one `fill_id` token (`[UNK]`, id 1 for `TextVectorization`), so attention and masked
    mean pooling always have a position to use: its outputs are finite, the model's answer for
    an unknown word, instead of a 0/0 NaN.

    Args:
        max_length: longest row kept; longer rows are truncated.
        fill_id: the id given to rows with no token.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call args:
        token_ids: int ids `[batch, (length)]`, ragged or padded with 0.

    Example:
    >>> fit = FitTokenIds(max_length=3)
    >>> fit(tf.ragged.constant([[5, 6, 7, 8], []])).numpy()
    array([[5, 6, 7],
           [1, 0, 0]], dtype=int32)
    """

    def __init__(self, max_length, fill_id=1, **kwargs):
        kwargs.setdefault("dtype", "int32")
        super().__init__(**kwargs)
        if int(max_length) < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length!r}")
        self.max_length = int(max_length)
        self.fill_id = int(fill_id)

    def call(self, token_ids):
        if isinstance(token_ids, tf.RaggedTensor):
            token_ids = token_ids[:, : self.max_length].to_tensor(default_value=0)
        token_ids = tf.cast(token_ids[:, : self.max_length], tf.int32)
        # At least one column, even when every row of the batch is empty.
        token_ids = tf.pad(token_ids, [[0, 0], [0, tf.maximum(1 - tf.shape(token_ids)[1], 0)]])
        empty = tf.reduce_all(tf.equal(token_ids, 0), axis=1)
        first = tf.where(empty, tf.constant(self.fill_id, tf.int32), token_ids[:, 0])
        return tf.concat([first[:, None], token_ids[:, 1:]], axis=1)

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length, "fill_id": self.fill_id}


@keras.saving.register_keras_serializable(package="tfattn")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a position embedding, for inputs of any length up to `max_length`.

    Unlike the classic Keras-examples version, the input does not have to be padded to exactly
    `max_length`: positions are taken for the actual sequence length, so batches padded to
    their own longest text work. Token id 0 is padding: with `mask_zero=True` the layer
    emits a padding mask that downstream layers (TransformerBlock, pooling) honour.

    Args:
        vocab_size: number of token ids (id 0 is padding, id 1 usually out-of-vocabulary).
        max_length: longest sequence the layer accepts.
        embed_dim: size of the output vectors.
        positional: `"learned"` (a trainable table) or `"sinusoidal"` (a fixed table).
        mask_zero: emit a mask that is False where the token id is 0.
        embeddings_initializer: initializer of the token (and learned position) tables.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Example:
    >>> layer = TokenAndPositionEmbedding(vocab_size=100, max_length=16, embed_dim=8)
    >>> ids = tf.constant([[5, 9, 2, 0, 0]])
    >>> layer(ids).shape
    TensorShape([1, 5, 8])
    >>> layer.compute_mask(ids).numpy()
    array([[ True,  True,  True, False, False]])
    """

    def __init__(
        self,
        vocab_size,
        max_length,
        embed_dim,
        positional="learned",
        mask_zero=True,
        embeddings_initializer="uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        keep_arguments(self, embedding_arguments(vocab_size, max_length, embed_dim, positional, mask_zero))
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.supports_masking = self.mask_zero

    def _fresh_initializer(self):
        return fresh_initializer(self.embeddings_initializer)

    def build(self, input_shape):
        self.token_embeddings = self.add_weight(
            name="token_embeddings",
            shape=(self.vocab_size, self.embed_dim),
            initializer=self._fresh_initializer(),
        )
        if self.positional == "learned":
            self.position_embeddings = self.add_weight(
                name="position_embeddings",
                shape=(self.max_length, self.embed_dim),
                initializer=self._fresh_initializer(),
            )
        else:
            self.position_embeddings = tf.constant(sinusoidal_position_encoding(self.max_length, self.embed_dim))
        super().build(input_shape)

    def call(self, token_ids, start_position=0, positions=None):
        """`token_ids` `[batch, length]`; `start_position` is the position of the first column (a
        decoder fed one new token per step gives the step number), or `positions` `[batch,
        length]` gives each token's own (left-padded prompts of different lengths)."""
        token_ids = tf.cast(token_ids, tf.int32)
        tokens = tf.gather(self.token_embeddings, token_ids)
        message = f"{self.name}: input is longer than max_length={self.max_length}; truncate it"
        if positions is not None:
            positions = tf.cast(positions, tf.int32)
            tf.debugging.assert_less(positions, self.max_length, message=message)
            return tokens + tf.cast(tf.gather(self.position_embeddings, positions), tokens.dtype)
        end = start_position + tf.shape(token_ids)[-1]
        tf.debugging.assert_less_equal(end, self.max_length, message=message)
        positions = tf.cast(self.position_embeddings[start_position:end], tokens.dtype)
        return tokens + positions

    def compute_mask(self, token_ids, mask=None, start_position=0, positions=None):
        if not self.mask_zero:
            return None
        return tf.not_equal(token_ids, 0)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape).concatenate([self.embed_dim])

    def get_config(self):
        return {
            **super().get_config(),
            **config_of(self),
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


@keras.saving.register_keras_serializable(package="tfattn")
class HashedBigramEmbedding(keras.layers.Layer):
    """A vector for each pair of neighbouring tokens, hashed into `buckets` rows (fastText's
    bigrams): position i gets the row of (token i-1, token i), the first position and padding
    get zeros. Added to the token embeddings, it lets a small model read two-word phrases
    ("wall street", "prime minister") from its first layer, as n-gram baselines do.

    Args:
        buckets: rows of the table; distinct bigrams may share one (hashing, no vocabulary).
        embed_dim: size of the vectors.
        embeddings_initializer: initializer of the table.
        **kwargs: standard layer arguments.

    Example:
    >>> layer = HashedBigramEmbedding(buckets=64, embed_dim=4)
    >>> vectors = layer(tf.constant([[5, 9, 2, 0]]))
    >>> vectors.shape, float(tf.reduce_sum(tf.abs(vectors[0, 0]))), float(tf.reduce_sum(tf.abs(vectors[0, 3])))
    (TensorShape([1, 4, 4]), 0.0, 0.0)
    """

    # A large odd multiplier spreads (previous, current) id pairs over the buckets.
    MULTIPLIER = 1_000_003

    def __init__(self, buckets, embed_dim, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        keep_arguments(self, bigram_arguments(buckets, embed_dim))
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.bigram_embeddings = self.add_weight(
            name="bigram_embeddings", shape=(self.buckets, self.embed_dim), initializer=self.embeddings_initializer
        )
        super().build(input_shape)

    def bucket_ids(self, token_ids):
        """The bucket of each position's (previous, current) pair; -1 where there is none."""
        return bigram_buckets(TF_OPS, token_ids, self.buckets, self.MULTIPLIER)

    def call(self, token_ids):
        buckets = self.bucket_ids(token_ids)
        vectors = tf.gather(self.bigram_embeddings, tf.maximum(buckets, 0))
        return vectors * tf.cast(buckets >= 0, vectors.dtype)[..., None]

    def get_config(self):
        return {
            **super().get_config(),
            **config_of(self),
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


@keras.saving.register_keras_serializable(package="tfattn")
class TransformerBlock(keras.layers.Layer):
    """Transformer encoder block: multi-head self-attention, then a feed-forward net.

    Post-norm by default, `x -> LayerNorm(x + Dropout(SelfAttention(x))) -> LayerNorm(. +
    Dropout(FFN(.)))`; with `normalize_first`, pre-norm as in ViT and GPT-2, `x -> x +
    Dropout(SelfAttention(LayerNorm(x))) -> . + Dropout(FFN(LayerNorm(.)))` (the output is not
    normalized: a stack of them ends with its own LayerNorm). Attention is computed by
    `scaled_dot_product_attention`, one call for all heads. Padded positions (from the incoming
    Keras mask, or an explicit `padding_mask`) are never attended to, so appending padding leaves
    the outputs at real positions unchanged.

    Under a mixed precision policy the dense layers run in the compute dtype (bfloat16 or
    float16), while the attention softmax, both residual sums and both layer norms are computed
    in float32; the output is in the compute dtype, the attention weights are float32.

    Args:
        embed_dim: size of the input and output vectors.
        num_heads: number of attention heads.
        ff_dim: hidden size of the feed-forward net.
        dropout: dropout rate after attention and after the feed-forward net.
        key_dim: size of each head's queries and keys (and values);
            defaults to `embed_dim // num_heads`.
        activation: activation of the feed-forward hidden layer.
        layer_norm_epsilon: epsilon of both layer norms.
        normalize_first: pre-norm instead of post-norm (see above).
        locality: locality self-attention (Lee et al. 2021, for ViTs on small datasets): no
            token attends to itself, and the softmax temperature is a weight, learned, that
            starts at the usual `sqrt(key_dim)`.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call args:
        inputs: `[batch, seq, embed_dim]`.
        padding_mask: optional `[batch, seq]`, True at real tokens. Defaults to the Keras
            mask that arrives with `inputs`.
        training: whether dropout is active.
        return_attention_scores: also return the attention weights
            `[batch, num_heads, query, key]` (float32 under every policy).

    Example:
    >>> block = TransformerBlock(embed_dim=8, num_heads=2, ff_dim=16)
    >>> x = tf.random.normal([3, 5, 8])
    >>> y, scores = block(x, return_attention_scores=True)
    >>> y.shape, scores.shape
    (TensorShape([3, 5, 8]), TensorShape([3, 2, 5, 5]))
    """

    def __init__(
        self,
        embed_dim,
        num_heads,
        ff_dim,
        dropout=0.1,
        key_dim=None,
        activation="relu",
        layer_norm_epsilon=1e-6,
        normalize_first=False,
        locality=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        arguments = (embed_dim, num_heads, ff_dim, dropout, key_dim, layer_norm_epsilon, normalize_first, locality)
        keep_arguments(self, block_arguments(*arguments))
        self.activation = keras.activations.get(activation)
        self.supports_masking = True

    def build(self, input_shape):
        if input_shape[-1] != self.embed_dim:
            raise ValueError(
                f"{self.name}: inputs have {input_shape[-1]} features, expected embed_dim={self.embed_dim}"
            )
        projection = self.num_heads * self.key_dim
        self.query_dense, self.key_dense, self.value_dense, self.output_dense = self._attention_projections(
            "query", "key", "value", "attention_output"
        )
        self.ff_hidden = keras.layers.Dense(
            self.ff_dim, activation=self.activation, name="ff_hidden", dtype=self.dtype_policy
        )
        self.ff_output = keras.layers.Dense(self.embed_dim, name="ff_output", dtype=self.dtype_policy)
        # float32 layer norms under any policy: a mean and variance over embed_dim features lose
        # most of their digits in 16 bits (and Keras's fused path, taken from epsilon 1e-5 up,
        # would otherwise scale and shift in the compute dtype).
        self.attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="attention_layer_norm", dtype="float32"
        )
        self.ff_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="ff_layer_norm", dtype="float32"
        )
        self.attention_dropout = keras.layers.Dropout(self.dropout)
        self.ff_dropout = keras.layers.Dropout(self.dropout)

        input_shape = tf.TensorShape(input_shape)
        sublayer_input_shapes = {
            self.query_dense: input_shape,
            self.key_dense: input_shape,
            self.value_dense: input_shape,
            self.output_dense: input_shape[:-1].concatenate([projection]),
            self.ff_hidden: input_shape,
            self.ff_output: input_shape[:-1].concatenate([self.ff_dim]),
            self.attention_layer_norm: input_shape,
            self.ff_layer_norm: input_shape,
        }
        for sublayer, shape in sublayer_input_shapes.items():
            # Scoped so weights read "block_0/query/kernel", not a bare "kernel".
            with tf.name_scope(sublayer.name):
                sublayer.build(shape)
        if self.locality:
            self.temperature = self.add_weight(
                name="temperature",
                shape=(),
                initializer=keras.initializers.Constant(math.sqrt(self.key_dim)),
                dtype="float32",
                experimental_autocast=False,  # float32 under mixed precision, as the logits it divides
            )
        super().build(input_shape)

    def _attention_projections(self, query_name, key_name, value_name, output_name):
        """The four Dense layers of one multi-head attention, named as given: the query, key and
        value projections to `num_heads * key_dim` features, and the output projection back to
        `embed_dim`."""
        projection = self.num_heads * self.key_dim
        return (
            keras.layers.Dense(projection, name=query_name, dtype=self.dtype_policy),
            keras.layers.Dense(projection, name=key_name, dtype=self.dtype_policy),
            keras.layers.Dense(projection, name=value_name, dtype=self.dtype_policy),
            keras.layers.Dense(self.embed_dim, name=output_name, dtype=self.dtype_policy),
        )

    def _split_heads(self, x):
        return split_heads(TF_OPS, x, self.num_heads, self.key_dim)

    def _merge_heads(self, x):
        return merge_heads(TF_OPS, x, self.num_heads, self.key_dim)

    def _add_and_norm(self, layer_norm, x, update):
        """`layer_norm(x + update)` in float32, in the compute dtype (a post-norm residual)."""
        return residual(TF_OPS, layer_norm, x, update, False, self.compute_dtype)

    def _sublayer_input(self, layer_norm, x):
        return sublayer_input(TF_OPS, layer_norm, x, self.normalize_first, self.compute_dtype)

    def _residual(self, layer_norm, x, update):
        return residual(TF_OPS, layer_norm, x, update, self.normalize_first, self.compute_dtype)

    def call(self, inputs, padding_mask=None, mask=None, training=None, return_attention_scores=False):
        if padding_mask is None:
            padding_mask = mask
        attention_mask = None
        if padding_mask is not None:
            # [batch, key] -> [batch, 1 (heads), 1 (queries), key]
            attention_mask = tf.cast(padding_mask, tf.bool)[:, None, None, :]
        scale = None
        if self.locality:
            off_diagonal = locality_mask(TF_OPS, tf.shape(inputs)[1])[None, None]
            attention_mask = off_diagonal if attention_mask is None else tf.logical_and(attention_mask, off_diagonal)
            scale = 1.0 / self.temperature

        h = self._sublayer_input(self.attention_layer_norm, inputs)
        q = self._split_heads(self.query_dense(h))
        k = self._split_heads(self.key_dense(h))
        v = self._split_heads(self.value_dense(h))
        attended, scores = scaled_dot_product_attention(q, k, v, mask=attention_mask, scale=scale)
        attention_output = self.output_dense(self._merge_heads(attended))
        attention_output = self.attention_dropout(attention_output, training=training)
        x = self._residual(self.attention_layer_norm, inputs, attention_output)

        ff = self.ff_output(self.ff_hidden(self._sublayer_input(self.ff_layer_norm, x)))
        ff = self.ff_dropout(ff, training=training)
        outputs = self._residual(self.ff_layer_norm, x, ff)
        if return_attention_scores:
            return outputs, scores
        return outputs

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        return {**super().get_config(), **config_of(self), "activation": keras.activations.serialize(self.activation)}
