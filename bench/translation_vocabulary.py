"""Subword against word vocabularies: where two translation runs' scores differ.

Reads two `tfattn train translate` runs that `tfattn evaluate --run RUN --beam 4` has scored on
the same validation pairs (their `validation_beam_translations.txt`), and scores both again on
two parts of those pairs: the sentences with a source word the word run's vocabulary lacks
(`source.words`: they reach its model as unknown), and the rest. Prints a Markdown table.

    python bench/translation_vocabulary.py --subword runs/translate --words runs/translate_words \
        --data ../shared/data/translation/spa_eng_valid.tsv
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfattn.data.translation import read_translation_pairs  # noqa: E402
from tfattn.models.translation import WordVocabulary  # noqa: E402
from tfattn.tasks.translation import bleu_and_chrf  # noqa: E402

TRANSLATIONS = "validation_beam_translations.txt"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subword", required=True, help="run folder trained with --vocabulary subword")
    parser.add_argument("--words", required=True, help="run folder trained with --vocabulary words")
    parser.add_argument("--data", required=True, help="the validation pairs both runs were scored on")
    args = parser.parse_args(argv)

    pairs = read_translation_pairs(args.data)
    translations = {}
    for name in ("subword", "words"):
        path = Path(getattr(args, name)) / TRANSLATIONS
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) != len(pairs):
            raise SystemExit(f"{path}: {len(lines)} translations for {len(pairs)} pairs in {args.data}")
        translations[name] = lines
    vocabulary = WordVocabulary.from_bytes((Path(args.words) / "model" / "source.words").read_bytes())
    known = set(vocabulary.words)
    unknown = [
        any(word.decode("utf-8") not in known for word in words)
        for words in WordVocabulary.split(pairs.sources).to_list()
    ]
    parts = {
        "all pairs": [True] * len(pairs),
        "a source word unknown to the word vocabulary": unknown,
        "every source word known": [not flag for flag in unknown],
    }
    print("| validation pairs | sentences | subword BLEU / chrF | words BLEU / chrF |")
    print("|---|---|---|---|")
    for part, chosen in parts.items():
        references = [target for target, keep in zip(pairs.targets, chosen) if keep]
        scores = {
            name: bleu_and_chrf([text for text, keep in zip(lines, chosen) if keep], references)
            for name, lines in translations.items()
        }
        cells = " | ".join(f"{scores[name]['bleu']:.2f} / {scores[name]['chrf']:.2f}" for name in ("subword", "words"))
        print(f"| {part} | {len(references)} | {cells} |")


if __name__ == "__main__":
    main()
