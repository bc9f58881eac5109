"""Tests of `BertPreprocessor.encode_with_offsets`: the ids, character offsets and word ids of
the Hugging Face fast tokenizer, computed in the TensorFlow graph."""

import numpy as np
import pytest
import tensorflow as tf

from tfattn.data import load_conll
from tfattn.models import FEATURE_NAMES
from tfattn.models.preprocessors import HF_FEATURE_NAMES
from tfattn.models.wordpiece import BertPreprocessor, bert_preprocessor_from_pretrained
from tfattn.pretrained import load_tokenizer

MAX_LENGTH = 128
FEATURES = FEATURE_NAMES  # input_word_ids, input_mask, input_type_ids

HARD_CASES = [
    "Müller met Café owners in São Paulo",  # accents: one character each, stripped before lookup
    "NASA and the UN's WHO, McDONALD'S",  # uppercase, apostrophes split words
    "Wait!!! What?!?... --- ((nested)) $$$",  # punctuation runs: one word per character
    "many     spaces\tand\ttabs\u00a0no-break\u3000ideographic\nnewline",
    "Tokyo 東京 is big",  # CJK ideographs are words of their own
    "한국어 텍스트",  # Hangul decomposes into jamo: several pieces span one character
    "emoji 😀 and a😀b inside",  # characters outside the vocabulary: the whole word is [UNK]
    "ﬁne ligature and İstanbul",  # a ligature piece, a letter whose accent is stripped
    "zero\u200bwidth and control\x07chars\x00",  # dropped characters still count in offsets
    "Pneumono" + "ultramicroscopic" * 6 + " short",  # a word over 100 characters: one [UNK]
    "literal [SEP] and [MASK]x in text",  # special tokens in the text are words with spans
    "",
    "   ",
]


def _assert_like_hf(preprocessor, tokenizer, texts):
    """encode_with_offsets equals calling the layer, and Hugging Face's input_ids,
    attention_mask, token_type_ids, offset_mapping and word_ids(), with (0, 0) and -1 on padding."""
    outputs = preprocessor.encode_with_offsets(tf.constant(texts))
    called = preprocessor(tf.constant(texts))
    assert set(outputs) == {*FEATURES, "offsets", "word_ids"}
    for name in FEATURES:
        np.testing.assert_array_equal(outputs[name].numpy(), called[name].numpy(), err_msg=name)
    assert outputs["offsets"].dtype == tf.int32 and outputs["word_ids"].dtype == tf.int32
    assert outputs["offsets"].shape == called["input_word_ids"].shape + (2,)
    assert outputs["word_ids"].shape == called["input_word_ids"].shape

    expected = tokenizer(texts, truncation=True, max_length=preprocessor.max_length, return_offsets_mapping=True)
    features = {name: outputs[name].numpy() for name in FEATURES}
    offsets, word_ids = outputs["offsets"].numpy(), outputs["word_ids"].numpy()
    mismatches = []
    for row, text in enumerate(texts):
        length = len(expected["input_ids"][row])
        got = (
            *(features[name][row, :length].tolist() for name in FEATURES),
            [tuple(span) for span in offsets[row, :length].tolist()],
            [None if word < 0 else word for word in word_ids[row, :length].tolist()],
        )
        want = (
            *(expected[HF_FEATURE_NAMES[name]][row] for name in FEATURES),
            [tuple(span) for span in expected["offset_mapping"][row]],
            expected.word_ids(row),
        )
        if got != want:
            mismatches.append(f"{text[:60]!r}\n  HF {want}\n  TF {got}")
        assert not offsets[row, length:].any() and (word_ids[row, length:] == -1).all()
    assert not mismatches, f"{len(mismatches)}/{len(texts)} rows differ:\n" + "\n".join(mismatches[:3])


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
    return load_tokenizer(minilm_dir)


@pytest.fixture(scope="module")
def preprocessor(minilm_dir):
    return bert_preprocessor_from_pretrained(minilm_dir, max_length=MAX_LENGTH)


