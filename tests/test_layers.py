"""Tests of tfattn.layers: the shared layer harness, golden attention numbers, masking, lengths,
empty rows, and a model of these layers saving and loading."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from harness import run_layer_test

from tfattn.layers import (
    FitTokenIds,
    HashedBigramEmbedding,
    TokenAndPositionEmbedding,
    TransformerBlock,
    scaled_dot_product_attention,
    sinusoidal_position_encoding,
)

# Course seed 002, "Task 1": self-attention by hand with scale 1/sqrt(5).
X = np.array(
    [[-1.51, -1.57, 0.87, 1.1, -0.74], [0.46, -0.4, -0.64, 0.12, -0.02], [-0.75, 0.44, 1.05, 0.38, -0.16]],
    np.float32,
)
W_Q = np.array(
    [
        [1.88, -0.04, -1.51, 0.5, 0.18],
        [-0.79, 1.06, 0.09, -0.3, 0.55],
        [0.03, 0.44, 3.06, -1.91, 1.52],
        [-0.1, -2.17, 0.93, 0.82, -0.35],
        [0.27, 0.54, -0.42, -0.8, 1.41],
    ],
    np.float32,
)
W_K = np.array(
    [
        [-0.03, 1.33, -1.91, -1.73, 0.73],
        [1.06, 0.08, 1.01, 0.9, -0.0],
        [0.17, -0.11, -0.11, -0.49, 0.7],
        [-0.66, -1.44, -0.56, 0.95, -0.72],
        [-0.5, -1.2, 1.59, -0.47, -0.34],
    ],
    np.float32,
)
W_V = np.array(
    [
        [-1.55, -1.48, 2.23, 0.57, -1.53],
        [-1.45, -0.91, -1.69, 0.43, 0.44],
        [-1.05, 0.19, -0.65, -0.34, 0.12],
        [-1.29, 1.48, 0.18, 0.24, 0.83],
        [2.12, 1.09, 0.79, -0.21, -0.95],
    ],
    np.float32,
)
EXPECTED_Z = np.array(
    [
        [-0.3952, 2.8954, -2.4458, -0.9194, 2.6043],
        [0.5535, 4.1379, -1.5410, -1.2466, 3.0007],
        [-1.2202, 1.3002, -2.7521, -0.4466, 1.7936],
    ],
    np.float32,
)


def test_scaled_dot_product_attention_reproduces_course_matrix():
    z, weights = scaled_dot_product_attention(X @ W_Q, X @ W_K, X @ W_V, scale=1 / math.sqrt(5))
    np.testing.assert_allclose(z, EXPECTED_Z, atol=1e-4)
    np.testing.assert_allclose(tf.reduce_sum(weights, axis=-1), np.ones(3), atol=1e-6)
    # The default scale is 1/sqrt(depth), the same here.
    z_default, _ = scaled_dot_product_attention(X @ W_Q, X @ W_K, X @ W_V)
    np.testing.assert_allclose(z_default, EXPECTED_Z, atol=1e-4)


def test_transformer_block_attention_reproduces_course_matrix():
    block = TransformerBlock(embed_dim=5, num_heads=1, ff_dim=4, key_dim=5)
    block(X[None])
    zeros = np.zeros(5, np.float32)
    block.query_dense.set_weights([W_Q, zeros])
    block.key_dense.set_weights([W_K, zeros])
    block.value_dense.set_weights([W_V, zeros])
    block.output_dense.set_weights([np.eye(5, dtype=np.float32), zeros])
    # The block's attention sublayer output before the residual is exactly z.
    q, k, v = (block._split_heads(d(X[None])) for d in (block.query_dense, block.key_dense, block.value_dense))
    attended, _ = scaled_dot_product_attention(q, k, v)
    np.testing.assert_allclose(block.output_dense(block._merge_heads(attended))[0], EXPECTED_Z, atol=1e-4)
    # And the scores the block hands back are the softmax of the course's logits.
    _, scores = block(X[None], return_attention_scores=True)
    logits = (X @ W_Q) @ (X @ W_K).T / math.sqrt(5)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scores[0, 0], expected, atol=1e-5)


def test_attention_mask_excludes_keys():
    q = k = v = tf.random.normal([1, 4, 3], seed=1)
    mask = tf.constant([[True, True, False, False]])[:, None, :]
    _, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_allclose(weights[..., 2:], 0.0, atol=1e-7)
    np.testing.assert_allclose(tf.reduce_sum(weights, -1), 1.0, atol=1e-6)


def test_token_and_position_embedding_layer():
    ids = np.array([[3, 4, 5, 0], [7, 1, 0, 0]], np.int32)
    layer = run_layer_test(
        TokenAndPositionEmbedding,
        {"vocab_size": 10, "max_length": 8, "embed_dim": 6},
        ids,
        expected_output_shape=(2, 4, 6),
        expected_num_trainable_weights=2,
    )
    np.testing.assert_array_equal(layer.compute_mask(ids), ids != 0)


def test_sinusoidal_embedding_layer_has_one_trainable_table():
    run_layer_test(
        TokenAndPositionEmbedding,
        {"vocab_size": 10, "max_length": 8, "embed_dim": 6, "positional": "sinusoidal"},
        np.array([[3, 4, 5], [7, 0, 0]], np.int32),
        expected_output_shape=(2, 3, 6),
        expected_num_trainable_weights=1,
        run_training_check=False,  # the token table trains as in the learned case; positions are fixed
    )


@pytest.mark.slow
def test_hashed_bigram_embedding_layer():
    ids = np.array([[5, 9, 2, 0], [7, 3, 0, 0]], np.int32)
    layer = run_layer_test(
        HashedBigramEmbedding,
        {"buckets": 64, "embed_dim": 6},
        ids,
        expected_output_shape=(2, 4, 6),
        expected_num_trainable_weights=1,
    )
    # (previous, current) -> (previous * 1000003 + current) % 64; no pair at the start or at padding.
    expected = [[-1, (5 * 1_000_003 + 9) % 64, (9 * 1_000_003 + 2) % 64, -1], [-1, (7 * 1_000_003 + 3) % 64, -1, -1]]
    np.testing.assert_array_equal(layer.bucket_ids(ids), expected)
    vectors = layer(ids).numpy()
    table = layer.bigram_embeddings.numpy()
    np.testing.assert_array_equal(vectors[0, 1], table[expected[0][1]])
    assert not vectors[0, 0].any() and not vectors[0, 3].any() and not vectors[1, 2:].any()
    with pytest.raises(ValueError, match="buckets must be at least 1, got 0"):
        HashedBigramEmbedding(0, 4)


def test_embedding_rejects_unknown_positional():
    with pytest.raises(ValueError, match="positional must be 'learned' or 'sinusoidal', got 'rotary'"):
        TokenAndPositionEmbedding(10, 8, 6, positional="rotary")


def test_sinusoidal_embedding_has_fixed_positions():
    layer = TokenAndPositionEmbedding(10, 8, 6, positional="sinusoidal")
    out = layer(np.zeros((1, 3), np.int32))
    assert len(layer.trainable_weights) == 1
    table = sinusoidal_position_encoding(8, 6)
    np.testing.assert_allclose(table[0], [0, 1, 0, 1, 0, 1], atol=1e-7)
    np.testing.assert_allclose(table[1, 0], math.sin(1.0), atol=1e-6)
    np.testing.assert_allclose(out[0] - layer.token_embeddings[0], table[:3], atol=1e-6)


def test_embedding_accepts_any_length_up_to_max_and_rejects_longer():
    layer = TokenAndPositionEmbedding(vocab_size=20, max_length=8, embed_dim=4)
    for length in (1, 5, 8):
        assert layer(np.ones((2, length), np.int32)).shape == (2, length, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="longer than max_length=8"):
        layer(np.ones((1, 9), np.int32))


@pytest.mark.slow
def test_transformer_block_layer():
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    run_layer_test(
        TransformerBlock,
        {"embed_dim": 8, "num_heads": 2, "ff_dim": 16, "dropout": 0.0},
        x,
        expected_output_shape=[(2, 5, 8), (2, 2, 5, 5)],
        expected_num_trainable_weights=16,
        call_kwargs={"return_attention_scores": True},
        # A key bias adds the same amount to every logit of a query row: softmax ignores it.
        weights_without_gradient=("key/bias",),
        # The attention weights are float32 under mixed precision (a float32 softmax).
        float32_outputs=("1",),
    )


@pytest.mark.slow
def test_pre_norm_locality_block_layer():
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    run_layer_test(
        TransformerBlock,
        {"embed_dim": 8, "num_heads": 2, "ff_dim": 16, "dropout": 0.0, "normalize_first": True, "locality": True},
        x,
        expected_output_shape=[(2, 5, 8), (2, 2, 5, 5)],
        expected_num_trainable_weights=17,  # the 16 above and the softmax temperature
        call_kwargs={"return_attention_scores": True},
        weights_without_gradient=("key/bias",),
        float32_outputs=("1",),
    )


def _dense(layer, x):
    return x @ layer.kernel.numpy() + layer.bias.numpy()


def _layer_norm(layer, x, epsilon):
    normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + epsilon)
    return normed * layer.gamma.numpy() + layer.beta.numpy()


def _block_by_hand(block, x):
    """A ReLU `TransformerBlock`'s outputs and attention in numpy from its weights, by the
    formulas of its docstring: post- or pre-norm, full or locality self-attention."""
    batch, length, _ = x.shape

    def heads(t):
        return t.reshape(batch, length, block.num_heads, block.key_dim).transpose(0, 2, 1, 3)

    def norm(layer, t):
        return _layer_norm(layer, t, block.layer_norm_epsilon)

    pre = block.normalize_first
    h = norm(block.attention_layer_norm, x) if pre else x
    q, k, v = (heads(_dense(layer, h)) for layer in (block.query_dense, block.key_dense, block.value_dense))
    temperature = float(block.temperature.numpy()) if block.locality else math.sqrt(block.key_dim)
    logits = q @ k.transpose(0, 1, 3, 2) / temperature
    if block.locality:
        logits = np.where(np.eye(length, dtype=bool), -np.inf, logits)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    update = _dense(block.output_dense, (weights @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1))
    x = x + update if pre else norm(block.attention_layer_norm, x + update)
    h = norm(block.ff_layer_norm, x) if pre else x
    ff = _dense(block.ff_output, np.maximum(_dense(block.ff_hidden, h), 0.0))
    return (x + ff if pre else norm(block.ff_layer_norm, x + ff)), weights


@pytest.mark.parametrize("normalize_first", [False, True])
@pytest.mark.parametrize("locality", [False, True])
def test_transformer_block_computes_its_docstring_formulas(normalize_first, locality):
    x = np.random.default_rng(3).normal(size=(2, 5, 8)).astype("float32")
    block = TransformerBlock(8, 2, 16, dropout=0.0, normalize_first=normalize_first, locality=locality)
    block(x)
    rng = np.random.default_rng(4)  # norms' scales and shifts away from 1 and 0, so a skipped norm shows
    for norm in (block.attention_layer_norm, block.ff_layer_norm):
        norm.gamma.assign(rng.uniform(0.5, 1.5, 8))
        norm.beta.assign(rng.normal(0, 0.3, 8))
    if locality:
        assert block.temperature.numpy() == pytest.approx(2.0)  # starts at sqrt(key_dim = 4)
        block.temperature.assign(1.3)  # a learned value is the one used
    outputs, scores = block(x, return_attention_scores=True)
    expected_outputs, expected_scores = _block_by_hand(block, x.astype(np.float64))
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    np.testing.assert_allclose(outputs, expected_outputs, atol=1e-4)
    if locality:  # no token attends to itself
        assert np.all(np.diagonal(scores.numpy(), axis1=-2, axis2=-1) == 0)


def test_locality_temperature_learns_and_padding_still_holds():
    block = TransformerBlock(8, 2, 16, dropout=0.0, locality=True)
    x = tf.random.stateless_normal([2, 4, 8], seed=[0, 1])
    mask = tf.constant([[True, True, True, False], [True, True, True, True]])
    with tf.GradientTape() as tape:
        outputs, scores = block(x, padding_mask=mask, return_attention_scores=True)
        loss = tf.reduce_sum(outputs**2)
    assert block.temperature in block.trainable_weights
    assert float(tape.gradient(loss, block.temperature)) != 0.0
    assert np.all(scores.numpy()[0, :, :, 3] == 0)  # the padded key
    np.testing.assert_allclose(tf.reduce_sum(scores, -1), 1.0, atol=1e-6)


def test_block_options_are_checked_and_decoders_refuse_them():
    from tfattn.layers import TransformerDecoderBlock

    with pytest.raises(ValueError, match="normalize_first must be True or False, got 'pre'"):
        TransformerBlock(8, 2, 16, normalize_first="pre")
    for option in ("normalize_first", "locality"):
        with pytest.raises(ValueError, match=f"TransformerDecoderBlock has no {option} option"):
            TransformerDecoderBlock(8, 2, 16, **{option: True})
    # Saved configs of blocks written before these options load as post-norm, full attention.
    config = TransformerBlock(8, 2, 16).get_config()
    for option in ("normalize_first", "locality"):
        del config[option]
    restored = TransformerBlock.from_config(config)
    assert (restored.normalize_first, restored.locality) == (False, False)


def test_transformer_block_scores_shape_and_input_check():
    block = TransformerBlock(embed_dim=8, num_heads=4, ff_dim=16)
    y, scores = block(tf.zeros([3, 7, 8]), return_attention_scores=True)
    assert y.shape == (3, 7, 8) and scores.shape == (3, 4, 7, 7)
    with pytest.raises(ValueError, match="expected embed_dim=8"):
        TransformerBlock(embed_dim=8, num_heads=2, ff_dim=4)(tf.zeros([1, 3, 6]))
    with pytest.raises(ValueError, match="key_dim must be >= 1"):
        TransformerBlock(embed_dim=2, num_heads=4, ff_dim=4)


def test_fit_token_ids_layer():
    ids = tf.ragged.constant([[5, 6, 7, 8], [], [9]], dtype=tf.int32)
    layer = run_layer_test(
        FitTokenIds,
        {"max_length": 3},
        ids,
        expected_output_shape=(3, 3),
        expected_num_trainable_weights=0,
        expected_output_dtype="int32",
    )
    # Truncated to max_length, padded with 0, and the empty row is one [UNK] (fill_id 1).
    np.testing.assert_array_equal(layer(ids), [[5, 6, 7], [1, 0, 0], [9, 0, 0]])


def test_fit_token_ids_pads_truncates_and_fills():
    fit = FitTokenIds(max_length=2, fill_id=7)
    # Padded (not ragged) ids are cut as well; an all-padding row gets fill_id.
    np.testing.assert_array_equal(fit(np.array([[3, 4, 5], [0, 0, 0]], np.int64)), [[3, 4], [7, 0]])
    # A batch of empty rows still has one column.
    empty = fit(tf.ragged.constant([[], []], dtype=tf.int32))
    assert empty.dtype == tf.int32
    np.testing.assert_array_equal(empty, [[7], [7]])
    with pytest.raises(ValueError, match="max_length must be at least 1, got 0"):
        FitTokenIds(max_length=0)


def _encoder(max_length=16):
    ids = keras.Input(shape=(None,), dtype=tf.int32)
    x = TokenAndPositionEmbedding(50, max_length, 8)(ids)
    x = TransformerBlock(8, 2, 16, dropout=0.0)(x)
    x = TransformerBlock(8, 2, 16, dropout=0.0)(x)
    return keras.Model(ids, x)


def test_padding_does_not_change_real_positions():
    encoder = _encoder()
    ids = np.array([[5, 9, 2, 7, 3]], np.int32)
    padded = np.array([[5, 9, 2, 7, 3, 0, 0, 0, 0, 0]], np.int32)
    np.testing.assert_allclose(encoder(padded)[:, :5], encoder(ids), atol=1e-5)
    # The embedding's padding mask travels through both blocks to the model's output.
    np.testing.assert_array_equal(encoder(padded)._keras_mask, padded != 0)
    # Without the mask the padding would leak in: check the test can fail.
    unmasked = TransformerBlock(8, 2, 16, dropout=0.0)
    emb = TokenAndPositionEmbedding(50, 16, 8, mask_zero=False)
    a, b = unmasked(emb(ids)), unmasked(emb(padded))[:, :5]
    assert np.abs(a - b).max() > 1e-3


def test_masked_mean_pooling_ignores_padding():
    ids = keras.Input(shape=(None,), dtype=tf.int32)
    x = TokenAndPositionEmbedding(50, 16, 8)(ids)
    x = TransformerBlock(8, 2, 16, dropout=0.0)(x)
    pooled = keras.Model(ids, keras.layers.GlobalAveragePooling1D()(x))
    short = np.array([[4, 8, 15]], np.int32)
    long = np.array([[4, 8, 15, 0, 0, 0, 0]], np.int32)
    np.testing.assert_allclose(pooled(long), pooled(short), atol=1e-5)


def test_functional_model_with_custom_layers_saves_and_loads(tmp_path):
    encoder = _encoder()
    ids = np.array([[1, 2, 3, 0]], np.int32)
    path = tmp_path / "encoder.keras"
    encoder.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored(ids), encoder(ids), atol=1e-6)
    assert isinstance(restored.layers[1], TokenAndPositionEmbedding)


def test_text_classifier_of_custom_layers_saves_and_loads(tmp_path):
    from tfattn.models import TextClassifier, TransformerEncoder, VocabularyPreprocessor, load_model, save_model

    keras.utils.set_random_seed(1)
    preprocessor = VocabularyPreprocessor(["stocks", "fell", "goal", "scored"], max_length=8)
    encoder = TransformerEncoder(vocab_size=6, max_length=8, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=2)
    model = TextClassifier(preprocessor, encoder, num_classes=3, pooling="mean")
    texts = ["Stocks fell", "Goal scored!", ""]
    expected = model.predict_proba(texts)
    restored = load_model(save_model(model, tmp_path / "model"))
    assert type(restored) is TextClassifier and restored.pooling == "mean" and restored.num_classes == 3
    assert isinstance(restored.encoder, TransformerEncoder) and len(restored.encoder.blocks) == 2
    assert all(isinstance(block, TransformerBlock) for block in restored.encoder.blocks)
    assert restored.preprocessor.vocabulary == preprocessor.vocabulary
    np.testing.assert_allclose(restored.predict_proba(texts), expected, atol=1e-6)
    # The probabilities depend on the trained weights, not only on the architecture.
    fresh = TextClassifier.from_config(model.get_config())
    assert np.abs(fresh.predict_proba(texts) - expected).max() > 1e-4
