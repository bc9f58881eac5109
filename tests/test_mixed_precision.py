"""Mixed precision (mixed_bfloat16, mixed_float16) of the task models: what stays float32 and how
close the answers stay to float32's.

For a from-scratch `TextClassifier` and one on a tiny random Hugging Face BERT, under each mixed
policy, with the weights of the same model built under float32: the dense layers really run in
16 bits; logits, attention weights and the loss are float32 and close to the float32 model's;
attention rows sum to 1; every layer norm computes in float32; a few `fit` steps keep the loss
and weights finite and lower the loss. And the float16 overflow the float32 softmax guards
against: attention logits past 65504 give inf in a float16 product, NaN in transformers' own
attention, finite weights in tfattn's.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from task_harness import tiny_scratch_classifier

from tfattn.layers import TransformerBlock
from tfattn.models import HuggingFaceEncoder, TextClassifier, load_model, save_model
from tfattn.models.encoders import float32_attention_softmax
from tfattn.models.wordpiece import bert_preprocessor_from_pretrained
from tfattn.pretrained import load_backbone
from tfattn.training.optimizer import create_optimizer

POLICIES = ("mixed_bfloat16", "mixed_float16")
# How far (absolute) 16-bit results may stray from float32's with the same weights: bfloat16
# keeps 8 bits of mantissa, float16 11.
TOLERANCE = {"mixed_bfloat16": 5e-2, "mixed_float16": 1e-2}
TEXTS = ["Stocks fell sharply as oil prices rose", "The Lakers beat the Celtics", "Intel unveils a new chip", "Rain"]
LABELS = np.array([2, 1, 3, 0], np.int32)
WORDS = ["stocks", "fell", "sharply", "as", "oil", "prices", "rose", "the", "lakers", "beat", "intel", "chip"]
# The Hugging Face family builds a tiny BERT per test (seconds each): `slow`; from scratch stays quick.
FAMILIES = ("scratch", pytest.param("hf", marks=pytest.mark.slow))


@pytest.fixture(autouse=True)
def float32_policy_around():
    """Every test starts under the float32 global policy and leaves it float32, whatever happens
    (a mixed global policy would leak into every later test of the session)."""
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(params=POLICIES)
def policy(request):
    return request.param


def build_classifier(family, tiny_bert_dir):
    """A 4-class `TextClassifier` under the current global policy, called once (built)."""
    if family == "scratch":
        model = tiny_scratch_classifier(WORDS, num_classes=4, pooling="mean", num_blocks=2)
    else:
        keras.utils.set_random_seed(0)
        model = TextClassifier(
            bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=32),
            HuggingFaceEncoder.from_pretrained(tiny_bert_dir),
            num_classes=4,
            pooling="cls",
        )
    model(tf.constant(TEXTS), training=False)
    return model


def float32_and_mixed(family, policy, tiny_bert_dir):
    """`(float32 model, mixed model)`: the mixed one built under `policy` (left set) and given
    the float32 one's weights."""
    reference = build_classifier(family, tiny_bert_dir)
    keras.mixed_precision.set_global_policy(policy)
    model = build_classifier(family, tiny_bert_dir)
    model.set_weights(reference.get_weights())
    return reference, model


def attention_of(model):
    features = model.features(tf.constant(TEXTS))
    outputs = model.forward(features, training=False, output_attentions=True)
    return features, outputs


