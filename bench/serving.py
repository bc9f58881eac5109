"""Serving speed of tfattn's SavedModel exports against the eager Hugging Face path, in one process.

Every path serves the same texts: the first `--texts` of a seeded sample of AG News
(`ag_news/train.csv`) for the classifiers, and of CoNLL-2003 validation sentences (words joined
by spaces) for NER. Rounds alternate between paths so that machine noise hits all alike; each
round times every path at batch `--batch-size` (texts/s), and batch-1 requests (latency p50/p99)
are interleaved the same way.

Paths (the runs are exported by this script, with tfattn's `export_model`, into `--exports`):
- SavedModel, `tf.saved_model.load` + `serving_default`: "padded" exports pad a batch to its
  longest row (`bucket_rows=0`, the export before length buckets); "bucketed" ones are the
  default export (rows sorted by length, buckets of 16 each padded to its own longest row);
  "bf16" is the bucketed export with `dtype="bfloat16"`. Run from-scratch AG News classifier
  (`runs/agnews`), MiniLM AG News classifier (`runs/agnews_minilm`), MiniLM NER (`runs/ner_minilm`).
- eager Hugging Face (the course recipe) for the MiniLM classifier: fast tokenizer in Python
  (`padding=True, truncation=True, max_length=128, return_tensors="tf"`), `TFAutoModel` from the
  local MiniLM folder called eagerly, holding the run's encoder weights, then the run's pooling
  and Dense head and a softmax: the same probabilities as the export.
- `transformers.pipeline("text-classification", framework="tf")` over a
  `TFBertForSequenceClassification` with the run's encoder and head weights (its head reads
  BERT's pooler output, the run's model mean-pools: timed for speed, its labels may differ).
- graph forward (the limit): the run's MiniLM classifier in a `tf.function` on features
  tokenized beforehand, each batch in the export's length buckets: the encoder's cost alone.

FLOP/s count the encoder's matrix products on real tokens only (`bench/flops.py`), as a
fraction of this process's own dense matmul rate in the same dtype (best of 512, 1024 and 2048
squares, measured between rounds, median over rounds).

    python bench/serving.py --texts 1024 --rounds 3 --reuse-exports
"""

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402, F401  (the WordPiece exports' ops)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.flops import MINILM, encoder_forward_flops, matmul_rate  # noqa: E402
from bench.result_file import write_result  # noqa: E402
from tfattn.data.agnews import read_agnews_csv  # noqa: E402
from tfattn.data.conll import read_conll  # noqa: E402
from tfattn.pretrained import offline_minilm_path  # noqa: E402
from tfattn.serving.classifiers import DEFAULT_BUCKET_ROWS, export_model, in_length_buckets  # noqa: E402
from tfattn.tagging import entity_scores  # noqa: E402
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.tasks.encoder_task import load_run  # noqa: E402
from tfattn.tasks.registry import task_of  # noqa: E402

RUNS = {"scratch": "agnews", "minilm": "agnews_minilm", "ner": "ner_minilm"}
# (run, export options) of every exported path.
EXPORTS = {
    "scratch padded": ("scratch", {"bucket_rows": 0}),
    "scratch bucketed": ("scratch", {"bucket_rows": DEFAULT_BUCKET_ROWS}),
    "minilm padded": ("minilm", {"bucket_rows": 0}),
    "minilm bucketed": ("minilm", {"bucket_rows": DEFAULT_BUCKET_ROWS}),
    "minilm bucketed bf16": ("minilm", {"bucket_rows": DEFAULT_BUCKET_ROWS, "dtype": "bfloat16"}),
    "ner padded": ("ner", {"bucket_rows": 0}),
    "ner bucketed": ("ner", {"bucket_rows": DEFAULT_BUCKET_ROWS}),
    "ner bucketed bf16": ("ner", {"bucket_rows": DEFAULT_BUCKET_ROWS, "dtype": "bfloat16"}),
}


def agnews_sample(path, count, seed):
    examples = read_agnews_csv(path)
    order = np.random.default_rng(seed).permutation(len(examples.texts))
    return [examples.texts[i] for i in order[:count]]


def conll_sample(path, count, seed):
    sentences = read_conll(path)
    order = np.random.default_rng(seed).permutation(len(sentences))[:count]
    return sentences.subset(order)


def batches(texts, size):
    return [texts[start : start + size] for start in range(0, len(texts), size)]


# --- the paths: each maps a list of texts to numpy outputs -------------------------------------


def savedmodel_path(export_dir):
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]

    def run(texts):
        return {name: value.numpy() for name, value in serve(texts=tf.constant(texts)).items()}

    return run


