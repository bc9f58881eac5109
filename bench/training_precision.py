"""Training speed and accuracy under mixed precision (bfloat16 on this CPU) against float32.

Each model trains in both precisions in one process, the precisions alternating round by round
so that machine noise hits both alike:
- from scratch: the AG News classifier of the task's default config (`TrainConfig(task="agnews")`:
  word vocabulary, 1 block of width 64), on every training text of the file, `--scratch-epochs`
  epochs, for each of `--seeds`; a round is one epoch;
- MiniLM-L6-H384 fine-tuned (batch 32, max_length 128, [CLS] pooling, as
  bench/finetune_throughput.py), for each of `--seeds`: one epoch over `--minilm-examples`
  training texts drawn with the seed, in parts of `--minilm-round-examples` texts (4 batches);
  a round is one part;
- MiniLM training steps on one batch shape (`--step-shape`, 32 x 64 tokens: no padding, no input
  pipeline, no new shapes), `--step-batches` steps a round: the compute of a step alone.
Both precisions start from the same weights (the float32 model's, copied) and see the batches in
the same order. The first round of each seed (graph tracing) is left out of the speeds.

Reported per model and precision: training examples/s (median of rounds); the ratio bf16/fp32
(median of the rounds' own ratios, both precisions of a round running back to back); the model
FLOP/s this achieves (`bench/flops.py`: matmul FLOPs of the real tokens of each example, padding
not counted, three forward passes per training step) as a fraction of this machine's dense matmul
rate in the same dtype, measured in the same process before and after training (the better of
the two); and the validation accuracy of the trained models on the same held-out texts (the
file's validation split, 687 texts), with the share of texts on which the two precisions
predict the same class.

    python bench/training_precision.py            # about 20 minutes on 2 idle cores
    python bench/training_precision.py --quick    # smoke run, about 3 minutes
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from flops import MINILM, encoder_forward_flops, matmul_rate, training_flops  # noqa: E402
from result_file import write_result  # noqa: E402

from tfattn.data.pipelines import make_dataset  # noqa: E402
from tfattn.families import ScratchFamily  # noqa: E402
from tfattn.models import HuggingFaceEncoder, TextClassifier  # noqa: E402
from tfattn.models.wordpiece import bert_preprocessor_from_pretrained  # noqa: E402
from tfattn.pretrained import load_tokenizer, offline_minilm_path, tokenize_texts  # noqa: E402
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.tasks.registry import task_of  # noqa: E402
from tfattn.training.optimizer import create_optimizer  # noqa: E402
from tfattn.training.strategy import set_mixed_precision  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "ag_news" / "train.csv"
PRECISIONS = ("float32", "mixed")  # "mixed": what --mixed-precision sets (mixed_bfloat16 on CPU)


def with_policy(mixed, build):
    """`build()` under the float32 or the mixed global policy; float32 again afterwards."""
    policy = set_mixed_precision(mixed)
    try:
        return policy, build()
    finally:
        set_mixed_precision(False)


def token_lengths(features):
    return features["input_word_ids"].row_lengths().numpy()


def flops_per_example(lengths, num_layers, hidden, ff_dim):
    """Mean training FLOPs of one example, over examples of `lengths` real tokens."""
    return float(np.mean([training_flops(encoder_forward_flops(int(n), num_layers, hidden, ff_dim)) for n in lengths]))


def timed_fit(model, dataset, num_examples, epoch):
    """Examples/s of one `fit` epoch (number `epoch`, so the learning rate schedule goes on)."""
    start = time.perf_counter()
    model.fit(dataset, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
    return num_examples / (time.perf_counter() - start)


def accuracy(model, features, labels, batch_size=64):
    """(accuracy, predicted classes) on the feature dict, in input order."""
    logits = model.predict(make_dataset(features, labels, batch_size), verbose=0)
    assert logits.dtype == np.float32, logits.dtype
    predicted = logits.argmax(axis=-1)
    return float(np.mean(predicted == np.asarray(labels))), predicted


def alternate(models, rounds, run_round):
    """Run `run_round(name, model, index)` for every round, the precisions' order swapped every
    round (fp32 first, then bf16 first, ...); each precision's examples/s per round."""
    speeds = {name: [] for name in models}
    for index in range(rounds):
        order = list(models) if index % 2 == 0 else list(reversed(models))
        for name in order:
            speeds[name].append(run_round(name, models[name], index))
            print(f"  round {index + 1}: {name}: {speeds[name][-1]:,.1f} examples/s", flush=True)
    return speeds


