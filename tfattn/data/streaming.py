"""Streaming input for data larger than memory: files read by `tf.data`, tokenized in the graph.

The in-memory path (`read_agnews_csv` / `read_labelled_texts`, then
`tfattn.data.pipelines.make_dataset`) holds every text and its token ids at once, which stops at
a few million texts. Here memory is bounded by the shuffle buffer instead of the data size:

1. `expand_data_files` turns a file, folder, glob or comma-separated list into sorted files;
2. `count_and_check` makes one bounded-memory pass in Python that validates every row with the
   in-memory readers' own per-row parsing, so a bad row stops the run before training, with the
   same message (file and line) as the in-memory path would give;
3. `stream_examples` reads one worker's share of the files (sharding is by file) as a
   `tf.data.Dataset` of `(text, label)`;
4. `streaming_dataset` tokenizes batches of texts with the model's preprocessor inside the
   `tf.data` graph, shuffles with a bounded buffer, groups examples of similar length into
   batches padded to their own longest row, and prefetches.

File formats (`StreamFormat.for_files` picks one by suffix and task):
- `.csv` for the `agnews` task: official AG News rows (class 1..4, title, description), cleaned
  and joined exactly as `read_agnews_csv` does; label = class - 1.
- `.jsonl` / `.json-lines`, or `.csv` with a header, for topic data: `text_column` and
  `label_column`, labels mapped through `label_names` (as `read_labelled_texts`).
- `.tsv` / `.txt`: one example per line, `LABEL<TAB>TEXT`, LABEL a name from `label_names`.
- `.tfrecord` / `.tfrecords`: `tf.train.Example`s with features `text` (bytes) and `label`
  (int64 class id), parsed in the graph; `write_tfrecords` writes them.

Text formats are parsed in Python (`tf.data.Dataset.from_generator`, a few hundred rows per
call), so such a dataset runs in the process that built it; TFRecord needs no Python at all.
"""

import glob
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfattn.data.agnews import AGNEWS_LABELS, iter_agnews_rows
from tfattn.data.examples import DataError, iter_utf8_lines
from tfattn.data.topics import _checked_label_names, _split_on_newline, checked_rows, iter_labelled_rows
from tfattn.models.preprocessors import FEATURE_NAMES

__all__ = [
    "StreamFormat",
    "StreamSummary",
    "count_and_check",
    "default_bucket_boundaries",
    "expand_data_files",
    "sample_texts",
    "stream_examples",
    "streaming_dataset",
    "write_tfrecords",
]

from tfattn.data.pipelines import AUTOTUNE  # noqa: E402

# Format kinds.
AGNEWS_CSV = "agnews-csv"
TABLE = "table"
LABEL_TAB_TEXT = "label-tab-text"
TFRECORD = "tfrecord"

_TABLE_SUFFIXES = (".jsonl", ".json-lines")
_TSV_SUFFIXES = (".tsv", ".txt")
_TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords")
_SUPPORTED = ".csv, .jsonl, .json-lines, .tsv, .txt, .tfrecord, .tfrecords"

# The TFRecord features: the text, and its 0-based class id.
_TFRECORD_FEATURES = {
    "text": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}

