"""Tests of the tf.data pipelines: padding per batch, bucketing, order, per-token labels."""

import numpy as np
import tensorflow as tf

from tfattn.data.pipelines import count_batches, encode_texts, length_bucket_boundaries, make_dataset
from tfattn.networks import build_vectorizer


def _ragged(rows):
    return tf.ragged.constant(rows, dtype=tf.int32)


def test_unbucketed_batches_keep_order_and_pad_to_batch_max():
    ids = _ragged([[1, 2, 3], [4], [5, 6], [7, 8, 9, 10], [11]])
    batches = list(make_dataset(ids, [0, 1, 2, 3, 0], batch_size=2).as_numpy_iterator())
    assert [x.shape for x, _ in batches] == [(2, 3), (2, 4), (1, 1)]
    np.testing.assert_array_equal(batches[0][0], [[1, 2, 3], [4, 0, 0]])
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), [0, 1, 2, 3, 0])


def test_bucketed_shuffled_batches_keep_every_example_once():
    rng = np.random.default_rng(0)
    rows = [list(range(1, 1 + int(n))) for n in rng.integers(1, 40, size=200)]
    dataset = make_dataset(_ragged(rows), np.arange(200), batch_size=16, shuffle=True)
    seen, padding = [], 0
    for x, y in dataset.as_numpy_iterator():
        seen += y.tolist()
        padding += int((x == 0).sum())
    assert sorted(seen) == list(range(200))
    # Bucketing keeps padding far below padding everything to the longest row (39).
    assert padding < 0.25 * 200 * 39
    assert count_batches(dataset) >= 200 // 16


def test_sequence_labels_are_padded_with_ignore_index():
    ids = {"input_ids": _ragged([[1, 2], [3]]), "attention_mask": _ragged([[1, 1], [1]])}
    x, y = next(make_dataset(ids, _ragged([[5, 6], [7]]), batch_size=2).as_numpy_iterator())
    np.testing.assert_array_equal(x["attention_mask"], [[1, 1], [1, 0]])
    np.testing.assert_array_equal(y, [[5, 6], [7, -100]])


def test_encode_texts_truncates_and_strips_padding():
    vectorizer = build_vectorizer(["a b c d e", "a b"], vocab_size=20)
    ids = encode_texts(vectorizer, ["a b c d e", "b", "zzz unknown"], max_length=3)
    assert ids.row_lengths().numpy().tolist() == [3, 1, 2]
    assert ids[2].numpy().tolist() == [1, 1]  # out-of-vocabulary words map to [UNK] = 1


def test_bucket_boundaries_follow_length_quantiles():
    assert length_bucket_boundaries(np.arange(1, 101), num_buckets=4) == [26, 51, 76]
