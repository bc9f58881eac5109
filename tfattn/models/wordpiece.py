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

`BertPreprocessor.encode_with_offsets` also gives what the fast tokenizer's `offset_mapping` and
`word_ids()` give: each token's character span in the raw text and the index of its word.
"""

import json
import re
from pathlib import Path

import tensorflow as tf
import tensorflow_text as tf_text
import tf_keras as keras

from tfattn.models.preprocessors import Preprocessor

__all__ = [
    "BertPreprocessor",
    "bert_preprocessor_from_pretrained",
    "bert_preprocessor_from_tokenizer",
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
# Words end at runs of spaces (dropped) and around each punctuation character (kept as a word).
_WORD_DELIMITERS = f" +|{_PUNCTUATION_CHARS}"


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
    texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
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
        delim_regex_pattern=_WORD_DELIMITERS,
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


def _char_indices(texts, byte_offsets):
    """Code point indices of byte offsets into valid UTF-8 strings.

    Args:
        texts: strings `[batch]`, valid UTF-8.
        byte_offsets: int64 RaggedTensor `[batch, (offsets)]`, byte offsets into the row's text
            that fall on character boundaries (the text's length included).

    Returns:
        An int64 RaggedTensor shaped like `byte_offsets`: the number of characters before each.
    """
    _, char_starts = tf.strings.unicode_decode_with_offsets(texts, "UTF-8")
    # Shifting each row by the bytes of the rows before it makes one sorted sequence for the
    # whole batch, so a single searchsorted serves rows of any length.
    row_bases = tf.cumsum(tf.cast(tf.strings.length(texts), tf.int64), exclusive=True)
    starts = char_starts.flat_values + tf.gather(row_bases, char_starts.value_rowids())
    rows = byte_offsets.value_rowids()
    queries = byte_offsets.flat_values + tf.gather(row_bases, rows)
    index = tf.searchsorted(starts, queries, side="left", out_type=tf.int64)
    return byte_offsets.with_flat_values(index - tf.gather(char_starts.row_starts(), rows))


@keras.saving.register_keras_serializable(package="tfattn")
class BertPreprocessor(Preprocessor):
    """Raw strings to BERT inputs, with the ids of the Hugging Face fast tokenizer.

    Calling the layer on strings `[batch]` returns int32 `[batch, seq]` tensors `input_word_ids`
    (`[CLS] tokens [SEP]`, truncated to `max_length`), `input_mask` and `input_type_ids`.
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

    locates_tokens = True  # encode_with_offsets gives each token's characters in the raw text

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
        is_special, special_ids = self._match_special_tokens(chunk_texts)

        words = split_bert_words(normalize_bert_text(tf.where(is_special, "", chunk_texts), self.lower_case))
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

    def _match_special_tokens(self, chunk_texts):
        """Which chunks of text `[chunks]` are a special token, and that token's int32 id."""
        matches = tf.equal(chunk_texts[:, None], tf.constant(self._special_tokens)[None, :])
        is_special = tf.reduce_any(matches, axis=1)
        special_ids = tf.gather(tf.constant(self._special_ids, tf.int32), tf.argmax(matches, axis=1))
        return is_special, special_ids

    def call(self, texts):
        return self.pack([self.tokenize(texts)])

    def encode_with_offsets(self, texts):
        """BERT inputs plus each token's character span and word, like `return_offsets_mapping`.

        Args:
            texts: strings `[batch]` (a tensor, or anything `tf.convert_to_tensor` takes).

        Returns:
            A dict of int32 tensors: `input_word_ids`, `input_mask` and `input_type_ids`
            `[batch, seq]`, the same as calling the layer; `offsets` `[batch, seq, 2]`, each
            token's `(start, end)` in characters (code points) of the text, (0, 0) for `[CLS]`,
            `[SEP]` and padding, as Hugging Face's `offset_mapping`; `word_ids` `[batch, seq]`,
            the index of the token's word (a special token written in the text, such as
            "[SEP]", counts as a word, as in Hugging Face's `word_ids()`), -1 for `[CLS]`,
            `[SEP]` and padding.

        Every character is normalized on its own, so each normalized character knows the
        original character it comes from; a token spans the original characters of its first
        and last normalized characters. This is how Hugging Face aligns too: an accented letter
        keeps its one character, and every piece of a decomposed character (a Hangul syllable
        becomes several jamo, which may be separate tokens) spans that whole character. A word
        of more than 100 characters is one "[UNK]" spanning the word.

        Offsets index the text as Python sees it: strings (or UTF-8 bytes) decoded strictly.
        Invalid UTF-8 is first repaired with U+FFFD, one per maximal invalid subsequence like
        Python's `bytes.decode(errors="replace")`, and offsets count the repaired text's
        characters; a decoder that repaired a sequence into another number of U+FFFD would
        see the offsets after it shifted.
        """
        texts = tf.convert_to_tensor(texts, tf.string)
        # Offsets count characters, so the text must be valid UTF-8 before they are counted.
        texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
        # As in `tokenize_words`: regex_split stops at NUL, and U+0001 is dropped just the same.
        texts = tf.strings.regex_replace(texts, r"\x00", "\x01")
        chunks, chunk_begins, _ = tf_text.regex_split_with_offsets(texts, self._special_pattern, self._special_pattern)
        chunk_texts = chunks.flat_values
        is_special, special_ids = self._match_special_tokens(chunk_texts)
        chunk_starts = _char_indices(texts, chunk_begins).flat_values

        # One string per character of the ordinary chunks, and its index in the text.
        chars = tf.strings.unicode_split(tf.where(is_special, "", chunk_texts), "UTF-8")
        char_chunks = chars.value_rowids()
        in_chunk = tf.range(tf.size(chars.flat_values, out_type=tf.int64)) - tf.gather(chars.row_starts(), char_chunks)
        char_sources = tf.gather(chunk_starts, char_chunks) + in_chunk
        normalized_chars = normalize_bert_text(chars.flat_values, self.lower_case)
        # Where each character's normalized bytes begin, counted over all chunks end to end:
        # a byte of a normalized chunk belongs to the last character beginning at or before it.
        # Dropped characters take no bytes, and the character after them wins the tie.
        char_ends = tf.cumsum(tf.cast(tf.strings.length(normalized_chars), tf.int64))
        char_ends = tf.concat([tf.zeros([1], tf.int64), char_ends], axis=0)
        char_begins = char_ends[:-1]
        chunk_bases = tf.gather(char_ends, chars.row_starts())
        normalized_chunks = tf.strings.reduce_join(chars.with_flat_values(normalized_chars), axis=1)

        words, word_begins, _ = tf_text.regex_split_with_offsets(
            normalized_chunks, _WORD_DELIMITERS, _PUNCTUATION_CHARS
        )
        word_strings = words.flat_values
        too_long = tf.strings.length(word_strings, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
        piece_ids, piece_begins, piece_ends = self._wordpiece.tokenize_with_offsets(
            tf.where(too_long, "", word_strings)
        )
        # A word over the limit becomes one [UNK] over all of its bytes, as in Hugging Face.
        piece_ids = _replace_rows(piece_ids, too_long, tf.fill(tf.shape(too_long), self.unk_id))
        piece_begins = _replace_rows(piece_begins, too_long, tf.zeros_like(too_long, tf.int64))
        piece_ends = _replace_rows(piece_ends, too_long, tf.cast(tf.strings.length(word_strings), tf.int64))
        word_bases = tf.gather(chunk_bases, words.value_rowids()) + word_begins.flat_values
        piece_words = piece_ids.value_rowids()
        piece_begins = tf.gather(word_bases, piece_words) + piece_begins.flat_values
        piece_ends = tf.gather(word_bases, piece_words) + piece_ends.flat_values
        first_chars = tf.searchsorted(char_begins, piece_begins, side="right") - 1
        last_chars = tf.searchsorted(char_begins, piece_ends - 1, side="right") - 1
        # Rows of (id, start, end) per piece: one tensor keeps ids and spans in step below.
        pieces = tf.stack(
            [
                tf.cast(piece_ids.flat_values, tf.int64),
                tf.gather(char_sources, first_chars),
                tf.gather(char_sources, last_chars) + 1,
            ],
            axis=1,
        )
        chunk_words = words.with_flat_values(piece_ids.with_flat_values(pieces))

        # A special-token chunk is one word of one piece spanning the token's (ASCII) characters.
        special_chunk_starts = tf.boolean_mask(chunk_starts, is_special)
        special_pieces = tf.stack(
            [
                tf.cast(tf.boolean_mask(special_ids, is_special), tf.int64),
                special_chunk_starts,
                special_chunk_starts + tf.cast(tf.strings.length(tf.boolean_mask(chunk_texts, is_special)), tf.int64),
            ],
            axis=1,
        )
        special_words = tf.RaggedTensor.from_row_lengths(
            tf.RaggedTensor.from_row_lengths(special_pieces, tf.ones_like(special_chunk_starts)),
            tf.cast(is_special, tf.int64),
        )
        chunk_words = tf.concat([special_words, chunk_words], axis=1)
        # [batch, (words), (pieces), 3]
        text_words = chunks.with_flat_values(chunk_words).merge_dims(1, 2)

        # A word's index counts the words before it in its own text.
        word_index = tf.range(text_words.values.nrows()) - tf.gather(text_words.row_starts(), text_words.value_rowids())
        pieces = text_words.values.flat_values
        word_ids = tf.gather(word_index, text_words.values.value_rowids())
        pieces = tf.concat([pieces, word_ids[:, None]], axis=1)
        pieces = text_words.with_flat_values(pieces).merge_dims(1, 2)  # [batch, (pieces), 4]

        features = self.pack([pieces.with_flat_values(tf.cast(pieces.flat_values[:, 0], tf.int32))])
        # The same truncation as `pack` (one segment keeps its first max_length - 2 pieces),
        # then (0, 0) spans and word -1 for [CLS], [SEP] and padding.
        pieces = pieces.with_flat_values(pieces.flat_values[:, 1:])[:, : self.max_length - 2]
        batch_size = pieces.nrows()
        outside = tf.RaggedTensor.from_tensor(tf.tile(tf.constant([[[0, 0, -1]]], tf.int64), [batch_size, 1, 1]))
        framed = tf.concat([outside, pieces, outside], axis=1)
        framed = framed.to_tensor(default_value=tf.constant([0, 0, -1], tf.int64))
        width = tf.shape(features["input_word_ids"])[1]
        padding = [[0, 0], [0, width - tf.shape(framed)[1]], [0, 0]]
        framed = tf.pad(framed, padding, constant_values=0)
        framed = tf.cast(framed, tf.int32)
        offsets = framed[:, :, :2]
        word_ids = framed[:, :, 2]
        # Padding past the longest row (pad_to_max_length) must read as no word either.
        word_ids = tf.where(tf.cast(features["input_mask"], tf.bool), word_ids, -1)
        if self.pad_to_max_length:
            offsets = tf.ensure_shape(offsets, [None, self.max_length, 2])
            word_ids = tf.ensure_shape(word_ids, [None, self.max_length])
        return {**features, "offsets": offsets, "word_ids": word_ids}

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
        segments = [segment.merge_dims(1, 2) if segment.ragged_rank == 2 else segment for segment in segments]
        budget = seq_length - (len(segments) + 1)
        segments = tf_text.RoundRobinTrimmer(budget).trim(segments)
        input_ids, token_type_ids = tf_text.combine_segments(
            segments, start_of_sequence_id=self.cls_id, end_of_segment_id=self.sep_id
        )
        features = {
            "input_word_ids": input_ids.to_tensor(default_value=self.pad_id),
            "input_mask": tf.ones_like(input_ids).to_tensor(default_value=0),
            "input_type_ids": tf.cast(token_type_ids, tf.int32).to_tensor(default_value=0),
        }
        if pad_to is not None:
            width = tf.shape(features["input_word_ids"])[1]
            padding = [[0, 0], [0, pad_to - width]]
            features = {
                name: tf.pad(value, padding, constant_values=self.pad_id if name == "input_word_ids" else 0)
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


# The special tokens of a learned vocabulary, first: [PAD] is id 0, as in BERT's own vocabularies.
LEARNED_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def learn_wordpiece_vocabulary(texts, vocab_size, lower_case=True):
    """A WordPiece vocabulary of at most about `vocab_size` tokens learned from `texts`.

    Words are split as `BertPreprocessor` splits them (whitespace and punctuation, lower-cased
    and accents stripped when `lower_case`), so every character seen in training has a piece and
    a `BertPreprocessor` over the result only emits `[UNK]` for characters it never saw. The
    special tokens come first (`[PAD]` is id 0), then whole words and `##` continuation pieces.
    """
    from tensorflow_text.tools.wordpiece_vocab.bert_vocab_from_dataset import bert_vocab_from_dataset

    texts = list(texts)
    if not texts:
        raise ValueError("no texts to learn a WordPiece vocabulary from")
    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(1024)
    return bert_vocab_from_dataset(
        dataset,
        vocab_size=vocab_size,
        reserved_tokens=LEARNED_SPECIAL_TOKENS,
        bert_tokenizer_params={"lower_case": lower_case},
        # The learner's default keeps only words seen 10 times, too few for a small corpus to
        # reach `vocab_size`; it searches the count threshold down to this one.
        learn_params={"lower_thresh": 2},
    )


def bert_preprocessor_from_pretrained(folder, max_length=128, **kwargs):
    """A `BertPreprocessor` for a Hugging Face BERT checkpoint folder.

    Reads `vocab.txt` and `do_lower_case` from `tokenizer_config.json` (True when absent, the
    Hugging Face default). Refuses a config whose `strip_accents` or `tokenize_chinese_chars`
    the preprocessor does not reproduce, rather than returning ids that silently differ.
    """
    folder = Path(folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    kwargs.setdefault("lower_case", _supported_lower_case(config, config_file))
    return BertPreprocessor(vocab_file=folder / "vocab.txt", max_length=max_length, **kwargs)


def bert_preprocessor_from_tokenizer(tokenizer, max_length=128, **kwargs):
    """A `BertPreprocessor` with the vocabulary and options of a loaded Hugging Face tokenizer
    (from a hub name or a folder alike), with the checks of `bert_preprocessor_from_pretrained`;
    a tokenizer that is not WordPiece (no `[CLS]` token) is refused."""
    vocabulary = tokenizer.get_vocab()
    source = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    if "[CLS]" not in vocabulary:
        raise ValueError(
            f"{source}: not a WordPiece (BERT-family) tokenizer; tfattn's models read raw strings through "
            "BERT's WordPiece"
        )
    kwargs.setdefault("lower_case", _supported_lower_case(tokenizer.init_kwargs, source))
    return BertPreprocessor(vocabulary=sorted(vocabulary, key=vocabulary.get), max_length=max_length, **kwargs)


def _supported_lower_case(config, source):
    """`do_lower_case` of a Hugging Face tokenizer config, refusing (naming `source`) the
    `strip_accents` and `tokenize_chinese_chars` settings `BertPreprocessor` does not reproduce."""
    lower_case = config.get("do_lower_case", True)
    strip_accents = config.get("strip_accents")
    if strip_accents is not None and strip_accents != lower_case:
        raise ValueError(f"{source}: strip_accents={strip_accents} with do_lower_case={lower_case} is not supported")
    if not config.get("tokenize_chinese_chars", True):
        raise ValueError(f"{source}: tokenize_chinese_chars=false is not supported")
    return lower_case
