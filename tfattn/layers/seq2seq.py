"""Attention layers for encoder-decoder models: additive (Bahdanau) attention and the transformer
decoder block, both able to decode one step at a time from a cache."""

import tensorflow as tf
import tf_keras as keras

from tfattn.attention_math import causal_mask, masked_softmax
from tfattn.layer_arguments import additive_arguments, check_decoder_block, config_of, keep_arguments
from tfattn.layers.tf_ops import TF_OPS
from tfattn.layers.transformer import TransformerBlock, scaled_dot_product_attention

__all__ = ["AdditiveAttention", "BahdanauAttention", "TransformerDecoderBlock"]


@keras.saving.register_keras_serializable(package="tfattn")
class AdditiveAttention(keras.layers.Layer):
    """Additive (Bahdanau) attention: `score(q, k) = v^T tanh(W1 q + W2 k)`, softmax over the keys.

    Unlike `keras.layers.AdditiveAttention`, which scores `v^T tanh(q + k)` with no projections
    (so queries and keys must already share a space and a size), the query and the keys are
    projected to `units` features each, as in Bahdanau et al. (2015): a GRU decoder's state of one
    size can attend to a bidirectional encoder's outputs of another.

    Args:
        units: size of the space where queries and keys are added (`W1`, `W2` outputs, `v` input).
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call args:
        query: `[batch, query_dim]` (one query per row) or `[batch, queries, query_dim]`.
        keys: `[batch, keys, key_dim]`; also the values averaged, unless `values` is given.
        values: optional `[batch, keys, value_dim]`.
        key_mask: optional `[batch, keys]`, True at keys that may be attended to.
        projected_keys: optional `W2 keys` from `project_keys`, to compute it once per source
            sentence instead of once per decoding step.

    Returns:
        `(context, weights)`: the weighted average of the values, `[batch, value_dim]` (or
        `[batch, queries, value_dim]`), and the weights `[batch, keys]` (or `[batch, queries,
        keys]`), float32, each row summing to 1 over the unmasked keys.

    Example:
    >>> attention = AdditiveAttention(units=4)
    >>> context, weights = attention(tf.ones([2, 3]), tf.random.normal([2, 5, 6]))
    >>> context.shape, weights.shape
    (TensorShape([2, 6]), TensorShape([2, 5]))
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        keep_arguments(self, additive_arguments(units))

    def build(self, query_shape):
        # One bias, on the query side: a bias in W2 would add the same vector to every key's
        # sum, and a bias in v the same number to every score (which softmax ignores).
        self.query_dense = keras.layers.Dense(self.units, name="query", dtype=self.dtype_policy)
        self.key_dense = keras.layers.Dense(self.units, use_bias=False, name="key", dtype=self.dtype_policy)
        self.score_dense = keras.layers.Dense(1, use_bias=False, name="score", dtype=self.dtype_policy)
        query_shape = tf.TensorShape(query_shape)
        with tf.name_scope(self.query_dense.name):
            self.query_dense.build(query_shape)
        with tf.name_scope(self.score_dense.name):
            self.score_dense.build(query_shape[:-1].concatenate([self.units]))
        # key_dense builds on its first call: Keras gives `build` the query's shape only, and
        # the keys may have another width (a bidirectional encoder's, twice the decoder's).
        super().build(query_shape)

    def project_keys(self, keys):
        """`W2 keys`, `[batch, keys, units]`: the part of the scores that no query changes."""
        if not self.built:
            raise ValueError(f"{self.name}: call the layer once (or build it) before project_keys")
        return self.key_dense(keys)

    def call(self, query, keys, values=None, key_mask=None, projected_keys=None):
        single_query = query.shape.rank == 2
        if single_query:
            query = query[:, None, :]
        if projected_keys is None:
            projected_keys = self.key_dense(keys)
        # [batch, queries, 1, units] + [batch, 1, keys, units] -> scores [batch, queries, keys]
        hidden = tf.tanh(self.query_dense(query)[:, :, None, :] + projected_keys[:, None, :, :])
        logits = tf.squeeze(self.score_dense(hidden), -1)
        weights = masked_softmax(TF_OPS, logits, None if key_mask is None else tf.cast(key_mask, tf.bool)[:, None, :])
        values = tf.cast(keys if values is None else values, self.compute_dtype)
        context = tf.matmul(tf.cast(weights, values.dtype), values)
        if single_query:
            return context[:, 0], weights[:, 0]
        return context, weights

    def get_config(self):
        return {**super().get_config(), **config_of(self)}


# The name the course and the literature use.
BahdanauAttention = AdditiveAttention


@keras.saving.register_keras_serializable(package="tfattn")
class TransformerDecoderBlock(TransformerBlock):
    """Post-norm transformer decoder block: causal self-attention, cross-attention over the
    encoder's outputs (unless `cross_attention=False`: a GPT's block), then a feed-forward net,
    each followed by a residual sum and a layer norm.

    Position i attends to target positions 0..i only (and not to padding), and to the unmasked
    source positions, so changing a later target token never changes an earlier output. The
    self-attention, feed-forward and norm sublayers and their mixed precision behaviour are
    `TransformerBlock`'s; cross-attention adds its own projections and norm.

    For decoding, `start_cache` and `decode_step` compute new positions from a cache of the past
    positions' keys and values (and the encoder outputs' keys and values, projected once),
    giving the same outputs as `call` on the whole prefix.

    Args:
        embed_dim, num_heads, ff_dim, dropout, key_dim, activation, layer_norm_epsilon:
            as `TransformerBlock`.
        cross_attention: whether the block attends to an encoder's outputs (an encoder-decoder's
            block) or not (a decoder-only language model's block).
        **kwargs: standard layer arguments.

    Call args:
        inputs: target vectors `[batch, target_len, embed_dim]`.
        encoder_outputs: `[batch, source_len, embed_dim]` (None without cross-attention).
        padding_mask: optional `[batch, target_len]`, True at real target tokens (default: the
            Keras mask of `inputs`).
        encoder_padding_mask: optional `[batch, source_len]`, True at real source tokens.
        training: whether dropout is active.
        return_attention_scores: also return the self- and cross-attention weights,
            `[batch, heads, target_len, target_len]` and `[batch, heads, target_len, source_len]`
            (None without cross-attention).

    Example:
    >>> block = TransformerDecoderBlock(embed_dim=8, num_heads=2, ff_dim=16)
    >>> target, source = tf.random.normal([2, 4, 8]), tf.random.normal([2, 6, 8])
    >>> y, self_scores, cross_scores = block(target, source, return_attention_scores=True)
    >>> y.shape, self_scores.shape, cross_scores.shape
    (TensorShape([2, 4, 8]), TensorShape([2, 2, 4, 4]), TensorShape([2, 2, 4, 6]))
    >>> gpt_block = TransformerDecoderBlock(embed_dim=8, num_heads=2, ff_dim=16, cross_attention=False)
    >>> gpt_block(target).shape
    TensorShape([2, 4, 8])
    """

    def __init__(self, embed_dim, num_heads, ff_dim, cross_attention=True, **kwargs):
        super().__init__(embed_dim, num_heads, ff_dim, **kwargs)
        check_decoder_block(self)
        self.cross_attention = bool(cross_attention)

    def build(self, input_shape, encoder_outputs_shape=None):
        super().build(input_shape)
        if not self.cross_attention:
            return
        input_shape = tf.TensorShape(input_shape)
        encoder_shape = tf.TensorShape(encoder_outputs_shape) if encoder_outputs_shape is not None else input_shape
        projection = self.num_heads * self.key_dim
        self.cross_query_dense, self.cross_key_dense, self.cross_value_dense, self.cross_output_dense = (
            self._attention_projections("cross_query", "cross_key", "cross_value", "cross_output")
        )
        self.cross_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="cross_layer_norm", dtype="float32"
        )
        self.cross_dropout = keras.layers.Dropout(self.dropout)
        for sublayer, shape in (
            (self.cross_query_dense, input_shape),
            (self.cross_key_dense, encoder_shape),
            (self.cross_value_dense, encoder_shape),
            (self.cross_output_dense, input_shape[:-1].concatenate([projection])),
            (self.cross_layer_norm, input_shape),
        ):
            with tf.name_scope(sublayer.name):
                sublayer.build(shape)

    def _sublayers(self, x, self_keys, self_values, self_mask, cross_keys, cross_values, cross_mask, training):
        """The block's sublayers on queries `x`, given each attention's keys and values
        (already split into heads) and masks. Returns `(outputs, self_scores, cross_scores)`
        (cross_scores None without cross-attention)."""
        q = self._split_heads(self.query_dense(x))
        attended, self_scores = scaled_dot_product_attention(q, self_keys, self_values, mask=self_mask)
        update = self.attention_dropout(self.output_dense(self._merge_heads(attended)), training=training)
        x = self._add_and_norm(self.attention_layer_norm, x, update)

        cross_scores = None
        if self.cross_attention:
            q = self._split_heads(self.cross_query_dense(x))
            attended, cross_scores = scaled_dot_product_attention(q, cross_keys, cross_values, mask=cross_mask)
            update = self.cross_dropout(self.cross_output_dense(self._merge_heads(attended)), training=training)
            x = self._add_and_norm(self.cross_layer_norm, x, update)

        ff = self.ff_dropout(self.ff_output(self.ff_hidden(x)), training=training)
        return self._add_and_norm(self.ff_layer_norm, x, ff), self_scores, cross_scores

    @staticmethod
    def _key_mask(padding_mask):
        # [batch, keys] -> [batch, 1 (heads), 1 (queries), keys]
        return None if padding_mask is None else tf.cast(padding_mask, tf.bool)[:, None, None, :]

    def _cross_keys_and_values(self, encoder_outputs):
        if not self.cross_attention:
            return None, None
        if encoder_outputs is None:
            raise ValueError(f"{self.name}: a block with cross-attention needs encoder_outputs")
        return (
            self._split_heads(self.cross_key_dense(encoder_outputs)),
            self._split_heads(self.cross_value_dense(encoder_outputs)),
        )

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
        if padding_mask is None:
            padding_mask = mask
        length = tf.shape(inputs)[1]
        causal = causal_mask(TF_OPS, length, length)[None, None]
        self_mask = causal if padding_mask is None else tf.logical_and(causal, self._key_mask(padding_mask))
        outputs, self_scores, cross_scores = self._sublayers(
            inputs,
            self._split_heads(self.key_dense(inputs)),
            self._split_heads(self.value_dense(inputs)),
            self_mask,
            *self._cross_keys_and_values(encoder_outputs),
            self._key_mask(encoder_padding_mask),
            training,
        )
        if return_attention_scores:
            return outputs, self_scores, cross_scores
        return outputs

    def start_cache(self, encoder_outputs=None, batch_size=None):
        """The cache before the first decoding step: no past target positions, and the encoder
        outputs' keys and values `[batch, heads, source_len, key_dim]`, projected once (a block
        without cross-attention takes `batch_size` instead)."""
        if not self.built:
            shape = encoder_outputs.shape if encoder_outputs is not None else [None, None, self.embed_dim]
            self.build(shape, shape)
        batch = tf.shape(encoder_outputs)[0] if encoder_outputs is not None else batch_size
        empty = tf.zeros([batch, self.num_heads, 0, self.key_dim], self.compute_dtype)
        cache = {"key": empty, "value": empty}
        if self.cross_attention:
            cache["cross_key"], cache["cross_value"] = self._cross_keys_and_values(encoder_outputs)
        return cache

    def decode_step(self, inputs, cache, encoder_padding_mask=None, padding_mask=None):
        """The outputs of new positions `inputs` `[batch, new, embed_dim]` that follow the cached
        ones (a decoder passes one per step; a language model its whole prompt first), attending
        to the cached positions and to each other causally. `padding_mask` `[batch, cached + new]`,
        if given, is False at positions no query may attend to (a left-padded prompt's padding).

        Returns:
            `(outputs [batch, new, embed_dim], new_cache, scores)`; `new_cache` holds the new
            positions' keys and values too (it grows along axis 2). `scores` is the attention
            that explains a step: over the source `[batch, heads, new, source_len]` with
            cross-attention, else over every position so far `[batch, heads, new, cached + new]`.
        """
        keys = tf.concat([cache["key"], self._split_heads(self.key_dense(inputs))], axis=2)
        values = tf.concat([cache["value"], self._split_heads(self.value_dense(inputs))], axis=2)
        self_mask = causal_mask(TF_OPS, tf.shape(inputs)[1], tf.shape(keys)[2])[None, None]
        if padding_mask is not None:
            self_mask = tf.logical_and(self_mask, self._key_mask(padding_mask))
        outputs, self_scores, cross_scores = self._sublayers(
            inputs,
            keys,
            values,
            self_mask,
            cache.get("cross_key"),
            cache.get("cross_value"),
            self._key_mask(encoder_padding_mask),
            training=False,
        )
        scores = cross_scores if self.cross_attention else self_scores
        return outputs, {**cache, "key": keys, "value": values}, scores

    def compute_output_shape(self, input_shape, encoder_outputs_shape=None):
        return tf.TensorShape(input_shape)

    def get_config(self):
        return {**super().get_config(), "cross_attention": self.cross_attention}