# Rows handed from Python to TensorFlow per generator call: one call per row would cost more
# than parsing the row, and a few hundred rows are still a negligible amount of memory.
# A streamed run learns its vocabulary from this many texts (or sentence pairs): the first ones.
VOCABULARY_SAMPLE = 100_000
_CHUNK_ROWS = 256
# Files read at once, a block of `_CHUNK_ROWS` rows from each in turn, so a shuffle buffer sees
# several files even when each file holds one class.
_CYCLE_LENGTH = 4
# Default bucket width in tokens: no row in a batch carries more than this much padding.
_BUCKET_WIDTH = 16
# Used for the default buckets when the preprocessor does not say its longest row.
_FALLBACK_MAX_LENGTH = 512
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class StreamFormat:
    """How to read a set of data files.

    Args:
        kind: `"agnews-csv"`, `"table"` (csv with a header, jsonl), `"label-tab-text"` (tsv/txt)
            or `"tfrecord"`.
        text_column: the text column (JSON key) of a table.
        label_column: the label column (JSON key) of a table.
        label_names: the classes the format itself fixes (AG News's four), else None: the
            caller passes them (or `count_and_check` finds them).
    """

    kind: str
    text_column: str | None = None
    label_column: str | None = None
    label_names: tuple[str, ...] | None = None

    @classmethod
    def for_files(cls, files, task: str, text_column: str | None = None, label_column: str | None = None):
        """The format of `files` (all of one kind) by suffix and task.

        Args:
            files: data files, e.g. from `expand_data_files`.
            task: `"agnews"` reads `.csv` as official AG News rows and names the four AG News
                classes; any other task reads `.csv` with a header row.
            text_column: the text column of csv/jsonl tables.
            label_column: the label column of csv/jsonl tables.
        """
        files = [Path(path) for path in files]
        if not files:
            raise DataError("no data files")
        kinds = {}
        for path in files:
            kinds.setdefault(_kind_of(path, task), path)
        if len(kinds) > 1:
            shown = ", ".join(f"{path} ({kind})" for kind, path in kinds.items())
            raise DataError(f"data files mix formats: {shown}; give files of one format")
        (kind,) = kinds
        fixed = tuple(AGNEWS_LABELS) if task == "agnews" else None
        if kind == TABLE:
            if not text_column or not label_column:
                raise DataError(f"{files[0]}: csv/jsonl topic data needs text_column and label_column")
            return cls(kind, text_column, label_column, fixed)
        return cls(kind, label_names=fixed)

    def resolve_label_names(self, label_names, required: bool) -> list[str] | None:
        """The label names to read with: the given ones, else the format's own.

        AG News's class ids are fixed by the file (class index - 1), so other names for them
        are an error; formats without names of their own need them when `required`.
        """
        if label_names is not None:
            label_names = _checked_label_names(label_names, "label_names")
            if self.kind == AGNEWS_CSV and label_names != list(AGNEWS_LABELS):
                raise DataError(f"label_names {label_names} differ from the AG News classes {list(AGNEWS_LABELS)}")
            return label_names
        if self.label_names is not None:
            return list(self.label_names)
        if required:
            raise DataError(
                f"{self.kind} data needs label_names to number its classes "
                "(count_and_check finds them in csv/jsonl/tsv files; a label map gives them too)"
            )
        return None


@dataclass(frozen=True)
class StreamSummary:
    """What one checking pass over the data files found.

    Args:
        num_examples: examples in all files.
        label_names: the classes: the given ones, or the sorted labels found.
        class_counts: examples per class name, in label order, including classes with none.
        files: the files checked.
    """

    num_examples: int
    label_names: list[str]
    class_counts: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def expand_data_files(spec) -> list[Path]:
    """The data files that `spec` names, sorted and without repeats.

    Args:
        spec: a file; a glob pattern (`data/part-*.csv`); a folder (its files, not recursing,
            skipping names that start with "." or "_" such as `.DS_Store` or Spark's `_SUCCESS`);
            a comma-separated list of those; or a list of those.

    Raises:
        DataError: naming the part of `spec` that matches no file.
    """
    if isinstance(spec, (str, os.PathLike)):
        # A name that exists is taken whole, so a file name holding a comma still works.
        parts = [spec] if Path(spec).exists() else [part.strip() for part in str(spec).split(",")]
    else:
        parts = list(spec)
    parts = [part for part in parts if str(part)]
    if not parts:
        raise DataError(f"{spec!r}: no data files given")
    files = set()
    for part in parts:
        path = Path(part)
        if path.is_file():
            files.add(path)
        elif path.is_dir():
            found = [child for child in path.iterdir() if child.is_file() and not child.name.startswith((".", "_"))]
            if not found:
                raise DataError(f"{path}: the folder holds no data files")
            files.update(found)
        elif _GLOB_CHARS & set(str(part)):
            found = [Path(name) for name in glob.glob(str(part)) if Path(name).is_file()]
            if not found:
                raise DataError(f"{part}: no file matches this pattern")
            files.update(found)
        else:
            raise DataError(f"{path}: no such file or folder")
    return sorted(files)


