"""The task models of every family through the shared harness (`task_harness.run_task_test`), and
what the harness does not cover: pooling semantics per encoder, Keras serialization of a
`TextClassifier` per family, argument errors, and the log capture the harness relies on.

Families: from scratch (`VocabularyPreprocessor` + `TransformerEncoder`), Hugging Face (the tiny
BERT through `BertPreprocessor` + `HuggingFaceEncoder`) and TF-Hub (the tiny BERT exported by
`export_hub_bert`, through `HubPreprocessor` + `HubEncoder`).

Quick suite: the harness for the from-scratch text classifier (mean pooling, eager fit, no
export), the pooling checks of the from-scratch family, the serialization checks of the
from-scratch and Hugging Face families, and the argument errors. `slow`: every other harness run
(the Hugging Face text and token classifiers take 10 s or more each), the traced fits, every
export round trip (a second interpreter, ~25 s) and everything TF-Hub (its session fixture,
`export_hub_bert` of the tiny BERT, takes about 15 s).
"""

import json
import logging

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from task_harness import captured_logs, exported_tiny_hub_bert, run_task_test

from tfattn.models import (
    POOLINGS,
    HubEncoder,
    HubPreprocessor,
    HuggingFaceEncoder,
    TextClassifier,
    TokenClassifier,
    TransformerEncoder,
    VocabularyPreprocessor,
    load_model,
)
from tfattn.models.wordpiece import bert_preprocessor_from_pretrained

TEXTS = ["Stocks fell sharply as oil prices rose.", "The Lakers beat the Celtics!", "Intel unveils a new chip", "Rain"]
CLASS_NAMES = ["World", "Sports", "Business", "Sci/Tech"]
CLASS_LABELS = [2, 1, 3, 0]
SCRATCH_TOKENS = ["stocks", "fell", "sharply", "as", "oil", "prices", "rose"]
BERT_TOKENS = ["[CLS]", "stocks", "fell", "sharply", "as", "oil", "prices", "rose", ".", "[SEP]"]

NER_TEXTS = ["Angela Merkel visited Paris.", "Apple hired Tim Cook in California", "hello"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"]
NER_LENGTH = 8  # [CLS] angela mer ##kel visited paris . [SEP]

# Trainable encoder weights once unfrozen. Scratch: 2 embeddings + 2 blocks x 16. BERT:
# 5 embedding weights + 2 layers x 16, plus the pooler's kernel and bias when the head reads it
# (HuggingFaceEncoder.use_pooler); a TF-Hub module's pooler always trains (no gradient unless read).
SCRATCH_WEIGHTS, BERT_WEIGHTS, POOLER_WEIGHTS = 34, 37, 2
SLOW = pytest.mark.slow
# The TF-Hub family needs the session's export_hub_bert of the tiny BERT (about 15 s): slow.
FAMILIES = ["scratch", "hf", pytest.param("hub", marks=SLOW)]


@pytest.fixture(scope="session")
def tiny_hub_dirs(tiny_bert_dir, tmp_path_factory):
    return exported_tiny_hub_bert(tiny_bert_dir, tmp_path_factory)


def scratch_parts():
    preprocessor = VocabularyPreprocessor.adapt(TEXTS, vocab_size=40, max_length=12)
    encoder = TransformerEncoder(
        len(preprocessor.vocabulary), 12, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=2, dropout=0.0
    )
    return preprocessor, encoder


def family_parts(family, request):
    """A fresh (preprocessor, encoder) of `family`."""
    if family == "scratch":
        return scratch_parts()
    if family == "hf":
        tiny_bert_dir = request.getfixturevalue("tiny_bert_dir")
        preprocessor = bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=32)
        return preprocessor, HuggingFaceEncoder.from_pretrained(tiny_bert_dir)
    preprocess_dir, encoder_dir = request.getfixturevalue("tiny_hub_dirs")
    return HubPreprocessor(preprocess_dir), HubEncoder(encoder_dir)


