"""Tests for reading topic-labelled texts from jsonl/csv/xlsx files and for label maps."""

import json
import re
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from tfattn.data import (
    COURSE_TOPICS,
    DataError,
    TextExamples,
    load_label_map,
    load_math_topics,
    read_labelled_texts,
    save_label_map,
    split_examples,
)

REAL_ROWS = 7500
REAL_COUNTS = {
    "Algebra": 1744,
    "Intermediate Algebra": 1295,
    "Prealgebra": 1205,
    "Geometry": 870,
    "Number Theory": 869,
    "Counting & Probability": 771,
    "Precalculus": 746,
}
COURSE_LABELS = ["Алгебра", "Геометрия", "Теория чисел"]


@pytest.fixture(scope="module")
def math_topics(math_topics_jsonl) -> TextExamples:
    return load_math_topics(math_topics_jsonl)


def write_text(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def write_xlsx(tmp_path: Path, rows, name: str = "math.xlsx", extra_sheet=None) -> Path:
    """A workbook whose active sheet holds `rows`; `extra_sheet` is (title, rows) for a second."""
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    if extra_sheet is not None:
        title, extra_rows = extra_sheet
        worksheet = workbook.create_sheet(title)
        for row in extra_rows:
            worksheet.append(row)
    path = tmp_path / name
    workbook.save(path)
    return path


def raises_one_line(expected: str, read, *args, **kwargs) -> str:
    """Call `read`, expect a one-line DataError containing `expected`, return its message."""
    with pytest.raises(DataError, match=re.escape(expected)) as caught:
        read(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the real jsonl ------------------------------------------------------------------------


def test_real_file_size_labels_and_counts(math_topics):
    assert len(math_topics) == REAL_ROWS
    assert math_topics.label_names == sorted(REAL_COUNTS)
    assert math_topics.class_counts() == REAL_COUNTS
    assert math_topics.labels.dtype == np.int64
    assert all(text and text == text.strip() for text in math_topics.texts)
    assert math_topics.texts[0].startswith("Chandra has four bowls.")
    assert math_topics.label_names[math_topics.labels[0]] == "Prealgebra"


def test_real_file_with_given_label_order(math_topics_jsonl, math_topics):
    reordered = sorted(REAL_COUNTS, reverse=True)
    examples = load_math_topics(math_topics_jsonl, label_names=reordered)
    assert examples.label_names == reordered
    assert examples.class_counts() == REAL_COUNTS
    assert [examples.label_names[i] for i in examples.labels] == [
        math_topics.label_names[i] for i in math_topics.labels
    ]


def test_real_file_stratified_split(math_topics):
    train, validation = split_examples(math_topics, validation_fraction=0.1, seed=0)
    assert abs(len(validation) - 750) <= 7
    assert len(train) + len(validation) == REAL_ROWS
    for name, count in validation.class_counts().items():
        assert abs(count - 0.1 * REAL_COUNTS[name]) <= 1


# --- xlsx ----------------------------------------------------------------------------------


def test_xlsx_with_cyrillic_columns(tmp_path):
    path = write_xlsx(
        tmp_path,
        [
            ["Задача", "Ответ", "Тема "],
            ["Найдите корень уравнения x^2 = 4", "2", "Алгебра"],
            ["  Найдите площадь круга радиуса 3  ", "9π", " Геометрия"],
            [144, 12, "Теория чисел"],
            ["Решите уравнение 2x = 6", None, "Алгебра"],
        ],
    )
    examples = read_labelled_texts(path, **COURSE_TOPICS)
    assert examples.texts == [
        "Найдите корень уравнения x^2 = 4",
        "Найдите площадь круга радиуса 3",
        "144",
        "Решите уравнение 2x = 6",
    ]
    assert examples.label_names == COURSE_LABELS
    assert examples.labels.tolist() == [0, 1, 2, 0]
    assert examples.source == str(path)


def test_xlsx_named_sheet(tmp_path):
    path = write_xlsx(
        tmp_path,
        [["Другое"], ["не читается"]],
        extra_sheet=("Задачи", [["Тема", "Задача"], ["Геометрия", "Сумма углов треугольника?"]]),
    )
    examples = read_labelled_texts(path, sheet="Задачи", **COURSE_TOPICS)
    assert examples.texts == ["Сумма углов треугольника?"]
    assert examples.label_names == ["Геометрия"]
    raises_one_line(
        "math.xlsx: no sheet 'Листы'; sheets are: 'Sheet', 'Задачи'",
        read_labelled_texts,
        path,
        sheet="Листы",
        **COURSE_TOPICS,
    )


def test_xlsx_missing_column_lists_found_columns(tmp_path):
    path = write_xlsx(tmp_path, [["Задача", "Ответ"], ["1 + 1 = ?", 2]])
    raises_one_line(
        "math.xlsx: no column 'Тема'; columns are: 'Задача', 'Ответ'",
        read_labelled_texts,
        path,
        **COURSE_TOPICS,
    )


def test_xlsx_empty_label_names_the_row(tmp_path):
    path = write_xlsx(tmp_path, [["Задача", "Тема"], ["1 + 1 = ?", "Алгебра"], ["2 + 2 = ?", None]])
    raises_one_line("math.xlsx, row 3: empty label in column 'Тема'", read_labelled_texts, path, **COURSE_TOPICS)


def test_not_a_workbook(tmp_path):
    path = write_text(tmp_path, "math.xlsx", "Задача,Тема\n")
    raises_one_line("math.xlsx: not a readable .xlsx workbook", read_labelled_texts, path, **COURSE_TOPICS)


# --- csv -----------------------------------------------------------------------------------


def test_csv_with_custom_columns(tmp_path):
    path = write_text(
        tmp_path,
        "topics.csv",
        "id,question,topic\n"
        '1,"Add 2, 3 and 4",arithmetic\n'
        '2,"Line one\nline two",geometry\n'
        "\n"
        "3,What is 7 * 6?,arithmetic\n",
    )
    examples = read_labelled_texts(path, text_column="question", label_column="topic")
    assert examples.texts == ["Add 2, 3 and 4", "Line one\nline two", "What is 7 * 6?"]
    assert examples.label_names == ["arithmetic", "geometry"]
    assert examples.labels.tolist() == [0, 1, 0]


def test_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "Задача,Тема\nСколько будет 2+2?,Алгебра\n".encode())
    examples = read_labelled_texts(path, **COURSE_TOPICS)
    assert examples.texts == ["Сколько будет 2+2?"]
    assert examples.label_names == ["Алгебра"]


def test_csv_unknown_label_names_row_and_label(tmp_path):
    path = write_text(tmp_path, "topics.csv", "text,label\nfirst,a\nsecond,b\nthird,c\n")
    message = raises_one_line(
        "topics.csv, row 4 (line 4): unknown label 'c'; known labels are: 'a', 'b'",
        read_labelled_texts,
        path,
        "text",
        "label",
        label_names=["a", "b"],
    )
    assert message.endswith("'a', 'b'")


def test_unknown_label_shortens_a_long_label_list(tmp_path):
    path = write_text(tmp_path, "topics.csv", "text,label\nfirst,zzz\n")
    names = [f"topic {i:02d}" for i in range(30)]
    message = raises_one_line(
        "row 2 (line 2): unknown label 'zzz'; known labels are: 'topic 00', 'topic 01'",
        read_labelled_texts,
        path,
        "text",
        "label",
        label_names=names,
    )
    assert message.endswith("'topic 09', ... (30 in all)")
    assert "topic 10" not in message


def test_csv_empty_text_and_wrong_field_count(tmp_path):
    empty = write_text(tmp_path, "empty.csv", "text,label\nfine,a\n   ,b\n")
    raises_one_line(
        "empty.csv, row 3 (line 3): empty text in column 'text'",
        read_labelled_texts,
        empty,
        "text",
        "label",
    )
    ragged = write_text(tmp_path, "ragged.csv", "text,label\nfine,a\nno label\n")
    raises_one_line(
        "ragged.csv, row 3 (line 3): found 1 fields, the header has 2",
        read_labelled_texts,
        ragged,
        "text",
        "label",
    )


def test_csv_missing_column_and_no_rows(tmp_path):
    path = write_text(tmp_path, "topics.csv", "question,topic\n")
    raises_one_line(
        "topics.csv: no column 'text'; columns are: 'question', 'topic'",
        read_labelled_texts,
        path,
        "text",
        "topic",
    )
    raises_one_line("topics.csv: no examples", read_labelled_texts, path, "question", "topic")


# --- jsonl ---------------------------------------------------------------------------------


def test_jsonl_reads_objects_and_skips_blank_lines(tmp_path):
    path = write_text(
        tmp_path,
        "topics.jsonl",
        '{"problem": " Найдите x ", "subject": "Алгебра", "level": 1}\n'
        "\n"
        '{"problem": "Sides\\u2028of a square", "subject": "Geometry"}\n',
    )
    examples = load_math_topics(path)
    assert examples.texts == ["Найдите x", "Sides\u2028of a square"]
    assert examples.label_names == ["Geometry", "Алгебра"]
    assert examples.labels.tolist() == [1, 0]


def test_jsonl_bad_json_names_the_line(tmp_path):
    path = write_text(tmp_path, "topics.jsonl", '{"problem": "a", "subject": "x"}\n{"problem": "b", \n')
    raises_one_line("topics.jsonl, line 2: not valid JSON", load_math_topics, path)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write_text(tmp_path, "topics.jsonl", '["a", "x"]\n')
    raises_one_line("topics.jsonl, line 1: expected a JSON object, got an array", load_math_topics, path)


def test_jsonl_missing_key_and_null_text(tmp_path):
    missing = write_text(tmp_path, "missing.jsonl", '{"problem": "a", "topic": "x"}\n')
    raises_one_line(
        "missing.jsonl, line 1: no column 'subject'; columns are: 'problem', 'topic'",
        load_math_topics,
        missing,
    )
    null = write_text(tmp_path, "null.jsonl", '{"problem": "a", "subject": "x"}\n{"problem": null, "subject": "x"}\n')
    raises_one_line("null.jsonl, line 2: empty text in column 'problem'", load_math_topics, null)


def test_jsonl_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"problem": "a", "subject": "x"}\n{"problem": "caf\xe9", "subject": "x"}\n')
    raises_one_line("latin1.jsonl, line 2: not valid UTF-8", load_math_topics, path)


