"""BERT preprocessing in the TensorFlow graph: raw strings to the token ids of a BERT checkpoint.

`BertPreprocessor` reproduces the Hugging Face fast BERT tokenizer (`BertTokenizerFast`) with
TensorFlow and tensorflow_text ops only, so a SavedModel can serve raw strings without a Python
tokenizer and still feed a pretrained backbone exactly the ids it was trained with.

The pipeline follows the Hugging Face one step by step:
1. special tokens written literally in the text ("[SEP]", "[MASK]", ...) are matched first, on
   the raw text, and become their ids;
2. normalization (`BertNormalizer`): drop control characters, map whitespace to spaces, put
   spaces around CJK ideographs, and for uncased checkpoints strip accents and lowercase;
3. pre-tokenization (`BertPreTokenizer`): split on spaces, each punctuation character a word;
4. WordPiece, greedy longest match first, a word of more than 100 characters being "[UNK]";
5. `[CLS] tokens [SEP]`, truncated to `max_length`, padded.
"""

import json
import re
from pathlib import Path

import tensorflow as tf
import tensorflow_text as tf_text
import tf_keras as keras

__all__ = [
    "BertPreprocessor",
    "bert_preprocessor_from_pretrained",
    "normalize_bert_text",
    "read_vocabulary",
    "split_bert_words",
]

# The tokens BertTokenizerFast registers as special: it finds them in the raw text.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Hugging Face's WordPiece `max_input_chars_per_word`: a longer word is one "[UNK]".
MAX_CHARS_PER_WORD = 100
# The most bytes a UTF-8 character takes, to size the byte-based word limit of tensorflow_text.
_MAX_BYTES_PER_CHAR = 4

# Hugging Face's control characters (categories Cc, Cf, Co, Cs) minus tab, LF and CR, which it
# treats as whitespace; NUL and U+FFFD (the replacement character) are dropped as well.
_DROPPED_CHARS = r"[\x00\x{FFFD}]|[^\PC\t\n\r]"
# Tab, LF, CR and the Unicode separators (Zs, Zl, Zp) are Hugging Face's whitespace.
_WHITESPACE_CHARS = r"[\t\n\r\p{Z}]"
# The CJK ideograph blocks that BERT tokenizes one character at a time, as Hugging Face lists
# them: its sixth block starts at U+2B920, not at U+2B820 as in Google's original BERT.
_CJK_CHARS = (
    r"([\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
    r"\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}])"
)
# BERT's punctuation: every ASCII symbol that is not a letter, digit or space, plus Unicode P*.
_PUNCTUATION_CHARS = r"[!-/:-@\[-`{-~]|\p{P}"


def read_vocabulary(vocab_file):
    """The tokens of a BERT `vocab.txt`, one per line; a token's id is its line index."""
    with open(vocab_file, encoding="utf-8") as lines:
        # Strip only the newline, as Hugging Face does: other whitespace may belong to a token.
        return [line.rstrip("\n") for line in lines]


