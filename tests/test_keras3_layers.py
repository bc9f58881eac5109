"""Tests of tfattn.keras3.layers: the shared layer harness on the Keras 3 layers, their equivalence
with the tf-keras layers (same weights, same outputs to 1e-5), the course's hand-computed attention,
masks and padding, the lesson's `keras.Sequential` snippet, and the JAX backend (a subprocess)."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from harness import run_layer_test
from test_layers import EXPECTED_Z, W_K, W_Q, W_V, X

from tfattn import layers as tfk
from tfattn.keras3 import layers as k3

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(30)
IDS = np.array([[3, 4, 5, 9, 0, 0], [7, 1, 2, 0, 0, 0]], np.int32)
VECTORS = RNG.normal(size=(2, 6, 8)).astype(np.float32)
SOURCE = RNG.normal(size=(2, 5, 8)).astype(np.float32)
MASK = IDS != 0
SOURCE_MASK = np.array([[True] * 5, [True] * 3 + [False] * 2])
QUERIES = RNG.normal(size=(2, 3, 4)).astype(np.float32)
VALUES = RNG.normal(size=(2, 6, 5)).astype(np.float32)


# --- the harness, as the tf-keras layers run it -----------------------------------------------


def test_token_and_position_embedding_harness():
    layer = run_layer_test(
        k3.TokenAndPositionEmbedding,
        {"vocab_size": 10, "max_length": 8, "embed_dim": 6},
        IDS,
        expected_output_shape=(2, 6, 6),
        expected_num_trainable_weights=2,
    )
    np.testing.assert_array_equal(layer.compute_mask(IDS), MASK)


def test_sinusoidal_embedding_harness():
    run_layer_test(
        k3.TokenAndPositionEmbedding,
        {"vocab_size": 10, "max_length": 8, "embed_dim": 6, "positional": "sinusoidal"},
        IDS,
        expected_output_shape=(2, 6, 6),
        expected_num_trainable_weights=1,
        run_training_check=False,  # the token table trains as in the learned case
    )


def test_hashed_bigram_embedding_harness():
    layer = run_layer_test(
        k3.HashedBigramEmbedding,
        {"buckets": 64, "embed_dim": 6},
        IDS,
        expected_output_shape=(2, 6, 6),
        expected_num_trainable_weights=1,
    )
    first_pair = (3 * 1_000_003 + 4) % 64
    np.testing.assert_array_equal(np.asarray(layer.bucket_ids(IDS))[0, :2], [-1, first_pair])


@pytest.mark.slow  # (the embeddings' harness runs in the quick suite)
@pytest.mark.parametrize(
    "options", [{}, {"normalize_first": True, "locality": True}], ids=["post-norm", "pre-locality"]
)
def test_transformer_block_harness(options):
    run_layer_test(
        k3.TransformerBlock,
        {"embed_dim": 8, "num_heads": 2, "ff_dim": 16, "dropout": 0.0, **options},
        VECTORS,
        expected_output_shape=[(2, 6, 8), (2, 2, 6, 6)],
        expected_num_trainable_weights=16 + bool(options),  # (+ the locality's temperature)
        call_kwargs={"return_attention_scores": True},
        # A key bias adds the same amount to every logit of a query row: softmax ignores it.
        weights_without_gradient=("key/bias",),
        float32_outputs=("1",),
    )


@pytest.mark.slow  # (the embeddings' harness runs in the quick suite)
def test_transformer_decoder_block_harness():
    run_layer_test(
        k3.TransformerDecoderBlock,
        {"embed_dim": 8, "num_heads": 2, "ff_dim": 16, "dropout": 0.0},
        VECTORS,
        expected_output_shape=(2, 6, 8),
        expected_num_trainable_weights=26,
        call_kwargs={"encoder_outputs": tf.constant(SOURCE), "encoder_padding_mask": tf.constant(SOURCE_MASK)},
        weights_without_gradient=("key/bias",),
    )


@pytest.mark.slow  # (the embeddings' harness runs in the quick suite)
def test_causal_decoder_block_harness():
    run_layer_test(
        k3.TransformerDecoderBlock,
        {"embed_dim": 8, "num_heads": 2, "ff_dim": 16, "dropout": 0.0, "cross_attention": False},
        VECTORS,
        expected_output_shape=(2, 6, 8),
        expected_num_trainable_weights=16,
        weights_without_gradient=("key/bias",),
    )


@pytest.mark.slow  # (the embeddings' harness runs in the quick suite)
def test_additive_attention_harness():
    run_layer_test(
        k3.AdditiveAttention,
        {"units": 3},
        QUERIES,
        expected_output_shape=[(2, 3, 8), (2, 3, 6)],
        expected_num_trainable_weights=4,
        call_kwargs={"keys": tf.constant(VECTORS), "key_mask": tf.constant(MASK)},
        float32_outputs=("1",),
    )


# --- equivalence with the tf-keras layers ---------------------------------------------------------

# (class name, constructor arguments, input, call arguments): each built in both Kerases.
EQUIVALENT_CALLS = {
    "embedding": ("TokenAndPositionEmbedding", {"vocab_size": 10, "max_length": 8, "embed_dim": 6}, IDS, {}),
    "embedding-shifted": (
        "TokenAndPositionEmbedding",
        {"vocab_size": 10, "max_length": 8, "embed_dim": 6},
        IDS[:, :2],
        {"start_position": 3},
    ),
    "sinusoidal": (
        "TokenAndPositionEmbedding",
        {"vocab_size": 10, "max_length": 8, "embed_dim": 6, "positional": "sinusoidal"},
        IDS,
        {},
    ),
    "bigrams": ("HashedBigramEmbedding", {"buckets": 64, "embed_dim": 6}, IDS, {}),
    "block": (
        "TransformerBlock",
        {"embed_dim": 8, "num_heads": 2, "ff_dim": 16},
        VECTORS,
        {"padding_mask": MASK, "return_attention_scores": True},
    ),
    "block-pre-norm-locality": (
        "TransformerBlock",
        {"embed_dim": 8, "num_heads": 2, "ff_dim": 16, "normalize_first": True, "locality": True},
        VECTORS,
        {"padding_mask": MASK, "return_attention_scores": True},
    ),
    "decoder": (
        "TransformerDecoderBlock",
        {"embed_dim": 8, "num_heads": 2, "ff_dim": 16},
        VECTORS,
        {
            "encoder_outputs": SOURCE,
            "padding_mask": MASK,
            "encoder_padding_mask": SOURCE_MASK,
            "return_attention_scores": True,
        },
    ),
    "causal-decoder": (
        "TransformerDecoderBlock",
        {"embed_dim": 8, "num_heads": 4, "ff_dim": 16, "cross_attention": False, "activation": "gelu"},
        VECTORS,
        {"return_attention_scores": True},
    ),
    "additive": ("AdditiveAttention", {"units": 3}, QUERIES, {"keys": VECTORS, "key_mask": MASK}),
    "additive-one-query": ("AdditiveAttention", {"units": 3}, QUERIES[:, 0], {"keys": VECTORS, "values": VALUES}),
}


@pytest.mark.parametrize("case", sorted(EQUIVALENT_CALLS))
def test_keras3_layer_equals_tf_keras_layer(case):
    name, kwargs, inputs, call_kwargs = EQUIVALENT_CALLS[case]
    tf_keras.utils.set_random_seed(0)
    reference = getattr(tfk, name)(**kwargs)
    expected = reference(tf.constant(inputs), **call_kwargs)
    layer = getattr(k3, name)(**kwargs)
    layer(inputs, **call_kwargs)  # builds it
    weights = reference.get_weights()
    assert [w.shape for w in layer.get_weights()] == [w.shape for w in weights]
    layer.set_weights(weights)
    actual = layer(inputs, **call_kwargs)
    for got, want in zip(tf.nest.flatten(actual), tf.nest.flatten(expected), strict=True):
        if want is None:  # (a causal block's cross-attention scores)
            assert got is None
            continue
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
    # Same constructor arguments (serialized initializers aside: each Keras writes its own form).
    config, reference_config = layer.get_config(), reference.get_config()
    arguments = set(reference_config) - {"name", "dtype", "trainable"}
    assert arguments <= set(config)
    plain = {key for key in arguments if not isinstance(reference_config[key], dict)}
    assert {key: config[key] for key in plain} == {key: reference_config[key] for key in plain}


def test_keras3_attention_reproduces_course_matrix():
    z, weights = k3.scaled_dot_product_attention(X @ W_Q, X @ W_K, X @ W_V, scale=1 / math.sqrt(5))
    np.testing.assert_allclose(z, EXPECTED_Z, atol=1e-4)
    np.testing.assert_allclose(np.sum(weights, axis=-1), np.ones(3), atol=1e-6)
    block = k3.TransformerBlock(embed_dim=5, num_heads=1, ff_dim=4, key_dim=5)
    block(X[None])
    zeros = np.zeros(5, np.float32)
    for dense, kernel in ((block.query_dense, W_Q), (block.key_dense, W_K), (block.value_dense, W_V)):
        dense.set_weights([kernel, zeros])
    _, scores = block(X[None], return_attention_scores=True)
    logits = (X @ W_Q) @ (X @ W_K).T / math.sqrt(5)
    np.testing.assert_allclose(scores[0, 0], np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), atol=1e-5)


def test_sinusoidal_table_is_shared_by_both_kerases():
    assert k3.sinusoidal_position_encoding is tfk.sinusoidal_position_encoding


# --- masks, padding, the lesson's snippet ---------------------------------------------------------


def _keras3_encoder():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            k3.TokenAndPositionEmbedding(50, 16, 8),
            k3.TransformerBlock(8, 2, 16, dropout=0.0),
            k3.TransformerDecoderBlock(8, 2, 16, dropout=0.0, cross_attention=False),
        ]
    )


def test_padding_does_not_change_real_positions_and_mean_pooling_ignores_it():
    encoder = _keras3_encoder()
    ids, padded = np.array([[5, 9, 2, 7, 3]], np.int32), np.array([[5, 9, 2, 7, 3, 0, 0, 0]], np.int32)
    np.testing.assert_allclose(encoder(padded)[:, :5], encoder(ids), atol=1e-5)
    pooled = keras.Sequential([encoder, keras.layers.GlobalAveragePooling1D()])
    np.testing.assert_allclose(pooled(padded), pooled(ids), atol=1e-5)
    # Without the mask the padding would leak in: the test can fail.
    embedding = k3.TokenAndPositionEmbedding(50, 16, 8, mask_zero=False)
    unmasked = keras.Sequential([embedding, k3.TransformerBlock(8, 2, 16)])
    assert np.abs(np.asarray(unmasked(padded)[:, :5] - unmasked(ids))).max() > 1e-3


def test_the_lessons_snippet_works_with_keras3_layers_and_the_readme_explains_the_tf_keras_error():
    model = keras.Sequential(
        [keras.Input((8,), dtype="int32"), k3.TokenAndPositionEmbedding(100, 8, 16), k3.TransformerBlock(16, 2, 32)]
    )
    assert model(np.ones((2, 8), np.int32)).shape == (2, 8, 16)
    with pytest.raises(ValueError, match="Only instances of `keras.Layer` can be added to a Sequential model") as error:
        tf_keras_layers = [tfk.TokenAndPositionEmbedding(100, 8, 16), tfk.TransformerBlock(16, 2, 32)]
        keras.Sequential([keras.Input((8,), dtype="int32"), *tf_keras_layers])
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Which Keras?") :]
    assert "Only instances of `keras.Layer` can be added to a Sequential model" in section
    assert "from tfattn.keras3.layers import" in section
    assert "tfattn.layers.transformer.TokenAndPositionEmbedding" in str(error.value)


def test_longer_input_than_max_length_is_refused_when_building():
    with pytest.raises(ValueError, match="inputs of 9 tokens are longer than max_length=8"):
        keras.Sequential([keras.Input((9,), dtype="int32"), k3.TokenAndPositionEmbedding(20, 8, 4)])


def test_arguments_are_checked_by_name():
    with pytest.raises(ValueError, match="positional must be 'learned' or 'sinusoidal', got 'rotary'"):
        k3.TokenAndPositionEmbedding(10, 8, 6, positional="rotary")
    with pytest.raises(ValueError, match="embed_dim must be at least 1, got 0"):
        k3.TransformerBlock(0, 2, 4)
    with pytest.raises(ValueError, match="expected embed_dim=8"):
        k3.TransformerBlock(8, 2, 4)(np.zeros((1, 3, 6), np.float32))
    with pytest.raises(ValueError, match="units must be at least 1, got 0"):
        k3.AdditiveAttention(0)


SERVE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    exported = tf.saved_model.load(sys.argv[1])
    probabilities = exported.serve(tf.constant(json.loads(sys.argv[2]), tf.int32)).numpy()
    imported = sorted(name for name in sys.modules if name.split(".")[0] == "tfattn")
    print(json.dumps({"probabilities": probabilities.tolist(), "imported": imported}))
    """
)


