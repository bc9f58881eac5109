"""Which attention view should a user trust? Deletion faithfulness of token rankings, per family.

For each trained text classifier (default: AG News from scratch, MiniLM through Hugging Face,
MiniLM through TF-Hub) and the first --texts texts of its own validation split, the text's
tokens (special tokens never) are ranked four ways: raw last-layer attention (mean over heads),
attention rollout, gradient-weighted attention (`tfattn.attention.token_importance`), and at
random (seeded). Raw and rollout read the rows the head reads: `[CLS]` for cls/pooled pooling,
every token for mean pooling. Then, with p the predicted class's probability (ERASER, DeYoung
et al. 2020), for k in 1, 5, 10, 20, 50% of the tokens (at least one):

- comprehensiveness = p(x) - p(x without the top k): higher means the ranking found what the
  prediction rests on; AOPC is its mean over the k.
- sufficiency = p(x) - p(only the top k): lower is better.
- Kendall tau between the ranking's scores and leave-one-out importance p(x) - p(x without
  token i), per text, averaged over texts.

Deleting works on token ids: the deleted positions are removed and the row closes up, as if the
text never had those tokens (a row left empty reads as one `[UNK]`, as the preprocessor does).

    .venv/bin/python bench/attention_faithfulness.py [--texts 500] [--runs NAME=RUN_DIR ...]

Writes bench/results/attention_faithfulness.json (after each run) and prints a Markdown table.
A run already in that file with the same --texts and --seed is reused, not measured again
(`--rerun` measures it again). The figures quoted in the explorer's legend
(`tfattn.explorer.FAITHFULNESS`) are checked against this file by the tests.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfattn.quiet import start_tensorflow  # noqa: E402

start_tensorflow(verbose=False)

import tensorflow as tf  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from tfattn.attention import IMPORTANCE_METHODS, attention_and_gradients, special_token_mask, token_importance  # noqa: E402
from tfattn.explorer import family_name  # noqa: E402
from tfattn.models import TextClassifier  # noqa: E402
from tfattn.models.preprocessors import VocabularyPreprocessor, tokens_of  # noqa: E402
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.tasks.encoder_task import load_run  # noqa: E402
from tfattn.tasks.registry import task_of  # noqa: E402

DEFAULT_RUNS = ("from_scratch=runs/agnews", "huggingface=runs/agnews_minilm", "tfhub=runs/agnews_hub")
FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)
METHODS = (*IMPORTANCE_METHODS, "random")
UNKNOWN_ID = 1  # VocabularyPreprocessor's [UNK]: what an empty text reads as


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="NAME=RUN_DIR of text classifiers")
    parser.add_argument("--texts", type=int, default=500, help="validation texts per run (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random ranking")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rerun", action="store_true", help="measure runs already in --out again")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "attention_faithfulness.json"))
    args = parser.parse_args(argv)

    out = Path(args.out)
    # A run already measured with the same settings is reused, not redone: --rerun to measure again.
    stored = json.loads(out.read_text()) if out.is_file() else {}
    same_settings = (stored.get("texts"), stored.get("seed")) == (args.texts, args.seed)
    results = stored.get("runs", {}) if same_settings else {}
    for spec in args.runs:
        name, _, run_dir = spec.partition("=")
        if name in results and results[name]["run"] == run_dir and not args.rerun:
            print(f"{name}: reusing the figures in {out} (--rerun to measure again)")
            continue
        started = time.perf_counter()
        results[name] = measure_run(run_dir, args.texts, args.seed, args.batch_size)
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name}: done in {results[name]['seconds']:.0f} s", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"texts": args.texts, "seed": args.seed, "runs": results}, indent=2) + "\n")
    print(markdown_table(results))
    print(f"results in {out}")


def classifier_and_validation_texts(run_dir, num_texts):
    """The text classifier of a run folder and the first `num_texts` texts of its own validation
    split (the split `tfattn train` carved, from the run's saved config). Also used by
    bench/attention_uniformity.py."""
    model, label_names, config = load_run(run_dir)
    if not isinstance(model, TextClassifier):
        raise SystemExit(f"{run_dir}: a token classifier; this benchmark reads one label per text")
    return model, task_of(TrainConfig.from_dict(config)).validation_examples(label_names).texts[:num_texts]


def measure_run(run_dir, num_texts, seed, batch_size):
    """The faithfulness figures of one run (see the module docstring)."""
    model, texts = classifier_and_validation_texts(run_dir, num_texts)
    rng = np.random.default_rng(seed)
    vocabulary = np.asarray(model.preprocessor.vocabulary, dtype=object)

    # 1. Rankings: each text's token ids and, per method, its candidate positions in rank order.
    texts_info = []
    for start in range(0, len(texts), 16):
        features = model.features(texts[start : start + 16])
        result = attention_and_gradients(model, features)
        ids, types = features["input_word_ids"].numpy(), features["input_type_ids"].numpy()
        lengths = features["input_mask"].numpy().sum(axis=1)
        for row, length in enumerate(lengths):
            attention = result["attention"][row, :, :, :length, :length]
            gradients = result["gradients"]
            gradients = None if gradients is None else gradients[row, :, :, :length, :length]
            special = special_token_mask(tokens_of(vocabulary, ids[row, :length]))
            candidates = np.flatnonzero(~special)
            read_rows = _read_rows(model, length)
            scores = {
                method: token_importance(method, attention, read_rows, gradients)
                for method in IMPORTANCE_METHODS
                if method != "gradient" or gradients is not None
            }
            scores["random"] = rng.random(length)
            texts_info.append(
                {
                    "ids": ids[row, :length],
                    "types": types[row, :length],
                    "candidates": candidates,
                    "scores": scores,
                }
            )
        print(f"  {run_dir}: ranked {len(texts_info)}/{len(texts)} texts", flush=True)

    # 2. Every variant row to score: the text itself, leave-one-out, top-k deleted and top-k kept.
    rows, keys = [], []
    for index, info in enumerate(texts_info):
        everything = np.arange(len(info["ids"]))
        candidates = info["candidates"]
        rows.append(everything)
        keys.append((index, "full", None, None))
        for position in candidates:
            rows.append(everything[everything != position])
            keys.append((index, "loo", int(position), None))
        for method, scores in info["scores"].items():
            ranked = candidates[np.argsort(-scores[candidates], kind="stable")]
            for fraction in FRACTIONS:
                top = ranked[: max(1, math.ceil(fraction * len(ranked)))]
                rows.append(everything[~np.isin(everything, top)])
                keys.append((index, "comprehensiveness", method, fraction))
                rows.append(everything[~np.isin(everything, np.setdiff1d(candidates, top))])
                keys.append((index, "sufficiency", method, fraction))
    probabilities = _probabilities(model, texts_info, rows, keys, batch_size)

    # 3. The figures.
    full = {index: p for (index, kind, _, _), p in zip(keys, probabilities) if kind == "full"}
    per_method = {method: {"comprehensiveness": [], "sufficiency": []} for method in METHODS}
    loo = {}
    # A key is (text index, kind, the position deleted or the ranking method, the fraction).
    for (index, kind, what, _), p in zip(keys, probabilities):
        if kind == "loo":
            loo.setdefault(index, {})[what] = full[index] - p
        elif kind in ("comprehensiveness", "sufficiency"):
            per_method[what][kind].append(full[index] - p)
    figures = {}
    for method in METHODS:
        if not per_method[method]["comprehensiveness"]:
            continue  # gradient, where the family has none
        taus = []
        for index, info in enumerate(texts_info):
            candidates = info["candidates"]
            if len(candidates) < 2:
                continue
            importance = [loo[index][int(position)] for position in candidates]
            tau = kendalltau(info["scores"][method][candidates], importance).statistic
            if not np.isnan(tau):
                taus.append(tau)
        figures[method] = {
            "aopc_comprehensiveness": round(float(np.mean(per_method[method]["comprehensiveness"])), 4),
            "aopc_sufficiency": round(float(np.mean(per_method[method]["sufficiency"])), 4),
            "kendall_tau_vs_leave_one_out": round(float(np.mean(taus)), 4),
        }
    ranked = [method for method in figures if method != "random"]
    best = max(ranked, key=lambda method: figures[method]["aopc_comprehensiveness"])
    return {
        "run": str(run_dir),
        "family": family_name(model),
        "pooling": model.pooling,
        "texts": len(texts_info),
        "mean_tokens": round(float(np.mean([len(info["candidates"]) for info in texts_info])), 1),
        "mean_probability": round(float(np.mean(list(full.values()))), 4),
        "methods": figures,
        "best_by_comprehensiveness": best,
    }


def _read_rows(model, length):
    """How much the head reads each position's output: `[CLS]` alone, or every token alike."""
    if model.pooling == "mean":
        return np.full(length, 1.0 / length, np.float32)
    rows = np.zeros(length, np.float32)
    rows[0] = 1.0
    return rows


def _probabilities(model, texts_info, rows, keys, batch_size):
    """p(the full text's predicted class) of every variant row."""
    empty_id = UNKNOWN_ID if isinstance(model.preprocessor, VocabularyPreprocessor) else None

    def score(indices):
        """Class probabilities of the given rows, batched by length (less padding)."""
        indices = sorted(indices, key=lambda i: len(rows[i]))
        result, started = {}, time.perf_counter()
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            features = _padded_features(
                [texts_info[keys[i][0]]["ids"][rows[i]] for i in batch],
                [texts_info[keys[i][0]]["types"][rows[i]] for i in batch],
                empty_id,
            )
            logits = model.forward(features, training=False)["logits"]
            result.update(zip(batch, tf.nn.softmax(logits).numpy()))
            if start // batch_size % 100 == 99:
                print(f"  scored {start + len(batch)}/{len(indices)} rows ({time.perf_counter() - started:.0f} s)")
        return result

    full = score([i for i, key in enumerate(keys) if key[1] == "full"])
    predicted = {keys[i][0]: int(p.argmax()) for i, p in full.items()}
    scored = {**full, **score([i for i, key in enumerate(keys) if key[1] != "full"])}
    return np.array([scored[i][predicted[keys[i][0]]] for i in range(len(rows))], np.float32)


def _padded_features(id_rows, type_rows, empty_id):
    """The padded feature dict of id rows of different lengths (a row left empty reads as
    `[UNK]`), made as the preprocessors make theirs: ragged rows, then `to_tensor`."""
    if empty_id is not None:
        type_rows = [types if len(row) else np.zeros(1, np.int64) for row, types in zip(id_rows, type_rows)]
        id_rows = [row if len(row) else np.array([empty_id]) for row in id_rows]
    lengths = [len(row) for row in id_rows]
    ids = tf.RaggedTensor.from_row_lengths(np.concatenate(id_rows).astype(np.int32), lengths)
    types = tf.RaggedTensor.from_row_lengths(np.concatenate(type_rows).astype(np.int32), lengths)
    return {
        "input_word_ids": ids.to_tensor(),
        "input_mask": tf.ones_like(ids).to_tensor(),
        "input_type_ids": types.to_tensor(),
    }


def markdown_table(results):
    lines = [
        "| run | family | pooling | method | AOPC comprehensiveness (higher better) | AOPC sufficiency (lower better) "
        "| Kendall tau vs leave-one-out |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for method, figures in result["methods"].items():
            best = " **(best)**" if method == result["best_by_comprehensiveness"] else ""
            lines.append(
                f"| {name} | {result['family']} | {result['pooling']} | {method}{best} "
                f"| {figures['aopc_comprehensiveness']:.4f} | {figures['aopc_sufficiency']:.4f} "
                f"| {figures['kendall_tau_vs_leave_one_out']:.4f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