def text_case(family, pooling):
    """What the harness expects of a TextClassifier of `family` with `pooling`."""
    if family == "scratch":
        return dict(
            expected_output_shape=(4, 4),
            expected_attention_shape=(2, 2),
            expected_tokens=SCRATCH_TOKENS,
            expected_trainable_encoder_weights=SCRATCH_WEIGHTS,
            tensorflow_text=False,
        )
    case = dict(
        expected_output_shape=(4, 4), expected_attention_shape=(2, 2), expected_tokens=BERT_TOKENS, tensorflow_text=True
    )
    if family == "hf":
        pooler = POOLER_WEIGHTS if pooling == "pooled" else 0
        return {**case, "expected_trainable_encoder_weights": BERT_WEIGHTS + pooler}
    return {
        **case,
        "expected_trainable_encoder_weights": BERT_WEIGHTS + POOLER_WEIGHTS,
        "weights_without_gradient": () if pooling == "pooled" else ("pooler",),
    }


@pytest.mark.parametrize(
    "family, pooling, export, run_eagerly",
    [
        # The quick suite's harness run: from scratch, eager, no export (the export round trip
        # starts a second interpreter, ~25 s: `slow`).
        pytest.param("scratch", "mean", False, True, id="scratch-mean"),
        pytest.param("scratch", "mean", True, True, id="scratch-mean-export", marks=SLOW),
        pytest.param("scratch", "cls", False, False, id="scratch-cls-traced", marks=SLOW),
        pytest.param("scratch", "pooled", False, True, id="scratch-pooled", marks=SLOW),
        pytest.param("hf", "cls", False, True, id="hf-cls", marks=SLOW),
        pytest.param("hf", "pooled", False, True, id="hf-pooled", marks=SLOW),
        pytest.param("hf", "mean", True, False, id="hf-mean-export-traced", marks=SLOW),
        pytest.param("hub", "pooled", True, True, id="hub-pooled-export", marks=SLOW),
        pytest.param("hub", "cls", False, False, id="hub-cls-traced", marks=SLOW),
        pytest.param("hub", "mean", False, True, id="hub-mean", marks=SLOW),
    ],
)
def test_text_classifier(family, pooling, export, run_eagerly, request, tmp_path):
    preprocessor, encoder = family_parts(family, request)
    run_task_test(
        TextClassifier,
        dict(preprocessor=preprocessor, encoder=encoder, num_classes=len(CLASS_NAMES), pooling=pooling),
        (TEXTS, CLASS_LABELS),
        tmp_path=tmp_path,
        label_names=CLASS_NAMES,
        export=export,
        # Eager fits are seconds faster; the traced ones (`slow`) fit as training does.
        run_eagerly=run_eagerly,
        **text_case(family, pooling),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "export",
    # The export round trip traces the in-graph WordPiece with offsets and starts a second
    # interpreter (~25 s); tests/test_ner.py also serves a trained tagger's export (slow).
    [False, True],
    ids=["in-process", "export"],
)
def test_token_classifier(tiny_bert_dir, tmp_path, export):
    labels = np.random.default_rng(0).integers(0, len(NER_LABELS), size=(len(NER_TEXTS), NER_LENGTH))
    run_task_test(
        TokenClassifier,
        dict(
            preprocessor=bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=32),
            encoder=HuggingFaceEncoder.from_pretrained(tiny_bert_dir),
            label_names=NER_LABELS,
        ),
        (NER_TEXTS, labels),
        tmp_path=tmp_path,
        label_names=NER_LABELS,
        expected_output_shape=(3, NER_LENGTH, len(NER_LABELS)),
        expected_attention_shape=(2, 2),
        expected_trainable_encoder_weights=BERT_WEIGHTS,  # the pooler is not read
        expected_tokens=["[CLS]", "angela", "mer", "##kel", "visited", "paris", ".", "[SEP]"],
        export=export,
        tensorflow_text=True,
    )


