"""How far from uniform is a trained classifier's attention? Per layer, over its validation texts.

The explorer once stretched every map's colour scale from its smallest to its largest weight, so
a map whose weights all lie within 2% of 1/n looked as selective as a sharp one. This benchmark
measures what the maps really are, with the measure the explorer now shows beside every map
(`tfattn.attention.attention_uniformity`): each query row's entropy over log(n), averaged over
the rows, 1.0 for a uniform map and 0.0 for one where every row sits on one key.

For each run (default: the from-scratch AG News model and the fine-tuned MiniLM) and the first
--texts texts of the run's own validation split (loaded as bench/attention_faithfulness.py loads
them), every layer's attention is taken with padding removed, special tokens included (as the
page shows it by default), and reported per layer as means over the texts:

- `per_head`: the uniformity of each head's map, averaged over heads (the raw per-head view);
- `least_uniform_head`: the head whose mean over the texts is lowest, and that mean;
- `head_mean_map`: the uniformity of the mean over heads (the "mean over heads" view);
- `per_head_special_hidden`: as `per_head` after dropping `[CLS]`/`[SEP]` rows and columns and
  renormalizing the rows (the page's "hide special tokens"); the same as `per_head` for a model
  without special tokens;
- `largest_weight_x_n`: each row's largest weight times n, averaged over rows and heads: 1 for a
  uniform row, n for a one-hot row.

Reference values are computed with the same function at each run's mean token count: uniform,
every weight within 2% of 1/n, all weight spread evenly over half of the keys, and one-hot.

    .venv/bin/python bench/attention_uniformity.py [--texts 500] [--runs NAME=RUN_DIR ...]

Writes bench/results/attention_uniformity.json and prints a Markdown table.
"""

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
from attention_faithfulness import ROOT, classifier_and_validation_texts
from machine import cpu_model
from result_file import write_result

from tfattn.attention import (
    attention_uniformity,
    extract_attention,
    hide_special_tokens,
    mean_over_heads,
    special_token_mask,
)
from tfattn.explorer import family_name

DEFAULT_RUNS = ("from_scratch=runs/agnews", "huggingface=runs/agnews_minilm")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="NAME=RUN_DIR of text classifiers")
    parser.add_argument("--texts", type=int, default=500, help="validation texts per run (default 500)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "attention_uniformity.json"))
    args = parser.parse_args(argv)

    started = time.perf_counter()
    runs = {}
    for spec in args.runs:
        name, _, run_dir = spec.partition("=")
        run_started = time.perf_counter()
        runs[name] = measure_run(run_dir, args.texts, args.batch_size)
        runs[name]["seconds"] = round(time.perf_counter() - run_started, 1)
        print(f"{name}: done in {runs[name]['seconds']:.0f} s", flush=True)
    result = {"texts": args.texts, "date": datetime.date.today().isoformat(), "cpu": cpu_model(), "runs": runs}
    write_result(result, args.out, started, to_markdown=markdown_table, echo_keys=["texts"])


def measure_run(run_dir, num_texts, batch_size):
    """The per-layer uniformity figures of one run (see the module docstring)."""
    model, texts = classifier_and_validation_texts(run_dir, num_texts)
    per_text = []  # one dict of per-layer arrays per text
    for text in extract_attention(model, texts, batch_size=batch_size):
        attention = text.attention  # [layers, heads, n, n], padding removed
        special = special_token_mask(text.tokens)
        shown = hide_special_tokens(attention, special) if special.any() and not special.all() else attention
        per_text.append(
            {
                "per_head": attention_uniformity(attention),  # [layers, heads]
                "head_mean_map": attention_uniformity(mean_over_heads(attention)),  # [layers]
                "per_head_special_hidden": attention_uniformity(shown),
                "largest_weight_x_n": attention.max(axis=-1).mean(axis=(1, 2)) * attention.shape[-1],  # [layers]
                "tokens": attention.shape[-1],
            }
        )
    per_head = np.mean([figures["per_head"] for figures in per_text], axis=0)  # [layers, heads]
    layers = []
    for layer in range(per_head.shape[0]):
        least = int(per_head[layer].argmin())
        layers.append(
            {
                "layer": layer,
                "per_head": _mean(figures["per_head"][layer].mean() for figures in per_text),
                "least_uniform_head": {"head": least, "per_head": round(float(per_head[layer, least]), 6)},
                "head_mean_map": _mean(figures["head_mean_map"][layer] for figures in per_text),
                "per_head_special_hidden": _mean(
                    figures["per_head_special_hidden"][layer].mean() for figures in per_text
                ),
                "largest_weight_x_n": _mean(figures["largest_weight_x_n"][layer] for figures in per_text),
            }
        )
    mean_tokens = float(np.mean([figures["tokens"] for figures in per_text]))
    metrics = Path(run_dir) / "validation_scores.json"  # what `tfattn train` reported for the run
    return {
        "run": str(run_dir),
        "family": family_name(model),
        "validation_accuracy": round(json.loads(metrics.read_text())["accuracy"], 4) if metrics.is_file() else None,
        "texts": len(per_text),
        "heads": int(per_head.shape[1]),
        "mean_tokens": round(mean_tokens, 1),
        "layers": layers,
        "reference": reference_maps(round(mean_tokens)),
    }


def reference_maps(n):
    """What `attention_uniformity` gives some hand-made `[n, n]` maps, for judging the figures."""
    within_2_percent = np.where(np.arange(n) % 2 == 0, 1.02, 0.98) / n  # every weight 2% off 1/n
    half = np.where(np.arange(n) < n // 2, 1.0, 0.0)  # all weight spread evenly over half the keys
    rows = {
        "uniform": np.full(n, 1.0 / n),
        "within_2_percent_of_uniform": within_2_percent,
        "half_of_the_keys": half / half.sum(),
        "one_hot": np.eye(1, n)[0],
    }
    return {
        "tokens": n,
        **{name: round(float(attention_uniformity(np.tile(row, (n, 1)))), 6) for name, row in rows.items()},
    }


def _mean(values):
    return round(float(np.mean(list(values))), 6)


def markdown_table(result):
    lines = [
        "| run | layer | uniformity per head (mean) | least uniform head | mean-over-heads map "
        "| per head, [CLS]/[SEP] hidden | largest weight x n |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in result["runs"].items():
        for layer in run["layers"]:
            least = layer["least_uniform_head"]
            lines.append(
                f"| {name} ({run['family']}, {run['mean_tokens']} tokens) | {layer['layer']} "
                f"| {layer['per_head']:.6f} | head {least['head']}: {least['per_head']:.6f} "
                f"| {layer['head_mean_map']:.6f} | {layer['per_head_special_hidden']:.6f} "
                f"| {layer['largest_weight_x_n']:.3f} |"
            )
    for name, run in result["runs"].items():
        reference = ", ".join(f"{key} {value:.6f}" for key, value in run["reference"].items() if key != "tokens")
        lines.append(f"\nReference maps at {run['reference']['tokens']} tokens ({name}): {reference}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
