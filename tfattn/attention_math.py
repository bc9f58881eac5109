"""The math of tfattn's attention layers, written once for both Kerases.

Every function computes with the array namespace `ops` it is given: `keras.ops` in the Keras 3
layers (`tfattn.keras3.layers`, any backend), `tfattn.layers.tf_ops.TF_OPS` in the tf-keras ones
(`tfattn.layers`, TensorFlow only). Both offer the same numpy-like functions under the same names,
so one formula serves both and the two layer families cannot drift apart. Nothing here imports a
framework: the module is safe to import under any Keras backend.
"""

import math

import numpy as np

__all__ = [
    "MASKED_LOGIT",
    "attend",
    "bigram_buckets",
    "causal_mask",
    "locality_mask",
    "masked_softmax",
    "merge_heads",
    "residual",
    "sinusoidal_position_encoding",
    "split_heads",
    "sublayer_input",
]

# Logit given to masked keys: exp() of it is 0 in float32, with no inf - inf = NaN.
MASKED_LOGIT = -1e9


def _dtype_name(x):
    """'float16', 'bfloat16', ... for a TensorFlow, numpy/JAX or torch tensor, or a Keras 3
    symbolic one (whose dtype is already a string)."""
    return getattr(x.dtype, "name", str(x.dtype)).removeprefix("torch.")


def masked_softmax(ops, logits, mask=None):
    """Softmax over the last axis in float32, with the logits where `mask` is False (if given;
    broadcastable) set to `MASKED_LOGIT`. Float32 whatever the logits' dtype: 8 bits of bfloat16
    mantissa would leave rows summing to 1 only within about 0.4%, and the mask value would
    overflow float16."""
    logits = ops.cast(logits, "float32")
    if mask is not None:
        logits = ops.where(ops.cast(mask, "bool"), logits, MASKED_LOGIT)
    return ops.softmax(logits, axis=-1)


def attend(ops, q, k, v, mask=None, scale=None):
    """Scaled dot-product attention, `softmax(q @ k^T * scale) @ v`; see
    `tfattn.layers.scaled_dot_product_attention` for the arguments. Returns `(outputs in v's
    dtype, float32 weights)`."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if "float16" in (_dtype_name(q), _dtype_name(k)):
        # float16 ends at 65504: sharp attention (large query and key vectors) would overflow the
        # logits to inf, and the softmax to NaN. bfloat16 has float32's range, so its faster
        # product is kept and only the logits are cast.
        q, k = ops.cast(q, "float32"), ops.cast(k, "float32")
    logits = ops.cast(ops.matmul(q, ops.swapaxes(k, -1, -2)), "float32") * scale
    weights = masked_softmax(ops, logits, mask)
    return ops.matmul(ops.cast(weights, _dtype_name(v)), v), weights


def split_heads(ops, x, num_heads, key_dim):
    """`[batch, seq, num_heads * key_dim]` -> `[batch, num_heads, seq, key_dim]`."""
    shape = ops.shape(x)
    return ops.transpose(ops.reshape(x, (shape[0], shape[1], num_heads, key_dim)), (0, 2, 1, 3))


def merge_heads(ops, x, num_heads, key_dim):
    """`[batch, num_heads, seq, key_dim]` -> `[batch, seq, num_heads * key_dim]`."""
    x = ops.transpose(x, (0, 2, 1, 3))
    shape = ops.shape(x)
    return ops.reshape(x, (shape[0], shape[1], num_heads * key_dim))


def sublayer_input(ops, layer_norm, x, normalize_first, dtype):
    """What a block's sublayer (attention, feed-forward) reads: `x` itself (post-norm), or
    `layer_norm(x)` computed in float32 (pre-norm), returned in `dtype`."""
    if not normalize_first:
        return x
    return ops.cast(layer_norm(ops.cast(x, "float32")), dtype)


def residual(ops, layer_norm, x, update, normalize_first, dtype):
    """`x` after a sublayer's `update`: `layer_norm(x + update)` (post-norm) or `x + update`
    (pre-norm). The sum and the norm are computed in float32 (a 16-bit mean and variance over
    the features lose most of their digits), the result returned in `dtype`, the compute dtype
    the next dense layer reads."""
    total = ops.cast(x, "float32") + ops.cast(update, "float32")
    return ops.cast(total if normalize_first else layer_norm(total), dtype)


def locality_mask(ops, length):
    """`[length, length]` booleans, False on the diagonal: locality self-attention (Lee et al.
    2021, "Vision Transformer for Small-Size Datasets") keeps each token from attending to itself,
    which otherwise draws much of its attention, so that it looks at the other tokens."""
    positions = ops.arange(length)
    return ops.not_equal(positions[:, None], positions[None, :])


def causal_mask(ops, queries, keys):
    """`[queries, keys]` booleans for the last `queries` of `keys` positions: query i sits at
    position `keys - queries + i` and may attend to the keys up to it (the whole sequence when
    `queries == keys`; one decoding step when `queries == 1`)."""
    query_positions = ops.arange(queries)[:, None] + (keys - queries)
    return ops.less_equal(ops.arange(keys)[None, :], query_positions)


def bigram_buckets(ops, token_ids, buckets, multiplier):
    """The bucket of each position's (previous, current) token pair, `(previous * multiplier +
    current) mod buckets`, int64; -1 where there is no pair (the first position, padding)."""
    token_ids = ops.cast(token_ids, "int64")
    previous = ops.pad(token_ids[:, :-1], ((0, 0), (1, 0)))
    found = (previous * multiplier + token_ids) % buckets
    has_pair = ops.logical_and(ops.not_equal(previous, 0), ops.not_equal(token_ids, 0))
    return ops.where(has_pair, found, -1)


def sinusoidal_position_encoding(max_length, depth):
    """The fixed sine/cosine position table of "Attention Is All You Need", `[max_length, depth]`
    float32 (numpy, for either Keras)."""
    positions = np.arange(max_length)[:, None]
    rates = 1.0 / np.power(10000.0, (2 * (np.arange(depth) // 2)) / depth)
    angles = positions * rates[None, :]
    table = np.zeros((max_length, depth), dtype=np.float32)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return table
