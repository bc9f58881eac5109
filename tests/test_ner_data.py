"""Tests for the CoNLL-2003 reader and the NER data side: label alignment and entity scores
(entity grouping is tested in test_aggregation.py)."""

import re
import sys
import types
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tfattn.data import NER_LABELS, DataError, TaggedSentences, load_conll, read_conll
from tfattn.tagging import (
    IGNORE_INDEX,
    align_labels,
    entity_scores,
    format_entity_report,
    tokenize_and_align,
    word_predictions,
)

ID = {name: index for index, name in enumerate(NER_LABELS)}
O, B_PER, I_PER, B_ORG, I_ORG, B_LOC, I_LOC, B_MISC, I_MISC = range(9)

# Golden numbers of the shared validation split (counted with awk, independently of the reader).
VALID_SENTENCES = 3250
VALID_WORDS = 51362
VALID_TAG_COUNTS = {
    "O": 42759,
    "B-PER": 1842,
    "I-PER": 1307,
    "B-ORG": 1341,
    "I-ORG": 751,
    "B-LOC": 1837,
    "I-LOC": 257,
    "B-MISC": 922,
    "I-MISC": 346,
}
# At max_length=128 the MiniLM (uncased BERT) tokenizer cuts 19 words off 3 sentences.
VALID_TRUNCATED_WORDS_AT_128 = 19
VALID_TRUNCATED_SENTENCES_AT_128 = 3

TWO_COLUMNS = (
    "-DOCSTART- O\n"
    "\n"
    "EU B-ORG\n"
    "rejects O\n"
    "German B-MISC\n"
    "\n"
    "\n"  # a run of blank lines is one break
    "Peter B-PER\n"
    "Blackburn I-PER\n"
    "\n"
    "-DOCSTART- O\n"
    "\n"
    "Germany I-LOC\n"  # IOB1: an I- tag may start an entity
    "'s O"  # no final newline
)
FOUR_COLUMNS = (
    "-DOCSTART- -X- -X- O\r\n"
    "\r\n"
    "EU NNP B-NP B-ORG\r\n"
    "rejects VBZ B-VP O\r\n"
    "German JJ B-NP B-MISC\r\n"
    "\r\n"
    "Peter NNP B-NP B-PER\r\n"
    "Blackburn NNP I-NP I-PER\r\n"
    "\r\n"
    "-DOCSTART- -X- -X- O\r\n"
    "\r\n"
    "Germany NNP I-NP I-LOC\r\n"
    "'s POS B-NP O\r\n"
    "\r\n"
)
EXPECTED_WORDS = [["EU", "rejects", "German"], ["Peter", "Blackburn"], ["Germany", "'s"]]
EXPECTED_TAGS = [[B_ORG, O, B_MISC], [B_PER, I_PER], [I_LOC, O]]


def write(tmp_path: Path, text, name: str = "data.txt") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        # newline="": keep "\r\n" as written instead of translating "\n".
        path.write_text(text, encoding="utf-8", newline="")
    return path


def assert_one_line_error(error: pytest.ExceptionInfo, path: Path, line: int | None = None):
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    if line is not None:
        assert f"{path}, line {line}:" in message, message


@pytest.fixture(scope="module")
def valid(conll_valid) -> TaggedSentences:
    return read_conll(conll_valid)


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


# --- reading CoNLL files -------------------------------------------------------------------


def test_reads_two_column_file_with_docstart_and_no_final_newline(tmp_path):
    path = write(tmp_path, TWO_COLUMNS)
    sentences = read_conll(path)
    assert sentences.words == EXPECTED_WORDS
    assert sentences.tags == EXPECTED_TAGS
    assert sentences.label_names == NER_LABELS
    assert sentences.source == str(path)
    assert len(sentences) == 3
    assert sentences.num_words() == 7


