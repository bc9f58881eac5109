"""Tests of tfattn.layers.seq2seq: additive (Bahdanau) attention against numpy by hand, and the
transformer decoder block (the shared layer harness, causality, source padding, attention
weights, cached step-by-step decoding equal to the whole-sequence call)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from harness import run_layer_test

from tfattn.layers import AdditiveAttention, BahdanauAttention, TransformerBlock, TransformerDecoderBlock

# Additive attention golden setup: batch 2, queries of 3 features, 4 keys of 5 features, 3 units.
_RNG = np.random.default_rng(2015)
W1 = np.round(_RNG.normal(size=(3, 3)), 2).astype(np.float32)  # query kernel [query_dim, units]
B1 = np.array([0.1, -0.2, 0.3], np.float32)  # query bias [units]
W2 = np.round(_RNG.normal(size=(5, 3)), 2).astype(np.float32)  # key kernel [key_dim, units]
V = np.array([[1.5], [-2.0], [0.7]], np.float32)  # score kernel [units, 1]
KEYS = np.round(_RNG.normal(size=(2, 4, 5)), 2).astype(np.float32)
VALUES = np.round(_RNG.normal(size=(2, 4, 6)), 2).astype(np.float32)
QUERY = np.round(_RNG.normal(size=(2, 3)), 2).astype(np.float32)  # one query per row
QUERIES = np.round(_RNG.normal(size=(2, 2, 3)), 2).astype(np.float32)  # two queries per row
KEY_MASK = np.array([[True, True, True, False], [True, False, True, False]])


def _additive_by_hand(queries, keys, values, key_mask):
    """numpy `softmax(v^T tanh(W1 q + b + W2 k))` over the unmasked keys, per query; queries
    `[batch, q, dim]`. Returns `(context [batch, q, value_dim], weights [batch, q, keys])`."""
    batch, num_queries, num_keys = queries.shape[0], queries.shape[1], keys.shape[1]
    weights = np.zeros((batch, num_queries, num_keys))
    for b in range(batch):
        for i in range(num_queries):
            scores = np.array(
                [float(V[:, 0] @ np.tanh(queries[b, i] @ W1 + B1 + keys[b, j] @ W2)) for j in range(num_keys)]
            )
            real = key_mask[b]
            exp = np.exp(scores[real] - scores[real].max())
            weights[b, i, real] = exp / exp.sum()
    context = np.einsum("bqk,bkd->bqd", weights, values)
    return context, weights


def _golden_attention():
    """An AdditiveAttention(units=3) with the weights W1, B1, W2, V."""
    layer = AdditiveAttention(units=3)
    layer(QUERY, KEYS)  # builds all three dense layers (the key one on its first call)
    layer.query_dense.set_weights([W1, B1])
    layer.key_dense.set_weights([W2])
    layer.score_dense.set_weights([V])
    return layer


@pytest.mark.slow
def test_additive_attention_layer():
    """The harness battery (config, clone, functional model, a jit training step moving all four
    weights, mixed precision) with the keys passed as a call argument; weights stay float32."""
    run_layer_test(
        AdditiveAttention,
        {"units": 3},
        QUERIES,
        expected_output_shape=[(2, 2, 5), (2, 2, 4)],
        expected_num_trainable_weights=4,
        call_kwargs={"keys": tf.constant(KEYS), "key_mask": tf.constant(KEY_MASK)},
        # The attention weights come from a float32 softmax under every policy.
        float32_outputs=("1",),
    )


def test_additive_attention_layer_single_query_with_values():
    """The harness on one query per row `[batch, dim]` and separate values: outputs lose the
    queries axis, context has the values' width."""
    run_layer_test(
        AdditiveAttention,
        {"units": 3},
        QUERY,
        expected_output_shape=[(2, 6), (2, 4)],
        expected_num_trainable_weights=4,
        call_kwargs={"keys": tf.constant(KEYS), "values": tf.constant(VALUES)},
        float32_outputs=("1",),
        run_precision_check=False,  # run above with several queries
    )


