"""AG News through the TF-Hub path: export the offline MiniLM in TF-Hub format, train a
`TextClassifier` over it (`HubPreprocessor` + `HubEncoder`, pooled output) frozen for one
epoch, then fine-tune; validation accuracy after each phase.

The split is the one every AG News run uses (10% of ../shared/data/ag_news/train.csv, seed 0).
A finished export or run is reused.

    python bench/agnews_hub.py --runs runs
    python bench/agnews_hub.py --runs /tmp/hub_smoke --limit 64 --epochs 1 --out /tmp/hub_smoke.json  # smoke test
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

from tfattn.models.hub import export_hub_bert  # noqa: E402
from tfattn.pretrained import offline_minilm_path  # noqa: E402
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.training.loop import train  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ag_news" / "train.csv"))
    parser.add_argument("--runs", default=str(REPO / "runs"))
    parser.add_argument("--freeze-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs after the frozen ones")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="smoke test: train on a random subset of this many examples (use a separate --runs)",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "agnews_hub.json"))
    args = parser.parse_args()

    runs = Path(args.runs)
    hub_dir = runs / "hub_minilm"
    if not (hub_dir / "encoder" / "saved_model.pb").exists():
        export_hub_bert(offline_minilm_path(), hub_dir, overwrite=True)
    config = TrainConfig(
        task="agnews",
        data=args.data,
        run_dir=str(runs / "agnews_hub"),
        hub_preprocess=str(hub_dir / "preprocess"),
        hub_encoder=str(hub_dir / "encoder"),
        freeze_epochs=args.freeze_epochs,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        limit=args.limit,
    )
    run_dir = Path(config.run_dir)
    if (run_dir / "validation_scores.json").exists():
        print(f"reusing finished run {run_dir}")
    else:
        train(config)
    metrics = json.loads((run_dir / "validation_scores.json").read_text())
    with open(run_dir / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    for row in history:
        row["phase"] = "frozen" if int(row["epoch"]) < args.freeze_epochs else "fine-tuned"

    command = " ".join(["python", "bench/agnews_hub.py", *sys.argv[1:]])
    result = {"command": command, "validation": metrics, "history": history}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        "| epoch | phase | loss | accuracy | val accuracy | val macro-F1 | examples/s |\n|---|---|---|---|---|---|---|"
    )
    for row in history:
        print(
            f"| {int(row['epoch']) + 1} | {row['phase']} | {float(row['loss']):.4f} | {float(row['accuracy']):.4f} | "
            f"{float(row['val_accuracy']):.4f} | {float(row['val_macro_f1']):.4f} | "
            f"{float(row['examples_per_second']):.1f} |"
        )
    print(
        f"final (best epoch restored) validation accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f} on {metrics['num_examples']} texts; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