def summarize_speed(speeds, flops, rates):
    """Per precision, from its timed rounds' examples/s (`speeds`, tracing rounds left out): the
    median and the best round, the model GFLOP/s each achieves and its fraction of the matmul
    rate of the precision's compute dtype; and the ratio mixed / float32 of the medians of the
    rounds' own ratios (a round runs both precisions back to back, so its two speeds share the
    machine's load of the moment) and of the best rounds.

    The best round is the speed of the machine when nothing else takes its cores: on this shared
    machine, under load, CPU time arrives in slices of about 5.2 s, and many rounds last exactly
    one or two slices whatever they compute (so their speeds tie between precisions)."""
    summary = {}
    for name, values in speeds.items():
        for label, value in (("", statistics.median(values)), ("best_", max(values))):
            achieved = value * flops / 1e9
            summary.setdefault(name, {"examples_per_second_rounds": [round(v, 2) for v in values]}).update(
                {
                    f"{label}examples_per_second": round(value, 2),
                    f"{label}model_gflops_per_second": round(achieved, 2),
                    f"{label}fraction_of_matmul_rate": round(achieved / rates[name], 4),
                }
            )
    ratios = [mixed / single for mixed, single in zip(speeds["mixed"], speeds["float32"], strict=True)]
    summary["ratio_mixed_to_float32_rounds"] = [round(r, 3) for r in ratios]
    summary["ratio_mixed_to_float32"] = round(statistics.median(ratios), 3)
    summary["ratio_mixed_to_float32_best"] = round(max(speeds["mixed"]) / max(speeds["float32"]), 3)
    return summary


def resummarize(path):
    """Recompute the speed summaries of a result file from the rounds it holds (after a change
    to `summarize_speed`), in place; returns the result."""
    result = json.loads(Path(path).read_text())
    rates = result["matmul_gflops_per_second"]
    for key in ("scratch", "minilm_fixed_shape", "minilm"):
        if key in result:
            part = result[key]
            speeds = {name: part["speed"][name]["examples_per_second_rounds"] for name in PRECISIONS}
            part["speed"] = summarize_speed(speeds, part["training_gflops_per_example"] * 1e9, rates)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def build_twins(build, features, labels, compile_model):
    """`{"float32": model, "mixed": model}`: `build()` under each policy, called on a batch of
    `features`, compiled by `compile_model(model)`; the mixed one given the float32 one's weights."""
    models = {}
    for name in PRECISIONS:
        _, model = with_policy(name == "mixed", build)
        model(next(iter(make_dataset(features, labels, 2)))[0])
        compile_model(model)
        models[name] = model
    models["mixed"].set_weights(models["float32"].get_weights())
    return models