def test_reads_four_column_crlf_file_taking_the_last_column(tmp_path):
    sentences = read_conll(write(tmp_path, FOUR_COLUMNS))
    assert sentences.words == EXPECTED_WORDS
    assert sentences.tags == EXPECTED_TAGS
    assert not any("\r" in word for sentence in sentences.words for word in sentence)


def test_load_conll_reads_a_path_like_read_conll(tmp_path):
    path = write(tmp_path, TWO_COLUMNS)
    assert load_conll(path) == read_conll(path)
    assert load_conll(str(path), split="validation") == read_conll(path)


def test_custom_label_names_fix_the_ids(tmp_path):
    path = write(tmp_path, "Paris LOC\nsaid O\n")
    sentences = read_conll(path, label_names=["O", "LOC"])
    assert sentences.tags == [[1, 0]]


@pytest.mark.parametrize(
    "text, line, pattern",
    [
        ("EU B-ORG\nrejects\n", 2, r"one column 'rejects'"),
        ("EU B-ORG\n\nPeter NNP B-NP B-PER\n", 3, r"4 columns, but the first token line \(line 1\) has 2"),
        ("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nx B-PER\n", 4, r"2 columns, .*\(line 3\) has 4"),
        ("EU B-ORG\nrejects B-FOO\n", 2, r"unknown tag 'B-FOO'; known tags: O, B-PER, I-PER, .*I-MISC"),
        ("-DOCSTART- O\r\n\r\nEU b-org\r\n", 3, r"unknown tag 'b-org'"),
        (b"EU B-ORG\n\xff B-PER\n", 2, r"not valid UTF-8"),
    ],
    ids=["one-column", "more-columns", "fewer-columns", "unknown-tag", "crlf-line-count", "utf8"],
)
def test_bad_lines_name_file_and_line(tmp_path, text, line, pattern):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=pattern) as error:
        read_conll(path)
    assert_one_line_error(error, path, line)


@pytest.mark.parametrize("text", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_file_without_sentences_is_an_error(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match="no sentences") as error:
        read_conll(path)
    assert_one_line_error(error, path)


def test_missing_file_is_an_error(tmp_path):
    path = tmp_path / "absent.txt"
    with pytest.raises(DataError, match="no such file") as error:
        load_conll(path)
    assert_one_line_error(error, path)


# --- TaggedSentences -----------------------------------------------------------------------


def test_tagged_sentences_validate_and_subset():
    words = [["a", "b"], ["c"], ["d", "e", "f"]]
    tags = [[B_PER, I_PER], [O], [np.int64(B_LOC), O, O]]
    sentences = TaggedSentences(words, tags, NER_LABELS, "memory")
    words[0].append("mutated")  # the object keeps its own copy
    assert sentences.words[0] == ["a", "b"]
    assert sentences.tags[2] == [B_LOC, O, O] and type(sentences.tags[2][0]) is int
    part = sentences.subset([2, 0])
    assert part.words == [["d", "e", "f"], ["a", "b"]]
    assert part.tags == [[B_LOC, O, O], [B_PER, I_PER]]
    assert part.label_names == NER_LABELS and part.source == "memory"
    assert len(part) == 2 and len(sentences.subset([])) == 0

    with pytest.raises(DataError, match=r"memory, sentence 1: 1 words but 2 tags"):
        TaggedSentences([["a"], ["b"]], [[O], [O, O]], NER_LABELS, "memory")
    with pytest.raises(DataError, match=r"memory, sentence 0: tag 9 is not an id in 0..8"):
        TaggedSentences([["a"]], [[9]], NER_LABELS, "memory")
    with pytest.raises(DataError, match=r"tag -1 is not an id"):
        TaggedSentences([["a"]], [[-1]], NER_LABELS, "memory")
    with pytest.raises(DataError, match=r"tag 1.0 is not an id"):
        TaggedSentences([["a"]], [[1.0]], NER_LABELS, "memory")
    with pytest.raises(DataError, match=r"2 sentences of words but 1 of tags"):
        TaggedSentences([["a"], ["b"]], [[O]], NER_LABELS, "memory")


# --- Hugging Face datasets -----------------------------------------------------------------


def test_hf_source_without_datasets_says_what_to_do(monkeypatch):
    # None in sys.modules makes `import datasets` fail even where it is installed.
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"install it .* or pass a local CoNLL file") as error:
        load_conll("hf:conll2003", split="validation")
    assert "\n" not in str(error.value)
    assert str(error.value).startswith("hf:conll2003[validation]:")