# --- file-level errors ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nope.jsonl", "nope.csv", "nope.xlsx"])
def test_missing_file(tmp_path, name):
    raises_one_line(f"{name}: no such file", read_labelled_texts, tmp_path / name, "a", "b")


def test_unsupported_suffix(tmp_path):
    path = write_text(tmp_path, "topics.txt", "text,label\n")
    raises_one_line(
        "topics.txt: unsupported file type '.txt'; expected .jsonl, .json-lines, .csv, .tsv or .xlsx",
        read_labelled_texts,
        path,
        "text",
        "label",
    )


def test_sheet_only_for_xlsx(tmp_path):
    path = write_text(tmp_path, "topics.csv", "text,label\na,b\n")
    raises_one_line(
        "topics.csv: sheet='Лист1' only applies to .xlsx files",
        read_labelled_texts,
        path,
        "text",
        "label",
        sheet="Лист1",
    )


# --- label maps ----------------------------------------------------------------------------


def test_label_map_round_trip_keeps_cyrillic(tmp_path):
    path = tmp_path / "labels.json"
    save_label_map(COURSE_LABELS, path)
    assert load_label_map(path) == COURSE_LABELS
    content = path.read_text(encoding="utf-8")
    assert "Теория чисел" in content
    assert json.loads(content) == {
        "label_names": COURSE_LABELS,
        "label2id": {"Алгебра": 0, "Геометрия": 1, "Теория чисел": 2},
    }


