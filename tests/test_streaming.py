"""Tests for the streaming input path: file formats, sharding by file, in-graph tokenization, checks."""

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfattn.data import DataError, read_agnews_csv, read_labelled_texts
from tfattn.data.streaming import (
    StreamFormat,
    count_and_check,
    default_bucket_boundaries,
    expand_data_files,
    sample_texts,
    stream_examples,
    streaming_dataset,
    write_tfrecords,
)
from tfattn.models import FEATURE_NAMES, VocabularyPreprocessor

AGNEWS_ROWS = (
    '"3","Oil, gas prices rise","Crude hit \\$50 a barrel, traders said."\n'
    '"1","Line one","first part\nsecond part"\n'
    '"4","Google #39;s IPO","Shares open \\ today  quot;strong quot;"\n'
    '"2","Score","Win\\\\Loss &lt;b&gt;final&lt;/b&gt;  M amp;S"\n'
)
TOPICS = ["algebra", "geometry", "number theory"]
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def streamed(files, stream_format, label_names=None, **kwargs):
    """(texts, labels) of `stream_examples`, in order."""
    dataset = stream_examples(files, stream_format, label_names, **kwargs)
    pairs = [(text.decode("utf-8"), int(label)) for text, label in dataset.as_numpy_iterator()]
    return [text for text, _ in pairs], [label for _, label in pairs]


def topic_rows(count, offset=0):
    """`count` distinct texts of 1..40 words (distinct word-id rows too) with cycling topics."""
    rows = []
    for index in range(offset, offset + count):
        words = [WORDS[(index * 7 + step) % len(WORDS)] for step in range(1 + index % 40)]
        rows.append((f"item{index} " + " ".join(words), TOPICS[index % len(TOPICS)]))
    return rows


def write_tsv(path: Path, rows) -> Path:
    return write(path, "".join(f"{label}\t{text}\n" for text, label in rows))


# --- formats: the same examples as the in-memory readers -------------------------------------


def test_agnews_csv_streams_the_in_memory_texts_and_labels(tmp_path):
    path = write(tmp_path / "news.csv", AGNEWS_ROWS)
    expected = read_agnews_csv(path)
    stream_format = StreamFormat.for_files([path], "agnews")
    texts, labels = streamed([path], stream_format)
    assert texts == expected.texts
    assert labels == expected.labels.tolist()
    summary = count_and_check([path], stream_format)
    assert summary.num_examples == 4
    assert summary.label_names == expected.label_names
    assert summary.class_counts == expected.class_counts()


@pytest.mark.slow
def test_real_agnews_file_streams_like_the_in_memory_reader(agnews_csv):
    expected = read_agnews_csv(agnews_csv)
    texts, labels = streamed([agnews_csv], StreamFormat.for_files([agnews_csv], "agnews"))
    assert texts == expected.texts
    assert labels == expected.labels.tolist()


def test_topics_jsonl_and_csv_stream_the_in_memory_examples(tmp_path):
    rows = topic_rows(30)
    jsonl = write(
        tmp_path / "topics.jsonl",
        "".join(json.dumps({"problem": text, "subject": label}, ensure_ascii=False) + "\n" for text, label in rows),
    )
    table = write(
        tmp_path / "topics.csv",
        "id,problem,subject\n" + "".join(f'{i},"{text}",{label}\n' for i, (text, label) in enumerate(rows)),
    )
    for path in (jsonl, table):
        expected = read_labelled_texts(path, "problem", "subject")
        stream_format = StreamFormat.for_files([path], "math", text_column="problem", label_column="subject")
        summary = count_and_check([path], stream_format)
        assert summary.label_names == expected.label_names == TOPICS
        assert summary.num_examples == len(expected)
        texts, labels = streamed([path], stream_format, summary.label_names)
        assert texts == expected.texts
        assert labels == expected.labels.tolist()


def test_tsv_lines_stream_with_label_names(tmp_path):
    path = write(tmp_path / "topics.tsv", "geometry\t  A circle.  \n\nalgebra\tSolve x\tfor y\r\n")
    stream_format = StreamFormat.for_files([path], "math")
    summary = count_and_check([path], stream_format)
    assert summary.label_names == ["algebra", "geometry"]
    assert summary.class_counts == {"algebra": 1, "geometry": 1}
    texts, labels = streamed([path], stream_format, TOPICS)
    assert texts == ["A circle.", "Solve x\tfor y"]
    assert labels == [1, 0]