class FakeDataset:
    """The parts of a `datasets.Dataset` that the loader uses."""

    def __init__(self, tokens, ner_tags, tag_names):
        self.column_names = ["id", "tokens", "ner_tags"]
        self.features = {"ner_tags": types.SimpleNamespace(feature=types.SimpleNamespace(names=tag_names))}
        self._columns = {"tokens": tokens, "ner_tags": ner_tags}

    def __getitem__(self, column):
        return self._columns[column]


def fake_datasets_module(dataset=None, error=None):
    calls = []

    def load_dataset(name, split):
        calls.append((name, split))
        if error is not None:
            raise error
        return dataset

    return types.SimpleNamespace(load_dataset=load_dataset), calls


def test_hf_source_maps_tokens_and_tags_by_name(monkeypatch):
    # This dataset numbers its tags differently from NER_LABELS; names decide our ids.
    dataset = FakeDataset(
        tokens=[["EU", "rejects"], ["Peter", "Blackburn"]],
        ner_tags=[[2, 0], [1, 3]],
        tag_names=["O", "B-PER", "B-ORG", "I-PER"],
    )
    module, calls = fake_datasets_module(dataset)
    monkeypatch.setitem(sys.modules, "datasets", module)
    sentences = load_conll("hf:conll2003", split="validation")
    assert calls == [("conll2003", "validation")]
    assert sentences.words == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert sentences.tags == [[B_ORG, O], [B_PER, I_PER]]
    assert sentences.source == "hf:conll2003[validation]"


def test_hf_load_failure_is_one_line(monkeypatch):
    module, _ = fake_datasets_module(error=ConnectionError("Couldn't reach the Hub\nmore detail"))
    monkeypatch.setitem(sys.modules, "datasets", module)
    with pytest.raises(DataError, match=r"^hf:conll2003\[train\]: could not load the dataset: Couldn't reach the Hub$"):
        load_conll("hf:conll2003")


# --- the real validation split -------------------------------------------------------------


def test_real_validation_split(valid, conll_valid):
    assert len(valid) == VALID_SENTENCES
    assert valid.num_words() == VALID_WORDS
    counts = Counter(valid.label_names[tag] for sentence in valid.tags for tag in sentence)
    assert dict(counts) == VALID_TAG_COUNTS
    assert set(counts) == set(NER_LABELS)
    assert valid.words[0][:3] == ["CRICKET", "-", "LEICESTERSHIRE"]
    assert valid.tags[0][:3] == [O, O, B_ORG]
    assert valid.words[-1] == ["--", "Dhaka", "Newsroom", "880-2-506363"]
    assert valid.tags[-1] == [O, B_ORG, I_ORG, O]
    assert valid.source == str(conll_valid)


# --- sub-token labels ----------------------------------------------------------------------


def test_align_labels_first_piece_keeps_tag_later_pieces_get_inside_tag():
    # [CLS] Schwarz ##ene ##gger met Wolf ##sburg in Jo ##burg . [SEP], and a one-piece I-LOC
    word_ids = [None, 0, 0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, None]
    word_tags = [B_PER, O, B_LOC, O, I_LOC, I_MISC, O]
    assert align_labels(word_ids, word_tags, NER_LABELS) == [
        IGNORE_INDEX,
        B_PER,
        I_PER,
        I_PER,  # B-X -> I-X on continuation pieces
        O,
        B_LOC,
        I_LOC,
        O,
        I_LOC,
        I_LOC,  # I-X stays I-X
        I_MISC,
        O,
        O,  # O stays O
        IGNORE_INDEX,
    ]