def test_saved_label_map_fixes_ids_for_another_file(tmp_path):
    map_path = tmp_path / "labels.json"
    save_label_map(["Теория чисел", "Алгебра", "Геометрия"], map_path)
    data = write_xlsx(tmp_path, [["Задача", "Тема"], ["x + 1 = 2", "Алгебра"]])
    examples = read_labelled_texts(data, label_names=load_label_map(map_path), **COURSE_TOPICS)
    assert examples.label_names == ["Теория чисел", "Алгебра", "Геометрия"]
    assert examples.labels.tolist() == [1]


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"label_names": ["a", "b"]', "not valid JSON"),
        ('["a", "b"]', 'expected a JSON object with a "label_names" list'),
        ('{"names": ["a", "b"]}', 'expected a JSON object with a "label_names" list'),
        ('{"label_names": [], "label2id": {}}', "no label names"),
        ('{"label_names": ["a", 1], "label2id": {}}', "label name 1 is not a non-empty"),
        ('{"label_names": ["a", "a"], "label2id": {"a": 0}}', "label names repeat: 'a'"),
        ('{"label_names": ["a", "b"]}', '"label2id" does not number "label_names"'),
        ('{"label_names": ["a", "b"], "label2id": {"a": 1, "b": 0}}', '"label2id" does not'),
    ],
)
def test_malformed_label_map(tmp_path, content, expected):
    path = write_text(tmp_path, "labels.json", content)
    raises_one_line(f"labels.json: {expected}", load_label_map, path)


def test_missing_label_map(tmp_path):
    raises_one_line("labels.json: no such file", load_label_map, tmp_path / "labels.json")
