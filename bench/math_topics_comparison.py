"""Math-problem topics: pretrained MiniLM frozen vs fine-tuned vs the from-scratch transformer.

All three train on the same stratified split of ../shared/data/math_topics/train.jsonl (10%
validation, seed 0). Finished runs under --runs are reused, so an interrupted comparison picks
up where it stopped. Prints per-epoch tables (loss, accuracy, validation loss/accuracy/macro-F1)
and writes them, the final validation reports and before/after attention plots to --out.

    python bench/math_topics_comparison.py --runs runs/math
    python bench/math_topics_comparison.py --runs /tmp/math_smoke --out /tmp/math_smoke --limit 60  # smoke test
"""

import argparse
import csv
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfattn.attention import extract_attention  # noqa: E402
from tfattn.plotting import plot_attention_comparison  # noqa: E402
from tfattn.pretrained import offline_minilm_path  # noqa: E402
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.tasks.encoder_task import load_run  # noqa: E402
from tfattn.training.loop import train  # noqa: E402

EXAMPLES = [
    "What is the probability that a fair coin lands heads exactly twice in three tosses?",
    "Find the area of a triangle with sides 5, 12 and 13.",
]


def run_configs(data, runs, backbone, limit=None):
    common = dict(task="math", data=data, limit=limit)
    return {
        "from-scratch transformer": TrainConfig(run_dir=str(runs / "scratch"), **common),
        # all-MiniLM-L6-v2 was trained as a sentence encoder with mean pooling, as the course uses.
        "MiniLM frozen": TrainConfig(
            run_dir=str(runs / "frozen"), backbone=backbone, freeze=True, pooling="mean", epochs=3, **common
        ),
        "MiniLM fine-tuned": TrainConfig(
            run_dir=str(runs / "finetuned"),
            backbone=backbone,
            pooling="mean",
            # 14.5% of the problems run past 128 word pieces; their endings often name the topic.
            max_length=256,
            epochs=5,
            learning_rate=1e-4,
            **common,
        ),
    }


def read_history(run_dir):
    with open(Path(run_dir) / "history.csv") as handle:
        return list(csv.DictReader(handle))


def markdown_table(name, history):
    columns = ["loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1", "examples_per_second"]
    lines = [f"**{name}**", "", "| epoch | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in history:
        cells = [f"{float(row[c]):.4f}" if c != "examples_per_second" else f"{float(row[c]):.1f}" for c in columns]
        lines.append(f"| {int(row['epoch']) + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "math_topics" / "train.jsonl"))
    parser.add_argument("--runs", default=str(REPO / "runs" / "math"), help="folder of the three run folders")
    parser.add_argument("--backbone", default=None, help="checkpoint folder (default: the offline MiniLM)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "math_topics"))
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="smoke test: train on a random subset of this many problems (use a separate --runs)",
    )
    args = parser.parse_args()

    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = run_configs(args.data, runs, args.backbone or str(offline_minilm_path()), args.limit)
    for name, config in configs.items():
        if (Path(config.run_dir) / "validation_scores.json").exists():
            print(f"reusing finished run: {name} ({config.run_dir})")
        else:
            print(f"training: {name}", flush=True)
            train(config)

    summary, tables = {}, []
    for name, config in configs.items():
        metrics = json.loads((Path(config.run_dir) / "validation_scores.json").read_text())
        history = read_history(config.run_dir)
        summary[name] = {
            "validation_accuracy": metrics["accuracy"],
            "validation_macro_f1": metrics["macro_f1"],
            "validation_examples": metrics["num_examples"],
            "epochs": len(history),
            "history": history,
            "run_dir": config.run_dir,
        }
        tables.append(markdown_table(name, history))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    overview = "| model | validation accuracy | macro-F1 |\n|---|---|---|\n" + "\n".join(
        f"| {name} | {s['validation_accuracy']:.4f} | {s['validation_macro_f1']:.4f} |" for name, s in summary.items()
    )
    report = "\n\n".join([overview] + tables)
    (out / "tables.md").write_text(report + "\n")
    print(report)

    # First-layer attention of the same texts before (frozen = pretrained weights) and after fine-tuning.
    before = extract_attention(load_run(configs["MiniLM frozen"].run_dir)[0], EXAMPLES)
    after = extract_attention(load_run(configs["MiniLM fine-tuned"].run_dir)[0], EXAMPLES)
    for index, (b, a) in enumerate(zip(before, after)):
        path = plot_attention_comparison(
            b.attention,
            a.attention,
            a.tokens,
            out / f"attention_before_after_{index}.png",
            layer=0,
            heads=[0, 1, 2, 3],
            labels=("pretrained (frozen)", "fine-tuned"),
            title=a.text,
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