@pytest.mark.slow
def test_an_exported_keras3_model_is_served_by_tensorflow_alone(tmp_path):
    """`model.export()` of a Keras 3 model of these layers loads in a fresh interpreter that imports
    TensorFlow only (no tfattn; the layers' classes are not needed) and gives the model's outputs."""
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            k3.TokenAndPositionEmbedding(50, 16, 8),
            k3.TransformerBlock(8, 2, 16),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.export(tmp_path / "export", verbose=False)
    ids = [[5, 9, 2, 7, 0, 0], [3, 1, 4, 1, 5, 9]]
    result = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT, str(tmp_path / "export"), json.dumps(ids)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["imported"] == []
    np.testing.assert_allclose(served["probabilities"], np.asarray(model(np.array(ids, np.int32))), atol=1e-6)


# --- the JAX backend ----------------------------------------------------------------------------------

JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    from tfattn.keras3 import layers  # registers the layers for load_model
    assert keras.backend.backend() == "jax", keras.backend.backend()
    folder = sys.argv[1]
    model = keras.saving.load_model(folder + "/model.keras")
    data = np.load(folder + "/data.npz")
    outputs = keras.ops.convert_to_numpy(model(data["ids"]))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True)
    history = model.fit(data["ids"], data["labels"], epochs=2, batch_size=2, verbose=0)
    print(json.dumps({"difference": float(np.abs(outputs - data["outputs"]).max()),
                      "losses": history.history["loss"]}))
    """
)


@pytest.mark.slow
def test_the_layers_run_on_the_jax_backend(tmp_path):
    """A model of every Keras 3 layer, saved under TensorFlow, loads under `KERAS_BACKEND=jax`,
    gives the same outputs (1e-5) and trains (a jit-compiled fit lowers the loss)."""
    keras.utils.set_random_seed(3)
    ids = keras.Input((6,), dtype="int32")
    x = k3.TokenAndPositionEmbedding(20, 6, 8)(ids)
    x = x + k3.HashedBigramEmbedding(32, 8)(ids)
    x = k3.TransformerBlock(8, 2, 16, dropout=0.0)(x)
    x = k3.TransformerDecoderBlock(8, 2, 16, dropout=0.0)(x, encoder_outputs=x)
    context, _ = k3.AdditiveAttention(4)(keras.layers.GlobalAveragePooling1D()(x), x)
    model = keras.Model(ids, keras.layers.Dense(3, activation="softmax")(context))
    model.save(tmp_path / "model.keras")
    data = np.array([[3, 4, 5, 9, 2, 1], [7, 1, 2, 8, 0, 0], [5, 5, 6, 0, 0, 0], [9, 8, 7, 6, 5, 4]], np.int32)
    np.savez(tmp_path / "data.npz", ids=data, labels=np.array([0, 1, 2, 1]), outputs=np.asarray(model(data)))
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["difference"] < 1e-5, report
    assert report["losses"][1] < report["losses"][0], report