def test_align_labels_needs_the_inside_tag():
    with pytest.raises(ValueError, match=r"'B-X' has no 'I-X'"):
        align_labels([0], [1], ["O", "B-X"])


def test_word_predictions_take_the_first_piece_and_fill_missing_words_with_o():
    word_ids = [None, 0, 0, 1, 2, 2, None, None]  # word 3 was cut off; two padding positions
    token_predictions = [B_ORG, B_PER, O, B_LOC, I_LOC, B_MISC, O, B_ORG]
    assert word_predictions(word_ids, token_predictions, num_words=4) == [B_PER, B_LOC, I_LOC, O]
    assert word_predictions(word_ids, token_predictions) == [B_PER, B_LOC, I_LOC]
    scores = np.eye(len(NER_LABELS))[token_predictions]  # [tokens, labels] is arg-maxed
    assert word_predictions(word_ids, scores, num_words=4) == [B_PER, B_LOC, I_LOC, O]
    with pytest.raises(ValueError, match="2 token predictions for 8 tokens"):
        word_predictions(word_ids, [O, O])


def test_round_trip_on_real_sentences_is_lossless(tokenizer, valid):
    sentences = valid.subset(range(200))
    encoded = tokenize_and_align(tokenizer, sentences, max_length=128)
    assert encoded["truncated_words"] == 0 and encoded["empty_words"] == 0
    assert len(encoded["input_ids"]) == len(encoded["labels"]) == 200
    continuation_pieces = 0
    for index in range(200):
        word_ids = encoded["word_ids"][index]
        labels = encoded["labels"][index]
        assert len(word_ids) == len(labels) == len(encoded["input_ids"][index])
        assert len(labels) == len(encoded["attention_mask"][index])
        assert labels[0] == labels[-1] == IGNORE_INDEX  # [CLS] ... [SEP]
        assert IGNORE_INDEX not in labels[1:-1]
        continuation_pieces += sum(
            1 for before, after in zip(word_ids, word_ids[1:]) if after is not None and after == before
        )
        predicted = word_predictions(word_ids, labels, encoded["num_words"][index])
        assert predicted == sentences.tags[index]
    # The check means something only if some words really are split into pieces.
    assert continuation_pieces > 100


def test_truncated_words_are_counted_and_predicted_as_o(tokenizer):
    sentences = TaggedSentences(
        [["Peter", "Blackburn", "visited", "Paris", "and", "Berlin"], ["EU", "rejects"]],
        [[B_PER, I_PER, O, B_LOC, O, B_LOC], [B_ORG, O]],
        NER_LABELS,
        "memory",
    )
    with pytest.warns(UserWarning, match=r"memory: 3 words in 1 sentences were cut off at max_length=5"):
        encoded = tokenize_and_align(tokenizer, sentences, max_length=5)
    assert encoded["truncated_words"] == 3
    assert encoded["truncated_sentences"] == 1
    assert encoded["empty_words"] == 0
    assert encoded["word_ids"][0] == [None, 0, 1, 2, None]
    first = word_predictions(encoded["word_ids"][0], encoded["labels"][0], encoded["num_words"][0])
    assert first == [B_PER, I_PER, O, O, O, O]  # Paris and Berlin lost to truncation
    second = word_predictions(encoded["word_ids"][1], encoded["labels"][1], encoded["num_words"][1])
    assert second == [B_ORG, O]


def test_words_the_tokenizer_drops_are_counted(tokenizer):
    sentences = TaggedSentences([["Paris", "\u200b", "Hilton"]], [[B_PER, I_PER, I_PER]], NER_LABELS, "memory")
    with pytest.warns(UserWarning, match=r"memory: 1 words tokenized to nothing"):
        encoded = tokenize_and_align(tokenizer, sentences)
    assert (encoded["truncated_words"], encoded["empty_words"]) == (0, 1)
    assert encoded["word_ids"][0] == [None, 0, 2, None]


