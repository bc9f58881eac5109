"""Tests of the tf.data pipelines (padding per batch, bucketing, order, per-token labels, and
batches padded to multiples of a width for XLA, as jit-compiled training reads them) and of the
from-scratch family's up-front tokenization into the ragged feature dict they read."""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from tfattn.data.pipelines import (
    JIT_LENGTH_MULTIPLE,
    batch_shapes,
    count_batches,
    length_bucket_boundaries,
    make_dataset,
    width_bucket_boundaries,
)
from tfattn.families import ScratchFamily
from tfattn.models import FEATURE_NAMES, VocabularyPreprocessor, preprocess_in_chunks
from tfattn.tasks.config import TrainConfig
from tfattn.tasks.encoder_task import training_order
from tfattn.tasks.registry import task_of


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


def test_feature_dicts_of_the_model_contract_are_bucketed_by_their_word_ids():
    # The three features of every preprocessor, ragged; lengths 1..30, one example each.
    rows = [list(range(2, 2 + n)) for n in range(1, 31)]
    features = {
        "input_word_ids": _ragged(rows),
        "input_mask": _ragged([[1] * len(row) for row in rows]),
        "input_type_ids": _ragged([[0] * len(row) for row in rows]),
    }
    dataset = make_dataset(features, np.arange(30), batch_size=4, shuffle=True, seed=3)
    seen = []
    for x, y in dataset.as_numpy_iterator():
        assert set(x) == set(FEATURE_NAMES)
        lengths = x["input_mask"].sum(axis=1)
        # Every row is its own example, padded with 0 in every feature to the batch's longest.
        for row, label in enumerate(y):
            np.testing.assert_array_equal(x["input_word_ids"][row, : lengths[row]], rows[label])
            assert not x["input_word_ids"][row, lengths[row] :].any()
        assert x["input_word_ids"].shape[1] == lengths.max()
        seen += y.tolist()
    assert sorted(seen) == list(range(30))


def test_bucket_boundaries_follow_length_quantiles():
    assert length_bucket_boundaries(np.arange(1, 101), num_buckets=4) == [26, 51, 76]


# --- batches padded to multiples of a width, for XLA -------------------------------------------


def test_width_bucket_boundaries_group_lengths_by_multiples():
    # Rows go to the first bucket whose edge exceeds their length: 1-16, 17-32, 33-40.
    assert width_bucket_boundaries(40, 16) == [17, 33]
    assert width_bucket_boundaries(32, 16) == [17]
    assert width_bucket_boundaries(33, 16) == [17, 33]
    assert width_bucket_boundaries(7, 16) == []
    with pytest.raises(ValueError, match="width must be at least 1"):
        width_bucket_boundaries(40, 0)


def _rows_and_labels(num_rows, longest, seed=0):
    """`num_rows` rows of random lengths in 1..longest (the first one `longest` long), each row's
    ids its label * 1000 + position + 1, so that a batch row tells which example it holds."""
    lengths = np.random.default_rng(seed).integers(1, longest + 1, size=num_rows)
    lengths[0] = longest
    rows = [[label * 1000 + position + 1 for position in range(n)] for label, n in enumerate(lengths)]
    return rows, np.arange(num_rows)


