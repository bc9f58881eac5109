"""CoNLL-2003 NER: fine-tune the offline MiniLM, entity F1 per type on valid.txt, and speed.

Trains with `tfattn.tasks.ner.train_ner` (a finished run under --run-dir is reused), then reports
the validation scores the run wrote, training examples/s per epoch from its history.csv, and
inference sentences/s of `EntityTagger` on raw validation sentences (tokenize, forward, group).

    python bench/conll_ner.py --run-dir runs/ner_minilm
"""

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfattn.data import read_conll  # noqa: E402
from tfattn.ner import format_entity_report  # noqa: E402
from tfattn.pretrained import offline_minilm_path  # noqa: E402
from tfattn.tasks.ner import EntityTagger, NerConfig, train_ner  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "conll2003" / "train.txt"))
    parser.add_argument("--backbone", default=None, help="checkpoint folder (default: the offline MiniLM)")
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "ner_minilm"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--inference-sentences", type=int, default=1024)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "conll_ner.json"))
    args = parser.parse_args()

    run_dir = Path(args.run_dir)
    config = NerConfig(
        data=args.data, backbone=args.backbone or str(offline_minilm_path()), run_dir=str(run_dir),
        epochs=args.epochs, learning_rate=args.learning_rate,
    )
    if (run_dir / "validation_entities.json").exists():
        print(f"reusing finished run {run_dir}")
    else:
        train_ner(config)
    scores = json.loads((run_dir / "validation_entities.json").read_text())
    with open(run_dir / "history.csv") as handle:
        history = list(csv.DictReader(handle))

    # Inference on raw text: validation sentences joined back with spaces.
    sentences = read_conll(config.resolve().validation_data)
    texts = [" ".join(words) for words in sentences.words[: args.inference_sentences]]
    tagger = EntityTagger.from_run(run_dir)
    tagger(texts[:32])  # trace and warm up
    start = time.perf_counter()
    tagger(texts, batch_size=32)
    inference_rate = len(texts) / (time.perf_counter() - start)

    result = {
        "command": "python bench/conll_ner.py --run-dir " + str(args.run_dir),
        "validation": scores,
        "history": history,
        "training_examples_per_second_median": statistics.median(float(r["examples_per_second"]) for r in history),
        "inference_sentences_per_second": inference_rate,
        "inference_batch_size": 32,
        "inference_sentences": len(texts),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(format_entity_report(scores))
    print("epoch | loss | token acc | val entity F1 | examples/s")
    for row in history:
        print(f"{int(row['epoch']) + 1} | {float(row['loss']):.4f} | {float(row['masked_token_accuracy']):.4f} | "
              f"{float(row['val_entity_f1']):.4f} | {float(row['examples_per_second']):.1f}")
    print(f"training {result['training_examples_per_second_median']:.1f} examples/s (median epoch); "
          f"inference {inference_rate:.1f} sentences/s (batch 32, {len(texts)} sentences)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
