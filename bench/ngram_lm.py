"""Character n-gram baseline for the language-model table: interpolated modified Kneser-Ney.

A model of order n predicts each character from the n-1 characters before it, as Chen & Goodman
(1998, "An empirical study of smoothing techniques for language modeling", section 3) define it:

    P_k(w | h) = max(c_k(hw) - D_k(c_k(hw)), 0) / c_k(h.) + gamma_k(h) * P_{k-1}(w | h minus its first char)
    gamma_k(h) = (D_k1 * N1(h.) + D_k2 * N2(h.) + D_k3+ * N3+(h.)) / c_k(h.)
    P_0(w)     = 1 / V          (the uniform floor; V = distinct training characters + 1 "unknown")

c_k is the raw count at the highest order n and the continuation count (how many distinct characters
precede the k-gram) at lower orders; c_k(h.) sums c_k(hw) over w; N_r(h.) counts the w with
c_k(hw) == r (N3+: >= 3). Each order has its own three discounts, from its count-of-counts n_r:
Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3. A context never
seen in training (or seen only at the very end, with nothing after it) backs off entirely.

The n-grams are numbered, not stored as strings: the k-gram ending at position i gets the dense id
of the pair (id of the (k-1)-gram ending at i-1, character i), so every table is one sorted int64
array and counting or looking up a whole text is a few numpy calls per order.

    python bench/ngram_lm.py --data ../shared/data/text/tiny_shakespeare_train.txt \\
        --validation-fraction 0.1 --orders 3 4 5 6 7 8 --json /tmp/ngram.json
    python bench/ngram_lm.py --tatoeba-english /tmp/tatoeba_eng --orders 3 4 5 6 7 8

The validation text is scored on its own (no history from the training text), as a model that
starts reading it fresh would see it; that changes at most order-1 of its characters.
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.machine import cpu_model
from tfattn.data.examples import DataError
from tfattn.data.text import read_text_corpus, split_validation
from tfattn.data.translation import read_translation_pairs

# The shared corpora, where tests/conftest.py looks for them too.
TATOEBA_DIR = Path(os.environ.get("TFATTN_SHARED_DATA", REPO.parent / "shared" / "data")) / "translation"
MIN_DISCOUNT = 0.01  # the floor under every discount (see `discounts`)


def code_points(text: str) -> np.ndarray:
    """The characters of `text` as Unicode code points (one uint32 each, without a Python loop)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def lookup(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The position of each key in the sorted `table`, or -1 where it is absent."""
    positions = np.searchsorted(table, keys)
    inside = positions < len(table)
    found = np.zeros(len(keys), dtype=bool)
    found[inside] = table[positions[inside]] == keys[inside]
    return np.where(found, positions, -1)


def discounts(counts: np.ndarray) -> np.ndarray:
    """`[0, D1, D2, D3+]` for one order, from the count-of-counts of its n-grams' `counts`.

    Where there are few n-gram types the estimates are noisy: a ratio can have a zero denominator
    (it is then taken as 0) and D2 or D3+ can come out negative (Tiny Shakespeare's unigram level,
    65 characters, gives D2 = -1.6). So each D_r is clipped to [MIN_DISCOUNT, r]: at most r, so that
    no n-gram loses more than its count (every distribution then sums to exactly 1), and above 0, so
    that every context leaves some mass to back off with and no character, unseen ones included,
    gets probability 0. At orders 2 and up of real text the estimates land well inside (0, r)."""
    n1, n2, n3, n4 = (np.count_nonzero(counts == r) for r in (1, 2, 3, 4))

    def ratio(a, b):
        return a / b if b else 0.0

    y = ratio(n1, n1 + 2 * n2)
    d = [1 - 2 * y * ratio(n2, n1), 2 - 3 * y * ratio(n3, n2), 3 - 4 * y * ratio(n4, n3)]
    return np.array([0.0] + [min(max(value, MIN_DISCOUNT), r) for r, value in zip((1, 2, 3), d)])


class KneserNeyLM:
    """Interpolated modified Kneser-Ney character model of one order (see the module docstring).

    >>> model = KneserNeyLM(2)
    >>> model.fit("abab")
    >>> round(sum(math.exp(model.log_prob("a", c)) for c in "ab?"), 12)  # "?" is unseen: unknown
    1.0
    """

    def __init__(self, order: int):
        if int(order) != order or order < 1:
            raise ValueError(f"order must be a whole number of at least 1, got {order!r}")
        self.order = int(order)

    def fit(self, text: str) -> None:
        """Count the n-grams of `text` (orders 1..n) and precompute each order's discounted counts
        and back-off weights."""
        if not text:
            raise ValueError("cannot fit on an empty text")
        points = code_points(text)
        self._characters = np.unique(points)  # sorted: a character's id is its index here
        self.unknown = len(self._characters)  # the id unseen characters map to
        self.vocabulary_size = len(self._characters) + 1
        ids = self._encode(points)

        # gram_ids[k][i]: id of the k-gram ending at position i (-1 before the text is k long).
        self._keys = [None]  # per order k: sorted keys of its k-grams (key = prefix id * V + last char)
        gram_ids = [None]
        first_positions = [None]
        for k in range(1, self.order + 1):
            ends = np.arange(k - 1, len(ids))
            keys = ids[ends] if k == 1 else gram_ids[k - 1][ends - 1] * self.vocabulary_size + ids[ends]
            table, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            grams = np.full(len(ids), -1, dtype=np.int64)
            grams[ends] = inverse
            self._keys.append(table)
            gram_ids.append(grams)
            first_positions.append(ends[first])

        # Per order: the numerator max(c - D(c), 0) of every k-gram, and per context (a (k-1)-gram
        # id; order 1 has the single empty context 0) its total count and back-off weight gamma.
        self._numerators, self._totals, self._gammas, self.discounts = [None], [None], [None], [None]
        for k in range(1, self.order + 1):
            if k == self.order:
                counts = np.bincount(gram_ids[k][k - 1 :], minlength=len(self._keys[k]))
            else:
                # Continuation count: distinct (k+1)-grams that end in this k-gram, i.e. distinct
                # characters seen before it. The k-gram at the very start of the text has no
                # character before it; the start counts as one more (as <s> does in word models).
                suffixes = gram_ids[k][first_positions[k + 1]]
                counts = np.bincount(suffixes, minlength=len(self._keys[k]))
                counts[gram_ids[k][k - 1]] += 1
            d = discounts(counts)
            contexts = self._keys[k] // self.vocabulary_size if k > 1 else np.zeros(len(counts), dtype=np.int64)
            n_contexts = len(self._keys[k - 1]) if k > 1 else 1
            totals = np.bincount(contexts, weights=counts, minlength=n_contexts)
            removed = np.bincount(contexts, weights=d[np.minimum(counts, 3)], minlength=n_contexts)
            self._numerators.append(counts - d[np.minimum(counts, 3)])  # >= 0: D_r <= r
            self._totals.append(totals)
            # A context with no continuation in training (total 0) is skipped when scoring: full back-off.
            self._gammas.append(np.divide(removed, totals, out=np.ones(n_contexts), where=totals > 0))
            self.discounts.append(d[1:])

    def log_probs(self, text: str, history: str = "") -> np.ndarray:
        """Natural log-probability of each character of `text`, each predicted from up to n-1
        characters before it (taken from `history` for the first ones)."""
        history = history[max(0, len(history) - (self.order - 1)) :] if self.order > 1 else ""
        ids = self._encode(code_points(history + text))
        scored = np.arange(len(history), len(ids))  # the positions of `text`'s characters

        # Climb the orders from the uniform floor. grams[i]: id of the k-gram ending at position i
        # (-1 where training never saw it or the text is not k long there); the context of the
        # k-gram ending at i is the (k-1)-gram ending at i-1.
        probabilities = np.full(len(scored), 1.0 / self.vocabulary_size)
        grams = lookup(self._keys[1], ids)
        probabilities = self._interpolate(1, np.zeros(len(scored), dtype=np.int64), grams[scored], probabilities)
        for k in range(2, self.order + 1):
            contexts = np.concatenate([[-1], grams[:-1]])
            keys = contexts * self.vocabulary_size + ids
            grams = np.where(contexts >= 0, lookup(self._keys[k], keys), -1)
            probabilities = self._interpolate(k, contexts[scored], grams[scored], probabilities)
        return np.log(probabilities)

    def _interpolate(self, k, contexts, grams, lower):
        """P_k from P_{k-1} (`lower`) at each position, given its order-k context and k-gram ids
        (-1: unseen). Where the context has no count in training, P_k is P_{k-1}: full back-off."""
        seen = contexts >= 0
        seen[seen] = self._totals[k][contexts[seen]] > 0
        numerators = np.zeros(len(grams))
        numerators[grams >= 0] = self._numerators[k][grams[grams >= 0]]
        c = contexts[seen]
        probabilities = lower.copy()
        probabilities[seen] = numerators[seen] / self._totals[k][c] + self._gammas[k][c] * lower[seen]
        return probabilities

    def log_prob(self, context: str, char: str) -> float:
        """Natural log of P(char | the last n-1 characters of context)."""
        if len(char) != 1:
            raise ValueError(f"expected one character, got {char!r}")
        return float(self.log_probs(char, history=context)[0])

    def nats_per_char(self, text: str, history: str = "") -> float:
        """Mean negative natural log-probability of the characters of `text`."""
        if not text:
            raise ValueError("cannot score an empty text")
        return float(-self.log_probs(text, history).mean())

    def _encode(self, points: np.ndarray) -> np.ndarray:
        """Character ids (int64) of code points; characters unseen in training become `unknown`."""
        ids = lookup(self._characters, points)
        return np.where(ids >= 0, ids, self.unknown).astype(np.int64)


def write_tatoeba_english(out_dir) -> tuple[Path, Path]:
    """The English side of the Tatoeba Spanish-English pairs, one sentence a line, as
    out_dir/tatoeba_eng_train.txt and out_dir/tatoeba_eng_valid.txt; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "valid"):
        pairs = read_translation_pairs(TATOEBA_DIR / f"spa_eng_{split}.tsv")  # targets: English
        path = out_dir / f"tatoeba_eng_{split}.txt"
        path.write_text("".join(sentence + "\n" for sentence in pairs.targets), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments end the script with exit status 2 and one line, like every other bad input."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def evaluate(train_text: str, validation_text: str, orders) -> list[dict]:
    """One row per order: validation bits and nats per character, seconds to fit and to score."""
    rows = []
    for order in orders:
        started = time.perf_counter()
        model = KneserNeyLM(order)
        model.fit(train_text)
        fitted = time.perf_counter()
        nats = model.nats_per_char(validation_text)
        scored = time.perf_counter()
        rows.append(
            {
                "order": order,
                "bits_per_char": nats / math.log(2),
                "nats_per_char": nats,
                "fit_seconds": round(fitted - started, 3),
                "score_seconds": round(scored - fitted, 3),
                "discounts": [[round(float(d), 4) for d in model.discounts[k]] for k in range(1, order + 1)],
            }
        )
        row = rows[-1]
        seconds = f"{row['fit_seconds']:7.2f}  {row['score_seconds']:7.2f}"
        print(f"{order:>5}  {row['bits_per_char']:9.4f}  {nats:9.4f}  {seconds}", flush=True)
    return rows


def main(argv=None):
    parser = OneLineParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="training text (.txt, .jsonl, .csv, .tsv), read as the GPT task reads it")
    source.add_argument("--tatoeba-english", metavar="DIR", help="write Tatoeba's English sentences to DIR, use them")
    held_out = parser.add_mutually_exclusive_group()
    held_out.add_argument("--validation-data", help="a separate validation file (default: carve it from --data)")
    held_out.add_argument("--validation-fraction", type=float, help="share of --data held out at its end (0.1)")
    parser.add_argument("--orders", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8], help="n-gram orders to fit")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    try:
        if min(args.orders) < 1:
            raise ValueError(f"--orders must all be at least 1, got {min(args.orders)}")
        if args.tatoeba_english:
            if args.validation_data or args.validation_fraction is not None:
                raise ValueError("--tatoeba-english brings its own validation file; drop --validation-*")
            train_path, validation_path = write_tatoeba_english(args.tatoeba_english)
            print(f"wrote {train_path} and {validation_path}", flush=True)
            train, validation = read_text_corpus(train_path), read_text_corpus(validation_path)
            data = {"train": str(train_path), "validation": str(validation_path)}
        else:
            for path in (args.data, args.validation_data):
                if path is not None and not Path(path).is_file():
                    raise DataError(f"{path}: no such file")
            corpus = read_text_corpus(args.data)
            if args.validation_data:
                train, validation = corpus, read_text_corpus(args.validation_data)
                data = {"train": args.data, "validation": args.validation_data}
            else:
                fraction = 0.1 if args.validation_fraction is None else args.validation_fraction
                train, validation = split_validation(corpus, fraction)
                data = {"train": args.data, "validation_fraction": fraction}
    except (DataError, ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")

    train_text, validation_text = "\n".join(train.documents), "\n".join(validation.documents)
    unseen = int(np.isin(code_points(validation_text), code_points(train_text), invert=True).sum())
    print(
        f"train {len(train_text):,} characters ({len(set(train_text))} distinct), "
        f"validation {len(validation_text):,} ({unseen} unseen in train)",
        flush=True,
    )
    print("order  bits/char  nats/char  fit (s)  score (s)", flush=True)
    rows = evaluate(train_text, validation_text, sorted(set(args.orders)))
    best = min(rows, key=lambda row: row["bits_per_char"])
    print(f"best order: {best['order']} ({best['bits_per_char']:.4f} bits/char)")

    if args.json:
        result = {
            "model": "interpolated modified Kneser-Ney character n-gram",
            "data": data,
            "train_characters": len(train_text),
            "validation_characters": len(validation_text),
            "vocabulary_size": len(set(train_text)) + 1,
            "validation_unseen_characters": unseen,
            "rows": rows,
            "best_order": best["order"],
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        }
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
