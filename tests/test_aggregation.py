"""Tests of `tfattn.tagging.group_entities`: Hugging Face's aggregation strategies on hand-made
probabilities, and entity grouping on the offsets of the real MiniLM tokenizer."""

import numpy as np
import pytest

from tfattn.data import NER_LABELS
from tfattn.pretrained import load_tokenizer
from tfattn.tagging import AGGREGATION_STRATEGIES, group_entities

OUT, B_PER, I_PER, B_ORG, I_ORG, B_LOC, I_LOC, B_MISC, I_MISC = range(9)

# --- one text where the four strategies disagree --------------------------------------------

LABELS = ["O", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
TEXT = "VfL Wolfsburg won"
# [CLS] vfl wolf ##s ##burg won [SEP] [PAD]: "Wolfsburg" is one word of three pieces that each
# prefer another label. The special tokens and the padding prefer B-LOC, to show they are skipped.
OFFSETS = [(0, 0), (0, 3), (4, 8), (8, 9), (9, 13), (14, 17), (0, 0), (0, 0)]
WORD_IDS = [None, 0, 1, 1, 1, 2, None, None]
PROBABILITIES = [
    # O     B-ORG  I-ORG  B-LOC  I-LOC
    [0.0, 0.0, 0.0, 1.0, 0.0],  # [CLS]
    [0.1, 0.8, 0.0, 0.1, 0.0],  # vfl: B-ORG 0.8
    [0.1, 0.0, 0.3, 0.6, 0.0],  # wolf: B-LOC 0.6
    [0.0, 0.95, 0.05, 0.0, 0.0],  # ##s: B-ORG 0.95, the surest piece
    [0.1, 0.0, 0.7, 0.0, 0.2],  # ##burg: I-ORG 0.7
    [0.9, 0.02, 0.03, 0.05, 0.0],  # won: O 0.9
    [0.0, 0.0, 0.0, 1.0, 0.0],  # [SEP]
    [0.0, 0.0, 0.0, 1.0, 0.0],  # padding
]
# Worked out by hand. "Wolfsburg"'s mean row is (0.2/3, 0.95/3, 1.05/3, 0.6/3, 0.2/3), so
# "average" labels it I-ORG with 0.35 and it joins "VfL": (0.8 + 0.35) / 2 = 0.575.
EXPECTED = {
    # Token level: the word is cut where its pieces change type; "##s" (B-ORG) starts an
    # entity that "##burg" (I-ORG) continues: (0.95 + 0.7) / 2.
    "simple": [("ORG", 0, 3, "VfL", 0.8), ("LOC", 4, 8, "Wolf", 0.6), ("ORG", 8, 13, "sburg", 0.825)],
    # The first piece "wolf" decides: B-LOC 0.6 for the whole word.
    "first": [("ORG", 0, 3, "VfL", 0.8), ("LOC", 4, 13, "Wolfsburg", 0.6)],
    "average": [("ORG", 0, 13, "VfL Wolfsburg", 0.575)],
    # "##s" has the highest top probability: B-ORG 0.95, a B- that starts a second ORG.
    "max": [("ORG", 0, 3, "VfL", 0.8), ("ORG", 4, 13, "Wolfsburg", 0.95)],
}


def _summary(entities):
    return [(e["entity_group"], e["start"], e["end"], e["word"], e["score"]) for e in entities]


def _assert_entities(entities, expected):
    """`entities` are `expected` (entity_group, start, end, word, score), scores to 1e-6."""
    got = _summary(entities)
    assert [row[:4] for row in got] == [row[:4] for row in expected]
    np.testing.assert_allclose([row[4] for row in got], [row[4] for row in expected], rtol=0, atol=1e-6)


@pytest.mark.parametrize("strategy", AGGREGATION_STRATEGIES)
def test_each_strategy_gives_its_hand_computed_entities(strategy):
    entities = group_entities(TEXT, OFFSETS, PROBABILITIES, LABELS, WORD_IDS, strategy)
    for entity in entities:
        assert set(entity) == {"entity_group", "score", "word", "start", "end"}
        assert type(entity["score"]) is float
        assert TEXT[entity["start"] : entity["end"]] == entity["word"]
    _assert_entities(entities, EXPECTED[strategy])


def test_the_four_strategies_give_four_different_results():
    results = {
        str(_summary(group_entities(TEXT, OFFSETS, PROBABILITIES, LABELS, WORD_IDS, strategy)))
        for strategy in AGGREGATION_STRATEGIES
    }
    assert len(results) == 4


def test_word_ids_as_ints_with_minus_one_and_arrays_give_the_same_entities():
    as_ints = np.array([-1 if word is None else word for word in WORD_IDS], np.int32)
    for strategy in AGGREGATION_STRATEGIES:
        entities = group_entities(
            TEXT,
            np.array(OFFSETS, np.int32),
            np.array(PROBABILITIES, np.float32),
            LABELS,
            word_ids=as_ints,
            aggregation_strategy=strategy,
        )
        _assert_entities(entities, EXPECTED[strategy])


def test_simple_is_the_default_and_needs_no_word_ids():
    _assert_entities(group_entities(TEXT, OFFSETS, PROBABILITIES, LABELS), EXPECTED["simple"])


def test_tokens_of_no_word_are_skipped_even_with_a_span():
    # The same rows, but "won" belongs to no word and is tagged B-LOC: it must not count.
    probabilities = [row[:] for row in PROBABILITIES]
    probabilities[5] = [0.0, 0.0, 0.0, 1.0, 0.0]
    word_ids = WORD_IDS[:5] + [None] + WORD_IDS[6:]
    for strategy in AGGREGATION_STRATEGIES:
        entities = group_entities(TEXT, OFFSETS, probabilities, LABELS, word_ids, strategy)
        _assert_entities(entities, EXPECTED[strategy])


# --- errors -------------------------------------------------------------------------------


def test_unknown_strategy_lists_the_four_names():
    with pytest.raises(ValueError, match="'simple', 'first', 'average', 'max'.*'none'"):
        group_entities(TEXT, OFFSETS, PROBABILITIES, LABELS, WORD_IDS, "none")


@pytest.mark.parametrize("strategy", ["first", "average", "max"])
def test_word_level_strategies_need_word_ids(strategy):
    with pytest.raises(ValueError, match="word_ids"):
        group_entities(TEXT, OFFSETS, PROBABILITIES, LABELS, aggregation_strategy=strategy)


def test_inputs_of_different_lengths_or_label_counts_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        group_entities(TEXT, OFFSETS[:-1], PROBABILITIES, LABELS)
    with pytest.raises(ValueError, match="differ in length"):
        group_entities(TEXT, OFFSETS, PROBABILITIES, LABELS, WORD_IDS[:-1], "first")
    with pytest.raises(ValueError, match=r"\[tokens, labels\] with 5 labels"):
        group_entities(TEXT, OFFSETS, np.array(PROBABILITIES)[:, :4], LABELS)
    # The old signature's label ids and scores are not probabilities.
    with pytest.raises(ValueError, match=r"\[tokens, labels\]"):
        group_entities(TEXT, OFFSETS, [1] * len(OFFSETS), [0.9] * len(OFFSETS), LABELS)


# --- grouping on real tokenizer offsets, with NER_LABELS --------------------------------------


def _rows(label_ids, scores):
    """Probability rows [tokens, 9]: `score` on the label, the rest spread over the others."""
    rows = np.array([[(1 - score) / (len(NER_LABELS) - 1)] * len(NER_LABELS) for score in scores], np.float64)
    rows[np.arange(len(rows)), label_ids] = scores
    assert (rows.argmax(axis=1) == label_ids).all()
    return rows


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_tokenizer(minilm_dir)


def test_repeated_words_get_their_own_spans(tokenizer):
    text = "Paris Hilton flew to Paris ."
    encoding = tokenizer(text, return_offsets_mapping=True)
    assert encoding.tokens() == ["[CLS]", "paris", "hilton", "flew", "to", "paris", ".", "[SEP]"]
    # Labels on the special tokens are ignored.
    probabilities = _rows(
        [B_LOC, B_PER, I_PER, OUT, OUT, B_LOC, OUT, B_ORG], [0.5, 0.9, 0.7, 0.99, 0.98, 0.6, 0.97, 0.5]
    )
    expected = [
        {"entity_group": "PER", "score": pytest.approx(0.8), "word": "Paris Hilton", "start": 0, "end": 12},
        {"entity_group": "LOC", "score": pytest.approx(0.6), "word": "Paris", "start": 21, "end": 26},
    ]
    offsets = encoding["offset_mapping"]
    assert group_entities(text, offsets, probabilities, NER_LABELS) == expected
    # One token per word: every word-level strategy agrees with the token level.
    for strategy in ("first", "average", "max"):
        assert group_entities(text, offsets, probabilities, NER_LABELS, encoding.word_ids(), strategy) == expected


def test_new_entities_start_on_b_and_on_type_changes():
    text = "Jo Ann Bob Paris Kent"
    offsets = [(0, 0), (0, 2), (3, 6), (7, 10), (11, 16), (17, 21), (0, 0)]
    # B-PER I-PER | B-PER | I-LOC after I-PER starts a LOC
    probabilities = _rows([OUT, B_PER, I_PER, B_PER, I_LOC, OUT, OUT], [1.0] * 7)
    groups = group_entities(text, offsets, probabilities, NER_LABELS)
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in groups] == [
        ("PER", "Jo Ann", 0, 6),
        ("PER", "Bob", 7, 10),
        ("LOC", "Paris", 11, 16),
    ]
    # An I-LOC after O is an entity too (IOB1 reading, as Hugging Face's pipeline does).
    probabilities = _rows([OUT, OUT, OUT, OUT, OUT, I_LOC, OUT], [1.0] * 7)
    groups = group_entities(text, offsets, probabilities, NER_LABELS)
    assert [(e["entity_group"], e["word"]) for e in groups] == [("LOC", "Kent")]