def count_and_check(files, stream_format: StreamFormat, label_names=None) -> StreamSummary:
    """Count the examples in `files`, validating every row as the in-memory readers do.

    One pass in Python with memory bounded by the longest row: run it before training, so that
    a bad row stops the run at once with `DataError` naming the file and row/line (the message of
    `read_agnews_csv` / `read_labelled_texts` for the same row), not hours into training.

    Args:
        files: data files, e.g. from `expand_data_files`.
        stream_format: their `StreamFormat`.
        label_names: the classes; None takes the format's own (AG News) or, for csv/jsonl/tsv
            topic data, the sorted labels found. TFRecord labels are ids: their names are
            needed to check the ids are in range.

    Returns:
        A `StreamSummary`.
    """
    files = _checked_files(files)
    if stream_format.kind == TFRECORD:
        label_names = stream_format.resolve_label_names(label_names, required=True)
        counts = Counter()
        for path in files:
            counts.update(_check_tfrecord_file(path, len(label_names)))
        return _summary(files, label_names, {label_names[index]: count for index, count in counts.items()})

    label_names = stream_format.resolve_label_names(label_names, required=False)
    counts = Counter()
    for path in files:
        for _, _, label in _file_rows(path, stream_format, label_names):
            counts[label] += 1
    if stream_format.kind == AGNEWS_CSV:
        counts = {label_names[index]: count for index, count in counts.items()}
    if label_names is None:
        label_names = sorted(counts)
    return _summary(files, label_names, counts)


def stream_examples(
    files,
    stream_format: StreamFormat,
    label_names=None,
    worker_index: int = 0,
    num_workers: int = 1,
    shuffle_files: bool = False,
    seed: int = 0,
    cycle_length: int = _CYCLE_LENGTH,
) -> tf.data.Dataset:
    """One worker's examples as a `tf.data.Dataset` of `(text, label)` scalars (tf.string, tf.int32).

    Workers share the data by file: worker `i` of `n` reads `files[i::n]`, so no example is
    read twice and none is skipped. `tf.distribute`'s own auto-sharding is turned off on the
    result, since it would shard again.

    Args:
        files: data files, e.g. from `expand_data_files`.
        stream_format: their `StreamFormat`.
        label_names: the classes, numbering the labels (AG News: None, its own).
        worker_index: this worker, 0..num_workers - 1.
        num_workers: workers sharing the files; at most the number of files.
        shuffle_files: read this worker's files in a new seeded order on each pass.
        seed: the file-order seed.
        cycle_length: files read at a time, a block of rows from each in turn (deterministic);
            1 reads them one after another.
    """
    files = _checked_files(files)
    if not 0 <= worker_index < num_workers:
        raise ValueError(f"worker_index must be in 0..{num_workers - 1}, got {worker_index}")
    if num_workers > len(files):
        raise DataError(
            f"{num_workers} workers but {len(files)} data files: sharding is by file, so each worker "
            f"needs at least one; split the data into {num_workers} or more files"
        )
    label_names = stream_format.resolve_label_names(label_names, required=True)
    own = [str(path) for path in files[worker_index::num_workers]]

    paths = tf.data.Dataset.from_tensor_slices(own)
    if shuffle_files:
        paths = paths.shuffle(len(own), seed=seed, reshuffle_each_iteration=True)
    cycle_length = max(1, min(int(cycle_length), len(own)))
    if stream_format.kind == TFRECORD:
        read_file = _tfrecord_reader(len(label_names))
    else:
        read_file = _text_reader(stream_format, label_names)
    # Blocks of rows, not single rows, go through the interleave; unbatch makes them rows.
    # A sequential interleave (no num_parallel_calls) is deterministic.
    examples = paths.interleave(read_file, cycle_length=cycle_length, block_length=1).unbatch()
    return without_auto_shard(examples)