def hf_backbone_with_weights(folder, model):
    """`TFAutoModel` of the local checkpoint holding the run's fine-tuned encoder weights."""
    from transformers import TFAutoModel

    backbone = TFAutoModel.from_pretrained(folder)
    source = model.encoder.backbone
    if [tuple(w.shape) for w in backbone.weights] != [tuple(w.shape) for w in source.weights]:
        raise ValueError("the local checkpoint and the run's encoder differ in architecture")
    backbone.set_weights(source.get_weights())
    return backbone


def eager_hf_path(tokenizer, backbone, model):
    """The course recipe: Python tokenizer, eager forward, the run's pooling and head, softmax."""
    kernel, bias = (w.numpy() for w in model.head.weights)

    def run(texts):
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="tf")
        hidden = backbone(**encoded, training=False).last_hidden_state
        if model.pooling == "cls":
            vector = hidden[:, 0]
        else:  # "mean" over real tokens, as the run's model pools
            mask = tf.cast(encoded["attention_mask"], hidden.dtype)[:, :, None]
            vector = tf.reduce_sum(hidden * mask, axis=1) / tf.reduce_sum(mask, axis=1)
        return {"probabilities": tf.nn.softmax(tf.matmul(vector, kernel) + bias).numpy()}

    return run


def pipeline_path(folder, tokenizer, model, label_names):
    """`pipeline("text-classification")` over TFBertForSequenceClassification with the run's
    weights; returns `(run, None)` or `(None, why it cannot be built)`."""
    try:
        from transformers import TFBertForSequenceClassification, pipeline

        classifier = TFBertForSequenceClassification.from_pretrained(
            folder, num_labels=len(label_names), id2label=dict(enumerate(label_names))
        )
        source = model.encoder.backbone
        classifier.bert.set_weights(source.get_weights())
        classifier.classifier.set_weights([w.numpy() for w in model.head.weights])
        # transformers 4.54 reads `torch` for its default torch_dtype="auto", even for a TF
        # model; without torch installed only an explicit None gets past it.
        pipe = pipeline(
            "text-classification", model=classifier, tokenizer=tokenizer, framework="tf", top_k=None, torch_dtype=None
        )
    except Exception as error:  # noqa: BLE001  (reported in the results, not fatal)
        return None, f"{type(error).__name__}: {error}"
    index = {name: i for i, name in enumerate(label_names)}

    def run(texts):
        results = pipe(texts, batch_size=len(texts), truncation=True, max_length=128)
        probabilities = np.zeros((len(texts), len(label_names)), np.float32)
        for row, scores in enumerate(results):
            for item in scores:
                probabilities[row, index[item["label"]]] = item["score"]
        return {"probabilities": probabilities}

    return run, None


def graph_forward_path(model, bucket_rows, text_batches):
    """The run's classifier on features tokenized beforehand (tokenization not timed), in the
    export's length buckets, in a tf.function: the encoder's own cost. Serves `text_batches`
    (and single texts, tokenized when asked)."""
    spec = {name: tf.TensorSpec([None, None], tf.int32) for name in ("input_word_ids", "input_mask", "input_type_ids")}

    @tf.function(input_signature=[spec])
    def forward(features):
        logits = in_length_buckets(
            lambda bucket: model(bucket, training=False), features, bucket_rows, [model.num_classes]
        )
        return tf.nn.softmax(logits)

    tokenize = tf.function(model.preprocessor, input_signature=[tf.TensorSpec([None], tf.string)])
    tokenized = {tuple(batch): tokenize(tf.constant(batch)) for batch in text_batches}

    def run(texts):
        features = tokenized.get(tuple(texts))
        if features is None:  # a batch-1 request: its (in-graph) tokenization is timed
            features = tokenize(tf.constant(texts))
        return {"probabilities": forward(features).numpy()}

    return run


# --- measurements ----------------------------------------------------------------------------


def timed_pass(run, text_batches):
    """(texts/s, this process's CPU milliseconds per text, outputs of every batch) of one pass
    over `text_batches`. Other processes share the machine: CPU time per text moves less with
    their load than texts/s do."""
    outputs = []
    count = sum(map(len, text_batches))
    start, cpu_start = time.perf_counter(), time.process_time()
    for batch in text_batches:
        outputs.append(run(batch))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return count / elapsed, cpu * 1000 / count, outputs


def request_latencies(run, texts):
    """Seconds of one batch-1 request per text."""
    latencies = []
    for text in texts:
        start = time.perf_counter()
        run([text])
        latencies.append(time.perf_counter() - start)
    return latencies


