"""Topic-labelled texts from jsonl, csv or xlsx files with configurable columns, and label maps.

`read_labelled_texts` reads any table of (text, label) pairs: the shared MATH problems
(`MATH_TOPICS` columns) and the course's Russian problem set (`COURSE_TOPICS` columns) alike.
Class ids come either from the file (its sorted label strings) or from a label map saved with
`save_label_map`, so a model trained on one file keeps the same ids when it reads another.
"""

import csv
import json
import zipfile
from pathlib import Path

import numpy as np

from tfattn.data.examples import DataError, TextExamples, iter_utf8_lines, read_utf8_text

__all__ = [
    "MATH_TOPICS",
    "COURSE_TOPICS",
    "iter_labelled_rows",
    "read_labelled_texts",
    "load_math_topics",
    "save_label_map",
    "load_label_map",
]

# Column names for `read_labelled_texts(path, **MATH_TOPICS)` and the like.
MATH_TOPICS = dict(text_column="problem", label_column="subject")
COURSE_TOPICS = dict(text_column="Задача", label_column="Тема")

_JSONL_SUFFIXES = (".jsonl", ".json-lines")
# Error messages list at most this many column or label names, so they stay one readable line.
_MAX_LISTED_NAMES = 10
_JSON_TYPE_NAMES = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def iter_labelled_rows(path, text_column: str, label_column: str, label_names=None, sheet=None):
    """Parse (text, label) pairs from a .jsonl/.json-lines, .csv, .tsv or .xlsx file one row at a time.

    The rows are checked as `read_labelled_texts` checks them (it reads through this), with
    memory bounded by the longest row, so streaming input reads files of any size the same way.
    No row is skipped: a missing column, a bad JSON line, an empty text or label, or a label
    outside `label_names` stops the read with `DataError` naming the file and row/line; so does
    a file with no examples.

    Args:
        path: the file; its suffix picks the format.
        text_column: the column (JSON key) holding the text.
        label_column: the column (JSON key) holding the label name.
        label_names: the known label names; None accepts any label.
        sheet: an xlsx worksheet name (default: the active one).

    Yields:
        `(where, text, label)`: where the row is ("FILE, line L" or "FILE, row R ..."), the
        stripped text and the stripped label name.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if sheet is not None and suffix != ".xlsx":
        raise DataError(f"{path}: sheet={sheet!r} only applies to .xlsx files")
    if suffix in _JSONL_SUFFIXES:
        records = _jsonl_records(path, text_column, label_column)
    elif suffix in (".csv", ".tsv"):
        records = _csv_records(path, text_column, label_column, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".xlsx":
        records = _xlsx_records(path, text_column, label_column, sheet)
    else:
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; "
            "expected .jsonl, .json-lines, .csv, .tsv or .xlsx"
        )

    yield from checked_rows(path, records, label_names, f"in column {text_column!r}", f"in column {label_column!r}")


def iter_text_rows(path, text_column: str):
    """`(where, text)` for each row of a .jsonl, .csv or .tsv file: the `text_column`, which must
    be there and not be empty (`DataError` naming the row). Texts are kept as written (a
    language model learns their spacing too)."""
    path = Path(path)
    suffix = path.suffix.lower()
    # The readers take a label column too; asking for the text column twice reads texts alone.
    if suffix in _JSONL_SUFFIXES:
        records = _jsonl_records(path, text_column, text_column)
    elif suffix in (".csv", ".tsv"):
        records = _csv_records(path, text_column, text_column, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        found = path.suffix or "(no suffix)"
        raise DataError(f"{path}: unsupported file type {found!r}; expected .jsonl, .csv or .tsv")
    for where, text, _ in records:
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: empty or missing text in column {text_column!r}")
        yield where, text


def checked_rows(path, records, label_names=None, text_place="", label_place=""):
    """`(where, text, label)` of `records` (`(where, text value, label value)`), stripped, with a
    `DataError` naming the row for an empty text or label or, given `label_names`, an unknown
    label, and naming `path` when it holds no example. `text_place` / `label_place` say where in
    a row they are read ("in column 'problem'", "after the tab")."""
    known = None
    if label_names is not None:
        label_names = _checked_label_names(label_names, "label_names")
        known = set(label_names)
    count = 0
    for where, text_value, label_value in records:
        text = _as_text(text_value)
        if not text:
            raise DataError(f"{where}: empty text {text_place}".rstrip())
        label = _as_text(label_value)
        if not label:
            raise DataError(f"{where}: empty label {label_place}".rstrip())
        if known is not None and label not in known:
            raise DataError(f"{where}: unknown label {label!r}; known labels are: {_quoted(label_names)}")
        count += 1
        yield where, text, label
    if not count:
        raise DataError(f"{path}: no examples")


def read_labelled_texts(path, text_column: str, label_column: str, label_names=None, sheet=None) -> TextExamples:
    """Read (text, label) pairs from a .jsonl/.json-lines, .csv, .tsv or .xlsx file.

    A csv, tsv or xlsx file has a header row (row 1) naming its columns; `sheet` picks an xlsx
    worksheet by name (default: the active one). Cell values are turned into stripped text,
    so numbers in a spreadsheet become text too. With `label_names=None` the classes are the
    file's sorted unique labels; given `label_names` (e.g. from `load_label_map`) fix the ids,
    and a label outside them is an error. No row is skipped: a missing column, a bad JSON
    line, an empty text or label stops the read with `DataError` naming the file and row/line
    (`iter_labelled_rows` parses the rows).
    """
    # A list, so an iterator of names is not used up by the row checks before the ids are set.
    label_names = None if label_names is None else list(label_names)
    texts = []
    labels = []
    for _, text, label in iter_labelled_rows(path, text_column, label_column, label_names, sheet):
        texts.append(text)
        labels.append(label)
    if label_names is None:
        label_names = sorted(set(labels))
    known_ids = {name: index for index, name in enumerate(label_names)}
    return TextExamples(
        texts=texts,
        labels=np.asarray([known_ids[label] for label in labels], dtype=np.int64),
        label_names=label_names,
        source=str(Path(path)),
    )


def load_math_topics(path, label_names=None) -> TextExamples:
    """Read the shared MATH problems jsonl (`problem` text, `subject` label)."""
    return read_labelled_texts(path, label_names=label_names, **MATH_TOPICS)


def save_label_map(label_names, path) -> None:
    """Write `label_names` and their ids as UTF-8 JSON: {"label_names": [...], "label2id": {...}}."""
    label_names = _checked_label_names(label_names, "label_names")
    content = {
        "label_names": label_names,
        "label2id": {name: index for index, name in enumerate(label_names)},
    }
    # ensure_ascii=False keeps Cyrillic names readable in the file instead of \u escapes.
    Path(path).write_text(json.dumps(content, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def load_label_map(path) -> list[str]:
    """The label names saved by `save_label_map`; `DataError` if the file is not such a map."""
    path = Path(path)
    try:
        content = json.loads(read_utf8_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    if not isinstance(content, dict) or not isinstance(content.get("label_names"), list):
        raise DataError(f'{path}: expected a JSON object with a "label_names" list')
    label_names = _checked_label_names(content["label_names"], str(path))
    # label2id repeats the order of label_names; a hand edit to one of them alone shows here.
    if content.get("label2id") != {name: index for index, name in enumerate(label_names)}:
        raise DataError(f'{path}: "label2id" does not number "label_names" 0, 1, 2, ... in order')
    return label_names


def _jsonl_records(path: Path, text_column: str, label_column: str):
    """(where, text value, label value) for each JSON object line, as it is read."""
    # Split on "\n" only: str.splitlines would also break at U+2028 inside JSON strings, and
    # "\n" is what read_utf8_text counts when it names a line.
    for line_number, line in enumerate(_split_on_newline(iter_utf8_lines(path)), start=1):
        # A blank line holds no record (editors often leave one at the end).
        if not line.strip():
            continue
        where = f"{path}, line {line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(record, dict):
            kind = _JSON_TYPE_NAMES.get(type(record), type(record).__name__)
            raise DataError(f"{where}: expected a JSON object, got {kind}")
        for column in (text_column, label_column):
            if column not in record:
                raise DataError(f"{where}: no column {column!r}; columns are: {_quoted(list(record))}")
        yield where, record[text_column], record[label_column]


def _csv_records(path: Path, text_column: str, label_column: str, delimiter: str = ","):
    """(where, text value, label value) for each data row under the header row, as it is read
    (`delimiter` "\\t": a TSV file)."""
    reader = csv.reader(iter_utf8_lines(path), delimiter=delimiter)
    row_number = 0  # the last row read; the header is row 1
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file (expected a header row)")
        row_number = 1
        text_index, label_index = _column_indices(path, header, text_column, label_column)
        for row_number, fields in enumerate(reader, start=2):
            # A blank line holds no record, as in csv.DictReader.
            if not fields:
                continue
            where = f"{path}, row {row_number} (line {reader.line_num})"
            if len(fields) != len(header):
                raise DataError(f"{where}: found {len(fields)} fields, the header has {len(header)}")
            yield where, fields[text_index], fields[label_index]
    except csv.Error as error:
        raise DataError(f"{path}, row {row_number + 1} (line {reader.line_num}): {error}") from None


def _split_on_newline(lines):
    """Lines as "\n" ends them: the file reader also ends a line at a lone "\r", which JSON
    lines may not break at, and line numbers must match what `read_utf8_text` counts."""
    pending = ""
    for piece in lines:
        pending += piece
        if pending.endswith("\n"):
            yield pending[:-1]
            pending = ""
    yield pending


def _xlsx_records(path: Path, text_column: str, label_column: str, sheet):
    """(where, text value, label value) for each non-blank row under the header row, as it is read."""
    # Imported here: openpyxl takes a noticeable time to import and only xlsx files need it.
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        # data_only: a formula cell gives its last computed value, not the formula text.
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, InvalidFileException, KeyError) as error:
        raise DataError(f"{path}: not a readable .xlsx workbook ({error})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None

    try:
        if sheet is None:
            worksheet = workbook.active
        elif sheet in workbook.sheetnames:
            worksheet = workbook[sheet]
        else:
            raise DataError(f"{path}: no sheet {sheet!r}; sheets are: {_quoted(workbook.sheetnames)}")
        rows = worksheet.iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            raise DataError(f"{path}: sheet {worksheet.title!r} is empty (expected a header row)")
        header = [_as_text(value) for value in header]
        text_index, label_index = _column_indices(path, header, text_column, label_column)
        for row_number, row in enumerate(rows, start=2):
            # Formatting can make a sheet extend past its data; wholly empty rows hold no record.
            if all(value is None for value in row):
                continue
            # Rows may stop before their last empty cells.
            cells = list(row) + [None] * (len(header) - len(row))
            yield f"{path}, row {row_number}", cells[text_index], cells[label_index]
    finally:
        # A read-only workbook keeps its file open until closed.
        workbook.close()


def _column_indices(path: Path, header, text_column: str, label_column: str):
    """Positions of the text and label columns in a header row."""
    # Spreadsheet headers often carry stray spaces ("Тема "), which would hide the column.
    names = [name.strip() for name in header]
    indices = []
    for column in (text_column, label_column):
        count = names.count(column)
        if count == 0:
            found = [name for name in names if name]
            raise DataError(f"{path}: no column {column!r}; columns are: {_quoted(found)}")
        if count > 1:
            raise DataError(f"{path}: column {column!r} appears {count} times in the header")
        indices.append(names.index(column))
    return indices


def _as_text(value) -> str:
    """A cell or JSON value as stripped text; an absent value (None) is empty."""
    return "" if value is None else str(value).strip()


def _checked_label_names(label_names, where: str) -> list[str]:
    """`label_names` as a list, if they are distinct non-empty strings that labels can match."""
    names = list(label_names)
    if not names:
        raise DataError(f"{where}: no label names")
    for name in names:
        # Labels read from files are stripped, so a name with outer spaces could never match.
        if not isinstance(name, str) or not name or name != name.strip():
            raise DataError(f"{where}: label name {name!r} is not a non-empty stripped string")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"{where}: label names repeat: {_quoted(duplicates)}")
    return names


def _quoted(names) -> str:
    """Names quoted and comma-separated, shortened to the first few when there are many."""
    shown = ", ".join(repr(name) for name in names[:_MAX_LISTED_NAMES])
    if len(names) > _MAX_LISTED_NAMES:
        shown += f", ... ({len(names)} in all)"
    return shown or "(none)"