def test_additive_attention_weights_match_numpy_for_one_query():
    """Single query `[batch, dim]`: context and weights equal softmax(v^T tanh(W1 q + b + W2 k))
    by hand; masked keys get weight 0 (within 1e-12) and each row sums to 1 over the others."""
    layer = _golden_attention()
    context, weights = layer(QUERY, KEYS, key_mask=KEY_MASK)
    expected_context, expected_weights = _additive_by_hand(QUERY[:, None], KEYS, KEYS, KEY_MASK)
    assert context.shape == (2, 5) and weights.shape == (2, 4) and weights.dtype == tf.float32
    np.testing.assert_allclose(weights, expected_weights[:, 0], atol=1e-6)
    np.testing.assert_allclose(context, expected_context[:, 0], atol=1e-5)
    weights = weights.numpy()
    # A masked key's score is pushed far below the others: its weight underflows to 0 (tolerance
    # 1e-12, since a softmax's arithmetic may differ between CPUs' kernels).
    np.testing.assert_allclose(weights[~KEY_MASK], 0.0, atol=1e-12)
    assert (weights[KEY_MASK] > 0.0).all()
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-6)
    # Without the mask the last key takes part: the mask is what zeroed it.
    _, unmasked = layer(QUERY, KEYS)
    assert (unmasked.numpy()[:, 3] > 1e-3).all()


def test_additive_attention_weights_match_numpy_for_several_queries_and_values():
    """Several queries `[batch, q, dim]` with separate values: each query's row matches numpy,
    and the context averages the values, not the keys."""
    layer = _golden_attention()
    context, weights = layer(QUERIES, KEYS, values=VALUES, key_mask=KEY_MASK)
    expected_context, expected_weights = _additive_by_hand(QUERIES, KEYS, VALUES, KEY_MASK)
    assert context.shape == (2, 2, 6) and weights.shape == (2, 2, 4)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-6)
    np.testing.assert_allclose(context, expected_context, atol=1e-5)
    np.testing.assert_allclose(weights.numpy()[~np.broadcast_to(KEY_MASK[:, None], (2, 2, 4))], 0.0, atol=1e-12)
    np.testing.assert_allclose(tf.reduce_sum(weights, -1), np.ones((2, 2)), atol=1e-6)
    # The two queries of a row attend differently (the query matters).
    assert np.abs(weights[:, 0] - weights[:, 1]).max() > 1e-3
    # Queries one at a time give the same rows as all of them at once.
    for i in range(2):
        one_context, one_weights = layer(QUERIES[:, i], KEYS, values=VALUES, key_mask=KEY_MASK)
        np.testing.assert_allclose(one_weights, weights[:, i], atol=1e-6)
        np.testing.assert_allclose(one_context, context[:, i], atol=1e-6)


def test_additive_attention_projected_keys_give_the_same_outputs():
    """`project_keys` is `keys @ W2`; feeding it back as `projected_keys=` gives the outputs of
    projecting inside the call (one query and several)."""
    layer = _golden_attention()
    projected = layer.project_keys(KEYS)
    np.testing.assert_allclose(projected, KEYS @ W2, atol=1e-5)
    for query in (QUERY, QUERIES):
        direct = layer(query, KEYS, values=VALUES, key_mask=KEY_MASK)
        cached = layer(query, KEYS, values=VALUES, key_mask=KEY_MASK, projected_keys=projected)
        for got, want in zip(cached, direct):
            np.testing.assert_allclose(got, want, atol=1e-6)
    # The projected keys are really used: other projections change the weights.
    _, other = layer(QUERY, KEYS, key_mask=KEY_MASK, projected_keys=projected * 3.0)
    _, direct_weights = layer(QUERY, KEYS, key_mask=KEY_MASK)
    assert np.abs(other - direct_weights).max() > 1e-3


def test_additive_attention_project_keys_before_build_and_bad_units():
    """`project_keys` on an unbuilt layer and `units=0` fail with messages saying why;
    BahdanauAttention is the same class."""
    with pytest.raises(ValueError, match=r"call the layer once \(or build it\) before project_keys"):
        AdditiveAttention(units=2).project_keys(KEYS)
    with pytest.raises(ValueError, match="units must be at least 1, got 0"):
        AdditiveAttention(units=0)
    assert BahdanauAttention is AdditiveAttention
    layer = BahdanauAttention(units=7)
    assert layer.get_config()["units"] == 7
    assert AdditiveAttention.from_config(layer.get_config()).units == 7


# Transformer decoder block: batch 2, 5 target positions, 6 source positions, embed_dim 8, 2 heads.
_DECODER_RNG = np.random.default_rng(7)
TARGET = _DECODER_RNG.normal(size=(2, 5, 8)).astype(np.float32)
SOURCE = _DECODER_RNG.normal(size=(2, 6, 8)).astype(np.float32)
SOURCE_MASK = np.array([[True] * 6, [True] * 4 + [False] * 2])


