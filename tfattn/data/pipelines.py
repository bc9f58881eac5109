"""tf.data pipelines over pre-tokenized text: each batch padded only to its own longest example.

Texts are tokenized once, up front, into ragged token ids; the pipelines then cache, shuffle,
group examples of similar length (so little compute is spent on padding) and prefetch.
"""

import warnings

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def warn_about_texts(total, truncated=0, empty=0, max_length=None, what="texts", filler="[UNK]"):
    """Warn, with counts out of `total`, about `truncated` texts (longer than `max_length`
    tokens) and `empty` ones (no token besides the special ones; each is read as `filler`)."""
    if truncated:
        warnings.warn(
            f"{truncated} of {total} {what} are longer than max_length={max_length} tokens and were "
            "truncated; raise --max-length to keep more",
            stacklevel=2,
        )
    if empty:
        warnings.warn(
            f"{empty} of {total} {what} have no token (empty, whitespace or punctuation only); "
            f"each is read as {filler}",
            stacklevel=2,
        )


def length_bucket_boundaries(lengths, num_buckets=8):
    """Bucket edges at the length quantiles of the data, so buckets hold similar counts."""
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        return []
    quantiles = np.quantile(lengths, np.linspace(0, 1, num_buckets + 1)[1:-1])
    return sorted({int(q) + 1 for q in quantiles})


def _to_dense(row):
    return row.to_tensor() if isinstance(row, tf.RaggedTensor) else row


def _token_ids(features):
    """The token ids among `features`: the tensor itself, or a dict's `input_ids` (Hugging Face
    names) or `input_word_ids` (TF-Hub names)."""
    if not isinstance(features, dict):
        return features
    return features["input_ids"] if "input_ids" in features else features["input_word_ids"]


def _sequence_length(features):
    return tf.shape(_token_ids(features))[0]


def make_dataset(
    features,
    labels,
    batch_size,
    shuffle=False,
    seed=0,
    bucket_by_length=None,
    label_padding=-100,
):
    """A batched `tf.data.Dataset` of `(features, labels)` padded to each batch's longest row.

    Args:
        features: ragged int ids `[n, (len)]`, or a dict of such (e.g. Hugging Face
            `input_ids` / `attention_mask`, or TF-Hub `input_word_ids` / `input_mask`);
            padded with 0.
        labels: `[n]` class ids, or ragged `[n, (len)]` per-token labels padded with
            `label_padding` (ignored by tfattn's token-level losses and metrics).
        batch_size: examples per batch.
        shuffle: reshuffle every epoch (training).
        seed: shuffle seed.
        bucket_by_length: group examples of similar length into batches (default: when
            shuffling). Off keeps the input order, which evaluation needs to line up
            predictions with labels.
        label_padding: padding value of per-token labels.

    Returns:
        A dataset that is cached, optionally shuffled and bucketed, and prefetched.
    """
    if bucket_by_length is None:
        bucket_by_length = shuffle
    labels_are_sequences = isinstance(labels, tf.RaggedTensor)
    if not labels_are_sequences:
        labels = tf.constant(np.asarray(labels), dtype=tf.int32)

    dataset = tf.data.Dataset.from_tensor_slices((features, labels))
    # Slices of a ragged tensor come out as ragged rows; padding needs plain tensors.
    dataset = dataset.map(lambda x, y: tf.nest.map_structure(_to_dense, (x, y))).cache()
    num_examples = int(labels.shape[0]) if labels.shape[0] is not None else None
    if shuffle:
        dataset = dataset.shuffle(num_examples or 10_000, seed=seed, reshuffle_each_iteration=True)

    feature_padding = tf.nest.map_structure(lambda _: tf.constant(0, tf.int32), features)
    label_pad = tf.constant(label_padding if labels_are_sequences else 0, tf.int32)
    padding_values = (feature_padding, label_pad)

    if bucket_by_length:
        boundaries = length_bucket_boundaries(_token_ids(features).row_lengths().numpy())
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=lambda x, y: _sequence_length(x),
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
            padding_values=padding_values,
        )
    else:
        dataset = dataset.padded_batch(batch_size, padding_values=padding_values)
    return dataset.prefetch(AUTOTUNE)


def count_batches(dataset):
    """Number of batches one pass over `dataset` yields (bucketing makes it data-dependent)."""
    return int(dataset.reduce(np.int64(0), lambda count, _: count + 1).numpy())
