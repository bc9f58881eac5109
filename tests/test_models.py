"""Tests of tfattn.models preprocessors and encoders: the shared layer harness on each, then what
is particular to each (golden ids, truncation, empty texts, masked pooling, padding, agreement
with the Hugging Face model and tokenizer)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from harness import run_layer_test

from tfattn.models import (
    FEATURE_NAMES,
    HuggingFaceEncoder,
    TransformerEncoder,
    VocabularyPreprocessor,
    preprocess_in_chunks,
)
from tfattn.models.encoders import masked_mean
from tfattn.models.wordpiece import (
    BertPreprocessor,
    bert_preprocessor_from_pretrained,
    bert_preprocessor_from_tokenizer,
)


def _feature_shapes(batch, length):
    return {name: (batch, length) for name in FEATURE_NAMES}


# --- VocabularyPreprocessor ----------------------------------------------------------------


def test_vocabulary_preprocessor_layer():
    texts = np.array(["The cat sat.", "", "cat cat the dog"])
    layer = run_layer_test(
        VocabularyPreprocessor,
        {"vocabulary": ["the", "cat"], "max_length": 3},
        texts,
        expected_output_shape=_feature_shapes(3, 3),
        expected_num_trainable_weights=0,
        expected_output_dtype="int32",
    )
    features = layer(texts)
    # "sat" and "dog" are [UNK] (1); the empty text is one [UNK]; the last row is cut to 3 words.
    np.testing.assert_array_equal(features["input_word_ids"], [[2, 3, 1], [1, 0, 0], [3, 3, 2]])
    np.testing.assert_array_equal(features["input_mask"], [[1, 1, 1], [1, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(features["input_type_ids"], np.zeros((3, 3)))
    assert layer.vocabulary == ["", "[UNK]", "the", "cat"]


def test_vocabulary_preprocessor_adapt_keeps_the_most_frequent_words():
    texts = ["the cat sat", "The cat!", "the"]
    preprocessor = VocabularyPreprocessor.adapt(texts, vocab_size=4, max_length=5)
    assert preprocessor.words == ["the", "cat"]
    assert preprocessor.vocabulary == ["", "[UNK]", "the", "cat"]
    np.testing.assert_array_equal(preprocessor(tf.constant(["sat the cat"]))["input_word_ids"], [[1, 2, 3]])
    everything = VocabularyPreprocessor.adapt(texts, vocab_size=100, max_length=5)
    assert everything.words == ["the", "cat", "sat"]
    # The adapted vocabulary survives the config (what a saved model keeps).
    assert VocabularyPreprocessor.from_config(preprocessor.get_config()).vocabulary == preprocessor.vocabulary


def test_vocabulary_preprocessor_truncates_to_max_length_and_pads_to_longest_row():
    preprocessor = VocabularyPreprocessor(["a", "b", "c", "d", "e"], max_length=4)
    features = preprocessor(tf.constant(["a b c d e", "b"]))
    np.testing.assert_array_equal(features["input_word_ids"], [[2, 3, 4, 5], [3, 0, 0, 0]])
    # A batch of short rows is padded only to its own longest row.
    assert preprocessor(tf.constant(["a b", "c"]))["input_word_ids"].shape == (2, 2)
    # Before truncation, `tokenize` still counts every word.
    assert preprocessor.tokenize(["a b c d e"]).row_lengths().numpy().tolist() == [5]
    with pytest.raises(ValueError, match="max_length must be at least 1, got 0"):
        VocabularyPreprocessor(["a"], max_length=0)


def test_vocabulary_preprocessor_refuses_an_empty_vocabulary():
    # Refused when built, not at the first call as an uninitialized lookup table.
    with pytest.raises(ValueError, match="the vocabulary has no word"):
        VocabularyPreprocessor([], max_length=4)
    with pytest.raises(ValueError, match="did adapt find none in the texts"):
        VocabularyPreprocessor.adapt(["?!", "..."], vocab_size=10, max_length=4)


def test_vocabulary_preprocessor_text_with_no_token_is_one_unk():
    preprocessor = VocabularyPreprocessor(["word"], max_length=8)
    features = preprocessor(tf.constant(["", "   ", "?!."]))
    for name, expected in (("input_word_ids", 1), ("input_mask", 1), ("input_type_ids", 0)):
        assert features[name].dtype == tf.int32
        np.testing.assert_array_equal(features[name], np.full((3, 1), expected))


def test_preprocess_in_chunks_gives_rows_without_padding():
    preprocessor = VocabularyPreprocessor(["a", "b"], max_length=8)
    features = preprocess_in_chunks(preprocessor, ["a b a", "", "b"], chunk_size=2)
    assert features["input_word_ids"].to_list() == [[2, 3, 2], [1], [3]]
    assert features["input_mask"].to_list() == [[1, 1, 1], [1], [1]]
    assert preprocess_in_chunks(preprocessor, [])["input_word_ids"].shape[0] == 0


# --- BertPreprocessor ----------------------------------------------------------------------

BERT_TEXTS = ["Hello, world!", "", "Tokenization splits unaffable words into wordpieces"]


@pytest.mark.slow
def test_bert_preprocessor_layer(tiny_bert_dir):
    layer = run_layer_test(
        BertPreprocessor,
        {"vocab_file": str(tiny_bert_dir / "vocab.txt"), "max_length": 8},
        np.array(BERT_TEXTS),
        expected_output_shape=_feature_shapes(3, 8),
        expected_num_trainable_weights=0,
        expected_output_dtype="int32",
        init_kwargs_not_in_config=("vocab_file",),  # the config holds the vocabulary itself
    )
    ids = layer(tf.constant(BERT_TEXTS))["input_word_ids"].numpy()
    # [CLS] ... [SEP]: the long text is cut to max_length and still ends with [SEP]; an empty
    # text is [CLS] [SEP] and padding ([PAD] = 0).
    assert (ids[:, 0] == layer.cls_id).all()
    assert ids[2, -1] == layer.sep_id
    np.testing.assert_array_equal(ids[1], [layer.cls_id, layer.sep_id, 0, 0, 0, 0, 0, 0])


def test_bert_preprocessor_gives_the_hugging_face_tokenizer_ids(tiny_bert_dir):
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(str(tiny_bert_dir))
    preprocessor = bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=8)
    assert preprocessor.lower_case
    features = preprocessor(tf.constant(BERT_TEXTS))
    expected = tokenizer(BERT_TEXTS, truncation=True, max_length=8, padding=True, return_tensors="np")
    np.testing.assert_array_equal(features["input_word_ids"], expected["input_ids"])
    np.testing.assert_array_equal(features["input_mask"], expected["attention_mask"])
    np.testing.assert_array_equal(features["input_type_ids"], expected["token_type_ids"])
    # Padding to max_length gives the TF-Hub fixed shape, the same ids in front.
    fixed = BertPreprocessor(vocabulary=preprocessor.vocabulary, max_length=12, pad_to_max_length=True)
    padded = fixed(tf.constant(["Hello, world!"]))["input_word_ids"].numpy()
    length = int(expected["attention_mask"][0].sum())  # [CLS] hello , world ! [SEP]
    assert padded.shape == (1, 12) and length == 6
    np.testing.assert_array_equal(padded[0, :length], expected["input_ids"][0, :length])
    assert (padded[0, length:] == 0).all()


def test_bert_preprocessor_refuses_a_vocabulary_without_special_tokens():
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[SEP\]'\]"):
        BertPreprocessor(vocabulary=["[PAD]", "[UNK]", "[CLS]", "hello"])
    with pytest.raises(ValueError, match="pass exactly one of vocab_file and vocabulary"):
        BertPreprocessor()


# --- TransformerEncoder --------------------------------------------------------------------

ENCODER_KWARGS = {
    "vocab_size": 30,
    "max_length": 12,
    "embed_dim": 8,
    "num_heads": 2,
    "ff_dim": 16,
    "num_blocks": 2,
    "dropout": 0.0,
}


def _features(word_ids):
    word_ids = np.asarray(word_ids, np.int32)
    return {
        "input_word_ids": word_ids,
        "input_mask": (word_ids != 0).astype(np.int32),
        "input_type_ids": np.zeros_like(word_ids),
    }


ENCODER_FEATURES = _features([[2, 5, 9, 4, 7, 3], [6, 8, 3, 0, 0, 0]])


@pytest.mark.slow
def test_transformer_encoder_layer():
    # One block here (XLA compiles the training step faster); the other tests stack two.
    encoder = run_layer_test(
        TransformerEncoder,
        {**ENCODER_KWARGS, "num_blocks": 1},
        ENCODER_FEATURES,
        expected_output_shape={
            "sequence_output": (2, 6, 8),
            "pooled_output": (2, 8),
            "attention_scores": [(2, 2, 6, 6)],
        },
        # Embedding: token and position tables; the block: 6 dense layers and 2 layer norms.
        expected_num_trainable_weights=2 + 16,
        call_kwargs={"output_attentions": True},
        weights_without_gradient=("key/bias",),
        # The attention weights are float32 under mixed precision (a float32 softmax).
        float32_outputs=("attention_scores",),
    )
    # Attention is only returned when asked for.
    assert sorted(encoder(ENCODER_FEATURES)) == ["pooled_output", "sequence_output"]


def test_transformer_encoder_pooled_output_is_the_masked_mean():
    keras.utils.set_random_seed(2)
    encoder = TransformerEncoder(**ENCODER_KWARGS)
    outputs = encoder(ENCODER_FEATURES, output_attentions=True)
    sequence = outputs["sequence_output"].numpy()
    expected = np.stack([sequence[0].mean(axis=0), sequence[1, :3].mean(axis=0)])
    np.testing.assert_allclose(outputs["pooled_output"], expected, atol=1e-6)
    np.testing.assert_allclose(
        masked_mean(outputs["sequence_output"], ENCODER_FEATURES["input_mask"]), expected, atol=1e-6
    )
    # Each attention row is a distribution over the real tokens only.
    for scores in outputs["attention_scores"]:
        np.testing.assert_allclose(tf.reduce_sum(scores, axis=-1), np.ones((2, 2, 6)), atol=1e-5)
        np.testing.assert_allclose(scores[1, :, :, 3:], 0.0, atol=1e-7)


def test_transformer_encoder_padding_does_not_change_real_positions():
    keras.utils.set_random_seed(3)
    encoder = TransformerEncoder(**ENCODER_KWARGS)
    short = _features([[4, 9, 2, 7]])
    padded = _features([[4, 9, 2, 7, 0, 0, 0, 0]])
    a = encoder(short, output_attentions=True)
    b = encoder(padded, output_attentions=True)
    np.testing.assert_allclose(b["sequence_output"][:, :4], a["sequence_output"], atol=1e-5)
    np.testing.assert_allclose(b["pooled_output"], a["pooled_output"], atol=1e-5)
    for short_scores, padded_scores in zip(a["attention_scores"], b["attention_scores"], strict=True):
        np.testing.assert_allclose(padded_scores[:, :, :4, :4], short_scores, atol=1e-5)
    # The mask is what keeps padding out: marking the padding as real changes the outputs.
    leaky = dict(padded, input_mask=np.ones_like(padded["input_mask"]))
    assert np.abs(encoder(leaky)["sequence_output"][:, :4] - a["sequence_output"]).max() > 1e-3


def test_transformer_encoder_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"embed_dim \(10\) must be a multiple of num_heads \(4\)"):
        TransformerEncoder(vocab_size=10, max_length=4, embed_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="num_blocks must be at least 1, got 0"):
        TransformerEncoder(vocab_size=10, max_length=4, num_blocks=0)


# --- HuggingFaceEncoder (tiny random BERT) --------------------------------------------------

# [CLS] w w [SEP] w [SEP] and a padded row: a second segment and padding, so a feature reaching
# the wrong Hugging Face input would change the outputs.
HF_FEATURES = {
    "input_word_ids": np.array([[101, 7592, 2088, 102, 2003, 102], [101, 2054, 102, 0, 0, 0]], np.int32),
    "input_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], np.int32),
    "input_type_ids": np.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], np.int32),
}
HF_SHAPES = {
    "sequence_output": (2, 6, 32),
    "pooled_output": (2, 32),
    "attention_scores": [(2, 2, 6, 6), (2, 2, 6, 6)],
}
# Embeddings: 3 tables and a layer norm; each of 2 layers: 6 dense layers and 2 layer norms; pooler.
HF_NUM_WEIGHTS = 5 + 2 * 16 + 2


@pytest.fixture(scope="module")
def tiny_bert_encoder(tiny_bert_dir):
    return HuggingFaceEncoder.from_pretrained(tiny_bert_dir)


def _tiny_bert_config(tiny_bert_dir):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(tiny_bert_dir)).to_dict()


def _run_hugging_face_encoder_test(tiny_bert_dir, **checks):
    run_layer_test(
        HuggingFaceEncoder,
        {"hf_config": _tiny_bert_config(tiny_bert_dir)},
        HF_FEATURES,
        expected_output_shape=HF_SHAPES,
        expected_num_trainable_weights=HF_NUM_WEIGHTS,
        call_kwargs={"output_attentions": True},
        # The attention weights are float32 under mixed precision (HuggingFaceEncoder's float32 softmax).
        float32_outputs=("attention_scores",),
        **checks,
    )


@pytest.mark.slow
def test_hugging_face_encoder_layer(tiny_bert_dir):
    # The training check runs in test_hugging_face_encoder_training_step (slow: XLA compiles BERT).
    _run_hugging_face_encoder_test(tiny_bert_dir, run_training_check=False)


@pytest.mark.slow
def test_hugging_face_encoder_training_step(tiny_bert_dir):
    # The precision check runs in test_hugging_face_encoder_layer.
    _run_hugging_face_encoder_test(tiny_bert_dir, weights_without_gradient=("key/bias",), run_precision_check=False)


def test_hugging_face_encoder_matches_the_transformers_model(tiny_bert_dir, tiny_bert_encoder):
    from transformers import TFBertModel

    reference = TFBertModel.from_pretrained(str(tiny_bert_dir))
    expected = reference(
        input_ids=HF_FEATURES["input_word_ids"],
        attention_mask=HF_FEATURES["input_mask"],
        token_type_ids=HF_FEATURES["input_type_ids"],
        training=False,
    )
    outputs = tiny_bert_encoder(HF_FEATURES, training=False, output_attentions=True)
    np.testing.assert_allclose(outputs["sequence_output"], expected.last_hidden_state, atol=1e-5)
    np.testing.assert_allclose(outputs["pooled_output"], expected.pooler_output, atol=1e-5)
    # The comparison can fail: without the mask and segment ids the model gives other vectors.
    unmasked = reference(input_ids=HF_FEATURES["input_word_ids"], training=False).last_hidden_state
    assert np.abs(unmasked - expected.last_hidden_state).max() > 1e-3

    scores = outputs["attention_scores"]
    assert isinstance(scores, list) and len(scores) == 2
    for layer_scores in scores:
        assert layer_scores.shape == (2, 2, 6, 6)
        np.testing.assert_allclose(tf.reduce_sum(layer_scores, axis=-1), np.ones((2, 2, 6)), atol=1e-5)
        np.testing.assert_allclose(layer_scores[1, :, :, 3:], 0.0, atol=1e-6)
    assert "attention_scores" not in tiny_bert_encoder(HF_FEATURES)


def test_hugging_face_encoder_config_rebuilds_the_architecture(tiny_bert_encoder):
    config = tiny_bert_encoder.get_config()
    assert config["hf_config"]["model_type"] == "bert" and config["hf_config"]["num_hidden_layers"] == 2
    rebuilt = HuggingFaceEncoder.from_config(config)
    outputs = rebuilt(HF_FEATURES)
    assert outputs["sequence_output"].shape == (2, 6, 32)
    assert rebuilt.get_config()["hf_config"] == config["hf_config"]
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in tiny_bert_encoder.weights]
    # Fresh weights, not the checkpoint's: loading them is the task model's business.
    assert not np.allclose(rebuilt.weights[0].numpy(), tiny_bert_encoder.weights[0].numpy())
    with pytest.raises(ValueError, match="pass exactly one of backbone and hf_config"):
        HuggingFaceEncoder()


def test_hugging_face_encoder_pooler_leaves_training_when_unused(tiny_bert_encoder):
    try:
        tiny_bert_encoder.use_pooler(False)
        assert len(tiny_bert_encoder.trainable_weights) == HF_NUM_WEIGHTS - 2
        assert not any("pooler" in w.name for w in tiny_bert_encoder.trainable_weights)
    finally:
        tiny_bert_encoder.use_pooler(True)
    assert len(tiny_bert_encoder.trainable_weights) == HF_NUM_WEIGHTS


@pytest.mark.slow
def test_bert_preprocessor_from_a_loaded_tokenizer_equals_the_one_from_its_folder(tiny_bert_dir):
    from tfattn.pretrained import load_tokenizer

    tokenizer = load_tokenizer(tiny_bert_dir)
    from_tokenizer = bert_preprocessor_from_tokenizer(tokenizer, max_length=16)
    from_folder = bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=16)
    assert from_tokenizer.lower_case == from_folder.lower_case
    assert list(from_tokenizer.vocabulary) == list(from_folder.vocabulary)
    texts = tf.constant(["Müller visited Paris!", "", "x" * 300])
    for name, value in from_folder(texts).items():
        np.testing.assert_array_equal(from_tokenizer(texts)[name], value)

    tokenizer.init_kwargs["strip_accents"] = False  # with lower-casing: not reproduced in the graph
    with pytest.raises(ValueError, match="strip_accents=False with do_lower_case=True is not supported"):
        bert_preprocessor_from_tokenizer(tokenizer)