@pytest.mark.parametrize("width", [16, 32])
def test_batches_padded_to_multiples_have_few_shapes_and_keep_every_row_whole(width):
    num_rows = 1000  # about 100 rows per bucket of 16 tokens: every bucket fills batches of 32
    rows, labels = _rows_and_labels(num_rows, longest=150)
    features = {"input_word_ids": _ragged(rows), "input_mask": _ragged([[1] * len(row) for row in rows])}
    dataset = make_dataset(features, labels, batch_size=32, shuffle=True, seed=1, pad_to_multiple=width)
    buckets = -(-150 // width)  # ceil: 10 buckets of 16 tokens, 5 of 32
    shapes_per_epoch = []
    for _ in range(2):  # the bounded set of shapes holds for every reshuffled epoch
        seen, shapes, padding = [], set(), 0
        for x, y in dataset.as_numpy_iterator():
            length = x["input_word_ids"].shape[1]
            shapes.add(x["input_word_ids"].shape)
            # A multiple of the width, but the last bucket's, which ends at the longest row (150).
            assert length % width == 0 or length == 150, length
            real = x["input_mask"].sum(axis=1)
            # Every row of a batch is of the batch's bucket: longer than the multiple below.
            assert real.max() > length - width and (x["input_word_ids"] == 0).sum() == length * len(y) - real.sum()
            for row, label in enumerate(y):
                np.testing.assert_array_equal(x["input_word_ids"][row, : real[row]], rows[label])  # not cut
                assert not x["input_word_ids"][row, real[row] :].any()
            padding += length * len(y) - int(real.sum())
            seen += y.tolist()
        assert sorted(seen) == list(range(num_rows))  # each row once
        assert len(shapes) <= 2 * buckets, sorted(shapes)
        shapes_per_epoch.append(shapes)
    assert shapes_per_epoch[0] == shapes_per_epoch[1]
    # Rows within a multiple of the width of each other: padding at most width - 1 per row.
    assert padding < num_rows * (width - 1)


def test_ordered_batches_padded_to_multiples_keep_order_and_pad_labels():
    ids = _ragged([[1, 2, 3], [4], [5, 6], [7, 8, 9, 10, 11], [12]])
    labels = _ragged([[1, 2, 3], [4], [5, 6], [7, 8, 9, 10, 11], [12]])
    batches = list(make_dataset(ids, labels, batch_size=2, pad_to_multiple=4).as_numpy_iterator())
    # Lengths 3, 5 and 1 rounded up to multiples of 4, but never past the longest row (5).
    assert batch_shapes(make_dataset(ids, labels, batch_size=2, pad_to_multiple=4)) == [(2, 4), (2, 5), (1, 4)]
    np.testing.assert_array_equal(batches[0][0], [[1, 2, 3, 0], [4, 0, 0, 0]])
    np.testing.assert_array_equal(batches[0][1], [[1, 2, 3, -100], [4, -100, -100, -100]])
    np.testing.assert_array_equal(batches[1][0], [[5, 6, 0, 0, 0], [7, 8, 9, 10, 11]])
    with pytest.raises(ValueError, match="pad_to_multiple must be at least 1"):
        make_dataset(ids, labels, batch_size=2, pad_to_multiple=0)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["default", "jit-compile"])
