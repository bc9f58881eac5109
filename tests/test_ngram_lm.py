"""bench/ngram_lm.py, the Kneser-Ney character baseline: its distributions are proper, an order-1
model gives the values worked out by hand below, and the script refuses bad input in one line.
Tiny made-up texts only: the whole file runs in about a second (after conftest's TensorFlow import)."""

import importlib.util
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "ngram_lm.py"


def load_ngram_lm():
    spec = importlib.util.spec_from_file_location("ngram_lm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ngram_lm = load_ngram_lm()
KneserNeyLM = ngram_lm.KneserNeyLM

TEXT = "the cat sat on the mat.\nthe dog sat on the log!\na cat, a dog; that mat.\n"
UNSEEN = "\u2603"  # a snowman: in no training text here


def fitted(order, text=TEXT):
    model = KneserNeyLM(order)
    model.fit(text)
    return model


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_probabilities_over_the_vocabulary_sum_to_one(order):
    model = fitted(order)
    vocabulary = sorted(set(TEXT)) + [UNSEEN]  # UNSEEN stands for the one "unknown" entry
    assert model.vocabulary_size == len(vocabulary)
    # Seen contexts, unseen ones, one ending the text (nothing followed it), one with an unknown character.
    for context in ["", "t", "th", "the", "at ", "e m", "zzz", "t.\n", ".\n", UNSEEN + "h", "xat", "og!"]:
        total = sum(math.exp(model.log_prob(context, char)) for char in vocabulary)
        assert abs(total - 1) < 1e-9, (order, context, total)


def test_order_one_matches_the_hand_derivation():
    """Counts a:4 b:3 c:2 d:1, so N = 10 and the count-of-counts n1 = n2 = n3 = n4 = 1:
    Y = n1/(n1 + 2 n2) = 1/3, D1 = 1 - 2Y = 1/3, D2 = 2 - 3Y = 1, D3+ = 3 - 4Y = 5/3.
    V = 4 characters + unknown = 5; gamma = (D1·1 + D2·1 + D3+·2)/N = 7/15 (a and b are both 3+),
    P(w) = (c(w) - D(c(w)))/N + gamma/V:
    a (4 - 5/3)/10 + 7/75 = 49/150, b (3 - 5/3)/10 + 7/75 = 34/150, c (2 - 1)/10 + 7/75 = 29/150,
    d (1 - 1/3)/10 + 7/75 = 24/150, unknown 7/75 = 14/150; they sum to 150/150."""
    model = fitted(1, "abacabdabc")
    assert model.discounts[1] == pytest.approx([1 / 3, 1, 5 / 3], abs=1e-12)
    expected = {"a": Fraction(49, 150), "b": Fraction(34, 150), "c": Fraction(29, 150), "d": Fraction(24, 150)}
    expected[UNSEEN] = Fraction(14, 150)
    for char, probability in expected.items():
        # An order-1 model ignores its context.
        for context in ["", "ab", UNSEEN]:
            assert model.log_prob(context, char) == pytest.approx(math.log(probability), abs=1e-12), char


@pytest.mark.parametrize("order", [1, 3])
def test_an_unseen_character_gets_a_finite_log_probability(order):
    model = fitted(order)
    for context in ["the", "", UNSEEN * 3]:
        assert math.isfinite(model.log_prob(context, UNSEEN))
        assert model.log_prob(context, UNSEEN) < 0
    assert math.isfinite(model.nats_per_char(f"the {UNSEEN}at sat"))


def test_scoring_a_text_matches_scoring_its_characters_one_by_one():
    model = fitted(3)
    text, history = "a dog sat on that cat.", "on t"
    one_by_one = [-model.log_prob((history + text)[: len(history) + i], char) for i, char in enumerate(text)]
    assert model.nats_per_char(text, history=history) == pytest.approx(sum(one_by_one) / len(text), abs=1e-12)
    assert model.nats_per_char(text) != pytest.approx(model.nats_per_char(text, history=history))


def test_a_higher_order_fits_repetitive_text_better():
    train = "the cat sat on the mat. " * 40
    nats = {order: fitted(order, train).nats_per_char("the cat sat on the mat. " * 3) for order in (1, 4)}
    assert nats[4] < nats[1] / 3  # a unigram model knows letter frequencies; 4-grams know the sentence


def run_script(*options):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *options], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_the_script_refuses_a_missing_file_in_one_line(tmp_path):
    missing = tmp_path / "no_such_corpus.txt"
    finished = run_script("--data", str(missing), "--orders", "2")
    assert finished.returncode == 2
    assert finished.stdout == ""
    assert len(finished.stderr.strip().splitlines()) == 1 and str(missing) in finished.stderr


def test_the_script_refuses_order_zero_in_one_line(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 5, encoding="utf-8")
    finished = run_script("--data", str(corpus), "--orders", "0", "3")
    assert finished.returncode == 2
    assert len(finished.stderr.strip().splitlines()) == 1 and "--orders" in finished.stderr
