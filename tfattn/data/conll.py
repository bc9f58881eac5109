"""CoNLL-2003 named-entity data: word-tagged sentences from CoNLL files or HF `datasets`.

`read_conll` reads the two-column (`word TAG`) files and the original four-column
(`word POS CHUNK TAG`) distribution alike; `load_conll` also accepts `"hf:conll2003"` for users
with a network and the `datasets` package. Either way the result is a `TaggedSentences` whose
tag ids index `NER_LABELS`, so a model keeps the same ids whichever source it was trained on.
"""

import operator
from dataclasses import dataclass
from pathlib import Path

from tfattn.data.examples import DataError, read_utf8_text

__all__ = ["NER_LABELS", "TaggedSentences", "read_conll", "load_conll"]

# The order of HF datasets' conll2003 `ner_tags`, so ids from either source agree.
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]

HF_PREFIX = "hf:"
DOCSTART = "-DOCSTART-"


@dataclass(frozen=True)
class TaggedSentences:
    """Sentences as word lists, each word tagged with an id into `label_names`.

    `source` says where the sentences came from (a file path or `hf:NAME[split]`).
    """

    words: list[list[str]]
    tags: list[list[int]]
    label_names: list[str]
    source: str

    def __post_init__(self):
        # Copies, so the caller's lists cannot change a frozen object afterwards.
        object.__setattr__(self, "words", [list(sentence) for sentence in self.words])
        object.__setattr__(self, "label_names", list(self.label_names))

        if not self.label_names or len(set(self.label_names)) != len(self.label_names):
            raise DataError(f"{self.source}: label names must be distinct, got {self.label_names}")
        if len(self.words) != len(self.tags):
            raise DataError(f"{self.source}: {len(self.words)} sentences of words but {len(self.tags)} of tags")
        num_labels = len(self.label_names)
        valid_ids = set(range(num_labels))
        checked_tags = []
        for index, (words, tags) in enumerate(zip(self.words, self.tags)):
            tags = list(tags)
            if len(words) != len(tags):
                raise DataError(f"{self.source}, sentence {index}: {len(words)} words but {len(tags)} tags")
            # Per-sentence set checks keep this fast on the 200k-word training file.
            ids = [_as_id(tag) for tag in tags]
            if not valid_ids.issuperset(ids):
                bad = next(tag for tag, id_ in zip(tags, ids) if id_ not in valid_ids)
                raise DataError(
                    f"{self.source}, sentence {index}: tag {bad!r} is not an id in "
                    f"0..{num_labels - 1} (labels {self.label_names})"
                )
            checked_tags.append(ids)
        object.__setattr__(self, "tags", checked_tags)

    def __len__(self) -> int:
        return len(self.words)

    def subset(self, indices) -> "TaggedSentences":
        """The sentences at `indices`, in that order, with the same label names and source."""
        indices = [int(index) for index in indices]
        return TaggedSentences(
            words=[self.words[index] for index in indices],
            tags=[self.tags[index] for index in indices],
            label_names=self.label_names,
            source=self.source,
        )

    def num_words(self) -> int:
        """Total number of words over all sentences."""
        return sum(len(sentence) for sentence in self.words)


def _as_id(value):
    """`value` as a Python int if it is an integer (Python or numpy), else None."""
    # operator.index refuses floats, which int() would truncate silently.
    try:
        return operator.index(value)
    except TypeError:
        return None


