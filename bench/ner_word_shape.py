"""CoNLL-2003 NER with and without the word-shape (casing) feature: validation entity F1 per arm.

The offline MiniLM is uncased, so it never sees the capitals that mark most names; `--word-shape`
(`TrainConfig.word_shape`) adds a learned embedding of each sub-token's casing in the raw text.
This trains both arms (`baseline`, `word_shape`) with `tfattn.training.loop.train` for each
seed, each in its own run folder under --runs (a finished run is reused, and a folder holding
another config is refused rather than silently mixed in), reads the entity report each run
wrote (`validation_scores.json`), prints per arm the mean and sd over seeds of the validation
entity F1 and of the F1 of PER, ORG, LOC and MISC, plus the paired per-seed difference, and
writes it all to --out.

    python bench/ner_word_shape.py --runs runs/ner_word_shape          # hours on 2 CPU cores
    python bench/ner_word_shape.py --runs /tmp/ner_ws_smoke --out /tmp/ner_ws_smoke/result.json \\
        --limit 40 --validation-limit 16 --epochs 1 --seeds 0      # smoke test
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfattn.pretrained import offline_minilm_path
from tfattn.runs.manifest import RunFinished
from tfattn.tasks.config import TrainConfig
from tfattn.training.loop import train

ARMS = {"baseline": False, "word_shape": True}
ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC")
DATA_DIR = REPO.parent / "shared" / "data" / "conll2003"


def run_config(args, arm, seed, backbone):
    return TrainConfig(
        task="ner",
        data=args.data,
        validation_data=args.validation_data,
        backbone=backbone,
        run_dir=str(Path(args.runs) / f"{arm}_seed{seed}"),
        word_shape=ARMS[arm],
        seed=seed,
        limit=args.limit,
        validation_limit=args.validation_limit,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
    )


def train_or_reuse(config):
    """Train the run unless its folder already holds it, finished (the run manifest checks that
    the config and data are the same; another config there is an error, not a reuse)."""
    print(f"run {config.run_dir}", flush=True)
    try:
        train(config)
    except RunFinished:
        print("  finished already: reusing it")
    return json.loads((Path(config.run_dir) / "validation_scores.json").read_text())


def mean_sd(values):
    values = list(values)
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def run_scores(report):
    return {"f1": report["f1"], **{name: report["per_type"][name]["f1"] for name in ENTITY_TYPES}}


def summarize(runs):
    """Mean and sd over seeds of each score, from `[{"scores": {...}}, ...]`."""
    return {name: mean_sd(run["scores"][name] for run in runs) for name in ("f1", *ENTITY_TYPES)}


def table(summaries):
    columns = ("f1", *ENTITY_TYPES)
    lines = [f"{'arm':<22} {'runs':>4} " + " ".join(f"{'entity F1' if c == 'f1' else c:>17}" for c in columns)]
    for name, (count, summary) in summaries.items():
        cells = " ".join(f"{summary[c]['mean']:>8.4f} ± {summary[c]['sd']:<6.4f}" for c in columns)
        lines.append(f"{name:<22} {count:>4} {cells}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA_DIR / "train.txt"))
    parser.add_argument("--validation-data", default=str(DATA_DIR / "valid.txt"))
    parser.add_argument("--backbone", default=None, help="checkpoint folder (default: the offline MiniLM)")
    parser.add_argument("--runs", default=str(REPO / "runs" / "ner_word_shape"), help="folder of the run folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--limit", type=int, default=None, help="train on the first LIMIT sentences only")
    parser.add_argument("--validation-limit", type=int, default=None, help="validate on the first N sentences")
    parser.add_argument("--epochs", type=int, default=None, help="default: the NER task's (3)")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the NER task's (5e-5)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "ner_word_shape.json"))
    args = parser.parse_args()

    backbone = args.backbone or str(offline_minilm_path())
    # Seed by seed, both arms, so a cut-short comparison still holds complete pairs.
    reports = {}
    for seed in args.seeds:
        for arm in ARMS:
            reports[arm, seed] = train_or_reuse(run_config(args, arm, seed, backbone))
    arms = {}
    for arm in ARMS:
        runs = []
        for seed in args.seeds:
            config = run_config(args, arm, seed, backbone)
            report = reports[arm, seed]
            runs.append(
                {
                    "seed": seed,
                    "run_dir": config.run_dir,
                    "scores": run_scores(report),
                    "precision": report["precision"],
                    "recall": report["recall"],
                    "support": report["support"],
                }
            )
        arms[arm] = {"runs": runs, **summarize(runs)}

    # Paired by seed: both arms of a seed share data order and initial encoder weights.
    differences = [
        {name: shaped["scores"][name] - plain["scores"][name] for name in ("f1", *ENTITY_TYPES)}
        for plain, shaped in zip(arms["baseline"]["runs"], arms["word_shape"]["runs"])
    ]
    difference = {name: mean_sd(d[name] for d in differences) for name in ("f1", *ENTITY_TYPES)}

    resolved = run_config(args, "baseline", args.seeds[0], backbone).resolve()
    result = {
        "command": " ".join(["python", "bench/ner_word_shape.py", *sys.argv[1:]]),
        "settings": {
            "data": args.data,
            "validation_data": args.validation_data,
            "backbone": backbone,
            "seeds": args.seeds,
            "limit": args.limit,
            "validation_limit": args.validation_limit,
            "epochs": resolved.epochs,
            "learning_rate": resolved.learning_rate,
            "batch_size": resolved.batch_size,
            "max_length": resolved.max_length,
        },
        "arms": arms,
        "difference_word_shape_minus_baseline": {"per_seed": differences, **difference},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"validation entity F1, mean ± sd over seeds {' '.join(map(str, args.seeds))}")
    print(
        table(
            {
                **{arm: (len(arms[arm]["runs"]), arms[arm]) for arm in ARMS},
                "word_shape - baseline": (len(differences), difference),
            }
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
