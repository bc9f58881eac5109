"""Factories for the from-scratch transformer text classifier; each returns a plain Keras model.

The classifier comes in two views that share every weight:
- a *token model*, `token ids [batch, seq] -> class probabilities`, which training feeds
  from length-bucketed `tf.data` pipelines (texts are tokenized once, up front);
- a *text model*, `raw strings [batch] -> class probabilities`, which wraps the token model
  with its `TextVectorization` layer, for prediction, attention maps and export.
"""

import tensorflow as tf
import tf_keras as keras

from tfattn.layers import FitTokenIds, TokenAndPositionEmbedding, TransformerBlock

TOKEN_MODEL_NAME = "token_classifier"


def build_vectorizer(texts, vocab_size=20000, vocabulary=None):
    """A `TextVectorization` layer (lower-case, strip punctuation, split on spaces).

    Args:
        texts: training texts to learn the vocabulary from (ignored when `vocabulary` is given).
        vocab_size: most frequent tokens to keep, including padding and `[UNK]`.
        vocabulary: an existing vocabulary (list of tokens, without padding and `[UNK]`),
            e.g. the one a resumed run saved.

    Returns:
        A layer mapping strings `[batch]` to ragged ids `[batch, (length)]`: ragged, so one
        enormous text costs its own length, not the batch size times it (`FitTokenIds`
        truncates and pads them afterwards).
    """
    vectorizer = keras.layers.TextVectorization(
        max_tokens=vocab_size, output_mode="int", ragged=True, name="vectorizer"
    )
    if vocabulary is not None:
        vectorizer.set_vocabulary(vocabulary)
    else:
        vectorizer.adapt(tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024))
    return vectorizer


def build_token_classifier(
    vocab_size,
    num_classes,
    max_length=256,
    embed_dim=64,
    num_heads=2,
    ff_dim=128,
    num_blocks=1,
    dropout=0.1,
    positional="learned",
    hidden_units=0,
):
    """Transformer encoder + masked mean pooling + softmax head, over token ids.

    Args:
        vocab_size: size of the token table (id 0 is padding).
        num_classes: number of output classes.
        max_length: longest accepted input.
        embed_dim, num_heads, ff_dim, dropout: per-block sizes (see `TransformerBlock`).
        num_blocks: number of stacked transformer blocks.
        positional: `"learned"` or `"sinusoidal"` position embeddings.
        hidden_units: size of an extra ReLU layer before the output (0 for none).

    Returns:
        A `keras.Model` named `token_classifier`: int ids `[batch, seq]` -> probabilities
        `[batch, num_classes]` (float32 even under mixed precision).
    """
    token_ids = keras.Input(shape=(None,), dtype=tf.int32, name="token_ids")
    x = TokenAndPositionEmbedding(
        vocab_size, max_length, embed_dim, positional=positional, name="embedding"
    )(token_ids)
    for index in range(num_blocks):
        x = TransformerBlock(embed_dim, num_heads, ff_dim, dropout=dropout, name=f"block_{index}")(x)
    # Averages over real tokens only: the embedding's padding mask reaches the pooling.
    x = keras.layers.GlobalAveragePooling1D(name="mean_pool")(x)
    x = keras.layers.Dropout(dropout)(x)
    if hidden_units:
        x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
        x = keras.layers.Dropout(dropout)(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(token_ids, probabilities, name=TOKEN_MODEL_NAME)


def build_text_classifier(vectorizer, token_model, max_length):
    """Raw strings `[batch]` -> probabilities, sharing `token_model`'s weights.

    Texts go through `FitTokenIds` as in training: longer than `max_length` tokens are
    truncated, and a text with no token reads as one `[UNK]`.
    """
    texts = keras.Input(shape=(), dtype=tf.string, name="texts")
    token_ids = FitTokenIds(max_length, name="fit_token_ids")(vectorizer(texts))
    return keras.Model(texts, token_model(token_ids), name="text_classifier")


def token_model_of(text_model):
    """The token model inside a text model built by `build_text_classifier`."""
    return text_model.get_layer(TOKEN_MODEL_NAME)


def fit_token_ids_of(text_model):
    """The `FitTokenIds` layer of a text model (None for models saved before it existed)."""
    return next((layer for layer in text_model.layers if isinstance(layer, FitTokenIds)), None)


def vectorizer_of(text_model):
    """The `TextVectorization` layer of a text model built by `build_text_classifier`."""
    for layer in text_model.layers:
        if isinstance(layer, keras.layers.TextVectorization):
            return layer
    raise ValueError(f"model {text_model.name!r} has no TextVectorization layer")
