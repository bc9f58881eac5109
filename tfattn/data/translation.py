"""Sentence pairs for translation, read from Anki-format files (Tatoeba) or two-column TSVs.

An Anki file (manythings.org/anki: `spa.txt`, `rus.txt`, ...) has one pair per line,
tab-separated: the English sentence, its translation, and an attribution column (CC-BY: keep it
with any copy). A plain two-column TSV has only the two sentences. Either way the columns are
numbered 1 and 2, and `source_column` says which one is translated: 2 (the default) reads
Anki files as "other language -> English", the direction tfattn's benchmarks use
(Spanish -> English); 1 reads them the other way.

Example:
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "spa.txt"
>>> _ = path.write_text("Go.\\tVe.\\tCC-BY 2.0 (France) Attribution: tatoeba.org\\n", encoding="utf-8")
>>> pairs = read_translation_pairs(path)
>>> pairs.sources, pairs.targets
(['Ve.'], ['Go.'])
"""

from dataclasses import dataclass, field
from pathlib import Path

from tfattn.data.examples import DataError

__all__ = ["TranslationPairs", "count_translation_pairs", "read_translation_pairs", "stream_translation_pairs"]

SOURCE_COLUMNS = (1, 2)


@dataclass
class TranslationPairs:
    """Parallel sentences: `sources[i]` translates to `targets[i]`; `path` is where they came from."""

    sources: list = field(default_factory=list)
    targets: list = field(default_factory=list)
    path: str = ""

    def __len__(self):
        return len(self.sources)

    def head(self, count):
        """The first `count` pairs (all of them for None)."""
        if count is None:
            return self
        return TranslationPairs(self.sources[:count], self.targets[:count], self.path)


def read_translation_pairs(path, source_column=2, limit=None):
    """Read sentence pairs from an Anki-format file or a two-column TSV (UTF-8).

    Args:
        path: the file.
        source_column: 1 or 2, the column translated from; the other is the target.
        limit: keep only the first `limit` pairs (None: all; at least 1).

    Returns:
        A `TranslationPairs`.

    Raises:
        DataError: the file is missing, not UTF-8, empty, or a line has fewer than two
            columns or an empty sentence; the message names the file and the line.
    """
    path = Path(path)
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")
    pairs = TranslationPairs(path=str(path))
    for source, target in iter_translation_pairs(path, source_column):
        pairs.sources.append(source)
        pairs.targets.append(target)
        if limit is not None and len(pairs) >= limit:
            break
    return pairs


def iter_translation_pairs(path, source_column=2):
    """`(source, target)` of each line of one file, checked as `read_translation_pairs` checks
    them, read a line at a time (memory bounded by the longest line)."""
    path = Path(path)
    if source_column not in SOURCE_COLUMNS:
        raise ValueError(f"source_column must be 1 or 2, got {source_column!r}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    count = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}:{number}: not UTF-8 text ({error.reason} at byte {error.start})") from None
            if not line.strip():
                continue  # blank lines (e.g. a trailing one) carry no pair
            columns = line.rstrip("\r\n").split("\t")
            if len(columns) < 2:
                raise DataError(f"{path}:{number}: expected two tab-separated sentences, found {len(columns)} column")
            first, second = columns[0].strip(), columns[1].strip()
            if not first or not second:
                empty = 1 if not first else 2
                raise DataError(f"{path}:{number}: column {empty} is empty; every line needs both sentences")
            count += 1
            yield (second, first) if source_column == 2 else (first, second)
    if not count:
        raise DataError(f"{path}: no sentence pairs")


def count_translation_pairs(files, source_column=2) -> int:
    """The sentence pairs of `files`, every line checked before training streams them."""
    return sum(sum(1 for _ in iter_translation_pairs(path, source_column)) for path in files)


def stream_translation_pairs(files, source_column=2, worker_index=0, num_workers=1):
    """One worker's `(source, target)` string scalars as a `tf.data.Dataset`, read line by line
    from its share of `files` (worker `i` of `n` reads `files[i::n]`, as streamed
    classification data is shared); the lines were checked by `count_translation_pairs`."""
    import tensorflow as tf

    from tfattn.data.streaming import without_auto_shard

    if num_workers > len(files):
        raise DataError(
            f"{num_workers} workers but {len(files)} data files: sharding is by file, so each worker "
            f"needs at least one; split the data into {num_workers} or more files"
        )
    lines = tf.data.TextLineDataset([str(path) for path in files[worker_index::num_workers]])
    lines = lines.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0)

    def pair(line):
        columns = tf.strings.strip(tf.strings.split(line, "\t"))
        return (columns[1], columns[0]) if source_column == 2 else (columns[0], columns[1])

    return without_auto_shard(lines.map(pair))
