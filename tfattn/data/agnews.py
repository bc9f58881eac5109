"""AG News topic classification: read the official CSV or the TFDS copy into `TextExamples`.

The official CSV (Zhang, Zhao & LeCun 2015) has no header and three quoted columns: class index
1..4, title, description. Its text carries scraping artefacts that `clean_agnews_text` repairs.
"""

import csv
import html
import os
import re
from pathlib import Path

import numpy as np

from tfattn.data.examples import DataError, TextExamples, first_line, iter_utf8_lines
from tfattn.hosts import host_resolves

__all__ = ["AGNEWS_LABELS", "clean_agnews_text", "iter_agnews_rows", "read_agnews_csv", "load_agnews"]

# Official class index i (1..4) is label i - 1 here; TFDS "ag_news_subset" uses the same order.
AGNEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]

_TFDS_NAMES = ("tfds:ag_news_subset", "ag_news_subset")
_EXPECTED_COLUMNS = 3

# In the CSV an entity's "&" was replaced by a space: "NASCAR #39;s", "M amp;S", "up to  #36;2".
# Taking that one space back for the "&" restores "NASCAR's", "M&S", "up to $2". Named entities
# are listed rather than matched as any "word;", which would also catch "Rises;" or "not;".
_BARE_ENTITY = re.compile(r" ?(?<![&\w])((?:#\d+|quot|amp|lt|gt|nbsp|hellip|[lr]squo|[lr]dquo|[mn]dash);)")
# Markup arrives escaped ("&lt;A HREF=...&gt;CAL.N&lt;/A&gt;"); after unescaping only the link
# text is worth keeping. Requiring a letter or "/" after "<" leaves comparisons like "a < b" alone.
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")


def clean_agnews_text(text: str) -> str:
    """Turn one AG News title or description into plain single-spaced text.

    - "\\$" is an escaped dollar sign and becomes "$"; any other backslash stood for a line
      break ("word\\word", " \\ ", "\\\\") and becomes a space;
    - entities that lost their "&" ("#39;", "quot;", "amp;", "hellip;", ...) get it back, then all
      HTML entities are unescaped and HTML tags removed;
    - runs of whitespace collapse to one space and the ends are stripped.
    """
    text = text.replace("\\$", "$").replace("\\", " ")
    text = _BARE_ENTITY.sub(r"&\1", text)
    text = _HTML_TAG.sub(" ", html.unescape(text))
    return " ".join(text.split())


def iter_agnews_rows(path):
    """Parse an AG News CSV in the official format one row at a time, raising `DataError` on any bad row.

    Memory stays bounded by the longest row, so streaming input reads files of any size with
    the same parsing as `read_agnews_csv`. No row is skipped: a wrong column count, a label that
    is not 1..4, or a row whose title and description are both empty after cleaning stops the
    read with the row and line named; so does a file with no rows.

    Args:
        path: the CSV file.

    Yields:
        `(where, text, label)`: where the row is ("FILE, row R (line L)"), the cleaned title and
        description, and the 0-based class id.
    """
    path = Path(path)
    reader = csv.reader(iter_utf8_lines(path))
    row_number = 0
    try:
        for row_number, fields in enumerate(reader, start=1):
            where = f"{path}, row {row_number} (line {reader.line_num})"
            if len(fields) != _EXPECTED_COLUMNS:
                raise DataError(
                    f"{where}: found {len(fields)} columns, expected {_EXPECTED_COLUMNS} "
                    "(class index, title, description)"
                )
            label_field, title, description = fields
            label = _parse_label(label_field, where)
            text = clean_agnews_text(f"{title} {description}")
            if not text:
                raise DataError(f"{where}: title and description are both empty")
            yield where, text, label
    except csv.Error as error:
        raise DataError(f"{path}, row {row_number + 1} (line {reader.line_num}): {error}") from None
    if row_number == 0:
        raise DataError(f"{path}: no rows (expected AG News CSV rows: class index, title, description)")


def read_agnews_csv(path) -> TextExamples:
    """Read an AG News CSV in the official format; raise `DataError` on any bad row.

    No row is skipped: a wrong column count, a label that is not 1..4, or a row whose title and
    description are both empty after cleaning stops the read with the row and line named
    (`iter_agnews_rows` parses the rows).
    """
    texts = []
    labels = []
    for _, text, label in iter_agnews_rows(path):
        texts.append(text)
        labels.append(label)
    return TextExamples(
        texts=texts,
        labels=np.asarray(labels, dtype=np.int64),
        label_names=list(AGNEWS_LABELS),
        source=str(Path(path)),
    )


def load_agnews(source, split: str = "train") -> TextExamples:
    """Load AG News from a CSV path, or from TFDS when `source` is "tfds:ag_news_subset".

    `split` only applies to TFDS (any TFDS split string, e.g. "train[:10%]"); a CSV is one split.
    """
    if isinstance(source, os.PathLike) or Path(source).exists():
        return read_agnews_csv(source)
    if source in _TFDS_NAMES:
        return _load_tfds_agnews(split)
    raise DataError(f"{source}: no such file (expected an AG News CSV path or 'tfds:ag_news_subset')")


def _parse_label(field: str, where: str) -> int:
    value = field.strip()
    if not value.isascii() or not value.isdigit():
        raise DataError(f"{where}: label {field!r} is not an integer")
    index = int(value)
    if not 1 <= index <= len(AGNEWS_LABELS):
        raise DataError(f"{where}: label {field!r} is outside 1..{len(AGNEWS_LABELS)}")
    return index - 1


# Where TFDS downloads ag_news_subset from. Offline, its download retries take minutes before
# failing, so an unprepared dataset with this host unresolvable fails at once instead.
TFDS_DOWNLOAD_HOST = "drive.google.com"


def _load_tfds_agnews(split: str) -> TextExamples:
    # Imported here: tensorflow_datasets is slow to import and only this path needs it.
    import tensorflow_datasets as tfds

    where = f"could not load TFDS dataset 'ag_news_subset' (split {split!r})"
    builder = tfds.builder("ag_news_subset")
    if not builder.is_prepared() and not host_resolves(TFDS_DOWNLOAD_HOST):
        raise DataError(
            f"{where}: not prepared in {builder.data_dir} and {TFDS_DOWNLOAD_HOST} cannot be reached; "
            "offline? pass a local CSV path instead"
        )
    try:
        dataset = tfds.load("ag_news_subset", split=split)
        records = [(record["title"], record["description"], record["label"]) for record in tfds.as_numpy(dataset)]
    except Exception as error:
        raise DataError(f"{where}: {first_line(error)}; offline? pass a local CSV path instead") from error

    texts = [
        clean_agnews_text(f"{title.decode('utf-8')} {description.decode('utf-8')}") for title, description, _ in records
    ]
    return TextExamples(
        texts=texts,
        labels=np.asarray([label for _, _, label in records], dtype=np.int64),
        label_names=list(AGNEWS_LABELS),
        source=f"tfds:ag_news_subset[{split}]",
    )