def test_jit_compiled_training_reads_batches_padded_to_multiples(tmp_path, jit_compile):
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in rng.integers(0, 40, size=n)) for n in rng.integers(1, 101, size=400)]
    config = TrainConfig(run_dir=str(tmp_path), vocab_size=50, batch_size=16, jit_compile=jit_compile).resolve()
    family = ScratchFamily(config)
    family.prepare(texts, tmp_path)
    split = SimpleNamespace(texts=texts, labels=rng.integers(0, 4, size=len(texts)))
    order = training_order(config, task_of(config), family, split)
    shapes = batch_shapes(order.dataset)
    longest = max(len(text.split()) for text in texts)
    assert sum(batch for batch, _ in shapes) == len(texts)
    off_multiples = {length for _, length in shapes if length % JIT_LENGTH_MULTIPLE and length != longest}
    if jit_compile:
        assert not off_multiples
        assert len(set(shapes)) <= 2 * -(-longest // JIT_LENGTH_MULTIPLE)
    else:
        assert off_multiples  # each batch padded to its own longest row


def test_rows_all_shorter_than_the_width_make_one_bucket():
    rows, labels = _rows_and_labels(40, longest=7)
    shapes = batch_shapes(make_dataset(_ragged(rows), labels, batch_size=16, shuffle=True, pad_to_multiple=16))
    # One bucket padded to the longest row (7): two full batches and a last one of 8.
    assert sorted(shapes) == [(8, 7), (16, 7), (16, 7)]


# --- from-scratch tokenization: VocabularyPreprocessor + preprocess_in_chunks ----------------


def test_preprocess_in_chunks_truncates_strips_padding_and_fills_empty_rows():
    preprocessor = VocabularyPreprocessor.adapt(["a b c d e", "a b", "a"], vocab_size=20, max_length=3)
    # Padding, [UNK], then the words, most frequent first.
    assert preprocessor.vocabulary[:4] == ["", "[UNK]", "a", "b"]
    assert sorted(preprocessor.vocabulary[4:]) == ["c", "d", "e"]
    texts = ["A b, C d e!", "b", "zzz unknown", "!!!", "", "a"]
    features = preprocess_in_chunks(preprocessor, texts, chunk_size=4)  # two chunks, rows in order
    assert set(features) == set(FEATURE_NAMES)
    for tensor in features.values():
        assert isinstance(tensor, tf.RaggedTensor) and tensor.dtype == tf.int32
    ids = features["input_word_ids"].to_list()
    words = [[preprocessor.vocabulary[i] for i in row] for row in ids]
    # Cut to max_length=3; out-of-vocabulary words are [UNK] (1); no token at all is one [UNK].
    assert words == [["a", "b", "c"], ["b"], ["[UNK]", "[UNK]"], ["[UNK]"], ["[UNK]"], ["a"]]
    assert features["input_mask"].to_list() == [[1] * len(row) for row in ids]
    assert features["input_type_ids"].to_list() == [[0] * len(row) for row in ids]
    # The same ids as the model computes from the raw strings, padding removed.
    padded = preprocessor(tf.constant(texts))
    np.testing.assert_array_equal(features["input_word_ids"].to_tensor().numpy(), padded["input_word_ids"].numpy())

    empty = preprocess_in_chunks(preprocessor, [])
    assert set(empty) == set(FEATURE_NAMES) and all(tensor.shape[0] == 0 for tensor in empty.values())


def _scratch_family(run_dir, max_length):
    config = TrainConfig(run_dir=str(run_dir), max_length=max_length, vocab_size=50).resolve()
    return ScratchFamily(config)


def test_scratch_family_warns_with_counts_of_truncated_and_empty_texts(tmp_path):
    family = _scratch_family(tmp_path, max_length=3)
    family.prepare(["stocks fell on monday", "the team won the cup"], tmp_path)
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").split("\n") == family.preprocessor.words
    texts = ["stocks fell on monday again", "the cup", "?!", "   ", "won"]
    with pytest.warns(UserWarning) as caught:
        features = family.encode_texts(texts, "training texts")
    messages = sorted(str(warning.message) for warning in caught)
    assert messages == [
        "1 of 5 training texts are longer than max_length=3 tokens and were truncated; raise --max-length to keep more",
        "2 of 5 training texts have no token (empty, whitespace or punctuation only); each is read as [UNK]",
    ]
    assert features["input_word_ids"].row_lengths().numpy().tolist() == [3, 2, 1, 1, 1]
    assert features["input_word_ids"].to_list()[2:4] == [[1], [1]]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # texts that fit give no warning
        family.encode_texts(["stocks fell", "the team won"], "validation texts")


def test_a_resumed_scratch_run_reuses_its_saved_vocabulary(tmp_path):
    first = _scratch_family(tmp_path, max_length=8)
    first.prepare(["alpha beta beta gamma"], tmp_path)
    # A backup checkpoint makes the folder an interrupted run: the vocabulary is read back,
    # not learned again from (here, different) texts.
    (tmp_path / "backup" / "train").mkdir(parents=True)
    (tmp_path / "backup" / "train" / "checkpoint").write_text("x")
    resumed = _scratch_family(tmp_path, max_length=8)
    resumed.prepare(["other words entirely"], tmp_path)
    assert resumed.preprocessor.vocabulary == first.preprocessor.vocabulary
    assert resumed.preprocessor.words[0] == "beta"