def normalize_bert_text(texts, lower_case=True):
    """Hugging Face's `BertNormalizer` on a string tensor (any shape).

    Invalid UTF-8 is first replaced by U+FFFD, which the normalizer then drops, as Python-side
    decoding with `errors="replace"` followed by the Hugging Face tokenizer would do.
    """
    texts = tf.strings.unicode_transcode(
        texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    texts = tf.strings.regex_replace(texts, _DROPPED_CHARS, "")
    texts = tf.strings.regex_replace(texts, _WHITESPACE_CHARS, " ")
    texts = tf.strings.regex_replace(texts, _CJK_CHARS, r" \1 ")
    if lower_case:
        # Accents go first (NFD, then drop the nonspacing marks) and lowercasing second, the
        # Hugging Face order: "İ" becomes "i" rather than "i" plus a combining dot.
        texts = tf_text.normalize_utf8(texts, "NFD")
        texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
        # ICU lowercases a word-final sigma to "ς"; Hugging Face maps "Σ" to "σ" everywhere.
        texts = tf.strings.regex_replace(texts, "Σ", "σ")
        texts = tf.strings.lower(texts, encoding="utf-8")
    return texts


def split_bert_words(normalized_texts):
    """Hugging Face's `BertPreTokenizer` on normalized text: a RaggedTensor of words.

    Splits on spaces (the normalizer has turned all whitespace into spaces) and makes every
    punctuation character a word of its own.
    """
    return tf_text.regex_split(
        normalized_texts,
        delim_regex_pattern=f" +|{_PUNCTUATION_CHARS}",
        keep_delim_regex_pattern=_PUNCTUATION_CHARS,
    )


def _replace_rows(rows, replace, ids):
    """Make each row of ragged `rows` where `replace` is set the one-token row `[ids[i]]`.

    The rows to replace must be empty already (their input was blanked), so prepending the
    replacement to every row replaces them and leaves the others unchanged.
    """
    replacements = tf.RaggedTensor.from_row_lengths(
        tf.boolean_mask(ids, replace), tf.cast(replace, rows.row_splits.dtype)
    )
    return tf.concat([replacements, rows], axis=1)


@keras.saving.register_keras_serializable(package="tfattn")
class BertPreprocessor(keras.layers.Layer):
    """Raw strings to BERT inputs, with the ids of the Hugging Face fast tokenizer.

    Calling the layer on strings `[batch]` returns int32 `[batch, seq]` tensors `input_ids`
    (`[CLS] tokens [SEP]`, truncated to `max_length`), `attention_mask` and `token_type_ids`.
    Rows are padded to the longest one in the batch, or to `max_length` when
    `pad_to_max_length` (the fixed shape of the TF-Hub BERT preprocessors).

    Args:
        vocab_file: path of a BERT `vocab.txt` (or pass `vocabulary`).
        vocabulary: the list of tokens, a token's id being its index.
        lower_case: the checkpoint's `do_lower_case`: also strip accents and lowercase.
        max_length: the longest output row, `[CLS]` and `[SEP]` included.
        pad_to_max_length: pad every row to `max_length` instead of the batch's longest row.

    The vocabulary itself (not its path) is in the config, so saved models are self-contained.
    """

    def __init__(
        self,
        vocab_file=None,
        vocabulary=None,
        lower_case=True,
        max_length=128,
        pad_to_max_length=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (vocab_file is None) == (vocabulary is None):
            raise ValueError("pass exactly one of vocab_file and vocabulary")
        if vocab_file is not None:
            vocabulary = read_vocabulary(vocab_file)
        if max_length < 2:
            raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {max_length}")
        self.vocabulary = list(vocabulary)
        self.lower_case = bool(lower_case)
        self.max_length = int(max_length)
        self.pad_to_max_length = bool(pad_to_max_length)

        # Later duplicates win, as in Hugging Face's vocabulary dict.
        token_ids = {token: index for index, token in enumerate(self.vocabulary)}
        required = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")
        missing = [token for token in required if token not in token_ids]
        if missing:
            raise ValueError(f"the vocabulary lacks the special tokens {missing}")
        self.cls_id = token_ids["[CLS]"]
        self.sep_id = token_ids["[SEP]"]
        self.pad_id = token_ids["[PAD]"]
        self.unk_id = token_ids["[UNK]"]
        self._special_tokens = [token for token in SPECIAL_TOKENS if token in token_ids]
        self._special_ids = [token_ids[token] for token in self._special_tokens]
        self._special_pattern = "|".join(re.escape(token) for token in self._special_tokens)

        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=self.vocabulary,
            # Words come pre-split; the 100-character limit is applied in `tokenize`, so the
            # byte limit here only has to let any 100-character word through.
            no_pretokenization=True,
            max_bytes_per_word=MAX_CHARS_PER_WORD * _MAX_BYTES_PER_CHAR,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
        )

    def tokenize(self, texts):
        """Wordpiece ids of strings `[batch]`, without `[CLS]`/`[SEP]`: int32 RaggedTensor."""
        return self.tokenize_words(texts).merge_dims(1, 2)

    def tokenize_words(self, texts):
        """Wordpiece ids grouped by word, `[batch, (words), (pieces)]` int32, as the
        `tokenize` of TF-Hub BERT preprocessors returns them."""
        texts = tf.convert_to_tensor(texts, tf.string)
        # regex_split stops at a NUL byte. The normalizer drops U+0001 just like NUL, and
        # unlike deleting the NUL now, the swap cannot join the halves of a special token.
        texts = tf.strings.regex_replace(texts, r"\x00", "\x01")
        # Special tokens are found in the raw text, before normalization could alter them.
        chunks = tf_text.regex_split(texts, self._special_pattern, self._special_pattern)
        chunk_texts = chunks.flat_values
        matches = tf.equal(chunk_texts[:, None], tf.constant(self._special_tokens)[None, :])
        is_special = tf.reduce_any(matches, axis=1)
        special_ids = tf.gather(
            tf.constant(self._special_ids, tf.int32), tf.argmax(matches, axis=1)
        )

        words = split_bert_words(
            normalize_bert_text(tf.where(is_special, "", chunk_texts), self.lower_case)
        )
        word_strings = words.flat_values
        too_long = tf.strings.length(word_strings, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
        word_ids = self._wordpiece.tokenize(tf.where(too_long, "", word_strings))
        word_ids = _replace_rows(word_ids, too_long, tf.fill(tf.shape(too_long), self.unk_id))

        # [chunks, (words), (pieces)]; a special-token chunk becomes one word of one piece.
        chunk_words = words.with_flat_values(word_ids)
        special_words = tf.RaggedTensor.from_row_lengths(
            tf.boolean_mask(special_ids, is_special)[:, None],
            tf.cast(is_special, chunk_words.row_splits.dtype),
        )
        chunk_words = tf.concat([special_words, chunk_words], axis=1)
        return chunks.with_flat_values(chunk_words).merge_dims(1, 2)

    def call(self, texts):
        return self.pack([self.tokenize(texts)])

    def pack(self, segments, seq_length=None):
        """BERT inputs from a list of tokenized segments: one text, or two for a pair.

        Segments may be `[batch, (pieces)]` or `[batch, (words), (pieces)]`. They share
        `seq_length` (default `max_length`) minus the special tokens round-robin, then become
        `[CLS] A [SEP] (B [SEP])` with token types 0 for A and 1 for B. For one segment this is
        Hugging Face's truncation; for pairs it is TF-Hub's (round-robin), not Hugging Face's
        "longest_first". Rows are padded to `seq_length` when `pad_to_max_length` or when
        `seq_length` is given, else to the batch's longest row.
        """
        pad_to = seq_length
        if seq_length is None:
            seq_length = self.max_length
            pad_to = seq_length if self.pad_to_max_length else None
        segments = [
            segment.merge_dims(1, 2) if segment.ragged_rank == 2 else segment for segment in segments
        ]
        budget = seq_length - (len(segments) + 1)
        segments = tf_text.RoundRobinTrimmer(budget).trim(segments)
        input_ids, token_type_ids = tf_text.combine_segments(
            segments, start_of_sequence_id=self.cls_id, end_of_segment_id=self.sep_id
        )
        features = {
            "input_ids": input_ids.to_tensor(default_value=self.pad_id),
            "attention_mask": tf.ones_like(input_ids).to_tensor(default_value=0),
            "token_type_ids": tf.cast(token_type_ids, tf.int32).to_tensor(default_value=0),
        }
        if pad_to is not None:
            width = tf.shape(features["input_ids"])[1]
            padding = [[0, 0], [0, pad_to - width]]
            features = {
                name: tf.pad(value, padding, constant_values=self.pad_id if name == "input_ids" else 0)
                for name, value in features.items()
            }
            if isinstance(pad_to, int):
                features = {name: tf.ensure_shape(value, [None, pad_to]) for name, value in features.items()}
        return features

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary=self.vocabulary,
            lower_case=self.lower_case,
            max_length=self.max_length,
            pad_to_max_length=self.pad_to_max_length,
        )
        return config


def bert_preprocessor_from_pretrained(folder, max_length=128, **kwargs):
    """A `BertPreprocessor` for a Hugging Face BERT checkpoint folder.

    Reads `vocab.txt` and `do_lower_case` from `tokenizer_config.json` (True when absent, the
    Hugging Face default). Refuses a config whose `strip_accents` or `tokenize_chinese_chars`
    the preprocessor does not reproduce, rather than returning ids that silently differ.
    """
    folder = Path(folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    lower_case = config.get("do_lower_case", True)
    strip_accents = config.get("strip_accents")
    if strip_accents is not None and strip_accents != lower_case:
        raise ValueError(
            f"{config_file}: strip_accents={strip_accents} with do_lower_case={lower_case} "
            "is not supported"
        )
    if not config.get("tokenize_chinese_chars", True):
        raise ValueError(f"{config_file}: tokenize_chinese_chars=false is not supported")
    kwargs.setdefault("lower_case", lower_case)
    return BertPreprocessor(vocab_file=folder / "vocab.txt", max_length=max_length, **kwargs)
