"""tfattn's building blocks as Keras 3 layers: the Keras that `from tensorflow import keras` gives.

Same names, arguments, masks and `return_attention_scores` as the tf-keras layers of
`tfattn.layers`, and the same math (`tfattn.attention_math`, computed here with `keras.ops`), so
the two give the same outputs for the same weights. Written with `keras.ops` only: they run on
any Keras 3 backend (TensorFlow and JAX are tested). Registered for serialization as "tfattn>...",
so `.keras` files of models built from them load with `keras.saving.load_model`.

Under a mixed precision policy they behave as the tf-keras layers: dense layers in the compute
dtype, attention softmax, residual sums and layer norms in float32, attention weights float32.

Decoding one step at a time from a cache (`start_cache`, `decode_step`) and `FitTokenIds` (ragged
TensorFlow input) stay with the tf-keras layers, which tfattn's tasks use.
"""

import math

import keras
from keras import ops

from tfattn.attention_math import (
    attend,
    bigram_buckets,
    causal_mask,
    locality_mask,
    masked_softmax,
    merge_heads,
    residual,
    sinusoidal_position_encoding,
    split_heads,
    sublayer_input,
)
from tfattn.layer_arguments import (
    additive_arguments,
    bigram_arguments,
    block_arguments,
    check_decoder_block,
    config_of,
    embedding_arguments,
    fresh_initializer,
    keep_arguments,
)

__all__ = [
    "AdditiveAttention",
    "BahdanauAttention",
    "HashedBigramEmbedding",
    "TokenAndPositionEmbedding",
    "TransformerBlock",
    "TransformerDecoderBlock",
    "scaled_dot_product_attention",
    "sinusoidal_position_encoding",
]


def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
    """Softmax attention `softmax(q @ k^T * scale) @ v` with `keras.ops`; the arguments and results
    of `tfattn.layers.scaled_dot_product_attention` (weights float32, outputs in v's dtype).

    Example:
    >>> x = keras.random.normal([2, 7, 16])
    >>> out, weights = scaled_dot_product_attention(x, x, x)
    >>> tuple(out.shape), tuple(weights.shape)
    ((2, 7, 16), (2, 7, 7))
    """
    return attend(ops, q, k, v, mask=mask, scale=scale)