def test_first_keeps_whole_words_where_simple_splits_them(tokenizer):
    text = "Schwarzenegger met Gaultier in Wolfsburg."
    encoding = tokenizer(text, return_offsets_mapping=True)
    assert encoding.tokens() == [
        "[CLS]",
        "schwarz",
        "##ene",
        "##gger",
        "met",
        "gaul",
        "##tier",
        "in",
        "wolf",
        "##sburg",
        ".",
        "[SEP]",
    ]
    # Continuation pieces carry labels that disagree with their word's first piece.
    probabilities = _rows(
        [OUT, B_PER, OUT, I_LOC, OUT, B_PER, I_PER, OUT, B_LOC, B_ORG, OUT, OUT],
        [1.0, 0.9, 0.2, 0.3, 1.0, 0.8, 0.5, 1.0, 0.7, 0.4, 1.0, 1.0],
    )
    offsets, word_ids = encoding["offset_mapping"], encoding.word_ids()

    by_word = group_entities(text, offsets, probabilities, NER_LABELS, word_ids, "first")
    assert by_word == [
        {"entity_group": "PER", "score": pytest.approx(0.9), "word": "Schwarzenegger", "start": 0, "end": 14},
        {"entity_group": "PER", "score": pytest.approx(0.8), "word": "Gaultier", "start": 19, "end": 27},
        {"entity_group": "LOC", "score": pytest.approx(0.7), "word": "Wolfsburg", "start": 31, "end": 40},
    ]
    by_token = group_entities(text, offsets, probabilities, NER_LABELS, word_ids, "simple")
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in by_token] == [
        ("PER", "Schwarz", 0, 7),
        ("LOC", "gger", 10, 14),
        ("PER", "Gaultier", 19, 27),
        ("LOC", "Wolf", 31, 35),
        ("ORG", "sburg", 35, 40),
    ]
    assert by_token[2]["score"] == pytest.approx(0.65)
