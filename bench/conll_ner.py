"""CoNLL-2003 NER: fine-tune the offline MiniLM, entity F1 per type on valid.txt, and speed.

Trains with `tfattn.training.loop.train` (task "ner"; a finished run under --run-dir is reused),
then reports the validation scores the run wrote, training examples/s per epoch from its
history.csv, inference sentences/s of `EntityTagger` on raw validation sentences (in-graph
tokenization with offsets, forward pass, grouping), and two checks of the model contract:
- the run's model scored again from raw text (`tfattn evaluate`'s path) gives the same F1;
- its SavedModel, reloaded in a fresh interpreter that imports only tensorflow and
  tensorflow_text, gives the same entities and offsets as `EntityTagger` on 200 sentences.

    python bench/conll_ner.py --run-dir runs/ner_minilm --no-word-shape
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
from tfattn.pretrained import offline_minilm_path  # noqa: E402
from tfattn.serving.classifiers import export_model  # noqa: E402
from tfattn.tagging import (
    format_entity_report,  # noqa: E402
    group_entities,  # noqa: E402
)
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.tasks.encoder_task import load_run  # noqa: E402
from tfattn.tasks.ner import EntityTagger, evaluate_sentences  # noqa: E402
from tfattn.training.loop import train  # noqa: E402

# Runs in a fresh interpreter: the export must serve with TensorFlow and its text ops alone.
SERVE_SCRIPT = """
import sys, json
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the WordPiece/regex ops the SavedModel uses)
assert not any(name.startswith("tfattn") for name in sys.modules)
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
texts = json.load(open(sys.argv[2], encoding="utf-8"))
out = serve(texts=tf.constant(texts))
np.savez(sys.argv[3], **{name: value.numpy() for name, value in out.items() if name not in ("labels", "label_names")})
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "conll2003" / "train.txt"))
    parser.add_argument("--backbone", default=None, help="checkpoint folder (default: the offline MiniLM)")
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "ner_minilm"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--word-shape",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the casing feature (default: the ner task's, on); the README's row is --no-word-shape",
    )
    parser.add_argument("--inference-sentences", type=int, default=1024)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "conll_ner.json"))
    args = parser.parse_args()

    run_dir = Path(args.run_dir)
    config = TrainConfig(
        task="ner",
        data=args.data,
        backbone=args.backbone or str(offline_minilm_path()),
        run_dir=str(run_dir),
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        word_shape=args.word_shape,
    )
    if (run_dir / "validation_scores.json").exists():
        print(f"reusing finished run {run_dir}")
    else:
        train(config)
    scores = json.loads((run_dir / "validation_scores.json").read_text())
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

    contract = check_contract(run_dir, sentences, texts[:200], scores)

    result = {
        "command": "python bench/conll_ner.py --run-dir " + str(args.run_dir),
        "contract_checks": contract,
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
        print(
            f"{int(row['epoch']) + 1} | {float(row['loss']):.4f} | {float(row['masked_token_accuracy']):.4f} | "
            f"{float(row['val_entity_f1']):.4f} | {float(row['examples_per_second']):.1f}"
        )
    print(
        f"training {result['training_examples_per_second_median']:.1f} examples/s (median epoch); "
        f"inference {inference_rate:.1f} sentences/s (batch 32, {len(texts)} sentences)"
    )
    print(
        f"raw-text rescoring F1 {contract['raw_text_f1']:.4f} (run's validation F1 {scores['f1']:.4f}); "
        f"export vs EntityTagger on {contract['export_sentences']} sentences: "
        f"{contract['export_matching_sentences']} identical, {contract['export_entities']} entities"
    )
    print(f"wrote {args.out}")


def check_contract(run_dir, sentences, texts, scores):
    """Raw-text rescoring of the validation file, and the export served without tfattn."""
    import subprocess
    import tempfile

    import numpy as np

    model, label_names, _ = load_run(run_dir)
    raw_text_f1 = evaluate_sentences(model, sentences)["f1"]
    tagger = EntityTagger(model.tag_tokens, label_names)
    expected = tagger(texts)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        export_model(model, label_names, work / "export")
        (work / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
        subprocess.run(
            [sys.executable, "-c", SERVE_SCRIPT, str(work / "export"), str(work / "texts.json"), str(work / "out.npz")],
            check=True,
        )
        served = np.load(work / "out.npz")
        from_export = [
            group_entities(
                text,
                served["offsets"][row],
                served["probabilities"][row],
                label_names,
                word_ids=served["word_ids"][row],
                aggregation_strategy="first",
            )
            for row, text in enumerate(texts)
        ]

    def same(a, b):
        return len(a) == len(b) and all(
            (x["entity_group"], x["start"], x["end"], x["word"]) == (y["entity_group"], y["start"], y["end"], y["word"])
            and abs(x["score"] - y["score"]) < 1e-5
            for x, y in zip(a, b)
        )

    matching = sum(same(a, b) for a, b in zip(expected, from_export))
    return {
        "raw_text_f1": raw_text_f1,
        "run_validation_f1": scores["f1"],
        "export_sentences": len(texts),
        "export_matching_sentences": matching,
        "export_entities": sum(len(e) for e in expected),
    }


if __name__ == "__main__":
    main()
