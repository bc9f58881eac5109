"""Tests of tfattn.data.translation.read_translation_pairs: Anki files (with the attribution
column) in both directions, two-column TSVs, blank lines, limit, the shared Spanish-English
validation file, and bad input named by file and line."""

import hashlib
from pathlib import Path

import pytest
from conftest import missing, shared_data_dir

from tfattn.data import DataError
from tfattn.data.translation import TranslationPairs, read_translation_pairs

ATTRIBUTION = "CC-BY 2.0 (France) Attribution: tatoeba.org #1 (a) & #2 (b)"
ANKI_LINES = [
    f"Go.\tVe.\t{ATTRIBUTION}",
    f"Hi.\tHola.\t{ATTRIBUTION}",
    f"I won!\t¡He ganado!\t{ATTRIBUTION}",
]

# The shared validation split: 6,120 lines of 3 tab-separated columns, none blank
# (counted with `wc -l` and `awk -F'\t' 'NF != 3'`, independently of the reader).
VALID_PAIRS = 6120


def _write(tmp_path, text, name="spa.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def _snapshot(folder):
    """Every file under `folder` with its bytes' digest and modification time."""
    return {
        path: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file()
    }


def test_anki_file_reads_other_language_to_english_by_default(tmp_path):
    """source_column 2 (the default): the second column is the source, English the target; the
    attribution column is dropped and the path recorded."""
    path = _write(tmp_path, "\n".join(ANKI_LINES) + "\n")
    pairs = read_translation_pairs(path)
    assert isinstance(pairs, TranslationPairs) and len(pairs) == 3
    assert pairs.sources == ["Ve.", "Hola.", "¡He ganado!"]
    assert pairs.targets == ["Go.", "Hi.", "I won!"]
    assert pairs.path == str(path)


def test_anki_file_reads_english_to_other_language_with_source_column_1(tmp_path):
    """source_column 1: English is the source, the second column the target."""
    path = _write(tmp_path, "\n".join(ANKI_LINES) + "\n")
    pairs = read_translation_pairs(path, source_column=1)
    assert pairs.sources == ["Go.", "Hi.", "I won!"]
    assert pairs.targets == ["Ve.", "Hola.", "¡He ganado!"]


def test_two_column_tsv_with_blank_lines_and_padding_spaces(tmp_path):
    """A plain two-column TSV reads like an Anki file; blank (and whitespace-only) lines are
    skipped, spaces around a sentence are stripped, CRLF endings are accepted."""
    path = _write(tmp_path, "\nGood morning.\t Buenos días. \r\n   \n\nThank you.\tGracias.\n\n", "pairs.tsv")
    pairs = read_translation_pairs(path)
    assert pairs.sources == ["Buenos días.", "Gracias."]
    assert pairs.targets == ["Good morning.", "Thank you."]


def test_limit_keeps_the_first_pairs(tmp_path):
    """limit=N keeps the first N pairs in file order (blank lines not counted); a limit above
    the file's size keeps them all; head() cuts the same way; a limit below 1 is refused."""
    path = _write(tmp_path, ANKI_LINES[0] + "\n\n" + "\n".join(ANKI_LINES[1:]) + "\n")
    two = read_translation_pairs(path, limit=2)
    assert two.sources == ["Ve.", "Hola."] and two.targets == ["Go.", "Hi."]
    assert read_translation_pairs(path, limit=1).sources == ["Ve."]
    assert len(read_translation_pairs(path, limit=10)) == 3
    head = read_translation_pairs(path).head(2)
    assert (head.sources, head.targets, head.path) == (two.sources, two.targets, str(path))
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        read_translation_pairs(path, limit=0)


def test_shared_spanish_english_validation_file():
    """The real shared file: 6,120 pairs, Spanish -> English by default; first and last pairs
    as in the file, the other direction with source_column 1, and the file left untouched."""
    path = shared_data_dir() / "translation" / "spa_eng_valid.tsv"
    if not path.is_file():
        missing(f"real data not found at {path}")
    before = _snapshot(path.parent)
    pairs = read_translation_pairs(path)
    assert len(pairs) == VALID_PAIRS and len(pairs.targets) == VALID_PAIRS
    assert (pairs.sources[0], pairs.targets[0]) == ("¡Ayuda!", "Help!")
    assert (pairs.sources[1], pairs.targets[1]) == ("¡Socorro! ¡Auxilio!", "Help!")
    assert pairs.targets[-1].startswith("A committee is a group of people who individually can do nothing")
    assert pairs.sources[-1].startswith("Un comité es un grupo de personas")
    assert not any("CC-BY" in text for text in pairs.sources + pairs.targets)
    english_first = read_translation_pairs(path, source_column=1, limit=5)
    assert len(english_first) == 5
    assert (english_first.sources[0], english_first.targets[0]) == ("Help!", "¡Ayuda!")
    assert _snapshot(path.parent) == before


def test_line_with_one_column_names_file_and_line(tmp_path):
    """A line without a tab: DataError "PATH:LINE: ..." with the file's own line number
    (blank lines counted), and reading changes nothing on disk."""
    path = _write(tmp_path, f"{ANKI_LINES[0]}\n\n{ANKI_LINES[1]}\nno tab here\n{ANKI_LINES[2]}\n")
    before = _snapshot(tmp_path)
    with pytest.raises(DataError) as error:
        read_translation_pairs(path)
    assert str(error.value) == f"{path}:4: expected two tab-separated sentences, found 1 column"
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("line", "column"),
    [("\tVe.\tCC-BY", 1), ("Go.\t\tCC-BY", 2), ("Go.\t   ", 2), ("   \tVe.", 1)],
)
def test_empty_sentence_column_names_file_line_and_column(tmp_path, line, column):
    """An empty (or all-space) sentence in either column: DataError naming file, line and column."""
    path = _write(tmp_path, f"{ANKI_LINES[0]}\n{line}\n")
    with pytest.raises(DataError) as error:
        read_translation_pairs(path)
    assert str(error.value) == f"{path}:2: column {column} is empty; every line needs both sentences"