def test_real_validation_truncation_golden_count(tokenizer, valid):
    with pytest.warns(UserWarning, match="19 words in 3 sentences were cut off"):
        encoded = tokenize_and_align(tokenizer, valid, max_length=128)
    assert encoded["truncated_words"] == VALID_TRUNCATED_WORDS_AT_128
    assert encoded["truncated_sentences"] == VALID_TRUNCATED_SENTENCES_AT_128
    assert max(len(ids) for ids in encoded["input_ids"]) == 128


def test_untruncated_data_gives_no_warning(tokenizer):
    sentences = TaggedSentences([["EU", "rejects"]], [[B_ORG, O]], NER_LABELS, "memory")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoded = tokenize_and_align(tokenizer, sentences)
    assert encoded["labels"] == [[IGNORE_INDEX, B_ORG, O, IGNORE_INDEX]]
    assert "token_type_ids" in encoded


def test_slow_tokenizer_is_refused():
    slow = types.SimpleNamespace(is_fast=False)
    with pytest.raises(ValueError, match="needs a fast"):
        tokenize_and_align(slow, TaggedSentences([["a"]], [[O]], NER_LABELS, "memory"))


# --- entity scores -------------------------------------------------------------------------


def test_entity_scores_two_of_three_entities_found():
    # Peter Blackburn visited Paris / EU rejects German call
    true = [[B_PER, I_PER, O, B_LOC], [B_ORG, O, O, O]]
    # PER span too short (wrong), LOC right, ORG right, MISC spurious.
    predicted = [[B_PER, O, O, B_LOC], [B_ORG, O, B_MISC, O]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # zero divisions must not warn
        scores = entity_scores(true, predicted, NER_LABELS)
    assert scores["support"] == 3 and scores["predicted"] == 4
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(4 / 7)
    assert scores["accuracy"] == pytest.approx(6 / 8)
    assert list(scores["per_type"]) == ["PER", "ORG", "LOC", "MISC"]
    assert scores["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert scores["per_type"]["LOC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert scores["per_type"]["ORG"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert scores["per_type"]["MISC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}

    report = format_entity_report(scores)
    lines = report.splitlines()
    assert lines[0].split() == ["type", "precision", "recall", "f1", "support"]
    assert lines[1].split() == ["PER", "0.0000", "0.0000", "0.0000", "1"]
    assert lines[5].split() == ["overall", "0.5000", "0.6667", "0.5714", "3"]
    assert lines[6] == "token accuracy 0.7500"


def test_entity_scores_use_conlleval_semantics_and_handle_no_entities():
    # An IOB1 I-LOC that starts an entity matches a B-LOC over the same word.
    assert entity_scores([[I_LOC, O]], [[B_LOC, O]], NER_LABELS)["f1"] == pytest.approx(1.0)
    nothing = entity_scores([[O, O]], [[O, O]], NER_LABELS)
    assert (nothing["f1"], nothing["support"], nothing["accuracy"]) == (0.0, 0, 1.0)
    assert nothing["per_type"]["PER"]["support"] == 0
    with pytest.raises(ValueError, match="sentence 0: 2 true tags but 1 predicted"):
        entity_scores([[O, O]], [[O]], NER_LABELS)
    with pytest.raises(ValueError, match="outside 0..8"):
        entity_scores([[O]], [[IGNORE_INDEX]], NER_LABELS)


def test_entity_scores_of_the_real_split_against_itself(valid):
    scores = entity_scores(valid.tags, valid.tags, NER_LABELS)
    assert scores["f1"] == 1.0 and scores["accuracy"] == 1.0
    assert {name: row["support"] for name, row in scores["per_type"].items()} == {
        "PER": 1842,
        "ORG": 1341,
        "LOC": 1837,
        "MISC": 922,
    }
    assert re.search(r"^overall +1\.0000 +1\.0000 +1\.0000 +5942$", format_entity_report(scores), re.M)