def machine_rates(seconds):
    """GFLOP/s of dense matmuls per dtype: the best of 512, 1024 and 2048 squares."""
    return {
        name: max(matmul_rate(dtype, size, seconds) for size in (512, 1024, 2048))
        for name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16))
    }


def stacked(outputs, name, per_token=False, fill=0):
    """One output of every batch, rows concatenated; per-token outputs padded to one width
    with `fill`."""
    values = [batch[name] for batch in outputs]
    if per_token:
        width = max(value.shape[1] for value in values)
        values = [
            np.pad(value, [(0, 0), (0, width - value.shape[1])] + [(0, 0)] * (value.ndim - 2), constant_values=fill)
            for value in values
        ]
    return np.concatenate(values)


def ner_word_tags(outputs, sentences, outside):
    """Label id per word of each sentence from served NER outputs (a word takes the label of the
    token that starts at its first character, as `tfattn.tasks.ner.predict_sentence_tags`)."""
    label_ids, offsets = stacked(outputs, "label_ids", True), stacked(outputs, "offsets", True)
    results = []
    for row, words in enumerate(sentences.words):
        first_token = {}
        for position, (start, end) in enumerate(offsets[row]):
            if end > start:
                first_token.setdefault(int(start), position)
        starts = np.cumsum([0] + [len(word) + 1 for word in words[:-1]])
        results.append([int(label_ids[row, first_token[s]]) if s in first_token else outside for s in starts])
    return results