def test_tfrecord_round_trip(tmp_path):
    texts = ["Stocks fell.", "Ünïcode – text ✓", "Goal!"]
    path = tmp_path / "part-0.tfrecord"
    assert write_tfrecords(texts, [2, 0, 1], path) == 3
    stream_format = StreamFormat.for_files([path], "math")
    assert count_and_check([path], stream_format, TOPICS).class_counts == {
        "algebra": 1,
        "geometry": 1,
        "number theory": 1,
    }
    assert streamed([path], stream_format, TOPICS) == (texts, [2, 0, 1])
    assert sample_texts([path], stream_format, 2) == texts[:2]


def test_sample_texts_takes_the_first_texts_in_file_order(tmp_path):
    first = write_tsv(tmp_path / "a.tsv", topic_rows(3))
    second = write_tsv(tmp_path / "b.tsv", topic_rows(3, offset=3))
    stream_format = StreamFormat.for_files([first, second], "math")
    assert sample_texts([first, second], stream_format, 5) == [text for text, _ in topic_rows(5)]
    assert len(sample_texts([first, second], stream_format, 100)) == 6


def test_formats_by_suffix_and_task(tmp_path):
    assert StreamFormat.for_files([tmp_path / "a.csv"], "agnews").kind == "agnews-csv"
    assert StreamFormat.for_files([tmp_path / "a.csv"], "math", "problem", "subject").kind == "table"
    assert StreamFormat.for_files([tmp_path / "a.txt"], "math").kind == "label-tab-text"
    with pytest.raises(DataError, match="mix formats"):
        StreamFormat.for_files([tmp_path / "a.tsv", tmp_path / "b.jsonl"], "math", "problem", "subject")
    with pytest.raises(DataError, match=r"unsupported file type '\.xml'"):
        StreamFormat.for_files([tmp_path / "a.xml"], "math")
    with pytest.raises(DataError, match="needs text_column and label_column"):
        StreamFormat.for_files([tmp_path / "a.jsonl"], "math")


# --- files and sharding ------------------------------------------------------------------------