@keras.saving.register_keras_serializable(package="tfattn")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a position embedding, for inputs of any length up to `max_length`;
    token id 0 is padding and, with `mask_zero=True`, masked downstream.

    Args:
        vocab_size: number of token ids (id 0 is padding).
        max_length: longest sequence the layer accepts (checked when the length is known while
            building the model; a longer input at run time is an error on TensorFlow).
        embed_dim: size of the output vectors.
        positional: `"learned"` (a trainable table) or `"sinusoidal"` (a fixed table).
        mask_zero: emit a mask that is False where the token id is 0.
        embeddings_initializer: initializer of the token (and learned position) tables.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call args:
        token_ids: int ids `[batch, length]`.
        start_position: the position of the first column (a decoder fed one token per step).
        positions: optional `[batch, length]` position of each token (left-padded prompts).

    Example:
    >>> layer = TokenAndPositionEmbedding(vocab_size=100, max_length=16, embed_dim=8)
    >>> ids = keras.ops.convert_to_tensor([[5, 9, 2, 0, 0]])
    >>> tuple(layer(ids).shape)
    (1, 5, 8)
    >>> keras.ops.convert_to_numpy(layer.compute_mask(ids))
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
        length = input_shape[-1]
        if length is not None and length > self.max_length:
            raise ValueError(f"{self.name}: inputs of {length} tokens are longer than max_length={self.max_length}")
        self.token_embeddings = self.add_weight(
            name="token_embeddings", shape=(self.vocab_size, self.embed_dim), initializer=self._fresh_initializer()
        )
        if self.positional == "learned":
            self.position_embeddings = self.add_weight(
                name="position_embeddings",
                shape=(self.max_length, self.embed_dim),
                initializer=self._fresh_initializer(),
            )
        else:
            self.position_embeddings = ops.convert_to_tensor(
                sinusoidal_position_encoding(self.max_length, self.embed_dim)
            )

    def call(self, token_ids, start_position=0, positions=None):
        token_ids = ops.cast(token_ids, "int32")
        tokens = ops.take(self.token_embeddings, token_ids, axis=0)
        if positions is None:
            positions = start_position + ops.arange(ops.shape(token_ids)[-1])
        position_vectors = ops.take(self.position_embeddings, ops.cast(positions, "int32"), axis=0)
        return tokens + ops.cast(position_vectors, tokens.dtype)

    def compute_mask(self, token_ids, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(token_ids, 0)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.embed_dim)

    def get_config(self):
        return {
            **super().get_config(),
            **config_of(self),
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


@keras.saving.register_keras_serializable(package="tfattn")
class HashedBigramEmbedding(keras.layers.Layer):
    """A vector for each pair of neighbouring tokens, hashed into `buckets` rows (fastText's
    bigrams); the first position and padding get zeros. Added to the token embeddings.

    Args:
        buckets: rows of the table; distinct bigrams may share one.
        embed_dim: size of the vectors.
        embeddings_initializer: initializer of the table.
        **kwargs: standard layer arguments.

    Example:
    >>> layer = HashedBigramEmbedding(buckets=64, embed_dim=4)
    >>> vectors = layer(keras.ops.convert_to_tensor([[5, 9, 2, 0]]))
    >>> tuple(vectors.shape), float(keras.ops.sum(keras.ops.abs(vectors[0, 0])))
    ((1, 4, 4), 0.0)
    """

    # The tf-keras layer's multiplier: the same pairs land in the same buckets.
    MULTIPLIER = 1_000_003

    def __init__(self, buckets, embed_dim, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        keep_arguments(self, bigram_arguments(buckets, embed_dim))
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.bigram_embeddings = self.add_weight(
            name="bigram_embeddings", shape=(self.buckets, self.embed_dim), initializer=self.embeddings_initializer
        )

    def bucket_ids(self, token_ids):
        """The bucket of each position's (previous, current) pair; -1 where there is none."""
        return bigram_buckets(ops, token_ids, self.buckets, self.MULTIPLIER)

    def call(self, token_ids):
        buckets = self.bucket_ids(token_ids)
        vectors = ops.take(self.bigram_embeddings, ops.maximum(buckets, 0), axis=0)
        return vectors * ops.cast(buckets >= 0, vectors.dtype)[..., None]

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.embed_dim)

    def get_config(self):
        return {
            **super().get_config(),
            **config_of(self),
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


@keras.saving.register_keras_serializable(package="tfattn")
class TransformerBlock(keras.layers.Layer):
    """Transformer encoder block: multi-head self-attention, then a feed-forward net, post-norm
    `x -> LayerNorm(x + Dropout(SelfAttention(x))) -> LayerNorm(. + Dropout(FFN(.)))`, or with
    `normalize_first` pre-norm `x -> x + Dropout(SelfAttention(LayerNorm(x))) -> . +
    Dropout(FFN(LayerNorm(.)))`. Padded positions (the incoming Keras mask, or `padding_mask`)
    are never attended to.

    Args:
        embed_dim: size of the input and output vectors.
        num_heads: number of attention heads.
        ff_dim: hidden size of the feed-forward net.
        dropout: dropout rate after attention and after the feed-forward net.
        key_dim: size of each head's queries, keys and values (default `embed_dim // num_heads`).
        activation: activation of the feed-forward hidden layer.
        layer_norm_epsilon: epsilon of both layer norms.
        normalize_first: pre-norm instead of post-norm.
        locality: locality self-attention: no token attends to itself, and the softmax
            temperature is a learned weight starting at `sqrt(key_dim)`.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call args:
        inputs: `[batch, seq, embed_dim]`.
        padding_mask: optional `[batch, seq]`, True at real tokens (default: the Keras mask).
        training: whether dropout is active.
        return_attention_scores: also return the weights `[batch, num_heads, query, key]`.

    Example:
    >>> block = TransformerBlock(embed_dim=8, num_heads=2, ff_dim=16)
    >>> y, scores = block(keras.random.normal([3, 5, 8]), return_attention_scores=True)
    >>> tuple(y.shape), tuple(scores.shape)
    ((3, 5, 8), (3, 2, 5, 5))
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

    def _dense(self, units, name, **kwargs):
        return keras.layers.Dense(units, name=name, dtype=self.dtype_policy, **kwargs)

    def _layer_norm(self, name):
        # float32 under any policy, as in the tf-keras block: a mean and variance over embed_dim
        # features lose most of their digits in 16 bits.
        return keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name=name, dtype="float32")

    def build(self, input_shape):
        if input_shape[-1] != self.embed_dim:
            raise ValueError(
                f"{self.name}: inputs have {input_shape[-1]} features, expected embed_dim={self.embed_dim}"
            )
        self.query_dense, self.key_dense, self.value_dense, self.output_dense = self._attention_projections(
            "query", "key", "value", "attention_output", input_shape, input_shape
        )
        self.ff_hidden = self._dense(self.ff_dim, "ff_hidden", activation=self.activation)
        self.ff_output = self._dense(self.embed_dim, "ff_output")
        self.attention_layer_norm = self._layer_norm("attention_layer_norm")
        self.ff_layer_norm = self._layer_norm("ff_layer_norm")
        self.attention_dropout = keras.layers.Dropout(self.dropout)
        self.ff_dropout = keras.layers.Dropout(self.dropout)
        self.ff_hidden.build(input_shape)
        self.ff_output.build((*input_shape[:-1], self.ff_dim))
        self.attention_layer_norm.build(input_shape)
        self.ff_layer_norm.build(input_shape)
        if self.locality:
            # float32 under any policy (autocast off), as the logits it divides.
            self.temperature = self.add_weight(
                name="temperature",
                shape=(),
                initializer=keras.initializers.Constant(math.sqrt(self.key_dim)),
                dtype="float32",
                autocast=False,
            )

    def _attention_projections(self, query_name, key_name, value_name, output_name, query_shape, key_shape):
        """The four built Dense layers of one multi-head attention: query, key and value
        projections to `num_heads * key_dim` features, the output projection to `embed_dim`."""
        projection = self.num_heads * self.key_dim
        layers = [self._dense(projection, name) for name in (query_name, key_name, value_name)]
        layers.append(self._dense(self.embed_dim, output_name))
        for layer, shape in zip(layers, (query_shape, key_shape, key_shape, (*query_shape[:-1], projection))):
            layer.build(shape)
        return layers

    def _split_heads(self, x):
        return split_heads(ops, x, self.num_heads, self.key_dim)

    def _merge_heads(self, x):
        return merge_heads(ops, x, self.num_heads, self.key_dim)

    def _add_and_norm(self, layer_norm, x, update):
        """`layer_norm(x + update)` in float32, in the compute dtype (a post-norm residual)."""
        return residual(ops, layer_norm, x, update, False, self.compute_dtype)

    def _sublayer_input(self, layer_norm, x):
        return sublayer_input(ops, layer_norm, x, self.normalize_first, self.compute_dtype)

    def _residual(self, layer_norm, x, update):
        return residual(ops, layer_norm, x, update, self.normalize_first, self.compute_dtype)

    def _attention_sublayer(self, x, keys, values, mask, training, queries=None, scale=None):
        """Self-attention of `queries` (default `x`) over `keys`/`values` (already split into
        heads), with its dropout and residual connection to `x`. Returns `(outputs, scores)`."""
        queries = x if queries is None else queries
        attended, scores = attend(ops, self._split_heads(self.query_dense(queries)), keys, values, mask, scale)
        update = self.attention_dropout(self.output_dense(self._merge_heads(attended)), training=training)
        return self._residual(self.attention_layer_norm, x, update), scores

    def _feed_forward_sublayer(self, x, training):
        hidden = self.ff_hidden(self._sublayer_input(self.ff_layer_norm, x))
        update = self.ff_dropout(self.ff_output(hidden), training=training)
        return self._residual(self.ff_layer_norm, x, update)

    @staticmethod
    def _key_mask(padding_mask):
        # [batch, keys] -> [batch, 1 (heads), 1 (queries), keys]
        return None if padding_mask is None else ops.cast(padding_mask, "bool")[:, None, None, :]

    def call(self, inputs, padding_mask=None, mask=None, training=None, return_attention_scores=False):
        padding_mask = mask if padding_mask is None else padding_mask
        attention_mask, scale = self._key_mask(padding_mask), None
        if self.locality:
            off_diagonal = locality_mask(ops, ops.shape(inputs)[1])[None, None]
            attention_mask = off_diagonal if attention_mask is None else ops.logical_and(attention_mask, off_diagonal)
            scale = 1.0 / self.temperature
        h = self._sublayer_input(self.attention_layer_norm, inputs)
        keys, values = self._split_heads(self.key_dense(h)), self._split_heads(self.value_dense(h))
        x, scores = self._attention_sublayer(inputs, keys, values, attention_mask, training, queries=h, scale=scale)
        outputs = self._feed_forward_sublayer(x, training)
        return (outputs, scores) if return_attention_scores else outputs

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        return {**super().get_config(), **config_of(self), "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="tfattn")
class TransformerDecoderBlock(TransformerBlock):
    """Post-norm transformer decoder block: causal self-attention, cross-attention over an
    encoder's outputs (unless `cross_attention=False`: a GPT's block), then a feed-forward net.
    Position i attends to target positions 0..i only (and not to padding).

    Args:
        embed_dim, num_heads, ff_dim, dropout, key_dim, activation, layer_norm_epsilon:
            as `TransformerBlock`.
        cross_attention: whether the block attends to an encoder's outputs.
        **kwargs: standard layer arguments.

    Call args:
        inputs: target vectors `[batch, target_len, embed_dim]`.
        encoder_outputs: `[batch, source_len, embed_dim]` (None without cross-attention).
        padding_mask: optional `[batch, target_len]` (default: the Keras mask of `inputs`).
        encoder_padding_mask: optional `[batch, source_len]`, True at real source tokens.
        training: whether dropout is active.
        return_attention_scores: also return the self- and cross-attention weights (the latter
            None without cross-attention).

    Example:
    >>> block = TransformerDecoderBlock(embed_dim=8, num_heads=2, ff_dim=16, cross_attention=False)
    >>> y, self_scores, _ = block(keras.random.normal([2, 4, 8]), return_attention_scores=True)
    >>> tuple(y.shape), tuple(self_scores.shape)
    ((2, 4, 8), (2, 2, 4, 4))
    """

    def __init__(self, embed_dim, num_heads, ff_dim, cross_attention=True, **kwargs):
        super().__init__(embed_dim, num_heads, ff_dim, **kwargs)
        check_decoder_block(self)
        self.cross_attention = bool(cross_attention)

    def build(self, inputs_shape, encoder_outputs_shape=None):
        super().build(inputs_shape)
        if not self.cross_attention:
            return
        encoder_shape = inputs_shape if encoder_outputs_shape is None else encoder_outputs_shape
        self.cross_query_dense, self.cross_key_dense, self.cross_value_dense, self.cross_output_dense = (
            self._attention_projections(
                "cross_query", "cross_key", "cross_value", "cross_output", inputs_shape, encoder_shape
            )
        )
        self.cross_layer_norm = self._layer_norm("cross_layer_norm")
        self.cross_layer_norm.build(inputs_shape)
        self.cross_dropout = keras.layers.Dropout(self.dropout)

    def call(
        self,
        inputs,
        encoder_outputs=None,
        padding_mask=None,
        encoder_padding_mask=None,
        mask=None,
        training=None,
        return_attention_scores=False,
    ):
        padding_mask = mask if padding_mask is None else padding_mask
        length = ops.shape(inputs)[1]
        self_mask = causal_mask(ops, length, length)[None, None]
        if padding_mask is not None:
            self_mask = ops.logical_and(self_mask, self._key_mask(padding_mask))
        keys, values = self._split_heads(self.key_dense(inputs)), self._split_heads(self.value_dense(inputs))
        x, self_scores = self._attention_sublayer(inputs, keys, values, self_mask, training)

        cross_scores = None
        if self.cross_attention:
            if encoder_outputs is None:
                raise ValueError(f"{self.name}: a block with cross-attention needs encoder_outputs")
            attended, cross_scores = attend(
                ops,
                self._split_heads(self.cross_query_dense(x)),
                self._split_heads(self.cross_key_dense(encoder_outputs)),
                self._split_heads(self.cross_value_dense(encoder_outputs)),
                mask=self._key_mask(encoder_padding_mask),
            )
            update = self.cross_dropout(self.cross_output_dense(self._merge_heads(attended)), training=training)
            x = self._add_and_norm(self.cross_layer_norm, x, update)

        outputs = self._feed_forward_sublayer(x, training)
        return (outputs, self_scores, cross_scores) if return_attention_scores else outputs

    def get_config(self):
        return {**super().get_config(), "cross_attention": self.cross_attention}


@keras.saving.register_keras_serializable(package="tfattn")
class AdditiveAttention(keras.layers.Layer):
    """Additive (Bahdanau) attention, `score(q, k) = v^T tanh(W1 q + W2 k)`, softmax over the
    keys; the query and the keys are projected to `units` features each, so they may differ in
    size.

    Args:
        units: size of the space where projected queries and keys are added.
        **kwargs: standard layer arguments.

    Call args:
        query: `[batch, query_dim]` or `[batch, queries, query_dim]`.
        keys: `[batch, keys, key_dim]`; also the values averaged, unless `values` is given.
        values: optional `[batch, keys, value_dim]`.
        key_mask: optional `[batch, keys]`, True at keys that may be attended to.

    Returns:
        `(context, weights)`: the weighted average of the values and the float32 weights.

    Example:
    >>> attention = AdditiveAttention(units=4)
    >>> context, weights = attention(keras.ops.ones([2, 3]), keras.random.normal([2, 5, 6]))
    >>> tuple(context.shape), tuple(weights.shape)
    ((2, 6), (2, 5))
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        keep_arguments(self, additive_arguments(units))

    def build(self, query_shape, keys_shape=None):
        # One bias, on the query side, as in the tf-keras layer: a key bias would add the same
        # vector to every sum, a score bias the same number to every logit.
        self.query_dense = keras.layers.Dense(self.units, name="query", dtype=self.dtype_policy)
        self.key_dense = keras.layers.Dense(self.units, use_bias=False, name="key", dtype=self.dtype_policy)
        self.score_dense = keras.layers.Dense(1, use_bias=False, name="score", dtype=self.dtype_policy)
        self.query_dense.build(query_shape)
        self.score_dense.build((*query_shape[:-1], self.units))
        if keys_shape is not None:
            self.key_dense.build(keys_shape)

    def call(self, query, keys, values=None, key_mask=None):
        single_query = len(query.shape) == 2
        if single_query:
            query = query[:, None, :]
        # [batch, queries, 1, units] + [batch, 1, keys, units] -> logits [batch, queries, keys]
        hidden = ops.tanh(self.query_dense(query)[:, :, None, :] + self.key_dense(keys)[:, None, :, :])
        logits = ops.squeeze(self.score_dense(hidden), -1)
        mask = None if key_mask is None else ops.cast(key_mask, "bool")[:, None, :]
        weights = masked_softmax(ops, logits, mask)
        values = ops.cast(keys if values is None else values, self.compute_dtype)
        context = ops.matmul(ops.cast(weights, values.dtype), values)
        if single_query:
            return context[:, 0], weights[:, 0]
        return context, weights

    def get_config(self):
        return {**super().get_config(), **config_of(self)}


# The name the course and the literature use.
BahdanauAttention = AdditiveAttention