def percentile_ms(values, q):
    return round(float(np.percentile(values, q)) * 1000, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=1024, help="texts per pass (AG News; CoNLL sentences for NER)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="timed passes per path, alternating")
    parser.add_argument("--requests", type=int, default=200, help="batch-1 requests per path, after warm-up")
    parser.add_argument(
        "--pipeline-texts", type=int, default=256, help="texts per pass for the (slow) transformers pipeline"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=str(REPO / "runs"), help="folder holding agnews, agnews_minilm, ner_minilm")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--exports", default="/tmp/tfattn_serving", help="where the runs are exported")
    parser.add_argument("--reuse-exports", action="store_true", help="serve exports already in --exports")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "serving.json"))
    args = parser.parse_args()
    tf.random.set_seed(args.seed)

    data = Path(args.data)
    texts = agnews_sample(data / "ag_news" / "train.csv", args.texts, args.seed)
    sentences = conll_sample(data / "conll2003" / "valid.txt", args.texts, args.seed)
    ner_texts = [" ".join(words) for words in sentences.words]

    runs = {key: load_run(Path(args.runs) / name) for key, name in RUNS.items()}
    exports = Path(args.exports)
    for name, (run_key, options) in EXPORTS.items():
        target = exports / name.replace(" ", "_")
        if not (args.reuse_exports and (target / "saved_model.pb").is_file()):
            print(f"exporting {name} ...", flush=True)
            model, label_names, _ = runs[run_key]
            export_model(model, label_names, target, overwrite=True, **options)

    minilm, minilm_labels, minilm_config = runs["minilm"]
    folder = str(offline_minilm_path())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    paths = {name: savedmodel_path(exports / name.replace(" ", "_")) for name in EXPORTS}
    paths["minilm eager HF"] = eager_hf_path(tokenizer, hf_backbone_with_weights(folder, minilm), minilm)
    pipe, pipeline_error = pipeline_path(folder, tokenizer, minilm, minilm_labels)
    if pipe is not None:
        paths["minilm HF pipeline"] = pipe
    paths["minilm graph forward (limit)"] = graph_forward_path(
        minilm, DEFAULT_BUCKET_ROWS, batches(texts, args.batch_size)
    )

    def texts_of(name):
        if name.startswith("ner"):
            return ner_texts
        return texts[: args.pipeline_texts] if "pipeline" in name else texts

    # Real tokens per text (no padding), for the FLOP counts.
    def minilm_tokens(items):
        return np.asarray([len(ids) for ids in tokenizer(items, truncation=True, max_length=128)["input_ids"]])

    scratch = runs["scratch"][0]
    scratch_tokens = scratch.preprocessor(tf.constant(texts))["input_mask"].numpy().sum(axis=1)
    scratch_shape = {
        "num_layers": scratch.encoder.num_blocks,
        "hidden": scratch.encoder.embed_dim,
        "ff_dim": scratch.encoder.ff_dim,
    }
    flops_per_text = {}
    for name in paths:
        tokens = scratch_tokens if name.startswith("scratch") else minilm_tokens(texts_of(name))
        shape = scratch_shape if name.startswith("scratch") else MINILM
        flops_per_text[name] = float(np.mean([encoder_forward_flops(int(n), **shape) for n in tokens]))
    tokens_per_text = {
        "agnews (MiniLM WordPiece)": float(minilm_tokens(texts).mean()),
        "agnews (scratch words)": float(scratch_tokens.mean()),
        "conll (MiniLM WordPiece)": float(minilm_tokens(ner_texts).mean()),
    }

    load_at_start = [round(load, 2) for load in os.getloadavg()]
    print("warm-up ...", flush=True)
    for name, run in paths.items():
        for batch in batches(texts_of(name), args.batch_size)[:2]:
            run(batch)
        run(texts_of(name)[:1])

    rates = {name: [] for name in paths}
    latencies = {name: [] for name in paths}
    cpu_per_text = {name: [] for name in paths}
    first_outputs = {}
    machine = []
    per_round_requests = [len(part) for part in np.array_split(np.arange(args.requests), args.rounds)]
    for round_index in range(args.rounds):
        machine.append(machine_rates(1.0))
        print(f"round {round_index + 1}: matmul GFLOP/s {machine[-1]}", flush=True)
        request_start = sum(per_round_requests[:round_index])
        for name, run in paths.items():
            rate, cpu_ms, outputs = timed_pass(run, batches(texts_of(name), args.batch_size))
            rates[name].append(rate)
            cpu_per_text[name].append(cpu_ms)
            first_outputs.setdefault(name, outputs)
            requests = texts_of(name)[request_start : request_start + per_round_requests[round_index]]
            latencies[name].extend(request_latencies(run, requests))
            print(f"round {round_index + 1}: {name}: {rate:.1f} texts/s", flush=True)
    machine.append(machine_rates(1.0))
    matmul = {dtype: float(np.median([m[dtype] for m in machine])) for dtype in machine[0]}

    results = {}
    for name in paths:
        median = float(np.median(rates[name]))
        gflops = median * flops_per_text[name] / 1e9
        dtype = "bfloat16" if "bf16" in name else "float32"
        results[name] = {
            "texts_per_second": [round(r, 2) for r in rates[name]],
            "median_texts_per_second": round(median, 2),
            "median_cpu_ms_per_text": round(float(np.median(cpu_per_text[name])), 2),
            "latency_ms_p50": percentile_ms(latencies[name], 50),
            "latency_ms_p99": percentile_ms(latencies[name], 99),
            "model_gflops_per_second": round(gflops, 2),
            f"fraction_of_{dtype}_matmul": round(gflops / matmul[dtype], 3),
        }
        print(f"{name}: {median:.1f} texts/s, {gflops:.1f} GFLOP/s", flush=True)

    def speed(name):
        return results[name]["median_texts_per_second"]

    ratios = {
        "minilm bucketed / eager HF": round(speed("minilm bucketed") / speed("minilm eager HF"), 2),
        "minilm bucketed bf16 / eager HF": round(speed("minilm bucketed bf16") / speed("minilm eager HF"), 2),
        "minilm padded / eager HF (before)": round(speed("minilm padded") / speed("minilm eager HF"), 2),
        "minilm bucketed / padded": round(speed("minilm bucketed") / speed("minilm padded"), 2),
        "minilm bucketed bf16 / bucketed": round(speed("minilm bucketed bf16") / speed("minilm bucketed"), 2),
        "minilm bucketed / graph forward (limit)": round(
            speed("minilm bucketed") / speed("minilm graph forward (limit)"), 2
        ),
        "scratch bucketed / padded": round(speed("scratch bucketed") / speed("scratch padded"), 2),
        "ner bucketed / padded": round(speed("ner bucketed") / speed("ner padded"), 2),
        "ner bucketed bf16 / bucketed": round(speed("ner bucketed bf16") / speed("ner bucketed"), 2),
    }

    def cpu(name):
        return results[name]["median_cpu_ms_per_text"]

    # The same ratios by CPU time per text (the other path's over this one's: >1 is faster).
    cpu_ratios = {
        key: round(cpu(b) / cpu(a), 2)
        for key, (a, b) in {
            "minilm bucketed / eager HF": ("minilm bucketed", "minilm eager HF"),
            "minilm bucketed bf16 / eager HF": ("minilm bucketed bf16", "minilm eager HF"),
            "minilm padded / eager HF (before)": ("minilm padded", "minilm eager HF"),
            "minilm bucketed / padded": ("minilm bucketed", "minilm padded"),
            "minilm bucketed bf16 / bucketed": ("minilm bucketed bf16", "minilm bucketed"),
            "minilm bucketed / graph forward (limit)": ("minilm bucketed", "minilm graph forward (limit)"),
            "ner bucketed / padded": ("ner bucketed", "ner padded"),
        }.items()
    }
    if pipe is not None:
        ratios["minilm bucketed / HF pipeline"] = round(speed("minilm bucketed") / speed("minilm HF pipeline"), 2)

    # Same outputs: every MiniLM classifier path against the padded export (the previous one).
    reference = stacked(first_outputs["minilm padded"], "probabilities")
    agreement = {}
    for name in paths:
        if not name.startswith("minilm"):
            continue
        probabilities = stacked(first_outputs[name], "probabilities")
        count = len(probabilities)
        agreement[name] = {
            "max_abs_probability_difference": float(np.abs(probabilities - reference[:count]).max()),
            "same_label": float(np.mean(probabilities.argmax(1) == reference[:count].argmax(1))),
        }
    scratch_reference = stacked(first_outputs["scratch padded"], "probabilities")
    agreement["scratch bucketed"] = {
        "max_abs_probability_difference": float(
            np.abs(stacked(first_outputs["scratch bucketed"], "probabilities") - scratch_reference).max()
        )
    }

    # NER: the same predictions at every token of the texts ([CLS] and [SEP] included), padding
    # aside (bucketed exports give zeros there).
    ner_reference = {name: stacked(first_outputs["ner padded"], name, True) for name in ("probabilities", "label_ids")}
    in_text = stacked(first_outputs["ner padded"], "word_ids", True, fill=-1) >= 0
    in_text |= np.roll(in_text, 1, axis=1) | np.roll(in_text, -1, axis=1)  # [CLS], [SEP] around the words
    for name in ("ner bucketed", "ner bucketed bf16"):
        probabilities = stacked(first_outputs[name], "probabilities", True)
        label_ids = stacked(first_outputs[name], "label_ids", True)
        agreement[name] = {
            "max_abs_probability_difference": float(
                np.abs(probabilities - ner_reference["probabilities"])[in_text].max()
            ),
            "same_token_label": float(np.mean((label_ids == ner_reference["label_ids"])[in_text])),
        }

    # Accuracy: the MiniLM classifier on the run's held-out validation split, float32 and bf16;
    # NER entity F1 of every export on the CoNLL validation sentences served above.
    cwd = os.getcwd()
    os.chdir(REPO)  # the run's config names its data relative to the repository
    try:
        _, validation = task_of(TrainConfig(**minilm_config).resolve()).load_splits()
    finally:
        os.chdir(cwd)
    accuracy = {}
    for name in ("minilm padded", "minilm bucketed", "minilm bucketed bf16"):
        _, _, outputs = timed_pass(paths[name], batches(list(validation.texts), args.batch_size))
        predicted = stacked(outputs, "probabilities").argmax(1)
        accuracy[f"{name}: agnews validation accuracy ({len(validation)} texts)"] = round(
            float(np.mean(predicted == np.asarray(validation.labels))), 4
        )
    ner_labels = runs["ner"][1]
    outside = ner_labels.index("O") if "O" in ner_labels else 0
    for name in ("ner padded", "ner bucketed", "ner bucketed bf16"):
        scores = entity_scores(sentences.tags, ner_word_tags(first_outputs[name], sentences, outside), ner_labels)
        accuracy[f"{name}: conll validation entity F1 ({len(sentences)} sentences)"] = round(scores["f1"], 4)

    result = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "texts": args.texts,
        "pipeline_texts": args.pipeline_texts,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "requests": args.requests,
        "bucket_rows": DEFAULT_BUCKET_ROWS,
        "mean_real_tokens_per_text": {k: round(v, 2) for k, v in tokens_per_text.items()},
        "matmul_gflops_per_second": {k: round(v, 1) for k, v in matmul.items()},
        "paths": results,
        "ratios": ratios,
        "ratios_by_cpu_time": cpu_ratios,
        "agreement_with_padded_export": agreement,
        "accuracy": accuracy,
        "pipeline": "built" if pipe is not None else f"not built: {pipeline_error}",
        "notes": (
            "HF pipeline: TFBertForSequenceClassification reads BERT's pooler output; the run's model "
            "mean-pools, so the pipeline's labels differ (timed for speed only). The TF pipeline runs "
            "one text at a time whatever batch_size."
        ),
        # Other processes share this machine: its load, so that a reader can judge the noise.
        "load_average": {"start": load_at_start, "end": [round(load, 2) for load in os.getloadavg()]},
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
