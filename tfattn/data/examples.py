"""Labelled text examples in memory, their validation errors, a seeded stratified split,
and the strict UTF-8 file reading shared by the loaders.

Every loader in `tfattn.data` returns a `TextExamples`, so models and pipelines only ever see
one shape of data: a list of strings, 0-based integer labels, and the class names.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "TextExamples",
    "first_line",
    "iter_utf8_lines",
    "read_utf8_text",
    "split_examples",
    "stratified_split",
]

# Python's csv module refuses fields over 131,072 characters; a long text is data like any
# other (it is truncated to the model's length when tokenized), so accept any size.
csv.field_size_limit(2**31 - 1)


class DataError(ValueError):
    """Bad input data; the message names the file (and row/line where known) in one line."""


# eq=False: the generated __eq__ would compare numpy arrays element-wise and fail on `bool()`.
@dataclass(frozen=True, eq=False)
class TextExamples:
    """Texts with 0-based class ids into `label_names`; `source` says where they came from."""

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    source: str

    def __post_init__(self):
        labels = np.asarray(self.labels)
        if labels.ndim != 1:
            raise DataError(f"{self.source}: labels must be one-dimensional, got shape {labels.shape}")
        # A float label such as 1.5 would be truncated silently by astype, so refuse it.
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{self.source}: labels must be integers, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
        # Frozen fields are set through object.__setattr__; the read-only array keeps it frozen.
        labels.flags.writeable = False
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "texts", list(self.texts))
        object.__setattr__(self, "label_names", list(self.label_names))

        if len(self.texts) != len(labels):
            raise DataError(f"{self.source}: {len(self.texts)} texts but {len(labels)} labels")
        out_of_range = np.flatnonzero((labels < 0) | (labels >= len(self.label_names)))
        if out_of_range.size:
            first = int(out_of_range[0])
            raise DataError(
                f"{self.source}, example {first}: label {int(labels[first])} is outside "
                f"0..{len(self.label_names) - 1} (classes {self.label_names})"
            )

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "TextExamples":
        """The examples at `indices`, in that order, with the same label names and source."""
        indices = np.asarray(indices, dtype=np.int64)
        return TextExamples(
            texts=[self.texts[i] for i in indices],
            labels=self.labels[indices],
            label_names=self.label_names,
            source=self.source,
        )

    def class_counts(self) -> dict[str, int]:
        """Number of examples per class name, in label order, including classes with none."""
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return {name: int(count) for name, count in zip(self.label_names, counts)}


def stratified_split(labels, validation_fraction: float = 0.1, seed: int = 0):
    """Split example indices into (train, validation), keeping each class's proportion.

    Each class sends round(validation_fraction * its size) examples to validation, at least one
    and at most all but one when it has two or more, so every class appears on both sides.
    The same labels and seed always give the same split. Returns two sorted int64 arrays.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    validation_parts = []
    # np.unique sorts the classes, so the random draws happen in a fixed order.
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = len(members)
        n_validation = round(validation_fraction * count)
        if count >= 2:
            n_validation = min(max(n_validation, 1), count - 1)
        validation_parts.append(rng.permutation(members)[:n_validation])

    is_validation = np.zeros(len(labels), dtype=bool)
    for part in validation_parts:
        is_validation[part] = True
    return (
        np.flatnonzero(~is_validation).astype(np.int64),
        np.flatnonzero(is_validation).astype(np.int64),
    )


def split_examples(examples: TextExamples, validation_fraction: float = 0.1, seed: int = 0):
    """Split `examples` into (train, validation) `TextExamples` with `stratified_split`."""
    train_indices, validation_indices = stratified_split(examples.labels, validation_fraction, seed)
    return examples.subset(train_indices), examples.subset(validation_indices)


def iter_utf8_lines(path):
    """The file's lines, decoded as UTF-8 while they are read (memory stays bounded by the
    longest line), line endings kept as in the file for `csv.reader`, a leading byte-order mark
    dropped; `DataError` names the file and, for bad UTF-8, the line."""
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    with handle:
        try:
            yield from handle
        except UnicodeDecodeError:
            read_utf8_text(path)  # rereads the bytes to name the bad line, and raises
            raise


def read_utf8_text(path) -> str:
    """The file decoded as UTF-8, minus any byte-order mark; `DataError` names the bad line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        bad = raw[error.start : error.end]
        raise DataError(f"{path}, line {line}: not valid UTF-8 (byte {bad.hex(' ')} at offset {error.start})") from None
    # A byte-order mark from spreadsheet exports would otherwise stick to the first label.
    return content.removeprefix("\ufeff")


def first_line(error: Exception, limit: int = 200) -> str:
    """The first line of an exception's message, shortened, for a one-line error report."""
    lines = str(error).strip().splitlines()
    reason = lines[0].strip() if lines else type(error).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