def scratch_bench(args, train_split, validation_split, config):
    """The from-scratch AG News classifier: `args.scratch_epochs` epochs per seed, precisions
    alternating epoch by epoch."""
    texts, labels = train_split.texts, np.asarray(train_split.labels)
    if args.scratch_examples:
        texts, labels = texts[: args.scratch_examples], labels[: args.scratch_examples]
    steps = args.scratch_epochs * -(-len(texts) // config.batch_size)
    family, build, compile_model = scratch_parts(config, texts, train_split.label_names, steps)
    features = family.encode_texts(texts, "training texts")
    validation_features = family.encode_texts(validation_split.texts, "validation texts")
    lengths = token_lengths(features)
    flops = flops_per_example(lengths, config.num_blocks, config.embed_dim, config.ff_dim)

    per_seed, speeds = [], {name: [] for name in PRECISIONS}
    for seed in args.seeds:
        print(f"from scratch, seed {seed}: {len(texts)} texts, {args.scratch_epochs} epochs", flush=True)
        keras.utils.set_random_seed(seed)
        models = build_twins(build, features, labels, compile_model)
        # One dataset per model, the same seed: the same batches in the same order.
        datasets = {
            name: make_dataset(
                features, labels, config.batch_size, shuffle=True, seed=seed, pad_to_multiple=args.pad_to_multiple
            )
            for name in models
        }
        seed_speeds = alternate(
            models,
            args.scratch_epochs,
            lambda name, model, epoch, datasets=datasets: timed_fit(model, datasets[name], len(texts), epoch),
        )
        for name in PRECISIONS:
            speeds[name] += seed_speeds[name][1:]  # each seed's first epoch traces the graphs
        per_seed.append(seed_row(seed, models, validation_features, validation_split.labels))
        keras.backend.clear_session()
    accuracies = {name: [row["validation_accuracy"][name] for row in per_seed] for name in PRECISIONS}
    differences = [100 * (m - f) for m, f in zip(accuracies["mixed"], accuracies["float32"], strict=True)]
    sizes = (
        "vocab_size",
        "embed_dim",
        "num_heads",
        "ff_dim",
        "num_blocks",
        "max_length",
        "batch_size",
        "learning_rate",
    )
    return {
        "config": {key: getattr(config, key) for key in sizes},
        "training_texts": len(texts),
        "validation_texts": len(validation_split),
        "epochs": args.scratch_epochs,
        "mean_tokens_per_text": round(float(lengths.mean()), 2),
        "training_gflops_per_example": round(flops / 1e9, 5),
        "timed_rounds": speeds,
        "flops": flops,
        "per_seed": per_seed,
        "mean_validation_accuracy": {name: round(statistics.mean(values), 4) for name, values in accuracies.items()},
        "mean_accuracy_difference_points": round(statistics.mean(differences), 2),
    }


def scratch_parts(config, texts, label_names, steps):
    """`(family, build, compile_model)` of the from-scratch classifier of `config`, its
    vocabulary learned from `texts`; `compile_model(model, jit=False)`."""
    task = task_of(config)
    with tempfile.TemporaryDirectory(prefix="precision_") as work:
        family = ScratchFamily(config)
        family.prepare(texts, Path(work))

    def build():
        return task.build_model(family.preprocessor, family.build_encoder(), label_names)

    def compile_model(model, jit=False):
        optimizer = create_optimizer(
            config.learning_rate, steps, warmup_fraction=config.warmup_fraction, weight_decay=config.weight_decay
        )
        model.compile(optimizer=optimizer, loss=task.loss(), metrics=["accuracy"], jit_compile=jit)

    return family, build, compile_model


def seed_row(seed, models, validation_features, validation_labels):
    """One seed's validation accuracy per precision, and the share of texts both predict alike."""
    results = {name: accuracy(model, validation_features, validation_labels) for name, model in models.items()}
    row = {
        "seed": seed,
        "validation_accuracy": {name: round(result[0], 4) for name, result in results.items()},
        "agreement": round(float(np.mean(results["float32"][1] == results["mixed"][1])), 4),
    }
    print(f"  {json.dumps(row)}", flush=True)
    return row


def minilm_parts(backbone, max_length, num_classes, steps):
    """`(build, compile_model)` of the MiniLM classifier (as bench/finetune_throughput.py);
    `compile_model(model, jit=False)`."""

    def build():
        return TextClassifier(
            bert_preprocessor_from_pretrained(backbone, max_length),
            HuggingFaceEncoder.from_pretrained(backbone),
            num_classes,
            pooling="cls",
        )

    def compile_model(model, jit=False):
        model.compile(
            optimizer=create_optimizer(3e-5, steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit,
        )

    return build, compile_model


def minilm_bench(args, train_split, validation_split, backbone):
    """MiniLM fine-tuning, per seed: one epoch over `args.minilm_examples` texts drawn with that
    seed, in parts of `args.minilm_round_examples`, the precisions alternating part by part."""
    batch_size, max_length = 32, 128
    tokenizer = load_tokenizer(backbone)
    validation_features = tokenize_texts(tokenizer, validation_split.texts, max_length)
    num_classes = len(train_split.label_names)
    per_seed, speeds, all_lengths = [], {name: [] for name in PRECISIONS}, []
    for seed in args.seeds:
        order = np.random.default_rng(seed).permutation(len(train_split))[: args.minilm_examples]
        texts = [train_split.texts[i] for i in order]
        labels = np.asarray(train_split.labels)[order]
        features = tokenize_texts(tokenizer, texts, max_length)
        all_lengths.append(token_lengths(features))
        parts = np.array_split(np.arange(len(texts)), -(-len(texts) // args.minilm_round_examples))
        steps = sum(-(-len(part) // batch_size) for part in parts)
        print(f"MiniLM, seed {seed}: {len(texts)} texts in {len(parts)} rounds, 1 epoch", flush=True)
        keras.utils.set_random_seed(seed)
        build, compile_model = minilm_parts(backbone, max_length, num_classes, steps)
        models = build_twins(build, features, labels, compile_model)

        def run_round(name, model, index, parts=parts, features=features, labels=labels, seed=seed):
            part = parts[index]
            part_features = {key: tf.gather(value, part) for key, value in features.items()}
            dataset = make_dataset(
                part_features,
                labels[part],
                batch_size,
                shuffle=True,
                seed=seed + index,
                pad_to_multiple=args.pad_to_multiple,
            )
            return timed_fit(model, dataset, len(part), index)

        seed_speeds = alternate(models, len(parts), run_round)
        for name in PRECISIONS:
            speeds[name] += seed_speeds[name][1:]  # each seed's first part traces the graphs
        per_seed.append(seed_row(seed, models, validation_features, validation_split.labels))
        keras.backend.clear_session()
    lengths = np.concatenate(all_lengths)
    accuracies = {name: [row["validation_accuracy"][name] for row in per_seed] for name in PRECISIONS}
    differences = [100 * (m - f) for m, f in zip(accuracies["mixed"], accuracies["float32"], strict=True)]
    return {
        "training_texts": args.minilm_examples,
        "validation_texts": len(validation_split),
        "batch_size": batch_size,
        "max_length": max_length,
        "round_examples": args.minilm_round_examples,
        "mean_tokens_per_text": round(float(lengths.mean()), 2),
        "training_gflops_per_example": round(flops_per_example(lengths, **MINILM) / 1e9, 4),
        "timed_rounds": speeds,
        "flops": flops_per_example(lengths, **MINILM),
        "per_seed": per_seed,
        "mean_validation_accuracy": {name: round(statistics.mean(values), 4) for name, values in accuracies.items()},
        "mean_accuracy_difference_points": round(statistics.mean(differences), 2),
    }


def fixed_shape_bench(args, backbone, num_classes):
    """MiniLM training steps on one batch shape (`--step-shape`), repeated: the compute of a step
    alone, without the input pipeline, new shapes or `fit`'s per-epoch work; the precisions
    alternate every `--step-batches` steps, `--step-rounds` times."""
    batch_size, length = args.step_shape
    rng = np.random.default_rng(0)
    features = {
        "input_word_ids": tf.constant(rng.integers(1000, 20000, size=(batch_size, length)), tf.int32),
        "input_mask": tf.ones((batch_size, length), tf.int32),
        "input_type_ids": tf.zeros((batch_size, length), tf.int32),
    }
    labels = rng.integers(0, num_classes, size=batch_size).astype(np.int32)
    steps = (args.step_rounds + 1) * args.step_batches
    keras.utils.set_random_seed(0)
    build, compile_model = minilm_parts(backbone, 128, num_classes, steps)
    models = {}
    for name in PRECISIONS:
        _, models[name] = with_policy(name == "mixed", build)
        models[name](features)
        compile_model(models[name])
    dataset = tf.data.Dataset.from_tensors((features, labels)).repeat(args.step_batches)
    print(f"MiniLM steps on one shape {batch_size} x {length}", flush=True)
    speeds = alternate(
        models,
        args.step_rounds + 1,
        lambda name, model, index: timed_fit(model, dataset, batch_size * args.step_batches, index),
    )
    keras.backend.clear_session()
    flops = training_flops(encoder_forward_flops(length, **MINILM))
    return {
        "shape": [batch_size, length],
        "batches_per_round": args.step_batches,
        "training_gflops_per_example": round(flops / 1e9, 4),
        "timed_rounds": {name: values[1:] for name, values in speeds.items()},  # the first traces
        "flops": flops,
    }


def markdown(result):
    """The table of BENCHMARKS.md: speed (median and best round) and accuracy per model, the
    precisions side by side."""
    rows = [
        "| model | precision | examples/s median (best) | bf16 / fp32 median of rounds (best) "
        "| model GFLOP/s median (best) | of matmul peak median (best) | val accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    titles = {
        "scratch": "from scratch (AG News default), training",
        "minilm": "MiniLM fine-tuning, training",
        "minilm_fixed_shape": "MiniLM, steps on one batch shape",
    }
    for key, title in titles.items():
        if key not in result:
            continue
        part = result[key]
        speed = part["speed"]
        accuracy_of = part.get("mean_validation_accuracy", {})
        for name in PRECISIONS:
            row = speed[name]
            ratio = "1"
            if name == "mixed":
                ratio = f"{speed['ratio_mixed_to_float32']:.2f}x ({speed['ratio_mixed_to_float32_best']:.2f}x)"
            rows.append(
                f"| {title} | {result['policies'][name]} | {row['examples_per_second']:,.1f} "
                f"({row['best_examples_per_second']:,.1f}) | {ratio} | {row['model_gflops_per_second']:.1f} "
                f"({row['best_model_gflops_per_second']:.1f}) | {100 * row['fraction_of_matmul_rate']:.1f}% "
                f"({100 * row['best_fraction_of_matmul_rate']:.1f}%) | "
                + (f"{accuracy_of[name]:.4f} |" if name in accuracy_of else "- |")
            )
    rates = result["matmul_gflops_per_second"]
    rows.append(
        f"\nmatmul rate (2048^2, same process): float32 {rates['float32']:.0f}, bfloat16 {rates['mixed']:.0f} GFLOP/s"
    )
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA), help="AG News csv (default: ../shared/data/ag_news/train.csv)")
    parser.add_argument("--backbone", default=None, help="checkpoint folder (default: the offline MiniLM)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of both models' runs")
    parser.add_argument("--scratch-epochs", type=int, default=4)
    parser.add_argument("--scratch-examples", type=int, default=None, help="default: every training text")
    parser.add_argument("--minilm-examples", type=int, default=4000)
    parser.add_argument("--minilm-round-examples", type=int, default=128, help="texts per MiniLM round")
    parser.add_argument("--step-shape", type=int, nargs=2, default=[32, 64], metavar=("BATCH", "LENGTH"))
    parser.add_argument("--step-batches", type=int, default=3, help="steps per fixed-shape round")
    parser.add_argument("--step-rounds", type=int, default=10, help="timed fixed-shape rounds per precision")
    parser.add_argument(
        "--pad-to-multiple",
        type=int,
        default=None,
        metavar="N",
        help="pad every batch to a multiple of N tokens (a few batch shapes instead of one per length)",
    )
    parser.add_argument("--skip", choices=["scratch", "minilm", "steps"], nargs="*", default=[])
    parser.add_argument("--quick", action="store_true", help="smoke run: small subsets, one seed")
    parser.add_argument("--out", default=None, help="default: bench/results/training_precision[_quick].json")
    parser.add_argument("--summary-only", metavar="JSON", help="recompute the summaries of a result file and stop")
    args = parser.parse_args()
    if args.summary_only:
        print(markdown(resummarize(args.summary_only)))
        return
    if args.quick:
        args.seeds, args.scratch_epochs, args.scratch_examples = args.seeds[:1], 2, 2000
        args.minilm_examples, args.step_rounds = 384, 2
    out = Path(args.out or REPO / "bench" / "results" / f"training_precision{'_quick' if args.quick else ''}.json")
    backbone = args.backbone or str(offline_minilm_path())

    started = time.perf_counter()
    # Measured before and after the training (other work on the machine lowers either), the
    # better of the two taken as the machine's rate.
    measured = {"float32": [matmul_rate(tf.float32)], "mixed": [matmul_rate(tf.bfloat16)]}
    rates = {name: max(values) for name, values in measured.items()}
    print(f"matmul GFLOP/s: float32 {rates['float32']:.0f}, bfloat16 {rates['mixed']:.0f}", flush=True)
    config = TrainConfig(task="agnews", data=args.data).resolve()
    train_split, validation_split = task_of(config).load_splits()
    result = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "policies": {"float32": "float32", "mixed": with_policy(True, lambda: None)[0]},
        "pad_to_multiple": args.pad_to_multiple,
    }
    parts = {}
    if "scratch" not in args.skip:
        parts["scratch"] = scratch_bench(args, train_split, validation_split, config)
    if "steps" not in args.skip:
        parts["minilm_fixed_shape"] = fixed_shape_bench(args, backbone, len(train_split.label_names))
    if "minilm" not in args.skip:
        parts["minilm"] = minilm_bench(args, train_split, validation_split, backbone)
    measured["float32"].append(matmul_rate(tf.float32))
    measured["mixed"].append(matmul_rate(tf.bfloat16))
    rates = {name: max(values) for name, values in measured.items()}
    result["matmul_gflops_per_second"] = {name: round(rate, 1) for name, rate in rates.items()}
    result["matmul_gflops_per_second_measured"] = {
        name: [round(v, 1) for v in values] for name, values in measured.items()
    }
    for key, part in parts.items():
        speeds, flops = part.pop("timed_rounds"), part.pop("flops")
        part["speed"] = summarize_speed(speeds, flops, rates)
        result[key] = part
    write_result(result, out, started, markdown)


if __name__ == "__main__":
    main()