def _decoder(seed=0, **kwargs):
    """A built TransformerDecoderBlock(8, 2, 16, dropout=0) with seeded random weights."""
    keras.utils.set_random_seed(seed)
    block = TransformerDecoderBlock(embed_dim=8, num_heads=2, ff_dim=16, dropout=0.0, **kwargs)
    block(TARGET, SOURCE)
    return block


@pytest.mark.slow
def test_transformer_decoder_block_layer():
    """The harness battery with the encoder outputs as a call argument: three outputs, 26 weights
    (the encoder block's 16, cross-attention's 4 dense layers and its norm), every weight but the
    key biases trained, attention weights float32 under mixed precision."""
    run_layer_test(
        TransformerDecoderBlock,
        {"embed_dim": 8, "num_heads": 2, "ff_dim": 16, "dropout": 0.0},
        TARGET,
        expected_output_shape=[(2, 5, 8), (2, 2, 5, 5), (2, 2, 5, 6)],
        expected_num_trainable_weights=26,
        call_kwargs={
            "encoder_outputs": tf.constant(SOURCE),
            "encoder_padding_mask": tf.constant(SOURCE_MASK),
            "return_attention_scores": True,
        },
        # A key bias adds the same amount to every logit of a query row: softmax ignores it
        # (matches "key/bias" and "cross_key/bias").
        weights_without_gradient=("key/bias",),
        float32_outputs=("1", "2"),
    )


@pytest.mark.parametrize("changed", [0, 2, 4])
def test_transformer_decoder_block_is_causal(changed):
    """Changing target position j's vector leaves the outputs at positions < j bit for bit the
    same and changes every position >= j."""
    block = _decoder()
    edited = TARGET.copy()
    edited[:, changed] += np.random.default_rng(changed).normal(size=(2, 8)).astype(np.float32)
    before = block(TARGET, SOURCE).numpy()
    after = block(edited, SOURCE).numpy()
    np.testing.assert_array_equal(after[:, :changed], before[:, :changed])
    difference = np.abs(after - before).max(axis=-1)  # [batch, position]
    assert (difference[:, changed:] > 1e-4).all(), difference
    # The encoder block, which has no causal mask, lets a later change reach earlier positions.
    if changed > 0:
        encoder_block = TransformerBlock(8, 2, 16, dropout=0.0)
        leak = np.abs(encoder_block(edited).numpy()[:, :changed] - encoder_block(TARGET).numpy()[:, :changed])
        assert leak.max() > 1e-4


def test_transformer_decoder_block_ignores_padded_source_positions():
    """Appending source positions marked False in encoder_padding_mask leaves every output
    unchanged; a row with only 4 real positions equals the call on those 4 alone."""
    block = _decoder()
    unpadded = block(TARGET, SOURCE).numpy()
    extra = np.random.default_rng(3).normal(size=(2, 3, 8)).astype(np.float32) * 5
    padded_source = np.concatenate([SOURCE, extra], axis=1)
    padded_mask = np.array([[True] * 6 + [False] * 3] * 2)
    padded = block(TARGET, padded_source, encoder_padding_mask=padded_mask).numpy()
    np.testing.assert_allclose(padded, unpadded, atol=1e-6)
    # Without the mask the extra positions are attended to: the check can fail.
    assert np.abs(block(TARGET, padded_source).numpy() - unpadded).max() > 1e-3
    # Mixed lengths in one batch: row 1's last 2 source positions are padding.
    masked = block(TARGET, SOURCE, encoder_padding_mask=SOURCE_MASK).numpy()
    np.testing.assert_allclose(masked[1:], block(TARGET[1:], SOURCE[1:, :4]).numpy(), atol=1e-6)
    np.testing.assert_allclose(masked[:1], unpadded[:1], atol=1e-6)


