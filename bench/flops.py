"""Model FLOPs and this machine's dense matmul rate: how far a benchmark is from the limit.

Every speed benchmark that reports "fraction of peak" divides the model FLOP/s it achieved
(useful FLOPs of the model per example x examples/s; padding not counted) by the rate
`matmul_rate` measures in the same process for the same dtype.

FLOPs count the matrix products only (2 per multiply-add), as is usual for transformers:
per token and layer, the Q, K, V and output projections (4 h^2 multiply-adds) and the
feed-forward (2 h f); per layer and sequence, the attention scores and the weighted sum
(2 s^2 h). A training step costs three forward passes (forward, and the backward's two
products per matmul: activations' and weights' gradients).
"""

import time

import tensorflow as tf


def matmul_rate(dtype=tf.float32, size=2048, seconds=3.0):
    """GFLOP/s of a square `size` x `size` matmul in `dtype`, in a `tf.function`, best of
    repeated timed runs over about `seconds` (after one warm-up run)."""
    a = tf.random.stateless_normal([size, size], seed=[1, 2], dtype=tf.float32)
    b = tf.random.stateless_normal([size, size], seed=[3, 4], dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    repeats = 4

    @tf.function
    def products():
        # Chained so that no product can be skipped; `repeats` products per call.
        c = a
        for _ in range(repeats):
            c = tf.linalg.matmul(c, b) * tf.cast(1.0 / size, dtype)
        return c

    products().numpy()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        products().numpy()
        elapsed = time.perf_counter() - start
        best = max(best, 2.0 * size**3 * repeats / elapsed / 1e9)
    return best


def encoder_forward_flops(tokens, num_layers, hidden, ff_dim):
    """Forward FLOPs of one sequence of `tokens` real tokens through a transformer encoder."""
    per_token_layer = 2 * (4 * hidden * hidden + 2 * hidden * ff_dim)
    per_layer_attention = 2 * 2 * tokens * tokens * hidden
    return num_layers * (tokens * per_token_layer + per_layer_attention)


def training_flops(forward_flops):
    """FLOPs of one training step on an example whose forward pass costs `forward_flops`."""
    return 3 * forward_flops


# MiniLM-L6-H384 (the offline pretrained BERT): 6 layers, width 384, feed-forward 1536.
MINILM = {"num_layers": 6, "hidden": 384, "ff_dim": 1536}