def default_bucket_boundaries(max_length: int, width: int = _BUCKET_WIDTH) -> list[int]:
    """Bucket edges every `width` tokens up to `max_length`, so a row is padded by less than `width`.

    Bucket `i` holds lengths `[edges[i - 1], edges[i])`; `[17, 33, ...]` puts 1..16 in the first.
    """
    return list(range(width + 1, int(max_length) + 1, width))


def streaming_dataset(
    examples: tf.data.Dataset,
    preprocessor,
    batch_size: int,
    *,
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    bucket_boundaries: Sequence[int] | None = None,
    tokenize_batch: int = 256,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of `(features, label)` from streamed `(text, label)` examples, tokenized in the graph.

    Texts go through `preprocessor` `tokenize_batch` at a time inside `Dataset.map` (parallel,
    order kept), then examples are shuffled in a buffer of `shuffle_buffer`, grouped by length
    (`bucket_by_sequence_length`) and padded with 0 to the longest row of their batch: the same
    features the preprocessor gives the batch's texts together. Nothing caches or holds the
    whole data: memory is bounded by the shuffle buffer (rows of at most `max_length` tokens).

    Args:
        examples: `(text, label)` scalars, e.g. from `stream_examples`.
        preprocessor: strings `[batch]` -> dict of int32 `[batch, seq]` `FEATURE_NAMES`
            padded to the batch's longest row (a preprocessor layer of `tfattn.models`).
        batch_size: examples per batch (a length bucket's last batch of a pass may be smaller).
        shuffle_buffer: examples in the shuffle buffer; 0 keeps the input order.
        seed: shuffle seed; the order differs on each pass, the same seed repeats it.
        bucket_boundaries: length bucket edges; default: every 16 tokens up to the
            preprocessor's `max_length` (`default_bucket_boundaries`).
        tokenize_batch: texts per preprocessor call.
        repeat: loop over the examples forever; the shuffle then runs across passes, so a
            new pass does not wait for the buffer to refill.

    Returns:
        A dataset of `({name: int32 [batch, seq]} for FEATURE_NAMES, int32 [batch] labels)`.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    if bucket_boundaries is None:
        max_length = getattr(preprocessor, "max_length", None) or _FALLBACK_MAX_LENGTH
        bucket_boundaries = default_bucket_boundaries(max_length)
    bucket_boundaries = sorted({int(edge) for edge in bucket_boundaries})

    def tokenize(texts, labels):
        features = preprocessor(texts)
        lengths = tf.reduce_sum(tf.cast(features["input_mask"], tf.int32), axis=1)
        return {name: features[name] for name in FEATURE_NAMES}, lengths, labels

    def batch_padding_only(features, lengths, labels):
        # Rows came padded to their tokenize batch's longest row; keep the padding this
        # batch needs. Cutting it row by row instead costs a per-example map: half the speed.
        longest = tf.reduce_max(lengths)
        return {name: value[:, :longest] for name, value in features.items()}, labels

    dataset = examples.repeat() if repeat else examples
    dataset = dataset.batch(int(tokenize_batch))
    dataset = dataset.map(tokenize, num_parallel_calls=AUTOTUNE, deterministic=True)
    # Dense rows, not ragged ones: tf.data moves a ragged row as a variant, several times slower.
    dataset = dataset.unbatch()
    if shuffle_buffer > 0:
        dataset = dataset.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    padding = (
        {name: tf.constant(0, tf.int32) for name in FEATURE_NAMES},
        tf.constant(0, tf.int32),
        tf.constant(0, tf.int32),
    )
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda features, length, label: length,
        bucket_boundaries=bucket_boundaries,
        bucket_batch_sizes=[int(batch_size)] * (len(bucket_boundaries) + 1),
        padding_values=padding,
    )
    dataset = dataset.map(batch_padding_only, num_parallel_calls=AUTOTUNE, deterministic=True)
    return without_auto_shard(dataset.prefetch(AUTOTUNE))


def sample_texts(files, stream_format: StreamFormat, n: int) -> list[str]:
    """The first `n` texts of `files`, in order (e.g. to adapt a vocabulary on a bounded sample).

    Rows are parsed and checked as in `count_and_check`, labels are not looked up.

    Args:
        files: data files, e.g. from `expand_data_files`.
        stream_format: their `StreamFormat`.
        n: how many texts at most.
    """
    files = _checked_files(files)
    texts = []
    if n <= 0:
        return texts
    if stream_format.kind == TFRECORD:
        records = tf.data.TFRecordDataset([str(path) for path in files]).take(n).batch(_CHUNK_ROWS)
        for batch in records:
            texts.extend(
                text.decode("utf-8") for text in tf.io.parse_example(batch, _TFRECORD_FEATURES)["text"].numpy()
            )
        return texts
    for path in files:
        for _, text, _ in _file_rows(path, stream_format, None):
            texts.append(text)
            if len(texts) == n:
                return texts
    return texts


def write_tfrecords(texts: Iterable[str], labels: Iterable[int], path) -> int:
    """Write `tf.train.Example`s with `text` (UTF-8 bytes) and `label` (int64 class id) to `path`.

    Args:
        texts: the texts.
        labels: their 0-based class ids, as many as texts.
        path: the `.tfrecord` file to write.

    Returns:
        The number of records written.
    """
    count = 0
    texts, labels = iter(texts), iter(labels)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for text in texts:
            label = next(labels, None)
            if label is None:
                raise ValueError(f"{path}: more texts than labels ({count + 1}th text has no label)")
            if int(label) < 0:
                raise ValueError(f"{path}: label {label!r} of text {count + 1} is negative")
            features = {
                "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(text).encode("utf-8")])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
            count += 1
    if next(labels, None) is not None:
        raise ValueError(f"{path}: more labels than texts ({count} texts)")
    return count


def _kind_of(path: Path, task: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return AGNEWS_CSV if task == "agnews" else TABLE
    if suffix in _TABLE_SUFFIXES:
        return TABLE
    if suffix in _TSV_SUFFIXES:
        return LABEL_TAB_TEXT
    if suffix in _TFRECORD_SUFFIXES:
        return TFRECORD
    raise DataError(
        f"{path}: unsupported file type {path.suffix or '(no suffix)'!r} for streaming; expected {_SUPPORTED}"
    )


def _checked_files(files) -> list[Path]:
    files = [Path(path) for path in files]
    if not files:
        raise DataError("no data files")
    return files


def _summary(files, label_names, counts) -> StreamSummary:
    return StreamSummary(
        num_examples=int(sum(counts.values())),
        label_names=list(label_names),
        class_counts={name: int(counts.get(name, 0)) for name in label_names},
        files=list(files),
    )


def _file_rows(path: Path, stream_format: StreamFormat, label_names) -> Iterator[tuple]:
    """(where, text, label) of one text file, checked row by row: the label is AG News's class
    id, or the label name of topic data (one of `label_names` when given)."""
    if stream_format.kind == AGNEWS_CSV:
        return iter_agnews_rows(path)
    if stream_format.kind == TABLE:
        return iter_labelled_rows(path, stream_format.text_column, stream_format.label_column, label_names)
    return _iter_tab_rows(path, label_names)


def _iter_tab_rows(path: Path, label_names=None) -> Iterator[tuple[str, str, str]]:
    """(where, text, label name) of each `LABEL<TAB>TEXT` line; blank lines hold no example."""

    def records():
        # Split on "\n" only, as for JSON lines, so line numbers are what an editor shows.
        for line_number, line in enumerate(_split_on_newline(iter_utf8_lines(path)), start=1):
            if not line.strip():
                continue
            where = f"{path}, line {line_number}"
            label, tab, text = line.partition("\t")
            if not tab:
                raise DataError(f"{where}: no tab; expected LABEL<TAB>TEXT")
            yield where, text, label

    return checked_rows(path, records(), label_names, "after the tab", "before the tab")


def _text_reader(stream_format: StreamFormat, label_names: list[str]):
    """Path tensor -> dataset of `[<= _CHUNK_ROWS]` (texts, label ids) blocks of that text file."""
    ids = {name: index for index, name in enumerate(label_names)}
    agnews = stream_format.kind == AGNEWS_CSV

    def blocks(path_bytes):
        path = Path(os.fsdecode(path_bytes))
        texts, labels = [], []
        for _, text, label in _file_rows(path, stream_format, label_names):
            texts.append(text)
            labels.append(label if agnews else ids[label])
            if len(texts) == _CHUNK_ROWS:
                yield np.array(texts, dtype=object), np.array(labels, dtype=np.int32)
                texts, labels = [], []
        if texts:
            yield np.array(texts, dtype=object), np.array(labels, dtype=np.int32)

    signature = (tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int32))
    return lambda path: tf.data.Dataset.from_generator(blocks, output_signature=signature, args=(path,))


def _tfrecord_reader(num_classes: int):
    """Path tensor -> dataset of `[<= _CHUNK_ROWS]` (texts, label ids) blocks of that TFRecord file."""

    def parse(records):
        parsed = tf.io.parse_example(records, _TFRECORD_FEATURES)
        labels = parsed["label"]
        # count_and_check names the bad record; this keeps unchecked data from training on
        # out-of-range ids, which the loss would not notice on every device.
        checks = [
            tf.debugging.assert_non_negative(labels, message="TFRecord label below 0"),
            tf.debugging.assert_less(labels, tf.constant(num_classes, tf.int64), message="TFRecord label out of range"),
        ]
        with tf.control_dependencies(checks):
            return parsed["text"], tf.cast(labels, tf.int32)

    return lambda path: tf.data.TFRecordDataset(path).batch(_CHUNK_ROWS).map(parse)


def _check_tfrecord_file(path: Path, num_classes: int) -> Counter:
    """Label id counts of one TFRecord file; `DataError` names the first bad record (1-based)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    counts = Counter()
    start = 0
    try:
        for records in tf.data.TFRecordDataset(str(path)).batch(1024):
            parsed = _parse_records(path, records, start)
            labels = parsed["label"].numpy()
            empty = tf.equal(tf.strings.length(tf.strings.strip(parsed["text"])), 0).numpy()
            bad = np.flatnonzero((labels < 0) | (labels >= num_classes) | empty)
            if bad.size:
                index = int(bad[0])
                where = f"{path}, record {start + index + 1}"
                if empty[index]:
                    raise DataError(f"{where}: empty text")
                raise DataError(f"{where}: label {int(labels[index])} is outside 0..{num_classes - 1}")
            counts.update(labels.tolist())
            start += len(labels)
    except tf.errors.DataLossError as error:
        raise DataError(f"{path}, after record {start}: not a readable TFRecord file ({_first_line(error)})") from None
    if not start:
        raise DataError(f"{path}: no examples")
    return counts


def _parse_records(path: Path, records, start: int) -> dict:
    try:
        return tf.io.parse_example(records, _TFRECORD_FEATURES)
    except tf.errors.InvalidArgumentError:
        pass
    # Parse one at a time to name the record that failed.
    for index in range(int(records.shape[0])):
        try:
            tf.io.parse_single_example(records[index], _TFRECORD_FEATURES)
        except tf.errors.InvalidArgumentError as error:
            raise DataError(
                f"{path}, record {start + index + 1}: not a tf.train.Example with features 'text' (bytes) "
                f"and 'label' (int64) ({_first_line(error)})"
            ) from None
    raise DataError(f"{path}, records {start + 1}..{start + int(records.shape[0])}: cannot parse")


def _first_line(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    lines = message.strip().splitlines()
    return lines[0] if lines else type(error).__name__


def without_auto_shard(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # Sharding is by file, done above; tf.distribute's FILE/DATA policy would shard again.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)