def test_transformer_decoder_block_attention_weights():
    """With return_attention_scores the block returns self-attention `[batch, heads, tgt, tgt]`
    with weights 0 above the diagonal (and at padded targets), and cross-attention
    `[batch, heads, tgt, src]` 0 at padded sources (within 1e-12); every row sums to 1."""
    block = _decoder()
    target_mask = np.array([[True] * 5, [True] * 3 + [False] * 2])
    outputs, self_scores, cross_scores = block(
        TARGET,
        SOURCE,
        padding_mask=target_mask,
        encoder_padding_mask=SOURCE_MASK,
        return_attention_scores=True,
    )
    assert outputs.shape == (2, 5, 8)
    assert self_scores.shape == (2, 2, 5, 5) and cross_scores.shape == (2, 2, 5, 6)
    assert self_scores.dtype == tf.float32 and cross_scores.dtype == tf.float32
    self_scores, cross_scores = self_scores.numpy(), cross_scores.numpy()
    above_diagonal = np.triu(np.ones((5, 5), bool), k=1)
    # Masked weights underflow to 0; compared within 1e-12, as every float here (CPUs' kernels differ).
    np.testing.assert_allclose(self_scores[:, :, above_diagonal], 0.0, atol=1e-12)
    assert (self_scores[:, :, ~above_diagonal][0] > 0.0).all()  # row 0 has no padding
    np.testing.assert_allclose(self_scores[1, :, :, 3:], 0.0, atol=1e-12)  # padded target keys
    np.testing.assert_allclose(cross_scores[1, :, :, 4:], 0.0, atol=1e-12)  # padded source keys
    assert (cross_scores[0] > 0.0).all()
    np.testing.assert_allclose(self_scores.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(cross_scores.sum(-1), 1.0, atol=1e-6)
    # The first position can only attend to itself.
    # A float32 softmax over one unmasked key gives 1 within rounding (0.99999994 on some CPUs).
    np.testing.assert_allclose(self_scores[:, :, 0, 0], 1.0, atol=1e-6)


@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1], [2, 3], [5], [1, 3, 1]])
def test_transformer_decoder_block_cached_decoding_matches_call(chunks):
    """`start_cache` then `decode_step` over consecutive chunks of the target (one position at a
    time, or several at once) gives the outputs and cross-attention of `call` on the whole
    sequence; the cache grows by each chunk's length."""
    block = _decoder()
    expected, _, expected_cross = block(TARGET, SOURCE, encoder_padding_mask=SOURCE_MASK, return_attention_scores=True)
    cache = block.start_cache(tf.constant(SOURCE))
    assert cache["key"].shape == (2, 2, 0, 4) and cache["cross_key"].shape == (2, 2, 6, 4)
    outputs, crosses, start = [], [], 0
    for size in chunks:
        step_outputs, cache, cross = block.decode_step(TARGET[:, start : start + size], cache, SOURCE_MASK)
        start += size
        assert step_outputs.shape == (2, size, 8) and cross.shape == (2, 2, size, 6)
        assert cache["key"].shape == (2, 2, start, 4) and cache["value"].shape == (2, 2, start, 4)
        outputs.append(step_outputs)
        crosses.append(cross)
    np.testing.assert_allclose(tf.concat(outputs, axis=1), expected, atol=1e-5)
    np.testing.assert_allclose(tf.concat(crosses, axis=2), expected_cross, atol=1e-5)


def test_transformer_decoder_block_start_cache_builds_an_unbuilt_block():
    """`start_cache` on a fresh block builds it; decoding then matches `call` with its weights."""
    keras.utils.set_random_seed(4)
    block = TransformerDecoderBlock(embed_dim=8, num_heads=2, ff_dim=16, dropout=0.0)
    cache = block.start_cache(tf.constant(SOURCE))
    assert block.built and len(block.trainable_weights) == 26
    steps = []
    for position in range(5):
        step_outputs, cache, _ = block.decode_step(TARGET[:, position : position + 1], cache)
        steps.append(step_outputs)
    np.testing.assert_allclose(tf.concat(steps, axis=1), block(TARGET, SOURCE), atol=1e-5)


def test_transformer_decoder_block_config_round_trip():
    """Every constructor argument survives get_config / from_config and generic
    serialization; the revived block with the same weights computes the same outputs."""
    block = _decoder(key_dim=3, activation="gelu", layer_norm_epsilon=1e-5, name="decoder_0")
    config = block.get_config()
    expected = {"embed_dim": 8, "num_heads": 2, "ff_dim": 16, "dropout": 0.0, "key_dim": 3, "layer_norm_epsilon": 1e-5}
    assert {name: config[name] for name in expected} == expected
    assert config["activation"] == "gelu" and config["name"] == "decoder_0"
    clone = TransformerDecoderBlock.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(block))
    assert type(revived) is TransformerDecoderBlock and revived.get_config() == config
    revived(TARGET, SOURCE)
    revived.set_weights(block.get_weights())
    np.testing.assert_allclose(
        revived(TARGET, SOURCE, encoder_padding_mask=SOURCE_MASK),
        block(TARGET, SOURCE, encoder_padding_mask=SOURCE_MASK),
        atol=1e-6,
    )
    assert block.query_dense.kernel.shape == (8, 6)  # 2 heads of key_dim 3
