"""Preprocessors: Keras layers turning raw strings into the feature dict every encoder reads.

Every preprocessor maps strings `[batch]` to int32 `[batch, seq]` tensors named as in TF Model
Garden and TF-Hub: `input_word_ids` (token ids, padding 0 for the vocabularies here),
`input_mask` (1 at real tokens) and `input_type_ids` (segment ids). Rows are padded to the
batch's longest row, so a preprocessor works inside a model (exports then take raw strings) and
in `tf.data.Dataset.map` alike. Each also exposes `vocabulary` (token strings by id), which
attention maps use to name the tokens, and says on `Preprocessor` what else it can do.

- `VocabularyPreprocessor`: the from-scratch word vocabulary (lower-case, strip punctuation,
  split on spaces), learned with `adapt`.
- `tfattn.models.wordpiece.BertPreprocessor`: BERT WordPiece as TensorFlow ops, giving the ids
  of the checkpoint's Hugging Face tokenizer (and character offsets, for entity spans).
- `tfattn.models.hub.HubPreprocessor`: a TF-Hub BERT preprocess model (tfhub.dev / Kaggle URL or
  folder).
"""

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.layers import FitTokenIds
from tfattn.pretrained import HF_FEATURE_NAMES

__all__ = [
    "FEATURE_NAMES",
    "Preprocessor",
    "VocabularyPreprocessor",
    "preprocess_in_chunks",
    "strip_padding",
    "tokens_of",
]

# The feature dict of the model contract (TF Model Garden / TF-Hub names).
FEATURE_NAMES = tuple(HF_FEATURE_NAMES)


def strip_padding(features):
    """`[batch, seq]` padded features -> dict of ragged `[batch, (length)]` rows (by `input_mask`)."""
    lengths = tf.reduce_sum(tf.cast(features["input_mask"], tf.int32), axis=1)
    return {name: tf.RaggedTensor.from_tensor(value, lengths=lengths) for name, value in features.items()}


class Preprocessor(keras.layers.Layer):
    """What every preprocessor shares: strings -> the feature dict (see the module docstring)."""

    # Whether `encode_with_offsets` locates each token's characters in the raw text, which
    # tagging raw text and word shapes read: only the WordPiece `BertPreprocessor` does.
    locates_tokens = False


@keras.saving.register_keras_serializable(package="tfattn")
class VocabularyPreprocessor(Preprocessor):
    """Strings -> `input_word_ids`, `input_mask`, `input_type_ids` over a word vocabulary.

    Texts are lower-cased, stripped of punctuation and split on whitespace
    (`TextVectorization`'s standardization); words out of the vocabulary are `[UNK]` (id 1),
    id 0 is padding. Rows are cut to `max_length`; a text with no token reads as one `[UNK]`
    (`FitTokenIds`), so every row has a position to attend to.

    Args:
        vocabulary: the words, most frequent first, without padding and `[UNK]`.
        max_length: the longest row, in tokens.
        **kwargs: standard layer arguments.

    Example:
    >>> preprocessor = VocabularyPreprocessor(["the", "cat"], max_length=4)
    >>> preprocessor(tf.constant(["The cat sat.", ""]))["input_word_ids"].numpy()
    array([[2, 3, 1],
           [1, 0, 0]], dtype=int32)
    """

    def __init__(self, vocabulary: Sequence[str], max_length: int, **kwargs):
        super().__init__(**kwargs)
        if int(max_length) < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length!r}")
        self.max_length = int(max_length)
        self.words = [str(word) for word in vocabulary]
        if not self.words:
            # TextVectorization cannot hold an empty vocabulary: its table would stay
            # uninitialized and every call fail with "Table not initialized".
            raise ValueError("the vocabulary has no word (did adapt find none in the texts?)")
        # Ragged: one enormous text costs its own length, not the batch size times it.
        self.vectorizer = keras.layers.TextVectorization(output_mode="int", ragged=True, vocabulary=self.words)
        self.fit_token_ids = FitTokenIds(self.max_length, fill_id=1)

    @classmethod
    def adapt(cls, texts: Sequence[str], vocab_size: int, max_length: int, **kwargs) -> "VocabularyPreprocessor":
        """A preprocessor whose vocabulary is the `vocab_size - 2` most frequent words of `texts`."""
        vectorizer = keras.layers.TextVectorization(max_tokens=vocab_size, output_mode="int")
        vectorizer.adapt(tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024))
        # The first two entries are padding and [UNK], which the layer adds back itself.
        return cls(vectorizer.get_vocabulary()[2:], max_length, **kwargs)

    @property
    def vocabulary(self):
        """Token strings by id: padding (""), "[UNK]", then the words."""
        return ["", "[UNK]"] + self.words

    def tokenize(self, texts):
        """Ragged word ids `[batch, (words)]` before truncation (for counting long texts), as
        `BertPreprocessor.tokenize` gives its word pieces."""
        return self.vectorizer(tf.convert_to_tensor(texts, tf.string))

    def pack(self, segments):
        """The features of `[word_ids]` (one segment of ragged ids from `tokenize`): truncated,
        padded, never empty. A list, as `BertPreprocessor.pack` takes, so callers treat both alike."""
        (word_ids,) = segments
        word_ids = self.fit_token_ids(word_ids)
        mask = tf.cast(tf.not_equal(word_ids, 0), tf.int32)
        return {"input_word_ids": word_ids, "input_mask": mask, "input_type_ids": tf.zeros_like(word_ids)}

    def call(self, texts):
        return self.pack([self.tokenize(texts)])

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.words, "max_length": self.max_length}


def preprocess_in_chunks(
    preprocessor: Callable[[tf.Tensor], dict], texts: Sequence[str], chunk_size: int = 1024
) -> dict:
    """The features of many texts as ragged `[n, (length)]` int32 tensors without padding,
    ready for `tfattn.data.pipelines.make_dataset` to batch by length. `preprocessor` is a
    preprocessor layer, or any function from a string tensor to the padded feature dict."""
    parts = {name: [] for name in FEATURE_NAMES}
    texts = list(texts)
    for start in range(0, len(texts), chunk_size):
        for name, value in strip_padding(preprocessor(tf.constant(texts[start : start + chunk_size]))).items():
            parts[name].append(value)
    if not texts:
        empty = tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int32), tf.zeros([0], tf.int64))
        return {name: empty for name in FEATURE_NAMES}
    return {name: tf.concat(values, axis=0) for name, values in parts.items()}


def tokens_of(vocabulary, token_ids):
    """Token strings of an id row; `vocabulary` is a numpy array of tokens by id (build it once
    for many rows), or None: ids as strings."""
    if vocabulary is None:
        return [str(int(i)) for i in token_ids]
    return vocabulary[np.asarray(token_ids, np.int64)].tolist()
