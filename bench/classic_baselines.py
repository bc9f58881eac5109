"""The classic bar: TF-IDF word 1-2 grams + logistic regression on AG News and math topics.

Uses the exact splits `tfattn train` uses (stratified 10% validation, seed 0, via
`ClassificationTask.load_splits`), so its validation accuracy and macro-F1 sit beside the
neural runs' figures. The regularisation strength C is chosen by 5-fold cross-validation on
the training part only, so the validation split stays unseen until it is scored.

    python bench/classic_baselines.py --seeds 0 1 2 --out bench/results/classic_baselines.json
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from tfattn.evaluation import classification_metrics  # noqa: E402
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.tasks.registry import task_of  # noqa: E402

DATA = REPO.parent / "shared" / "data"
TASKS = {"agnews": DATA / "ag_news" / "train.csv", "math": DATA / "math_topics" / "train.jsonl"}
C_GRID = [10, 30, 100]


def tfidf_baseline(train, seed):
    """A TF-IDF (word 1-2 grams, sublinear tf) + logistic regression pipeline fit on `train`,
    its C picked by 5-fold cross-validation on `train`."""
    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(max_iter=2000, random_state=seed),
    )
    search = GridSearchCV(pipeline, {"logisticregression__C": C_GRID}, cv=5, scoring="accuracy")
    search.fit(train.texts, train.labels)
    return search


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="split seeds (as tfattn train --seed)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    results = {}
    for task, data in TASKS.items():
        for seed in args.seeds:
            config = TrainConfig(task=task, data=str(data), seed=seed).resolve()
            train, validation = task_of(config).load_splits()
            start = time.perf_counter()
            search = tfidf_baseline(train, seed)
            seconds = time.perf_counter() - start
            report = classification_metrics(validation.labels, search.predict(validation.texts), validation.label_names)
            row = {
                "train_examples": len(train),
                "validation_examples": len(validation),
                "C": search.best_params_["logisticregression__C"],
                "cv_accuracy": round(float(search.best_score_), 4),
                "validation_accuracy": round(report.accuracy, 4),
                "validation_macro_f1": round(report.macro_f1, 4),
                "fit_seconds_with_cv": round(seconds, 1),
            }
            results.setdefault(task, {})[str(seed)] = row
            print(
                f"{task} seed {seed}: TF-IDF 1-2 grams + LogisticRegression (C={row['C']}, 5-fold CV "
                f"{row['cv_accuracy']:.4f}): validation accuracy {report.accuracy:.4f}, macro-F1 "
                f"{report.macro_f1:.4f} ({len(train)} train / {len(validation)} validation)",
                flush=True,
            )
        accuracy = [row["validation_accuracy"] for row in results[task].values()]
        macro_f1 = [row["validation_macro_f1"] for row in results[task].values()]
        print(
            f"{task}: mean over seeds {args.seeds}: accuracy {statistics.mean(accuracy):.4f} "
            f"(sd {statistics.stdev(accuracy) if len(accuracy) > 1 else 0:.4f}), "
            f"macro-F1 {statistics.mean(macro_f1):.4f}",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
