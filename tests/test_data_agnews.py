"""Tests for AG News loading, text cleaning, `TextExamples` and the stratified split."""

import re
from pathlib import Path

import numpy as np
import pytest

from tfattn.data import (
    AGNEWS_LABELS,
    DataError,
    TextExamples,
    clean_agnews_text,
    load_agnews,
    read_agnews_csv,
    split_examples,
    stratified_split,
)

REAL_ROWS = 6872
REAL_COUNTS = {"World": 1701, "Sports": 1577, "Business": 1662, "Sci/Tech": 1932}


@pytest.fixture(scope="module")
def real_train(agnews_csv) -> TextExamples:
    return read_agnews_csv(agnews_csv)


def write_csv(tmp_path: Path, text: str, name: str = "news.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


# --- the real file ------------------------------------------------------------------------


def test_real_file_has_expected_size_and_label_counts(real_train):
    assert len(real_train) == REAL_ROWS
    assert real_train.class_counts() == REAL_COUNTS
    assert real_train.label_names == AGNEWS_LABELS
    assert real_train.labels.dtype == np.int64


def test_real_file_texts_are_clean(real_train):
    assert all(text and text == text.strip() for text in real_train.texts)
    joined = "\n".join(real_train.texts)
    assert "\\" not in joined
    assert "#39;" not in joined
    assert "quot;" not in joined
    assert "  " not in joined
    assert real_train.texts[0].startswith("Busch looks to increase points lead Kurt Busch")
    assert "NASCAR's Chase" in real_train.texts[0]


def test_real_labels_split_ten_percent(real_train):
    train, validation = split_examples(real_train, validation_fraction=0.1, seed=0)
    assert len(validation) == 687
    assert len(train) + len(validation) == REAL_ROWS
    for name, count in validation.class_counts().items():
        assert abs(count - 0.1 * REAL_COUNTS[name]) <= 1


# --- a small hand-written CSV --------------------------------------------------------------


def test_reads_quoted_commas_newlines_and_artefacts(tmp_path):
    path = write_csv(
        tmp_path,
        '"3","Oil, gas prices rise","Crude hit \\$50 a barrel, traders said."\n'
        '"1","Line one","first part\nsecond part"\n'
        '"4","Google #39;s IPO","Shares open \\ today  quot;strong quot;"\n'
        '"2","Score","Win\\\\Loss &lt;b&gt;final&lt;/b&gt;  M amp;S"\n',
    )
    examples = read_agnews_csv(path)
    assert examples.texts == [
        "Oil, gas prices rise Crude hit $50 a barrel, traders said.",
        "Line one first part second part",
        'Google\'s IPO Shares open today "strong"',
        "Score Win Loss final M&S",
    ]
    assert examples.labels.tolist() == [2, 0, 3, 1]
    assert examples.source == str(path)
    assert load_agnews(path).texts == examples.texts
    assert load_agnews(str(path)).labels.tolist() == [2, 0, 3, 1]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Busch #39;s lead", "Busch's lead"),
        ("up to  #36;2\\million", "up to $2 million"),
        ("end of day. \\ Next", "end of day. Next"),
        ('Inc. &lt;A HREF="http://x.y/q"&gt;CAL.N&lt;/A&gt; said', "Inc. CAL.N said"),
        ("Standard  amp; Poor", "Standard & Poor"),
        ("  1 < 2 > 0  ", "1 < 2 > 0"),
        ("Rises; Falls", "Rises; Falls"),
    ],
)
def test_clean_agnews_text(raw, expected):
    assert clean_agnews_text(raw) == expected


# --- error cases ---------------------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        read_agnews_csv(missing)
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load_agnews(missing)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b'"1","a","b"\n"2","c","d"\n"3","caf\xe9","x"\n')
    with pytest.raises(DataError, match=r"latin1\.csv, line 3: not valid UTF-8") as caught:
        read_agnews_csv(path)
    assert "\n" not in str(caught.value)


def test_wrong_column_count(tmp_path):
    path = write_csv(tmp_path, '"1","a","b"\n"2","c","d"\n"3","only title"\n')
    expected = "news.csv, row 3 (line 3): found 2 columns, expected 3"
    with pytest.raises(DataError, match=re.escape(expected)):
        read_agnews_csv(path)