def dense_compute_dtypes(model):
    return {layer.compute_dtype for layer in model.encoder.submodules if isinstance(layer, keras.layers.Dense)}


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_precision_keeps_logits_attention_and_loss_float32_and_close(family, policy, tiny_bert_dir):
    reference, model = float32_and_mixed(family, policy, tiny_bert_dir)
    compute_dtype = keras.mixed_precision.Policy(policy).compute_dtype
    # The encoder's matrix products really run in 16 bits.
    assert dense_compute_dtypes(model) == {compute_dtype}
    assert dense_compute_dtypes(reference) == {"float32"}
    tolerance = TOLERANCE[policy]

    features, outputs = attention_of(model)
    _, expected = attention_of(reference)
    logits = outputs["logits"]
    assert logits.dtype == tf.float32
    np.testing.assert_allclose(logits.numpy(), expected["logits"].numpy(), atol=tolerance)
    assert outputs["attention_scores"], "no attention returned"
    mask = features["input_mask"].numpy().astype(bool)
    for layer, (scores, expected_scores) in enumerate(
        zip(outputs["attention_scores"], expected["attention_scores"], strict=True)
    ):
        assert scores.dtype == tf.float32, f"layer {layer}: attention is {scores.dtype.name}"
        scores = scores.numpy()
        np.testing.assert_allclose(scores.sum(axis=-1), 1.0, atol=1e-3, err_msg=f"layer {layer}")
        # Padding keys get no attention.
        assert np.all(scores.transpose(0, 3, 1, 2)[~mask] < 1e-6)
        np.testing.assert_allclose(scores, expected_scores.numpy(), atol=tolerance, err_msg=f"layer {layer}")

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss = loss_fn(LABELS, logits)
    assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())
    np.testing.assert_allclose(loss.numpy(), loss_fn(LABELS, expected["logits"]).numpy(), atol=tolerance)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_layer_norm_computes_in_float32(family, policy, tiny_bert_dir):
    """Inputs around 300 with a spread of 1: a 16-bit mean is off by about a unit (bfloat16's
    spacing at 300 is 2), which moves every normalised value by about 1; in float32 the outputs
    match a float64 layer norm of the same (rounded) inputs within the output's rounding."""
    keras.mixed_precision.set_global_policy(policy)
    model = build_classifier(family, tiny_bert_dir)
    norms = [layer for layer in model.submodules if isinstance(layer, keras.layers.LayerNormalization)]
    # Scratch: 2 per block x 2 blocks; tiny BERT: the embeddings' and 2 per layer x 2 layers.
    assert len(norms) == (4 if family == "scratch" else 5)
    rng = np.random.default_rng(0)
    for norm in norms:
        width = int(norm.gamma.shape[0])
        norm.gamma.assign(rng.uniform(0.5, 1.5, width).astype(np.float32))
        norm.beta.assign(rng.normal(size=width).astype(np.float32))
        x = tf.cast(300.0 + rng.normal(size=(2, 3, width)), keras.mixed_precision.Policy(policy).compute_dtype)
        got = tf.cast(norm(x), tf.float32).numpy()
        values = tf.cast(x, tf.float64).numpy()
        mean, variance = values.mean(axis=-1, keepdims=True), values.var(axis=-1, keepdims=True)
        expected = (values - mean) / np.sqrt(variance + norm.epsilon) * norm.gamma.numpy() + norm.beta.numpy()
        np.testing.assert_allclose(got, expected, atol=TOLERANCE[policy], err_msg=norm.name)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_fit_under_mixed_precision_keeps_loss_and_weights_finite(family, policy, tiny_bert_dir):
    keras.mixed_precision.set_global_policy(policy)
    model = build_classifier(family, tiny_bert_dir)
    features = model.features(tf.constant(TEXTS))
    steps = 12
    model.compile(
        optimizer=create_optimizer(1e-2, steps, warmup_fraction=0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    if policy == "mixed_float16":
        # Keras wraps the optimizer to scale the loss, so small float16 gradients do not vanish.
        assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    history = model.fit(features, LABELS, batch_size=4, epochs=steps, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)), history
    assert history[-1] < history[0] - 0.1, history
    for weight in model.weights:
        assert weight.dtype == tf.float32, weight.name
        assert np.all(np.isfinite(weight.numpy())), weight.name
    assert model(tf.constant(TEXTS), training=False).dtype == tf.float32


def test_float32_softmax_patches_only_sixteen_bit_bert_attention(tiny_bert_dir):
    assert float32_attention_softmax(load_backbone(tiny_bert_dir)) == 0
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    backbone = load_backbone(tiny_bert_dir)
    assert float32_attention_softmax(backbone) == 2  # one per layer of the tiny BERT
    assert float32_attention_softmax(backbone) == 0  # and only once


def test_bert_attention_dropout_under_mixed_precision(tiny_bert_dir):
    """With attention dropout (the tiny BERT has none), a training call of a patched attention
    layer drops float32 probabilities (its output moves by about its own size), and hands back
    the softmax's probabilities, as inference does."""
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(str(tiny_bert_dir)).to_dict()
    hf_config["attention_probs_dropout_prob"] = 0.5
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    encoder = HuggingFaceEncoder(hf_config=hf_config)
    encoder(bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=32)(tf.constant(TEXTS)))
    attention = next(
        layer
        for layer in encoder.backbone._flatten_layers(include_self=False, recursive=True)
        if type(layer).__name__ == "Float32SoftmaxTFBertSelfAttention"
    )
    hidden = tf.constant(np.random.default_rng(0).normal(size=(4, 9, 32)), tf.bfloat16)
    outputs = {
        training: attention(hidden, None, None, None, None, None, True, training=training) for training in (False, True)
    }
    for values, probabilities in outputs.values():
        assert values.dtype == tf.bfloat16 and probabilities.dtype == tf.float32
        np.testing.assert_allclose(probabilities.numpy().sum(axis=-1), 1.0, atol=1e-3)
    np.testing.assert_allclose(outputs[True][1].numpy(), outputs[False][1].numpy(), atol=1e-6)
    inference, trained = (tf.cast(outputs[training][0], tf.float32).numpy() for training in (False, True))
    assert np.all(np.isfinite(trained))
    assert np.abs(trained - inference).mean() > 0.3 * np.abs(inference).mean()


