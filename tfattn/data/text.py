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
from itertools import islice
from pathlib import Path

from tfattn.data.examples import DataError, iter_utf8_lines, read_utf8_text

__all__ = [
    "TEXT_SUFFIXES",
    "StreamedText",
    "TextCorpus",
    "check_streamed_text",
    "first_lines",
    "read_text_corpus",
    "split_validation",
    "stream_token_blocks",
]

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


# --- text streamed from files (`tfattn train lm --stream`) ---------------------------------------


@dataclass(frozen=True)
class StreamedText:
    """.txt files streamed as training text, one document each: checked and measured
    (`check_streamed_text`), not loaded."""

    files: list
    characters: int
    source: str


def check_streamed_text(files) -> StreamedText:
    """One bounded-memory pass over the .txt `files`: each is valid UTF-8 and holds text.
    Characters are counted as the stream reads them (each line and its newline). `DataError`
    names the file (and line) otherwise."""
    characters = 0
    for path in map(Path, files):
        if path.suffix.lower() != ".txt":
            found = path.suffix or "(no suffix)"
            raise DataError(f"{path}: --stream reads .txt files (each one document), not {found!r}")
        has_text = False
        for line in iter_utf8_lines(path):
            characters += len(line.rstrip("\r\n")) + 1
            has_text = has_text or bool(line.strip())
        if not has_text:
            raise DataError(f"{path}: no text (the file is empty or holds only whitespace)")
    return StreamedText(list(files), characters, ", ".join(map(str, files)))


def first_lines(files, count: int) -> list[str]:
    """The first `count` lines of the files, in order (endings kept): a sample to learn a
    vocabulary from."""
    lines = (line for path in files for line in iter_utf8_lines(path))
    return list(islice(lines, count))


def stream_token_blocks(files, tokenize_lines, end_id, block_size, worker_index=0, num_workers=1):
    """Endless `(inputs, labels)` blocks `[block_size]` int32 of worker `worker_index`'s share of
    the .txt `files` (`files[worker_index::num_workers]`), as a `tf.data.Dataset`.

    The token stream is the in-memory one (`LanguageModelPreprocessor.encode_stream`): end-of-text,
    then each file's tokens followed by end-of-text, the files over and over. Lines are read and
    tokenized in the graph (`tokenize_lines`: strings `[n]` -> ragged ids; a line is tokenized
    with its newline, as in memory), so memory holds a block, not the text. Each block is
    `block_size + 1` consecutive tokens, inputs all but the last, labels all but the first: the
    pair across two blocks is not trained on (1 token in `block_size + 1`).
    """
    import tensorflow as tf

    from tfattn.data.streaming import without_auto_shard

    if num_workers > len(files):
        raise DataError(
            f"{num_workers} workers but {len(files)} data files: sharding is by file, so each worker "
            f"needs at least one; split the text into {num_workers} or more files"
        )
    end = tf.data.Dataset.from_tensors(tf.constant(end_id, tf.int32))

    def tokens_of_file(path):
        lines = tf.data.TextLineDataset(path).map(lambda line: line + "\n")
        tokens = lines.batch(256).map(lambda batch: tokenize_lines(batch).flat_values).unbatch()
        return tokens.concatenate(end)

    shard = tf.data.Dataset.from_tensor_slices([str(path) for path in files[worker_index::num_workers]])
    tokens = end.concatenate(shard.repeat().flat_map(tokens_of_file))
    blocks = tokens.batch(block_size + 1, drop_remainder=True)
    return without_auto_shard(blocks.map(lambda block: (block[:-1], block[1:])))
