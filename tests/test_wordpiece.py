"""Tests of the in-graph BERT preprocessor: the same ids as the Hugging Face fast tokenizer."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfattn.data import load_math_topics, read_agnews_csv
from tfattn.models import FEATURE_NAMES
from tfattn.models.preprocessors import HF_FEATURE_NAMES
from tfattn.models.wordpiece import BertPreprocessor, bert_preprocessor_from_pretrained

MAX_LENGTH = 128

EDGE_CASES = [
    "Café naïve résumé à la crème brûlée",
    "ÀÉÎÕÜ Ångström Øresund Łódź İstanbul straße ẞ",
    "ΣΟΦΙΑ ΚΑΙ ΛΟΓΟΣ",  # word-final capital sigma
    "中文字符测试 and 日本語のテキスト, 한국어",
    "emoji 😀👍🏽🇫🇷 and 🥰 inside words like a😀b",
    "MiXeD CaSe iPhone McDONALD's NASA",
    "Wait!!! What?!?... --- ((nested)) [brackets] {braces} <angles> $$$ ^^^ ``` ~~~ |||",
    "many     spaces\tand\ttabs\nand\r\nnewlines\u00a0no-break\u3000ideographic",
    "   ",
    "",
    "\t \n ",
    "control\x00chars\x07and\x1bescape\x7fdel and zero\u200bwidth\u200djoiner\ufeffbom",
    "literal [CLS] and [SEP] and [MASK]x[UNK] but not [cls] or [SE\x00P]",
    "ﬁ ligature ½ fraction ² superscript Ⅻ numeral",
    # Words of 100 characters are tokenized, longer ones are "[UNK]", whatever their bytes.
    "a" * 100 + " " + "b" * 101,
    "ж" * 100,
    "ж" * 101 + " é" * 101,
]


def _sample(items, count):
    """`count` items spread evenly over the whole list (deterministic)."""
    step = max(1, len(items) // count)
    return list(items[::step][:count])


def _assert_same_ids_as_hf(preprocessor, tokenizer, texts):
    """The preprocessor's `input_word_ids`, `input_mask` and `input_type_ids` are the Hugging Face
    tokenizer's `input_ids`, `attention_mask` and `token_type_ids` (`HF_FEATURE_NAMES`) row by
    row, and every feature is 0 past a row's length except `[PAD]` ids."""
    expected = tokenizer(texts, truncation=True, max_length=preprocessor.max_length)
    outputs = {name: tensor.numpy() for name, tensor in preprocessor(tf.constant(texts)).items()}
    assert set(outputs) == set(FEATURE_NAMES)
    assert HF_FEATURE_NAMES == {
        "input_word_ids": "input_ids",
        "input_mask": "attention_mask",
        "input_type_ids": "token_type_ids",
    }
    mismatches = []
    for row, text in enumerate(texts):
        length = int(outputs["input_mask"][row].sum())
        differs = [
            name
            for name, hf_name in HF_FEATURE_NAMES.items()
            if outputs[name][row, :length].tolist() != expected[hf_name][row]
        ]
        padding = {name: outputs[name][row, length:].tolist() for name in FEATURE_NAMES}
        if padding["input_mask"] and (
            any(padding["input_mask"])
            or any(padding["input_type_ids"])
            or set(padding["input_word_ids"]) != {preprocessor.pad_id}
        ):
            differs.append("padding")
        if differs:
            mismatches.append(
                f"{text[:80]!r} ({', '.join(differs)})"
                f"\n  HF {tokenizer.convert_ids_to_tokens(expected['input_ids'][row])}"
                f"\n  TF {tokenizer.convert_ids_to_tokens(outputs['input_word_ids'][row, :length].tolist())}"
            )
    summary = f"{len(mismatches)}/{len(texts)} rows differ:\n"
    assert not mismatches, summary + "\n".join(mismatches[:5])


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def preprocessor(minilm_dir):
    return bert_preprocessor_from_pretrained(minilm_dir, max_length=MAX_LENGTH)


def test_matches_hf_on_agnews(preprocessor, hf_tokenizer, agnews_csv):
    texts = _sample(read_agnews_csv(agnews_csv).texts, 300)
    _assert_same_ids_as_hf(preprocessor, hf_tokenizer, texts)


@pytest.mark.parametrize("max_length", [MAX_LENGTH, 512])
def test_matches_hf_on_math_problems(minilm_dir, hf_tokenizer, math_topics_jsonl, max_length):
    texts = _sample(load_math_topics(math_topics_jsonl).texts, 200)
    preprocessor = bert_preprocessor_from_pretrained(minilm_dir, max_length=max_length)
    _assert_same_ids_as_hf(preprocessor, hf_tokenizer, texts)


def test_matches_hf_on_edge_cases(preprocessor, hf_tokenizer):
    _assert_same_ids_as_hf(preprocessor, hf_tokenizer, EDGE_CASES)


@pytest.mark.parametrize("max_length", [2, 3, 17])
def test_truncates_long_text_like_hf(minilm_dir, hf_tokenizer, max_length):
    long_text = " ".join(f"word{index}, and-so-on" for index in range(200))
    texts = [long_text, "short text", "exactly fifteen words " * 5]
    preprocessor = bert_preprocessor_from_pretrained(minilm_dir, max_length=max_length)
    _assert_same_ids_as_hf(preprocessor, hf_tokenizer, texts)
    assert preprocessor(tf.constant(texts))["input_word_ids"].shape[1] == max_length