def test_non_utf8_bytes(tmp_path):
    """Latin-1 bytes: DataError naming the file, the decoder's reason and the byte offset."""
    path = _write(tmp_path, "Go.\tV\xe9.\n".encode("latin-1"))
    with pytest.raises(DataError) as error:
        read_translation_pairs(path)
    assert str(error.value) == f"{path}:1: not UTF-8 text (invalid continuation byte at byte 5)"


def test_missing_file(tmp_path):
    """A path that does not exist (or is a folder): DataError "PATH: no such file"; nothing is created."""
    path = tmp_path / "absent.txt"
    with pytest.raises(DataError) as error:
        read_translation_pairs(path)
    assert str(error.value) == f"{path}: no such file"
    assert not path.exists()
    with pytest.raises(DataError, match="no such file"):
        read_translation_pairs(tmp_path)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path, text):
    """A file with no pairs (empty, or only blank lines): DataError "PATH: no sentence pairs"."""
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as error:
        read_translation_pairs(path)
    assert str(error.value) == f"{path}: no sentence pairs"


def test_source_column_must_be_1_or_2(tmp_path):
    """source_column 3 (or 0) is a plain ValueError about the argument, raised before the file is
    looked at (so a missing file does not hide it)."""
    path = _write(tmp_path, "\n".join(ANKI_LINES) + "\n")
    for column in (3, 0):
        with pytest.raises(ValueError) as error:
            read_translation_pairs(path, source_column=column)
        assert type(error.value) is ValueError
        assert str(error.value) == f"source_column must be 1 or 2, got {column}"
    with pytest.raises(ValueError) as error:
        read_translation_pairs(tmp_path / "absent.txt", source_column=3)
    assert type(error.value) is ValueError