@pytest.mark.slow
def test_mixed_bert_classifier_saves_and_loads_under_float32(tiny_bert_dir, tmp_path):
    """The patched attention layers keep their checkpoint keys: a model saved under mixed
    precision loads into a float32 one, which gives the same logits within bfloat16 rounding."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_classifier("hf", tiny_bert_dir)
    logits = model(tf.constant(TEXTS), training=False).numpy()
    save_model(model, tmp_path / "model")
    keras.mixed_precision.set_global_policy("float32")
    loaded = load_model(tmp_path / "model")
    assert dense_compute_dtypes(loaded) == {"float32"}
    np.testing.assert_allclose(
        loaded(tf.constant(TEXTS), training=False).numpy(), logits, atol=TOLERANCE["mixed_bfloat16"]
    )


def test_large_attention_logits_do_not_overflow_under_float16():
    """Query and key kernels scaled by 300 make logits of about 1e5: a float16 product overflows
    to inf (checked, so the test can fail), the block's attention stays finite and normalised."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    block = TransformerBlock(embed_dim=8, num_heads=2, ff_dim=16, dropout=0.0)
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 5, 8)), tf.float16)
    block(x)
    for dense in (block.query_dense, block.key_dense):
        dense.kernel.assign(dense.kernel * 300.0)
    q, k = block._split_heads(block.query_dense(x)), block._split_heads(block.key_dense(x))
    assert q.dtype == tf.float16 and np.all(np.isfinite(q.numpy())) and np.all(np.isfinite(k.numpy()))
    assert np.any(np.isinf(tf.matmul(q, k, transpose_b=True).numpy())), "the logits fit float16: no test"
    outputs, scores = block(x, return_attention_scores=True)
    assert scores.dtype == tf.float32
    assert np.all(np.isfinite(scores.numpy())) and np.all(np.isfinite(outputs.numpy()))
    np.testing.assert_allclose(scores.numpy().sum(axis=-1), 1.0, atol=1e-3)


@pytest.mark.slow
def test_large_attention_logits_do_not_overflow_in_bert_under_float16(tiny_bert_dir):
    """The same for the Hugging Face encoder: transformers' own float16 attention turns the
    scaled logits into NaN (checked); the encoder's float32 softmax keeps them finite."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    plain = load_backbone(tiny_bert_dir)  # transformers' attention, unpatched
    encoder = HuggingFaceEncoder(backbone=load_backbone(tiny_bert_dir))
    features = bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=32)(tf.constant(TEXTS))
    results = []
    for backbone in (plain, encoder.backbone):
        for layer in backbone._flatten_layers(include_self=False, recursive=True):
            if type(layer).__name__.endswith("SelfAttention"):
                for dense in (layer.query, layer.key):
                    dense.kernel.assign(dense.kernel * 3000.0)
        outputs = backbone(
            input_ids=features["input_word_ids"],
            attention_mask=features["input_mask"],
            token_type_ids=features["input_type_ids"],
            output_attentions=True,
        )
        results.append([attention.numpy() for attention in outputs.attentions] + [outputs.last_hidden_state])
    assert not all(np.all(np.isfinite(np.asarray(value, np.float32))) for value in results[0]), (
        "transformers' float16 attention stayed finite: the logits are not large enough to test"
    )
    for value in results[1]:
        assert np.all(np.isfinite(np.asarray(value, np.float32)))
    for attention in results[1][:-1]:
        assert attention.dtype == np.float32
        np.testing.assert_allclose(attention.sum(axis=-1), 1.0, atol=1e-3)