def test_cased_vocabulary_matches_hf_without_lower_casing(minilm_dir):
    transformers = pytest.importorskip("transformers")
    vocab_file = str(minilm_dir / "vocab.txt")
    tokenizer = transformers.BertTokenizerFast(vocab_file=vocab_file, do_lower_case=False)
    preprocessor = BertPreprocessor(vocab_file=vocab_file, lower_case=False, max_length=MAX_LENGTH)
    _assert_same_ids_as_hf(preprocessor, tokenizer, EDGE_CASES)


def test_invalid_utf8_matches_hf_on_replacement_decoded_text(preprocessor, hf_tokenizer):
    raw = [b"caf\xc3 ok\xff", b"\xe2\x82a", b"\xf0\x9f[SEP]x", b"\xed\xa0\x80z \xc3\xa9t\xc3"]
    expected = [
        hf_tokenizer(text.decode("utf-8", errors="replace"), add_special_tokens=False)["input_ids"] for text in raw
    ]
    assert preprocessor.tokenize(tf.constant(raw)).to_list() == expected


def test_tokenize_gives_ragged_wordpieces_without_special_tokens(preprocessor, hf_tokenizer):
    texts = ["Tokenization of unbelievably long words", "ok"]
    wordpieces = preprocessor.tokenize(tf.constant(texts))
    assert isinstance(wordpieces, tf.RaggedTensor)
    assert wordpieces.dtype == tf.int32
    assert wordpieces.to_list() == hf_tokenizer(texts, add_special_tokens=False)["input_ids"]


def test_pads_to_the_longest_row_by_default(preprocessor):
    outputs = preprocessor(tf.constant(["one", "one two three four", ""]))
    assert {name: tensor.dtype for name, tensor in outputs.items()} == {
        "input_word_ids": tf.int32,
        "input_mask": tf.int32,
        "input_type_ids": tf.int32,
    }
    np.testing.assert_array_equal(outputs["input_mask"].numpy().sum(axis=1), [3, 6, 2])
    assert outputs["input_word_ids"].shape == (3, 6)
    assert outputs["input_word_ids"][2, 2:].numpy().tolist() == [preprocessor.pad_id] * 4
    assert not outputs["input_type_ids"].numpy().any()


def test_pad_to_max_length_gives_fixed_shape(minilm_dir):
    preprocessor = bert_preprocessor_from_pretrained(minilm_dir, max_length=16, pad_to_max_length=True)
    outputs = preprocessor(tf.constant(["short", "a somewhat longer sentence of words"]))
    for tensor in outputs.values():
        assert tensor.shape == (2, 16)
    np.testing.assert_array_equal(outputs["input_mask"].numpy().sum(axis=1), [3, 8])
    assert outputs["input_word_ids"][0, 3:].numpy().tolist() == [preprocessor.pad_id] * 13


def test_config_round_trip_keeps_the_vocabulary(preprocessor):
    config = preprocessor.get_config()
    assert config["vocabulary"] == preprocessor.vocabulary
    json.dumps(config)  # a saved model must be able to store it
    restored = keras.layers.deserialize(keras.layers.serialize(preprocessor))
    assert isinstance(restored, BertPreprocessor)
    texts = tf.constant(EDGE_CASES)
    for name, tensor in preprocessor(texts).items():
        np.testing.assert_array_equal(restored(texts)[name].numpy(), tensor.numpy())


class _Serving(tf.Module):
    def __init__(self, preprocessor):
        super().__init__()
        self.preprocessor = preprocessor

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def preprocess(self, texts):
        return self.preprocessor(texts)


@pytest.mark.slow
def test_saved_model_round_trip_gives_the_same_ids(preprocessor, tmp_path):
    texts = tf.constant(EDGE_CASES)
    expected = preprocessor(texts)
    tf.saved_model.save(_Serving(preprocessor), str(tmp_path / "preprocessor"))
    loaded = tf.saved_model.load(str(tmp_path / "preprocessor"))
    outputs = loaded.preprocess(texts)
    for name, tensor in expected.items():
        np.testing.assert_array_equal(outputs[name].numpy(), tensor.numpy())
    assert loaded.preprocess(tf.constant(["another batch size"]))["input_word_ids"].shape == (1, 5)


def test_from_pretrained_reads_do_lower_case(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", encoding="utf-8")
    assert bert_preprocessor_from_pretrained(tmp_path).lower_case  # no tokenizer_config.json

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    cased = bert_preprocessor_from_pretrained(tmp_path, max_length=8)
    assert not cased.lower_case and cased.max_length == 8
    assert cased.tokenize(tf.constant(["hello Hello"])).to_list() == [[4, 1]]

    unsupported = {"do_lower_case": True, "strip_accents": False}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(unsupported))
    with pytest.raises(ValueError, match="strip_accents"):
        bert_preprocessor_from_pretrained(tmp_path)


def test_rejects_an_incomplete_vocabulary():
    with pytest.raises(ValueError, match=r"\[SEP\]"):
        BertPreprocessor(vocabulary=["[PAD]", "[UNK]", "[CLS]", "hello"])
    with pytest.raises(ValueError, match="exactly one"):
        BertPreprocessor()
