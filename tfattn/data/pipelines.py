"""tf.data pipelines over pre-tokenized text: each batch padded only to its own longest example.

Texts are tokenized once, up front, into ragged token ids; the pipelines then cache, shuffle,
group examples of similar length (so little compute is spent on padding) and prefetch. For XLA
(`jit_compile`), which compiles one program per input shape, batches can instead be padded up
to a multiple of a width (`pad_to_multiple`), so that a pass over the data has a handful of shapes.
"""

import warnings

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
# The length multiple of jit-compiled training (`make_dataset(pad_to_multiple=...)`): with 16, a
# 128-token model sees at most 8 lengths, so at most 16 shapes per pass. Each costs one XLA
# compilation: about 4 s for the from-scratch AG News model, 24 s for MiniLM on 2 cores
# (bench/xla_buckets.py, BENCHMARKS.md); 32 halves that and pads each row 8 tokens more on average.
JIT_LENGTH_MULTIPLE = 16


def warn_about_texts(
    total, truncated=0, empty=0, max_length=None, what="texts", filler="[UNK]", advice="raise --max-length to keep more"
):
    """Warn, with counts out of `total`, about `truncated` texts (longer than `max_length`
    tokens; `advice` says what to do) and `empty` ones (no token besides the special ones; each
    is read as `filler`)."""
    if truncated:
        warnings.warn(
            f"{truncated} of {total} {what} are longer than max_length={max_length} tokens and were truncated; "
            + advice,
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


def width_bucket_boundaries(longest, width):
    """Bucket edges (for `bucket_by_sequence_length`, where a row goes to the first bucket whose
    edge exceeds its length) grouping rows of lengths in `((k - 1) * width, k * width]`, the last
    bucket ending at `longest`: `ceil(longest / width)` buckets."""
    if int(width) < 1:
        raise ValueError(f"width must be at least 1, got {width!r}")
    return list(range(int(width) + 1, int(longest) + 1, int(width)))


# The feature that holds a batch's token ids (what bucketing measures), by model family.
TOKEN_ID_FEATURES = ("input_ids", "input_word_ids", "source_ids")


def _to_dense(row):
    return row.to_tensor() if isinstance(row, tf.RaggedTensor) else row


def _token_ids(features):
    """The token ids among `features`: the tensor itself, or a dict's `input_ids` (Hugging Face
    names), `input_word_ids` (TF-Hub names) or `source_ids` (a translator's source sentence)."""
    if not isinstance(features, dict):
        return features
    return next(features[name] for name in TOKEN_ID_FEATURES if name in features)


def _sequence_length(features):
    return tf.shape(_token_ids(features))[0]


def _pad_length_to_multiple(multiple, longest, label_padding=None):
    """A batch map padding the length axis of every feature (and of per-token labels, when
    `label_padding` is given) up to the next multiple of `multiple`, at most `longest`."""

    def pad(x, y):
        length = tf.shape(_token_ids(x))[1]
        target = tf.minimum((length + multiple - 1) // multiple * multiple, longest)

        def padded(tensor, value):
            return tf.pad(tensor, [[0, 0], [0, target - length]], constant_values=value)

        x = tf.nest.map_structure(lambda tensor: padded(tensor, 0), x)
        return x, (y if label_padding is None else padded(y, label_padding))

    return pad


def make_dataset(
    features,
    labels,
    batch_size,
    shuffle=False,
    seed=0,
    bucket_by_length=None,
    label_padding=-100,
    pad_to_multiple=None,
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
        pad_to_multiple: pad each batch further, up to a multiple of this many tokens (at
            most the longest row of the data), and bucket by those multiples rather than by
            length quantiles. A bucketed pass then yields at most
            `2 * ceil(longest / pad_to_multiple)` distinct batch shapes (a full and a last,
            partial batch per bucket), an ordered one `ceil(longest / pad_to_multiple) + 1`:
            what XLA (`jit_compile`) needs, as it compiles a program for every new shape. No
            row is cut.

    Returns:
        A dataset that is cached, optionally shuffled and bucketed, and prefetched.
    """
    if pad_to_multiple is not None and int(pad_to_multiple) < 1:
        raise ValueError(f"pad_to_multiple must be at least 1, got {pad_to_multiple!r}")
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

    if bucket_by_length or pad_to_multiple:
        lengths = _token_ids(features).row_lengths().numpy()
        longest = int(lengths.max()) if lengths.size else 1
    if bucket_by_length:
        if pad_to_multiple:
            boundaries = width_bucket_boundaries(longest, pad_to_multiple)
        else:
            boundaries = length_bucket_boundaries(lengths)
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=lambda x, y: _sequence_length(x),
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
            padding_values=padding_values,
        )
    else:
        dataset = dataset.padded_batch(batch_size, padding_values=padding_values)
    if pad_to_multiple:
        # Each batch is padded to its longest row, within a bucket's ((k - 1) * w, k * w] when
        # bucketed; rounding that up gives the bucket's k * w (`bucket_by_sequence_length`'s
        # own `pad_to_bucket_boundary` pads to the edge minus one, and needs an edge past the
        # longest row).
        pad = _pad_length_to_multiple(int(pad_to_multiple), longest, label_padding if labels_are_sequences else None)
        dataset = dataset.map(pad)
    return dataset.prefetch(AUTOTUNE)


def batch_shapes(dataset):
    """The `(batch, length)` shape of every batch of one pass over `dataset` (of the token ids
    when the features are a dict), in order."""
    return [tuple(int(d) for d in _token_ids(x).shape[:2]) for x, _ in dataset]


def count_batches(dataset):
    """Number of batches one pass over `dataset` yields (bucketing makes it data-dependent)."""
    return int(dataset.reduce(np.int64(0), lambda count, _: count + 1).numpy())
