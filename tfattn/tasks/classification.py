"""Text classification (AG News, math-problem topics, any labelled texts): the task's data, head,
loss, metrics and validation report, for `tfattn.tasks.trainer.train`."""

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tf_keras as keras

from tfattn.data import TextExamples
from tfattn.data.pipelines import make_dataset
from tfattn.evaluation import ClassificationReport, classification_metrics, write_evaluation
from tfattn.models import TextClassifier
from tfattn.tasks.config import load_splits
from tfattn.training import MacroF1


@dataclass
class Validation:
    """How a task validates during training: a dataset for `fit` and/or a callback that puts
    the monitored metrics into the epoch logs; `encoded` is what the task needs to score it."""

    data: Any | None = None
    callback: keras.callbacks.Callback | None = None
    encoded: Any | None = None


class ClassificationTask:
    """One label per text; validated on a stratified split of the training file."""

    monitor = "val_accuracy"

    def __init__(self, config):
        self.config = config

    def load(self):
        return load_splits(self.config)

    def data_sources(self):
        return [self.config.data]

    def describe(self, train, validation):
        return f"{self.config.task}: {len(train)} training / {len(validation)} validation examples from {train.source}"

    def texts_for_vocabulary(self, train):
        return train.texts

    def encode(self, family, examples, what):
        return family.encode_texts(examples.texts, f"{what} texts"), examples.labels

    def validation(self, family, examples):
        features, labels = self.encode(family, examples, "validation")
        return Validation(data=make_dataset(features, labels, self.config.batch_size))

    def build_model(self, preprocessor, encoder, label_names):
        return TextClassifier(
            preprocessor, encoder, len(label_names), pooling=self.config.pooling, dropout=self.config.dropout
        )

    def loss(self):
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
