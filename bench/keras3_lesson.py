"""The course's AG News lesson in Keras 3 against tfattn's tf-keras model, over the same seeds.

For each seed: `scripts/keras3_lesson.py` (Keras 3, tfattn.keras3's layers, `model.fit`) in a
subprocess of its own, and `tfattn train agnews` from scratch with its defaults (tf-keras,
tfattn.layers) through `bench/scratch_recipes.py`'s runner, both on the seed's stratified 10%
validation split of `../shared/data/ag_news/train.csv`. Prints the validation accuracies with
their mean and spread (sample standard deviation) and writes them as JSON.

    python bench/keras3_lesson.py --seeds 0 1 2 --json bench/results/keras3_lesson.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from machine import cpu_model  # noqa: E402
from scratch_recipes import TASK_DATA, run_one  # noqa: E402


def keras3_lesson(seed, folder):
    out = Path(folder) / f"lesson_{seed}.json"
    command = [sys.executable, str(REPO / "scripts" / "keras3_lesson.py"), "--data", str(TASK_DATA["agnews"])]
    subprocess.run([*command, "--seed", str(seed), "--json", str(out)], check=True)
    return json.loads(out.read_text())


def summary(values):
    return {"mean": round(statistics.mean(values), 4), "spread": round(statistics.stdev(values), 4)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        lesson = [keras3_lesson(seed, folder) for seed in args.seeds]
        tf_keras_runs = [run_one("agnews", "default", seed, folder) for seed in args.seeds]
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "seeds": args.seeds,
        "keras3_lesson": lesson,
        "tfattn_tf_keras": tf_keras_runs,
        "keras3_lesson_accuracy": summary([run["validation_accuracy"] for run in lesson]),
        "tfattn_tf_keras_accuracy": summary([run["validation_accuracy"] for run in tf_keras_runs]),
    }
    for name in ("keras3_lesson", "tfattn_tf_keras"):
        accuracy = result[f"{name}_accuracy"]
        each = ", ".join(f"{run['validation_accuracy']:.4f}" for run in result[name])
        print(f"{name}: validation accuracy {accuracy['mean']:.4f} ± {accuracy['spread']:.4f} ({each})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
