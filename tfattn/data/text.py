"""Plain text for language models: documents read from .txt, .jsonl, .csv or .tsv files, and a
validation part carved from the end of the text.

A `.txt` file is one document (the whole file, as nanoGPT reads Tiny Shakespeare) unless a
`separator` splits it (say "\\n\\n" for blank lines); in a table, each row's text column is one
document. Characters are counted as the text holds them, so bits per character computed on
them compare across tokenizers.

Example:
>>> corpus = TextCorpus(["First line\\nsecond line\\nthird line\\n"], source="poem.txt")
>>> train, validation = split_validation(corpus, 0.3)
>>> train.documents, validation.documents
(['First line\\nsecond line\\n'], ['third line\\n'])
"""

from dataclasses import dataclass
from pathlib import Path

from tfattn.data.examples import DataError, read_utf8_text

__all__ = ["TEXT_SUFFIXES", "TextCorpus", "read_text_corpus", "split_validation"]

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv")


@dataclass(frozen=True)
class TextCorpus:
    """Documents (strings, none empty) and where they came from."""

    documents: list
    source: str

    @property
    def characters(self) -> int:
        return sum(len(document) for document in self.documents)

    def __len__(self):
        return len(self.documents)


def read_text_corpus(paths, text_column: str = "text", separator: str | None = None) -> TextCorpus:
    """The documents of one file or several (`paths`: a path or a list), in order.

    `.txt`: the whole file, or its parts between `separator`s (empty parts dropped); `.jsonl`,
    `.csv`, `.tsv` (a header row): the `text_column` of every row, which must not be empty.
    `DataError` names the file (and row) of anything unreadable, and a file with no text."""
    from tfattn.data.topics import iter_text_rows

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise DataError("no text file given")
    documents = []
    for path in map(Path, paths):
        suffix = path.suffix.lower()
        if suffix not in TEXT_SUFFIXES:
            found = path.suffix or "(no suffix)"
            raise DataError(f"{path}: unsupported file type {found!r}; expected {', '.join(TEXT_SUFFIXES)}")
        if suffix == ".txt":
            text = read_utf8_text(path)
            found = [part for part in (text.split(separator) if separator else [text]) if part.strip()]
        else:
            found = [text for _, text in iter_text_rows(path, text_column)]
        if not found:
            raise DataError(f"{path}: no text (the file is empty or holds only whitespace)")
        documents.extend(found)
    return TextCorpus(documents, source=", ".join(map(str, paths)))


def split_validation(corpus: TextCorpus, fraction: float) -> tuple[TextCorpus, TextCorpus]:
    """`(train, validation)`: the validation part is the last `fraction` of the characters, whole
    documents from the end and, where a document has to be cut, cut at the start of the line the
    share begins in (the
    training part keeps at least some text)."""
    if not 0 < fraction < 1:
        raise ValueError(f"--validation-fraction must be between 0 and 1, got {fraction!r}")
    documents = list(corpus.documents)
    need = round(corpus.characters * fraction)
    validation = []
    while need > 0:
        last = documents.pop()
        if len(last) <= need and documents:
            validation.insert(0, last)
            need -= len(last)
            continue
        cut = max(1, len(last) - need)
        line_start = last.rfind("\n", 0, cut) + 1  # the start of the line the cut falls in
        cut = line_start or cut
        documents.append(last[:cut])
        validation.insert(0, last[cut:])
        need = 0
    if not validation or not any(document.strip() for document in validation):
        raise DataError(f"{corpus.source}: too little text to hold out {fraction:g} of it for validation")
    return TextCorpus(documents, corpus.source), TextCorpus(validation, corpus.source + " (validation part)")