def test_matches_hf_on_conll_sentences(preprocessor, hf_tokenizer, conll_valid):
    sentences = load_conll(conll_valid).words
    # 200 sentences spread over the whole split, words joined as a user would type them.
    texts = [" ".join(words) for words in sentences[:: len(sentences) // 200][:200]]
    assert len(texts) == 200
    _assert_like_hf(preprocessor, hf_tokenizer, texts)


def test_matches_hf_on_hard_cases(preprocessor, hf_tokenizer):
    _assert_like_hf(preprocessor, hf_tokenizer, HARD_CASES)


def test_hard_case_spans_by_hand(preprocessor):
    """A few spans written out, so the expectations do not rest on Hugging Face alone."""
    outputs = preprocessor.encode_with_offsets(tf.constant(["Müller 한 [SEP]", "a😀b"]))
    offsets, word_ids = outputs["offsets"].numpy(), outputs["word_ids"].numpy()
    # [CLS] muller ᄒ ##ᅡ ##ᆫ [SEP](in text) [SEP]: all three jamo span the one syllable.
    assert offsets[0, :7].tolist() == [[0, 0], [0, 6], [7, 8], [7, 8], [7, 8], [9, 14], [0, 0]]
    assert word_ids[0, :7].tolist() == [-1, 0, 1, 1, 1, 2, -1]
    # The emoji is one code point (two UTF-16 units, four bytes): "a😀b" is characters 0..3.
    assert offsets[1, :3].tolist() == [[0, 0], [0, 3], [0, 0]]
    assert outputs["input_word_ids"][1, 1] == preprocessor.unk_id


def test_cased_vocabulary_matches_hf(minilm_dir):
    transformers = pytest.importorskip("transformers")
    vocab_file = str(minilm_dir / "vocab.txt")
    tokenizer = transformers.BertTokenizerFast(vocab_file=vocab_file, do_lower_case=False)
    preprocessor = BertPreprocessor(vocab_file=vocab_file, lower_case=False, max_length=MAX_LENGTH)
    _assert_like_hf(preprocessor, tokenizer, HARD_CASES)


@pytest.mark.parametrize("max_length", [2, 12])
def test_truncation_keeps_the_first_tokens_like_hf(minilm_dir, hf_tokenizer, max_length):
    preprocessor = bert_preprocessor_from_pretrained(minilm_dir, max_length=max_length)
    texts = ["Peter Blackburn of the European Commission said on Thursday in Brussels .", "Hi"]
    _assert_like_hf(preprocessor, hf_tokenizer, texts)
    outputs = preprocessor.encode_with_offsets(tf.constant(texts))
    assert outputs["input_word_ids"].shape[1] == max_length
    # The last kept token is [SEP]; a truncated word's spans stop at the cut.
    assert outputs["word_ids"][0, -1] == -1 and not outputs["offsets"][0, -1].numpy().any()


def test_pad_to_max_length_pads_offsets_and_word_ids(minilm_dir):
    preprocessor = bert_preprocessor_from_pretrained(minilm_dir, max_length=10, pad_to_max_length=True)
    outputs = preprocessor.encode_with_offsets(tf.constant(["Hello world", ""]))
    assert outputs["offsets"].shape == (2, 10, 2) and outputs["word_ids"].shape == (2, 10)
    assert outputs["offsets"][0, :4].numpy().tolist() == [[0, 0], [0, 5], [6, 11], [0, 0]]
    assert outputs["word_ids"].numpy().tolist() == [[-1, 0, 1] + [-1] * 7, [-1] * 10]
    assert not outputs["offsets"][:, 4:].numpy().any()


def test_invalid_utf8_offsets_count_replacement_characters(preprocessor, hf_tokenizer):
    raw = [b"caf\xc3 ok\xff", b"\xf0\x9f[SEP]x", b"\xed\xa0\x80z \xc3\xa9t\xc3"]
    outputs = preprocessor.encode_with_offsets(tf.constant(raw))
    for row, text in enumerate(raw):
        # Python's decoder repairs each maximal invalid subsequence into one U+FFFD, as TF does.
        expected = hf_tokenizer(text.decode("utf-8", errors="replace"), return_offsets_mapping=True)
        length = len(expected["input_ids"])
        assert outputs["input_word_ids"][row, :length].numpy().tolist() == expected["input_ids"]
        assert [tuple(span) for span in outputs["offsets"][row, :length].numpy().tolist()] == [
            tuple(span) for span in expected["offset_mapping"]
        ]


@pytest.mark.slow
def test_runs_in_a_tf_function_with_a_string_signature(preprocessor):
    encode = tf.function(preprocessor.encode_with_offsets, input_signature=[tf.TensorSpec([None], tf.string)])
    texts = tf.constant(HARD_CASES)
    expected = preprocessor.encode_with_offsets(texts)
    outputs = encode(texts)
    assert set(outputs) == set(expected) == {*FEATURES, "offsets", "word_ids"}
    for name, tensor in expected.items():
        np.testing.assert_array_equal(outputs[name].numpy(), tensor.numpy(), err_msg=name)
    # The one traced graph serves other batch sizes, the empty batch included.
    assert encode(tf.constant(["one more"]))["offsets"].numpy().tolist() == [[[0, 0], [0, 3], [4, 8], [0, 0]]]
    assert encode(tf.constant([], tf.string))["offsets"].shape == (0, 0, 2)
    assert encode.experimental_get_tracing_count() == 1


class _Serving(tf.Module):
    def __init__(self, preprocessor):
        super().__init__()
        self.preprocessor = preprocessor

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def encode(self, texts):
        return self.preprocessor.encode_with_offsets(texts)


# Saving and loading the graph takes ~5 s, a third of this file's time budget.
@pytest.mark.slow
def test_saved_model_round_trip_gives_the_same_offsets(preprocessor, tmp_path):
    texts = tf.constant(HARD_CASES)
    expected = preprocessor.encode_with_offsets(texts)
    tf.saved_model.save(_Serving(preprocessor), str(tmp_path / "encoder"))
    outputs = tf.saved_model.load(str(tmp_path / "encoder")).encode(texts)
    for name, tensor in expected.items():
        np.testing.assert_array_equal(outputs[name].numpy(), tensor.numpy(), err_msg=name)
