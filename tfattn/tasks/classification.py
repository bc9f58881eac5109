"""Text classification of any labelled texts (`classify`) and its presets (`agnews`, `math`): the
task's data, head, loss, metrics, reports and predictions.

    tfattn train classify --data reviews.csv --text-column review --label-column sentiment
    tfattn train agnews                     # the preset: AG News, its four topics
    tfattn predict --run runs/classify "A wonderful film"
"""

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.data import MATH_TOPICS, DataError, TextExamples, load_agnews, read_labelled_texts, split_examples
from tfattn.data.pipelines import JIT_LENGTH_MULTIPLE, make_dataset
from tfattn.evaluation import ClassificationReport, classification_metrics, write_evaluation
from tfattn.models import TextClassifier
from tfattn.tasks.encoder_task import EncoderTask
from tfattn.training.metrics import MacroF1
from tfattn.training.phases import StreamOrder


@dataclass
class Validation:
    """How a task validates during training: a dataset for `fit` and/or a callback that puts
    the monitored metrics into the epoch logs; `encoded` is what the task needs to score it."""

    data: Any | None = None
    callback: keras.callbacks.Callback | None = None
    encoded: Any | None = None


@dataclass
class StreamedTexts:
    """Training data streamed from files (`tfattn.data.streaming`), checked and counted, not loaded."""

    files: list
    stream_format: Any
    summary: Any

    def __len__(self):
        return self.summary.num_examples

    @property
    def label_names(self):
        return self.summary.label_names

    @property
    def source(self):
        files = self.files
        return str(files[0]) if len(files) == 1 else f"{len(files)} files ({files[0]} ... {files[-1]}), streamed"


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels with label smoothing: the target puts
    `1 - smoothing` on the label and spreads `smoothing` evenly over all classes (Keras's
    sparse loss has no smoothing; its one-hot loss does, so labels are one-hot encoded here)."""

    def __init__(self, smoothing, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, labels, logits):
        one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
        return keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True, label_smoothing=self.smoothing)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


class ClassificationTask(EncoderTask):
    """One label per text; validated on a stratified split of the training file, or, when the
    training data are streamed, on the `validation_data` file."""

    monitor = "val_accuracy"
    serve_help = "label and probability of each text"
    export_outputs = "probabilities, label, label_names"

    @classmethod
    def check_config(cls, config):
        if config.word_shape:
            raise ValueError("--word-shape applies to token classification (ner), not to text classification")

    @property
    def head_input(self):
        """What the head reads, in words."""
        return self.config.pooling

    def read_file(self, path, label_names=None) -> TextExamples:
        """The labelled examples of one file in this task's format; `label_names` fixes the
        classes (an unknown label is an error)."""
        c = self.config
        if not c.text_column or not c.label_column:
            raise ValueError(f"{path}: name the columns to read with --text-column and --label-column")
        return read_labelled_texts(path, c.text_column, c.label_column, label_names=label_names)

    def validation_examples(self, label_names=None) -> TextExamples:
        """The examples a run validates on: its `validation_data` file when training streamed,
        else the validation part of `load_splits`."""
        if self.config.stream:
            return self.read_file(self.config.validation_data, label_names)
        return self.load_splits()[1]

    def load_splits(self):
        """`(train, validation)` `TextExamples`, deterministic for the config's seed.

        Refuses (`DataError`) data with fewer than two classes, or with a class of fewer than two
        examples: every class needs one for training and one for validation.
        """
        c = self.config
        if not c.data:
            raise DataError(f"task {c.task!r} needs --data (a .csv, .tsv, .jsonl or .xlsx file)")
        examples = self.read_file(c.data)
        subset = ""
        if c.limit and c.limit < len(examples):
            rng = np.random.default_rng(c.seed)
            examples = examples.subset(np.sort(rng.choice(len(examples), c.limit, replace=False)))
            subset = f" (the --limit {c.limit} subset)"
        check_class_counts(examples, subset)
        return split_examples(examples, c.validation_fraction, c.seed)

    def load(self):
        if not self.config.stream:
            return self.load_splits()
        from tfattn.data.streaming import StreamFormat, count_and_check, expand_data_files

        c = self.config
        files = expand_data_files(c.data)
        stream_format = StreamFormat.for_files(files, c.task, c.text_column, c.label_column)
        print(f"checking {len(files)} data file(s) before streaming them ...", flush=True)
        train = StreamedTexts(files, stream_format, count_and_check(files, stream_format))
        return train, self.validation_examples(train.label_names)

    def data_sources(self):
        if not self.config.stream:
            return [self.config.data]
        from tfattn.data.streaming import expand_data_files

        return [str(path) for path in expand_data_files(self.config.data)] + [self.config.validation_data]

    def describe(self, train, validation):
        return f"{self.config.task}: {len(train)} training / {len(validation)} validation examples from {train.source}"

    def texts_for_vocabulary(self, train):
        if isinstance(train, StreamedTexts):
            from tfattn.data.streaming import VOCABULARY_SAMPLE, sample_texts

            return sample_texts(train.files, train.stream_format, VOCABULARY_SAMPLE)
        return train.texts

    def stream_order(self, family, train):
        """The streamed training data as a `StreamOrder`: each worker reads its share of the
        files, tokenized by the family's preprocessor in the input pipeline."""
        from tfattn.data.streaming import stream_examples, streaming_dataset

        c = self.config

        def make_dataset(input_context):
            examples = stream_examples(
                train.files,
                train.stream_format,
                train.label_names,
                worker_index=input_context.input_pipeline_id,
                num_workers=input_context.num_input_pipelines,
            )
            batch_size = input_context.get_per_replica_batch_size(c.batch_size)
            return streaming_dataset(
                examples, family.preprocessor, batch_size, shuffle_buffer=c.shuffle_buffer, seed=c.seed, repeat=True
            )

        return StreamOrder(make_dataset, math.ceil(len(train) / c.batch_size))

    def encode(self, family, examples, what):
        return family.encode_texts(examples.texts, f"{what} texts"), examples.labels

    def validation(self, family, examples):
        features, labels = self.encode(family, examples, "validation")
        # Evaluation is jit-compiled too under --jit-compile: as few batch shapes as training.
        pad_to_multiple = JIT_LENGTH_MULTIPLE if self.config.jit_compile else None
        return Validation(data=make_dataset(features, labels, self.config.batch_size, pad_to_multiple=pad_to_multiple))

    def build_model(self, preprocessor, encoder, label_names):
        return TextClassifier(
            preprocessor, encoder, len(label_names), pooling=self.config.pooling, dropout=self.config.dropout
        )

    def loss(self):
        if self.config.label_smoothing:
            return SmoothedSparseCrossentropy(self.config.label_smoothing)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self, num_labels):
        return ["accuracy", MacroF1(num_labels)]

    def report(self, saved_model, trained_model, examples, validation, run_dir):
        """Evaluate the saved model on the validation texts; write and print the report."""
        report = evaluate_texts(saved_model, examples)
        write_evaluation(report, run_dir, prefix="validation", config=asdict(self.config))
        print(report.format_text())
        return report, f"validation accuracy {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}"

    # --- a finished run
    def serve(self, model, texts, args):
        lines = []
        for text, probabilities in zip(texts, model.predict_proba(texts)):
            best = int(probabilities.argmax())
            lines.append(f"{self.label_names[best]}\t{probabilities[best]:.3f}\t{text}")
        return lines

    def evaluate(self, model, args):
        if args.data:
            examples = self.read_file(args.data, self.label_names)
        else:
            examples = self.validation_examples(self.label_names)
        report = evaluate_texts(model, examples)

        def write(run_dir, prefix):
            config = {"data": examples.source, "run": str(run_dir)}
            return list(write_evaluation(report, run_dir, prefix=prefix, config=config).values())

        return report.format_text(), write