def test_expand_data_files_from_glob_folder_and_list(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    parts = [write_tsv(folder / f"part-{i}.tsv", topic_rows(2, offset=2 * i)) for i in (2, 0, 1)]
    write(folder / "_SUCCESS", "")
    write(folder / ".hidden", "")
    ordered = sorted(parts)
    assert expand_data_files(str(folder / "part-*.tsv")) == ordered
    assert expand_data_files(folder) == ordered
    assert expand_data_files(f"{parts[0]}, {parts[1]},{parts[0]}") == sorted(parts[:2])
    with pytest.raises(DataError, match=re.escape(f"{folder / 'nothing-*.csv'}: no file matches")):
        expand_data_files(str(folder / "nothing-*.csv"))
    with pytest.raises(DataError, match="no such file or folder"):
        expand_data_files(str(tmp_path / "missing.csv"))


def test_two_workers_read_disjoint_files_covering_everything(tmp_path):
    files = [write_tsv(tmp_path / f"part-{i}.tsv", topic_rows(5, offset=5 * i)) for i in range(4)]
    stream_format = StreamFormat.for_files(files, "math")
    seen = [set(streamed(files, stream_format, TOPICS, worker_index=w, num_workers=2)[0]) for w in (0, 1)]
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == {text for text, _ in topic_rows(20)}
    # Whole files go to one worker: worker 0 reads parts 0 and 2.
    assert seen[0] == {text for text, _ in topic_rows(5) + topic_rows(5, offset=10)}


def test_more_workers_than_files_is_an_error(tmp_path):
    files = [write_tsv(tmp_path / f"part-{i}.tsv", topic_rows(2)) for i in range(2)]
    with pytest.raises(DataError, match="3 workers but 2 data files"):
        stream_examples(files, StreamFormat.for_files(files, "math"), TOPICS, worker_index=0, num_workers=3)


def test_interleaved_and_shuffled_files_keep_every_example_once(tmp_path):
    files = [write_tsv(tmp_path / f"part-{i}.tsv", topic_rows(300, offset=300 * i)) for i in range(3)]
    stream_format = StreamFormat.for_files(files, "math")
    texts, _ = streamed(files, stream_format, TOPICS, shuffle_files=True, seed=3)
    assert sorted(texts) == sorted(text for text, _ in topic_rows(900))
    # Interleaved: a block of 256 rows from one file, then a block from another file.
    file_of = [
        {int(text.split()[0].removeprefix("item")) // 300 for text in block} for block in (texts[:256], texts[256:512])
    ]
    assert len(file_of[0]) == len(file_of[1]) == 1
    assert file_of[0] != file_of[1]


def test_auto_sharding_is_off(tmp_path):
    files = [write_tsv(tmp_path / "a.tsv", topic_rows(2))]
    dataset = stream_examples(files, StreamFormat.for_files(files, "math"), TOPICS)
    assert dataset.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF


# --- batches: tokenized in the graph, shuffled, bucketed -----------------------------------------


@pytest.fixture(scope="module")
def topic_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("topics")
    return [write_tsv(folder / f"part-{i}.tsv", topic_rows(150, offset=150 * i)) for i in range(4)]


@pytest.fixture(scope="module")
def preprocessor():
    return VocabularyPreprocessor.adapt([text for text, _ in topic_rows(600)], vocab_size=1000, max_length=32)


def batches_of(dataset):
    return [({name: value.numpy() for name, value in features.items()}, labels.numpy()) for features, labels in dataset]


def test_batches_hold_the_preprocessor_ids_of_their_texts(topic_files, preprocessor):
    rows = topic_rows(600)
    ids = preprocessor(tf.constant([text for text, _ in rows]))
    lengths = ids["input_mask"].numpy().sum(axis=1)
    # Each text has its own id row, so a row of a batch names its text.
    text_of = {
        tuple(row[:length]): rows[i] for i, (row, length) in enumerate(zip(ids["input_word_ids"].numpy(), lengths))
    }
    assert len(text_of) == len(rows)

    stream_format = StreamFormat.for_files(topic_files, "math")
    dataset = streaming_dataset(stream_examples(topic_files, stream_format, TOPICS), preprocessor, 16, seed=1)
    seen = Counter()
    for features, labels in batches_of(dataset):
        assert set(features) == set(FEATURE_NAMES)
        mask = features["input_mask"]
        batch_rows = [text_of[tuple(row[mask[i] == 1])] for i, row in enumerate(features["input_word_ids"])]
        # The same features as the preprocessor gives these texts as one batch, padding included.
        direct = preprocessor(tf.constant([text for text, _ in batch_rows]))
        for name in FEATURE_NAMES:
            np.testing.assert_array_equal(features[name], direct[name].numpy())
        assert labels.tolist() == [TOPICS.index(label) for _, label in batch_rows]
        seen.update(text for text, _ in batch_rows)
    assert seen == Counter(text for text, _ in rows)


def test_shuffle_is_seeded_and_differs_between_passes(topic_files, preprocessor):
    stream_format = StreamFormat.for_files(topic_files, "math")

    def dataset(seed):
        return streaming_dataset(
            stream_examples(topic_files, stream_format, TOPICS), preprocessor, 8, seed=seed, shuffle_buffer=200
        )

    def order(batches):
        # Rows without their padding, which depends on the batch.
        return [
            tuple(row[mask == 1].tolist())
            for features, _ in batches
            for row, mask in zip(features["input_word_ids"], features["input_mask"])
        ]

    first = dataset(7)
    first_pass, second_pass = order(batches_of(first)), order(batches_of(first))
    assert order(batches_of(dataset(7))) == first_pass
    assert second_pass != first_pass
    assert sorted(second_pass) == sorted(first_pass)
    assert order(batches_of(dataset(8))) != first_pass


def test_unshuffled_unbucketed_batches_keep_file_order(topic_files, preprocessor):
    stream_format = StreamFormat.for_files(topic_files[:1], "math")
    dataset = streaming_dataset(
        stream_examples(topic_files[:1], stream_format, TOPICS),
        preprocessor,
        10,
        shuffle_buffer=0,
        bucket_boundaries=[],
    )
    features, labels = batches_of(dataset)[0]
    direct = preprocessor(tf.constant([text for text, _ in topic_rows(10)]))
    np.testing.assert_array_equal(features["input_word_ids"], direct["input_word_ids"].numpy())
    assert labels.tolist() == [TOPICS.index(label) for _, label in topic_rows(10)]


def test_length_buckets_bound_the_padding(topic_files, preprocessor):
    stream_format = StreamFormat.for_files(topic_files, "math")
    assert default_bucket_boundaries(32) == [17]
    dataset = streaming_dataset(
        stream_examples(topic_files, stream_format, TOPICS), preprocessor, 16, bucket_boundaries=[6, 11, 21]
    )
    for features, _ in batches_of(dataset):
        lengths = features["input_mask"].sum(axis=1)
        assert features["input_word_ids"].shape[1] == lengths.max()
        # Buckets [1, 6), [6, 11), [11, 21), [21, ...): rows of a batch differ by at most 11 tokens.
        assert lengths.max() - lengths.min() <= 11
        assert not (lengths.min() < 6 <= lengths.max() or lengths.min() < 11 <= lengths.max())


def test_repeat_keeps_going_past_one_pass(topic_files, preprocessor):
    stream_format = StreamFormat.for_files(topic_files[:1], "math")
    dataset = streaming_dataset(stream_examples(topic_files[:1], stream_format, TOPICS), preprocessor, 16, repeat=True)
    assert sum(len(labels) for _, labels in batches_of(dataset.take(30))) == 30 * 16


# --- bad data stops before training --------------------------------------------------------------


def test_bad_agnews_class_names_file_and_row(tmp_path):
    good = write(tmp_path / "a.csv", AGNEWS_ROWS)
    bad = write(tmp_path / "b.csv", '"1","Fine","Row"\n"5","Bad","Class"\n')
    with pytest.raises(DataError) as error:
        read_agnews_csv(bad)
    with pytest.raises(DataError) as streamed_error:
        count_and_check([good, bad], StreamFormat.for_files([good, bad], "agnews"))
    assert str(streamed_error.value) == str(error.value) == f"{bad}, row 2 (line 2): label '5' is outside 1..4"


def test_bad_json_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "topics.jsonl", '{"problem": "x", "subject": "algebra"}\n{"problem": "y",\n')
    stream_format = StreamFormat.for_files([path], "math", "problem", "subject")
    with pytest.raises(DataError, match=re.escape(f"{path}, line 2: not valid JSON")):
        count_and_check([path], stream_format)


def test_unknown_tsv_label_names_file_and_line(tmp_path):
    path = write(tmp_path / "topics.tsv", "algebra\tx + 1\n\ncalculus\tderive\n")
    with pytest.raises(DataError, match=re.escape(f"{path}, line 3: unknown label 'calculus'; known labels are: ")):
        count_and_check([path], StreamFormat.for_files([path], "math"), TOPICS)
    write(tmp_path / "notab.tsv", "algebra x + 1\n")
    with pytest.raises(DataError, match=r"notab\.tsv, line 1: no tab"):
        count_and_check([tmp_path / "notab.tsv"], StreamFormat.for_files([path], "math"))


def test_tfrecord_label_out_of_range_names_the_record(tmp_path):
    path = tmp_path / "bad.tfrecord"
    write_tfrecords(["a", "b", "c"], [0, 1, 3], path)
    with pytest.raises(DataError, match=re.escape(f"{path}, record 3: label 3 is outside 0..2")):
        count_and_check([path], StreamFormat.for_files([path], "math"), TOPICS)
    with pytest.raises(DataError, match="needs label_names"):
        count_and_check([path], StreamFormat.for_files([path], "math"))


def test_bad_row_also_fails_the_stream(tmp_path):
    path = write(tmp_path / "topics.tsv", "algebra\tx + 1\ncalculus\tderive\n")
    dataset = stream_examples([path], StreamFormat.for_files([path], "math"), TOPICS)
    with pytest.raises(tf.errors.OpError, match="unknown label 'calculus'"):
        list(dataset)
