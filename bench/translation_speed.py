"""Translation speed: training examples/s of both translators, and decoding sentences/s greedy and
beam 4, with and without the key/value cache, at fixed output lengths.

Both models are the `tfattn train translate` defaults (TransformerTranslator: 2 + 2 blocks of
256, RnnTranslator: GRU 256), built on vocabularies learned from the first `--pairs` training
pairs of the Tatoeba Spanish -> English file, randomly initialised (speed does not depend on the
weights), seeded.
- Training: `model.fit` steps (batch 64, the task's loss and AdamW), on the same batches, after a
  warm-up; examples/s over `--train-steps` steps.
- Decoding: `--sentences` validation sentences, batches of 32, with `min_length = max_length =`
  10, 20 and 40 tokens so that every sentence decodes exactly that many steps; the cache
  (`use_cache=True`, each step computes the new position only) against re-running the decoder
  over the whole prefix at every step (`use_cache=False`). Both give the same tokens (checked).
  The RNN's state is its cache: it has no uncached variant worth timing.
Rounds alternate the variants, so machine noise hits all alike; the median round is reported.

    python bench/translation_speed.py            # about 10 minutes on 2 cores
    python bench/translation_speed.py --quick    # smoke run
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfattn.data.pipelines import make_dataset  # noqa: E402
from tfattn.data.translation import read_translation_pairs  # noqa: E402
from tfattn.decoding import DecodingOptions, decode  # noqa: E402
from tfattn.families.translators import TRANSLATOR_FAMILIES  # noqa: E402
from tfattn.models.translation import TranslationPreprocessor  # noqa: E402
from tfattn.tasks.translation import MaskedCrossEntropy, TranslationConfig  # noqa: E402
from tfattn.training.metrics import masked_token_accuracy  # noqa: E402
from tfattn.training.optimizer import create_optimizer  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "translation"
RESULTS = REPO / "bench" / "results" / "translation_speed.json"


def build_model(kind, preprocessor):
    config = TranslationConfig(data="-", model=kind).resolve()
    return TRANSLATOR_FAMILIES[kind].build(preprocessor, config)


def training_speed(model, preprocessor, pairs, steps, rounds):
    target_ids, labels = preprocessor.encode_targets(pairs.targets)
    features = {"source_ids": preprocessor.encode_sources(pairs.sources), "target_ids": target_ids}
    data = make_dataset(features, labels, 64, shuffle=True, seed=0).repeat()
    model.compile(
        optimizer=create_optimizer(TRANSLATOR_FAMILIES[model.kind].defaults["learning_rate"], steps * (rounds + 1)),
        loss=MaskedCrossEntropy(0.1),
        metrics=[masked_token_accuracy],
    )
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)  # warm-up: tracing
    speeds = []
    for _ in range(rounds):
        started = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        speeds.append(steps * 64 / (time.perf_counter() - started))
    return speeds


def decoding_round(model, batches, options):
    """Sentences/s of one pass, and the token ids (to compare variants)."""
    started = time.perf_counter()
    outputs = [decode(model, batch, options).token_ids.numpy() for batch in batches]
    return sum(len(batch) for batch in batches) / (time.perf_counter() - started), outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=20000, help="training pairs that learn the vocabularies")
    parser.add_argument("--sentences", type=int, default=64, help="sentences decoded per variant and round")
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--models", nargs="+", default=["transformer", "rnn"], choices=["transformer", "rnn"])
    parser.add_argument("--quick", action="store_true", help="smoke run: few pairs, steps and sentences")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.sentences, args.train_steps, args.rounds, args.lengths = 2000, 8, 3, 1, [5, 10]

    keras.utils.set_random_seed(0)
    train = read_translation_pairs(DATA / "spa_eng_train.tsv", limit=args.pairs)
    valid = read_translation_pairs(DATA / "spa_eng_valid.tsv", limit=args.sentences)
    preprocessor = TranslationPreprocessor.learn(train.sources, train.targets, vocab_size=8000)
    batches = [preprocessor.pad_sources(valid.sources[i : i + 32]) for i in range(0, len(valid), 32)]
    # A run of some --models updates their entries and keeps the others'.
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {"models": {}}
    for kind in args.models:
        model = build_model(kind, preprocessor)
        entry = {"weights": model.count_params()}
        speeds = training_speed(model, preprocessor, train, args.train_steps, args.rounds)
        entry["training_examples_per_second"] = round(statistics.median(speeds), 1)
        print(f"{kind}: {model.count_params():,} weights, training {entry['training_examples_per_second']} examples/s")
        decoding = {}
        for length in args.lengths:
            variants = {"greedy": DecodingOptions(max_length=length, min_length=length)}
            variants["beam4"] = DecodingOptions(max_length=length, min_length=length, beam_width=4)
            if kind == "transformer":
                variants["greedy_no_cache"] = DecodingOptions(max_length=length, min_length=length, use_cache=False)
                variants["beam4_no_cache"] = DecodingOptions(
                    max_length=length, min_length=length, beam_width=4, use_cache=False
                )
            for options in variants.values():
                decoding_round(model, batches[:1], options)  # warm-up: tracing
            rates, tokens = {name: [] for name in variants}, {}
            for _ in range(args.rounds):
                for name, options in variants.items():
                    rate, tokens[name] = decoding_round(model, batches, options)
                    rates[name].append(rate)
            row = {name: round(statistics.median(values), 1) for name, values in rates.items()}
            if kind == "transformer":
                for name in ("greedy", "beam4"):
                    same = all(np.array_equal(a, b) for a, b in zip(tokens[name], tokens[name + "_no_cache"]))
                    row[f"{name}_cache_speedup"] = round(row[name] / row[name + "_no_cache"], 2)
                    row[f"{name}_same_tokens"] = same
            decoding[str(length)] = row
            print(f"  {length} tokens: {row}")
        entry["decoding_sentences_per_second"] = decoding
        results["models"][kind] = entry
    results.update(
        {
            "command": "python bench/translation_speed.py"
            + (" --quick" if args.quick else "")
            + f" --models {' '.join(args.models)}",
            "pairs": args.pairs,
            "sentences": args.sentences,
            "rounds": args.rounds,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "load_average_at_end": os.getloadavg()[0],
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
