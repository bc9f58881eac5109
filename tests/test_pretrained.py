"""Tests of the transformers-TF classifier on the offline MiniLM checkpoint (6 layers, 12 heads)."""

import numpy as np
import pytest
import tensorflow as tf

from tfattn.attention import extract_attention
from tfattn.export import export_text_classifier
from tfattn.optimization import create_optimizer
from tfattn.pretrained import (
    PretrainedLoadError,
    TransformerClassifier,
    load_pretrained_text_classifier,
    load_tokenizer,
    save_pretrained_text_classifier,
    tokenize_texts,
)

TEXTS = ["Find the area of a circle of radius 3.", "How many primes are less than 20?"]


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_tokenizer(minilm_dir)


@pytest.fixture(scope="module")
def classifier(minilm_dir):
    return TransformerClassifier.from_pretrained_backbone(minilm_dir, num_classes=3, pooling="mean")


def _batch(tokenizer, texts, **kwargs):
    return dict(tokenizer(texts, padding=True, return_tensors="tf", **kwargs))


def test_attention_of_every_layer(classifier, tokenizer):
    features = _batch(tokenizer, TEXTS)
    probabilities, attentions = classifier(features, output_attentions=True)
    seq = features["input_ids"].shape[1]
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.numpy().sum(-1), 1.0, atol=1e-5)
    assert [tuple(a.shape) for a in attentions] == [(2, 12, seq, seq)] * 6


def test_mean_pooling_ignores_padding(classifier, tokenizer):
    short = _batch(tokenizer, TEXTS[:1])
    padded = {name: tf.pad(t, [[0, 0], [0, 15]]) for name, t in short.items()}  # 15 pad tokens (id 0)
    np.testing.assert_allclose(classifier.pooled_output(padded), classifier.pooled_output(short), atol=1e-5)
    # CLS pooling of the same backbone differs from mean pooling: the test can tell them apart.
    cls = TransformerClassifier(classifier.backbone, 3, pooling="cls")
    assert np.abs(cls.pooled_output(short) - classifier.pooled_output(short)).max() > 1e-3


@pytest.mark.parametrize("head", ["dense", "auto"])
def test_frozen_backbone_stays_bit_identical_while_head_trains(minilm_dir, tokenizer, head):
    model = TransformerClassifier.from_pretrained_backbone(minilm_dir, num_classes=2, head=head)
    model.freeze_backbone()
    model.compile(optimizer=create_optimizer(1e-2, total_steps=4), loss="sparse_categorical_crossentropy")
    features = _batch(tokenizer, TEXTS)
    model(features)
    backbone_before = [w.numpy().copy() for w in model.encoder.weights]
    head_before = [w.numpy().copy() for w in model.trainable_weights]
    assert 0 < len(head_before) < 5  # only the head trains
    model.fit(features, np.array([0, 1]), epochs=3, verbose=0)  # step 0 of warmup has rate 0
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(backbone_before, model.encoder.weights))
    assert all(not np.array_equal(b, w.numpy()) for b, w in zip(head_before, model.trainable_weights))
    model.unfreeze_backbone()
    assert len(model.trainable_weights) > 100


def test_tokenize_texts_gives_unpadded_ragged_features(tokenizer):
    features = tokenize_texts(tokenizer, ["a b c", "hello"], max_length=4)
    assert sorted(features) == ["attention_mask", "input_ids", "token_type_ids"]
    assert features["input_ids"].row_lengths().numpy().tolist() == [4, 3]  # truncated to 4 with [SEP]
    assert features["input_ids"][0, -1].numpy() == tokenizer.sep_token_id


def test_strings_in_model_round_trips_and_exports(classifier, tokenizer, tmp_path):
    save_pretrained_text_classifier(classifier, tokenizer, tmp_path / "model")
    text_model = load_pretrained_text_classifier(tmp_path / "model", max_length=64)
    expected = classifier(_batch(tokenizer, TEXTS, truncation=True, max_length=64)).numpy()
    np.testing.assert_allclose(text_model(tf.constant(TEXTS)).numpy(), expected, atol=1e-5)

    maps = extract_attention(text_model, TEXTS[0])
    assert maps[0].tokens[0] == "[CLS]" and maps[0].tokens[-1] == "[SEP]"
    assert maps[0].attention.shape == (6, 12, len(maps[0].tokens), len(maps[0].tokens))

    exported = tf.saved_model.load(str(export_text_classifier(text_model, ["a", "b", "c"], tmp_path / "export")))
    served = exported.signatures["serving_default"](tf.constant(TEXTS))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)


def test_unreachable_hub_name_is_a_one_line_error():
    with pytest.raises(PretrainedLoadError, match="'no-such-org/no-such-bert'.*local checkpoint folder") as caught:
        load_tokenizer("no-such-org/no-such-bert")
    assert "\n" not in str(caught.value)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(PretrainedLoadError, match="no config.json"):
        TransformerClassifier.from_pretrained_backbone(tmp_path, num_classes=2)
