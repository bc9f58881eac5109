"""From-scratch recipe search: named config variants x tasks x seeds, validation scores and speed.

Each (task, variant, seed) trains with `tfattn.training.loop.train` on the shared AG News or
math-topics file (stratified 10% validation split of that seed, as `tfattn train --seed`) and
appends one JSON line to --results: validation accuracy and macro-F1 of the kept (best) epoch,
the epochs trained, and the median training examples/s over the run's epochs. Finished
triples already in --results are skipped, so an interrupted search picks up where it stopped.
The summary prints mean and spread (sample standard deviation) per task and variant, next to
the TF-IDF baseline of the same seeds when bench/classic_baselines.py wrote them.

    python bench/scratch_recipes.py --tasks agnews math --variants default dropout_0.3 --seeds 0 1 2
    python bench/scratch_recipes.py --variants previous_default default --speed-epochs 3  # speed, side by side
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tf_keras as keras  # noqa: E402

from tfattn.pretrained import offline_minilm_path  # noqa: E402
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.training.loop import train  # noqa: E402

DATA = REPO.parent / "shared" / "data"
TASK_DATA = {"agnews": DATA / "ag_news" / "train.csv", "math": DATA / "math_topics" / "train.jsonl"}

# Variant name -> TrainConfig fields that differ from the defaults. Names joined by "+" combine
# variants (later ones win), e.g. "wordpiece_8k+dropout_0.3".
VARIANTS = {
    "default": {},
    # The defaults before this search, for both tasks.
    "previous_default": {"tokenizer": "words", "token_dropout": 0.0, "learning_rate": 1e-3, "bigram_buckets": 0},
    "dropout_0.3": {"dropout": 0.3},
    "weight_decay_0.1": {"weight_decay": 0.1},
    "label_smoothing_0.1": {"label_smoothing": 0.1},
    "vocab_10k": {"vocab_size": 10000},
    "vocab_40k": {"vocab_size": 40000},
    "wide_128": {"embed_dim": 128, "ff_dim": 256},
    "deep_2": {"num_blocks": 2},
    "max_length_128": {"max_length": 128},
    "max_length_512": {"max_length": 512},
    "embed_32": {"embed_dim": 32, "ff_dim": 64},
    "sinusoidal": {"positional": "sinusoidal"},
    "dropout_0.2": {"dropout": 0.2},
    "weight_decay_1": {"weight_decay": 1.0},
    "lr_5e-4": {"learning_rate": 5e-4},
    "epochs_20": {"epochs": 20},
    "epochs_4": {"epochs": 4},
    "patience_3": {"patience": 3},
    "lr_3e-4": {"learning_rate": 3e-4},
    "lr_3e-3": {"learning_rate": 3e-3},
    "batch_32": {"batch_size": 32},
    "cls_pooling": {"pooling": "cls"},
    "bigrams_64k": {"bigram_buckets": 65536},
    "bigrams_256k": {"bigram_buckets": 262144},
    "deep_2_wide_128": {"num_blocks": 2, "embed_dim": 128, "ff_dim": 256},
    "patience_4": {"patience": 4},
    "token_dropout_0.1": {"token_dropout": 0.1},
    "token_dropout_0.2": {"token_dropout": 0.2},
    "token_dropout_0.4": {"token_dropout": 0.4},
    "wordpiece": {"tokenizer": "wordpiece"},
    "wordpiece_8k": {"tokenizer": "wordpiece", "vocab_size": 8000},
    "wordpiece_16k": {"tokenizer": "wordpiece", "vocab_size": 16000},
    "wordpiece_4k": {"tokenizer": "wordpiece", "vocab_size": 4000},
    # Option rows: the token table starts from the offline MiniLM's word-piece embeddings.
    "minilm_embeddings": {"embeddings_from": str(offline_minilm_path())},
    # The same without a task's own recipe (lr 1e-3, no token dropout, no bigrams): how the
    # math option row was measured, before math had a recipe of its own.
    "minilm_embeddings_plain": {
        "embeddings_from": str(offline_minilm_path()),
        "learning_rate": 1e-3,
        "token_dropout": 0.0,
        "bigram_buckets": 0,
    },
}


def variant_fields(variant):
    """The TrainConfig fields of a variant name (parts joined by "+")."""
    fields = {}
    for part in variant.split("+"):
        if part not in VARIANTS:
            raise SystemExit(f"unknown variant {part!r} in {variant!r}; choose from {', '.join(VARIANTS)}")
        fields.update(VARIANTS[part])
    return fields


def read_history(run_dir):
    with open(Path(run_dir) / "history.csv") as handle:
        return list(csv.DictReader(handle))


def train_variant(task, variant, run_dir, **overrides):
    """Train `variant` (plus `overrides`) of `task` in `run_dir`, emptied first."""
    shutil.rmtree(run_dir, ignore_errors=True)
    fields = {**variant_fields(variant), **overrides}
    train(TrainConfig(task=task, data=str(TASK_DATA[task]), run_dir=str(run_dir), **fields))
    keras.backend.clear_session()


def run_one(task, variant, seed, work):
    """Train one (task, variant, seed) in a fresh folder under `work`; its result row."""
    run_dir = Path(work) / f"{task}_{variant}_{seed}"
    train_variant(task, variant, run_dir, seed=seed)
    metrics = json.loads((run_dir / "validation_scores.json").read_text())
    history = read_history(run_dir)
    best = json.loads(next((run_dir / "checkpoints").glob("*/best.json")).read_text())
    row = {
        "task": task,
        "variant": variant,
        "seed": seed,
        "validation_accuracy": round(metrics["accuracy"], 4),
        "validation_macro_f1": round(metrics["macro_f1"], 4),
        "epochs_trained": len(history),
        "best_epoch": best["best_epoch"] + 1,
        "train_accuracy_at_end": round(float(history[-1]["accuracy"]), 4),
        "examples_per_second": round(statistics.median(float(r["examples_per_second"]) for r in history), 1),
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    return row


def read_results(path):
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spread(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows, baselines):
    """Markdown table: per task and variant, mean +- standard deviation over the seeds run."""
    lines = [
        "| task | variant | seeds | val accuracy | val macro-F1 | TF-IDF accuracy (same seeds) | best epoch "
        "| examples/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups = {}
    for row in rows:
        groups.setdefault((row["task"], row["variant"]), []).append(row)
    for (task, variant), group in sorted(groups.items()):
        seeds = sorted(r["seed"] for r in group)
        accuracy = [r["validation_accuracy"] for r in group]
        macro_f1 = [r["validation_macro_f1"] for r in group]
        tfidf = [baselines[task][str(s)]["validation_accuracy"] for s in seeds if str(s) in baselines.get(task, {})]
        tfidf_cell = f"{statistics.mean(tfidf):.4f} ± {spread(tfidf):.4f}" if len(tfidf) == len(seeds) else "-"
        lines.append(
            f"| {task} | {variant} | {','.join(map(str, seeds))} | {statistics.mean(accuracy):.4f} ± "
            f"{spread(accuracy):.4f} | {statistics.mean(macro_f1):.4f} ± {spread(macro_f1):.4f} | {tfidf_cell} | "
            f"{statistics.mean(r['best_epoch'] for r in group):.1f} | "
            f"{statistics.mean(r['examples_per_second'] for r in group):,.0f} |"
        )
    return "\n".join(lines)


def compare_speed(tasks, variants, epochs, repeats, out):
    """Training examples/s of `variants`, side by side: each trains `epochs` epochs (no early
    stop), the variants alternating, `repeats` times; per task the median over runs of each run's
    median epoch speed (epoch 1, which traces the graphs, left out), and its ratio to the first."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="scratch_speed_") as work:
        for task in tasks:
            speeds = {variant: [] for variant in variants}
            for repeat in range(repeats):
                for variant in variants:
                    run_dir = Path(work) / f"{task}_{variant}"
                    train_variant(task, variant, run_dir, epochs=epochs, patience=epochs)
                    epoch_speeds = [float(r["examples_per_second"]) for r in read_history(run_dir)[1:]]
                    speeds[variant].append(statistics.median(epoch_speeds))
                    speed = speeds[variant][-1]
                    print(f"== speed {task} {variant} run {repeat + 1}: {speed:,.0f} examples/s", flush=True)
            first = statistics.median(speeds[variants[0]])
            results[task] = {
                variant: {"runs": runs, "median": statistics.median(runs), "ratio": statistics.median(runs) / first}
                for variant, runs in speeds.items()
            }
    print("| task | variant | examples/s (median of runs) | ratio to " + variants[0] + " |\n|---|---|---|---|")
    for task, by_variant in results.items():
        for variant, row in by_variant.items():
            print(f"| {task} | {variant} | {row['median']:,.0f} | {row['ratio']:.2f} |")
    Path(out).write_text(json.dumps(results, indent=2) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASK_DATA), choices=list(TASK_DATA))
    parser.add_argument("--variants", nargs="+", default=["default"], help="variant names, or parts joined by +")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--results", default=str(REPO / "bench" / "results" / "scratch_recipes.jsonl"))
    parser.add_argument("--baselines", default=str(REPO / "bench" / "results" / "classic_baselines.json"))
    parser.add_argument("--summary-only", action="store_true", help="print the table of --results and stop")
    parser.add_argument(
        "--speed-epochs", type=int, default=None, help="instead: compare training speed over this many epochs"
    )
    parser.add_argument("--speed-repeats", type=int, default=2, help="with --speed-epochs: runs per variant")
    parser.add_argument("--speed-out", default=str(REPO / "bench" / "results" / "scratch_speed.json"))
    args = parser.parse_args()

    for variant in args.variants:
        variant_fields(variant)  # an unknown name stops here, before any training
    if args.speed_epochs:
        compare_speed(args.tasks, args.variants, args.speed_epochs, args.speed_repeats, args.speed_out)
        return
    done = {(r["task"], r["variant"], r["seed"]) for r in read_results(args.results)}
    if not args.summary_only:
        with tempfile.TemporaryDirectory(prefix="scratch_recipes_") as work:
            for seed in args.seeds:
                for task in args.tasks:
                    for variant in args.variants:
                        if (task, variant, seed) in done:
                            continue
                        print(f"== {task} {variant} seed {seed}", flush=True)
                        row = run_one(task, variant, seed, work)
                        print(json.dumps(row), flush=True)
                        with open(args.results, "a") as handle:
                            handle.write(json.dumps(row) + "\n")
    baselines = json.loads(Path(args.baselines).read_text()) if Path(args.baselines).exists() else {}
    wanted = [r for r in read_results(args.results) if r["task"] in args.tasks and r["variant"] in args.variants]
    print(summarize(wanted, baselines))


if __name__ == "__main__":
    main()