def read_conll(path, label_names=NER_LABELS) -> TaggedSentences:
    """Read a CoNLL file: one `word ... TAG` line per word, a blank line between sentences.

    The tag is the last whitespace-separated column, so both `word TAG` files and the original
    `word POS CHUNK TAG` files work; every token line must have as many columns as the file's
    first one. `-DOCSTART-` lines end any open sentence and are skipped, runs of blank lines
    count as one break, and the last sentence needs no blank line after it. Tags may be IOB1
    or IOB2 (an I-X may start an entity, as in the original CoNLL-2003 files); they are only
    checked against `label_names`. Anything else stops the read with `DataError` naming the
    file and its 1-based line number.
    """
    path = Path(path)
    label_names = list(label_names)
    tag_ids = {name: index for index, name in enumerate(label_names)}
    # The whole file is split on "\n", the line break read_utf8_text counts when it names a
    # line; str.split() without arguments below also drops the "\r" of CRLF files.
    lines = read_utf8_text(path).split("\n")

    sentences_words: list[list[str]] = []
    sentences_tags: list[list[int]] = []
    words: list[str] = []
    tags: list[int] = []
    expected_columns = 0  # set by the first token line
    first_token_line = 0

    def end_sentence():
        nonlocal words, tags
        if words:
            sentences_words.append(words)
            sentences_tags.append(tags)
            words, tags = [], []

    for line_number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            end_sentence()
            continue
        if fields[0] == DOCSTART:
            end_sentence()
            continue
        if len(fields) == 1:
            raise DataError(
                f"{path}, line {line_number}: expected 'word TAG' or 'word POS CHUNK TAG', "
                f"found one column {fields[0]!r}"
            )
        if not expected_columns:
            expected_columns = len(fields)
            first_token_line = line_number
        elif len(fields) != expected_columns:
            raise DataError(
                f"{path}, line {line_number}: {len(fields)} columns, but the first token line "
                f"(line {first_token_line}) has {expected_columns}"
            )
        tag = fields[-1]
        tag_id = tag_ids.get(tag)
        if tag_id is None:
            known = ", ".join(label_names)
            raise DataError(f"{path}, line {line_number}: unknown tag {tag!r}; known tags: {known}")
        words.append(fields[0])
        tags.append(tag_id)
    end_sentence()

    if not sentences_words:
        raise DataError(f"{path}: no sentences")
    return TaggedSentences(words=sentences_words, tags=sentences_tags, label_names=label_names, source=str(path))


def load_conll(source, split: str = "train", label_names=NER_LABELS) -> TaggedSentences:
    """CoNLL-2003 sentences from a local file or, given `"hf:conll2003"`, from HF `datasets`.

    A path is read with `read_conll` (`split` does not apply to it). `"hf:NAME"` calls
    `datasets.load_dataset(NAME, split=split)` (HF names the splits train/validation/test) and
    maps its `tokens` / `ner_tags`; tag ids are translated by name into `label_names`, so they
    agree with a local file's ids even if a dataset numbers its tags differently.
    """
    if isinstance(source, str) and source.startswith(HF_PREFIX):
        return _load_hf_dataset(source.removeprefix(HF_PREFIX), split, list(label_names))
    return read_conll(source, label_names=label_names)


def _load_hf_dataset(name: str, split: str, label_names: list[str]) -> TaggedSentences:
    """A token-classification dataset with `tokens` and `ner_tags` columns from the HF hub."""
    where = f"{HF_PREFIX}{name}[{split}]"
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{where}: the Hugging Face 'datasets' package is not installed; "
            "install it (pip install datasets) or pass a local CoNLL file"
        ) from None
    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as error:  # noqa: BLE001 - the hub fails in many ways (offline, no such split)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataError(f"{where}: could not load the dataset: {first_line}") from None

    columns = list(getattr(dataset, "column_names", []) or [])
    for column in ("tokens", "ner_tags"):
        if column not in columns:
            raise DataError(f"{where}: no column {column!r}; columns are: {', '.join(columns)}")

    # A ClassLabel feature names the dataset's own ids; without one, ids are taken as ours.
    dataset_names = None
    feature = getattr(dataset, "features", {}).get("ner_tags")
    inner = getattr(feature, "feature", None)
    if getattr(inner, "names", None):
        dataset_names = list(inner.names)
    if dataset_names is None:
        id_map = list(range(len(label_names)))
    else:
        unknown = [tag for tag in dataset_names if tag not in label_names]
        if unknown:
            raise DataError(f"{where}: unknown tags {unknown}; known tags: {', '.join(label_names)}")
        id_map = [label_names.index(tag) for tag in dataset_names]

    words = [list(tokens) for tokens in dataset["tokens"]]
    tags = []
    for index, sentence_tags in enumerate(dataset["ner_tags"]):
        sentence_tags = list(sentence_tags)
        # Checked here: a negative id would otherwise index id_map from its end.
        if not all(_as_id(tag) is not None and 0 <= tag < len(id_map) for tag in sentence_tags):
            raise DataError(f"{where}, sentence {index}: tag ids {sentence_tags} are not all in 0..{len(id_map) - 1}")
        tags.append([id_map[tag] for tag in sentence_tags])
    return TaggedSentences(words=words, tags=tags, label_names=label_names, source=where)