# The Hugging Face case builds and runs the tiny BERT three times (3 s): `slow` with TF-Hub's.
@pytest.mark.parametrize("family", ["scratch", pytest.param("hf", marks=SLOW), pytest.param("hub", marks=SLOW)])
def test_every_pooling_reads_its_vector_from_every_encoder(family, request):
    """With an identity head the logits are the pooled vector itself: the first token's for
    "cls", the mean over real tokens for "mean", the encoder's pooled_output for "pooled";
    each text alone gives its batched (padded) row."""
    preprocessor, encoder = family_parts(family, request)
    strings = tf.constant(TEXTS)
    features = preprocessor(strings)
    outputs = encoder(features, training=False)
    sequence, mask = outputs["sequence_output"].numpy(), features["input_mask"].numpy()[:, :, None]
    assert mask.sum() < mask.size  # the batch has padding, which mean pooling must ignore
    expected = {
        "cls": sequence[:, 0],
        "mean": (sequence * mask).sum(axis=1) / mask.sum(axis=1),
        "pooled": outputs["pooled_output"].numpy(),
    }
    hidden = sequence.shape[-1]
    for pooling in POOLINGS:
        model = TextClassifier(preprocessor, encoder, num_classes=hidden, pooling=pooling, dropout=0.5)
        model(strings)
        model.head.set_weights([np.eye(hidden, dtype=np.float32), np.zeros(hidden, np.float32)])
        np.testing.assert_allclose(model(strings, training=False), expected[pooling], atol=1e-5, err_msg=pooling)
        np.testing.assert_allclose(model(strings[-1:], training=False)[0], expected[pooling][-1], atol=1e-5)
    # The poolings differ, so the checks above can tell them apart.
    assert np.abs(expected["cls"] - expected["mean"]).max() > 1e-3
    if family != "scratch":  # the from-scratch encoder's pooled_output is its masked mean
        assert np.abs(expected["cls"] - expected["pooled"]).max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_text_classifier_config_round_trips_through_keras_serialization(family, request):
    preprocessor, encoder = family_parts(family, request)
    model = TextClassifier(preprocessor, encoder, num_classes=4, pooling="mean", dropout=0.25, name="topics")
    config = model.get_config()
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))  # as in model.json
    assert serialized["registered_name"] == "tfattn>TextClassifier"
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is TextClassifier
    assert (revived.name, revived.num_classes, revived.pooling, revived.dropout_rate) == ("topics", 4, "mean", 0.25)
    assert type(revived.preprocessor) is type(preprocessor) and type(revived.encoder) is type(encoder)
    assert json.loads(json.dumps(revived.get_config())) == json.loads(json.dumps(config))


def test_invalid_task_arguments_are_refused_with_the_reason(tmp_path):
    preprocessor, encoder = scratch_parts()
    with pytest.raises(ValueError, match=r"pooling must be one of cls, mean, pooled; got 'max'"):
        TextClassifier(preprocessor, encoder, 2, pooling="max")
    with pytest.raises(ValueError, match="num_classes must be at least 2, got 1"):
        TextClassifier(preprocessor, encoder, 1)
    with pytest.raises(ValueError, match=r"label_names needs at least 2 labels, got \['O'\]"):
        TokenClassifier(preprocessor, encoder, ["O"])
    tagger = TokenClassifier(preprocessor, encoder, ["O", "B-PER"])
    with pytest.raises(ValueError, match="needs character offsets, which VocabularyPreprocessor does not give"):
        tagger.tag_tokens(["Angela Merkel"])
    with pytest.raises(FileNotFoundError, match="no model.json; not a model saved by tfattn"):
        load_model(tmp_path)


def test_log_capture_sees_the_non_serializable_warning_even_when_quieted():
    """The harness's check for "non-serializable" warnings can fail: a subclassed model without
    get_config makes Keras warn, and the capture sees it through tfattn.quiet's filter."""
    from tfattn.quiet import _DropNoise

    class Unserializable(keras.Model):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def call(self, inputs):
            return self.inner(inputs)

    model = Unserializable(keras.layers.Dense(2))
    tf_logger = logging.getLogger("tensorflow")
    quiet = _DropNoise()
    tf_logger.addFilter(quiet)  # what `tfattn` commands (and CLI tests) install
    try:
        with captured_logs() as logs:
            model.get_config()
        assert any("non-serializable" in message for message in logs), logs
        assert quiet in tf_logger.filters  # restored afterwards
    finally:
        tf_logger.removeFilter(quiet)
