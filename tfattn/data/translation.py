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

__all__ = ["TranslationPairs", "read_translation_pairs"]

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
    if source_column not in SOURCE_COLUMNS:
        raise ValueError(f"source_column must be 1 or 2, got {source_column!r}")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    pairs = TranslationPairs(path=str(path))
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing one) carry no pair
        columns = line.split("\t")
        if len(columns) < 2:
            raise DataError(f"{path}:{number}: expected two tab-separated sentences, found {len(columns)} column")
        first, second = columns[0].strip(), columns[1].strip()
        if not first or not second:
            empty = 1 if not first else 2
            raise DataError(f"{path}:{number}: column {empty} is empty; every line needs both sentences")
        source, target = (second, first) if source_column == 2 else (first, second)
        pairs.sources.append(source)
        pairs.targets.append(target)
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs.sources:
        raise DataError(f"{path}: no sentence pairs")
    return pairs