def test_label_outside_range(tmp_path):
    path = write_csv(tmp_path, '"1","a","b"\n"0","c","d"\n')
    expected = "news.csv, row 2 (line 2): label '0' is outside 1..4"
    with pytest.raises(DataError, match=re.escape(expected)):
        read_agnews_csv(path)


def test_label_not_an_integer_after_multiline_row(tmp_path):
    # Row 2 spans lines 2-3, so row and line numbers differ for the bad row after it.
    path = write_csv(tmp_path, '"1","a","b"\n"2","c","d\ne"\n"x","f","g"\n')
    expected = "news.csv, row 3 (line 4): label 'x' is not an integer"
    with pytest.raises(DataError, match=re.escape(expected)):
        read_agnews_csv(path)


def test_empty_title_and_description(tmp_path):
    path = write_csv(tmp_path, '"1","a","b"\n"2"," \\ ",""\n')
    with pytest.raises(DataError, match=r"row 2 \(line 2\): title and description are both empty"):
        read_agnews_csv(path)


def test_unknown_source_string():
    with pytest.raises(DataError, match=r"agnews-v2: no such file \(expected an AG News CSV path"):
        load_agnews("agnews-v2")


@pytest.mark.slow
def test_tfds_unavailable_offline(tmp_path, monkeypatch):
    # Keep any download attempt out of the user's ~/tensorflow_datasets.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    try:
        examples = load_agnews("tfds:ag_news_subset", split="test")
    except DataError as error:
        message = str(error)
        assert "could not load TFDS dataset 'ag_news_subset' (split 'test')" in message
        assert "\n" not in message
    else:
        # Only reachable with a network or a prepared TFDS cache.
        assert len(examples) == 7600
        assert examples.label_names == AGNEWS_LABELS


# --- TextExamples --------------------------------------------------------------------------


def test_text_examples_rejects_bad_labels():
    with pytest.raises(DataError, match=r"mem, example 1: label 5 is outside 0\.\.1"):
        TextExamples(texts=["a", "b"], labels=[0, 5], label_names=["x", "y"], source="mem")
    with pytest.raises(DataError, match=r"mem: 2 texts but 1 labels"):
        TextExamples(texts=["a", "b"], labels=np.array([0]), label_names=["x", "y"], source="mem")
    with pytest.raises(DataError, match=r"labels must be integers"):
        TextExamples(texts=["a"], labels=np.array([0.5]), label_names=["x", "y"], source="mem")


def test_subset_keeps_names_and_source():
    examples = TextExamples(texts=["a", "b", "c"], labels=[0, 1, 1], label_names=["x", "y", "z"], source="mem")
    part = examples.subset([2, 0])
    assert part.texts == ["c", "a"]
    assert part.labels.tolist() == [1, 0]
    assert part.label_names == ["x", "y", "z"]
    assert part.source == "mem"
    assert part.class_counts() == {"x": 1, "y": 1, "z": 0}


# --- stratified_split ----------------------------------------------------------------------


@pytest.fixture()
def synthetic_labels() -> np.ndarray:
    return np.random.default_rng(42).permutation(np.repeat([0, 1, 2, 3], [50, 31, 7, 1]))


def test_split_is_deterministic_per_seed(synthetic_labels):
    first = stratified_split(synthetic_labels, 0.2, seed=3)
    again = stratified_split(synthetic_labels, 0.2, seed=3)
    other = stratified_split(synthetic_labels, 0.2, seed=4)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_split_is_disjoint_complete_sorted_and_stratified(synthetic_labels):
    fraction = 0.2
    train, validation = stratified_split(synthetic_labels, fraction, seed=0)
    assert train.dtype == np.int64 and validation.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(validation) > 0)
    assert not set(train) & set(validation)
    assert sorted(set(train) | set(validation)) == list(range(len(synthetic_labels)))
    for label in range(3):
        class_size = int(np.sum(synthetic_labels == label))
        in_validation = int(np.sum(synthetic_labels[validation] == label))
        assert abs(in_validation - fraction * class_size) <= 1
        assert in_validation >= 1
    # A class with a single example cannot be split; it stays in training.
    assert np.sum(synthetic_labels[validation] == 3) == 0


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="validation_fraction"):
        stratified_split([0, 1, 0, 1], fraction)
