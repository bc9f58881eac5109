"""Text classification (AG News, math-problem topics, any labelled texts): the task's data, head,
loss, metrics and validation report, for `tfattn.tasks.trainer.train`."""

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.data import TextExamples
from tfattn.data.pipelines import JIT_LENGTH_MULTIPLE, make_dataset
from tfattn.evaluation import ClassificationReport, classification_metrics, write_evaluation
from tfattn.models import TextClassifier
from tfattn.tasks.config import load_splits, load_validation_examples
from tfattn.training import MacroF1, StreamOrder


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


# A streamed run learns its from-scratch vocabulary from this many texts (the first ones).
VOCABULARY_SAMPLE = 100_000


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


class ClassificationTask:
    """One label per text; validated on a stratified split of the training file, or, when the
    training data are streamed, on the `validation_data` file."""

    monitor = "val_accuracy"

    def __init__(self, config):
        self.config = config

    def load(self):
        if not self.config.stream:
            return load_splits(self.config)
        from tfattn.data.streaming import StreamFormat, count_and_check, expand_data_files

        c = self.config
        files = expand_data_files(c.data)
        stream_format = StreamFormat.for_files(files, c.task, c.text_column, c.label_column)
        print(f"checking {len(files)} data file(s) before streaming them ...", flush=True)
        train = StreamedTexts(files, stream_format, count_and_check(files, stream_format))
        return train, load_validation_examples(c, train.label_names)

    def data_sources(self):
        if not self.config.stream:
            return [self.config.data]
        from tfattn.data.streaming import expand_data_files

        return [str(path) for path in expand_data_files(self.config.data)] + [self.config.validation_data]

    def describe(self, train, validation):
        return f"{self.config.task}: {len(train)} training / {len(validation)} validation examples from {train.source}"

    def texts_for_vocabulary(self, train):
        if isinstance(train, StreamedTexts):
            from tfattn.data.streaming import sample_texts

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


def evaluate_texts(model: TextClassifier, examples: TextExamples, batch_size: int = 64) -> ClassificationReport:
    """A `ClassificationReport` of a `TextClassifier` on `TextExamples` (raw strings in)."""
    probabilities = model.predict_proba(examples.texts, batch_size)
    return classification_metrics(examples.labels, np.asarray(probabilities).argmax(axis=-1), examples.label_names)