class ClassifyTask(ClassificationTask):
    name = "classify"
    summary = "Any labelled texts"
    description = (
        "Text classification of any labelled texts. --data: a .csv, .tsv (both with a header row), .jsonl or "
        ".xlsx file; --text-column and --label-column name its columns (default text and label)."
    )
    preset = {"text_column": "text", "label_column": "label"}


class AgNewsTask(ClassificationTask):
    name = "agnews"
    summary = "AG News topics"
    description = "AG News topics. --data: an AG News CSV (official format) or tfds:ag_news_subset."
    preset = {"data": "tfds:ag_news_subset"}

    def read_file(self, path, label_names=None):
        return load_agnews(path)  # official rows: the four AG News topics, in their fixed order


class MathTopicsTask(ClassificationTask):
    name = "math"
    summary = "Math-problem topics"
    description = (
        "Math-problem topics. --data: a .jsonl/.csv/.tsv/.xlsx file; columns via --text-column/--label-column "
        "(default problem/subject; the course's xlsx uses 'Задача'/'Тема')."
    )
    preset = dict(MATH_TOPICS)
    # The from-scratch recipe, chosen on validation over 3 seeds (bench/scratch_recipes.py;
    # BENCHMARKS.md has the table of what was tried). Math problems are LaTeX: word splitting
    # strips the symbols (`$\frac{1}{2}$` becomes "frac12"), WordPiece keeps them as tokens, and
    # hashed bigrams let the model read "\frac {", "x ^" and word pairs; with them it learns more
    # slowly, at a lower peak rate, and dropping whole input tokens keeps it from memorising. For
    # AG News no change tried beat the family defaults by more than the spread between seeds.
    scratch_defaults = {"tokenizer": "wordpiece", "learning_rate": 5e-4, "token_dropout": 0.1, "bigram_buckets": 65536}


def check_class_counts(examples, subset=""):
    """`DataError` unless `examples` hold at least two classes of at least two examples each."""
    counts = examples.class_counts()
    present = [name for name, count in counts.items() if count]
    if len(present) < 2:
        found = f"only class {present[0]!r}" if present else "no examples"
        raise DataError(f"{examples.source}{subset}: {found}; classification needs at least two classes")
    scarce = {name: count for name, count in counts.items() if count < 2}
    if scarce:
        listed = ", ".join(f"{name!r} has {count}" for name, count in scarce.items())
        raise DataError(
            f"{examples.source}{subset}: too few examples per class ({listed}); every class needs at least 2, "
            "one for training and one for validation"
        )


def evaluate_texts(model: TextClassifier, examples: TextExamples, batch_size: int = 64) -> ClassificationReport:
    """A `ClassificationReport` of a `TextClassifier` on `TextExamples` (raw strings in)."""
    probabilities = model.predict_proba(examples.texts, batch_size)
    return classification_metrics(examples.labels, np.asarray(probabilities).argmax(axis=-1), examples.label_names)
