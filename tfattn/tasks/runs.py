"""Run folders: what a training run leaves behind, and loading it back for evaluate/predict/export.

A run folder holds `config.json`, `labels.json`, `model.keras` (the text model: raw strings in),
`history.csv`, TensorBoard `logs/`, `checkpoints/`, and evaluation files.
"""

from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

import tfattn.layers  # noqa: F401  (registers the custom layers for load_model)
from tfattn.evaluation import classification_metrics
from tfattn.training import read_json, write_json

MODEL_FILE = "model.keras"


def save_run_model(run_dir, text_model, label_names):
    run_dir = Path(run_dir)
    text_model.save(run_dir / MODEL_FILE)
    write_json(run_dir / "labels.json", list(label_names))


def load_run(run_dir):
    """`(text_model, label_names, config)` of a finished run."""
    run_dir = Path(run_dir)
    model_path = run_dir / MODEL_FILE
    if not model_path.exists():
        raise FileNotFoundError(f"{run_dir}: no {MODEL_FILE}; is this a finished tfattn run folder?")
    model = keras.models.load_model(model_path)
    return model, read_json(run_dir / "labels.json"), read_json(run_dir / "config.json")


def predict_proba(text_model, texts, batch_size=128):
    """Class probabilities `[len(texts), classes]` of a strings-in model, in input order."""
    dataset = tf.data.Dataset.from_tensor_slices(list(texts)).batch(batch_size)
    return np.asarray(text_model.predict(dataset, verbose=0))


def evaluate_texts(text_model, examples, batch_size=128):
    """A `ClassificationReport` of `text_model` on `TextExamples`."""
    probabilities = predict_proba(text_model, examples.texts, batch_size)
    return classification_metrics(examples.labels, probabilities.argmax(axis=-1), examples.label_names)
