"""Run folders: what a training run leaves behind, and loading it back for evaluate/predict/export.

A run folder holds `config.json`, `labels.json`, the model (`model.keras` for the from-scratch
transformer, `model/` with a Hugging Face backbone folder for a pretrained one, `hub_model/`
with TF-Hub handles and weights for a TF-Hub pair), `history.csv`,
TensorBoard `logs/`, `checkpoints/`, and evaluation files.
"""

from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

import tfattn.layers  # noqa: F401  (registers the custom layers for load_model)
from tfattn.data import load_label_map, save_label_map
from tfattn.evaluation import classification_metrics
from tfattn.training import read_json

MODEL_FILE = "model.keras"
PRETRAINED_DIR = "model"
HUB_MODEL_DIR = "hub_model"


LABEL_MAP_FILE = "labels.json"


def write_labels(run_dir, label_names):
    save_label_map(label_names, Path(run_dir) / LABEL_MAP_FILE)


def load_run(run_dir):
    """`(model, label_names, config)` of a finished run: for text classification a strings-in
    model of class probabilities, for NER (`task` "ner") a `tfattn.tasks.ner.EntityTagger`."""
    from tfattn.run_manifest import FINISHED, read_manifest

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir}: no config.json; is this a tfattn run folder?")
    manifest = read_manifest(run_dir)
    if manifest is not None and manifest.get("status") != FINISHED:
        raise FileNotFoundError(
            f"{run_dir}: training has not finished (status {manifest.get('status')!r}); "
            "rerun its train command to resume it"
        )
    config = read_json(run_dir / "config.json")
    if config.get("task") == "ner":
        from tfattn.tasks.ner import EntityTagger

        tagger = EntityTagger.from_run(run_dir)
        return tagger, tagger.label_names, config
    if (run_dir / MODEL_FILE).exists():
        model = keras.models.load_model(run_dir / MODEL_FILE)
    elif (run_dir / PRETRAINED_DIR).is_dir():
        from tfattn.pretrained import load_pretrained_text_classifier

        model = load_pretrained_text_classifier(run_dir / PRETRAINED_DIR, config["max_length"])
    elif (run_dir / HUB_MODEL_DIR).is_dir():
        from tfattn.hub import load_hub_classifier

        model = load_hub_classifier(run_dir / HUB_MODEL_DIR)
    else:
        raise FileNotFoundError(f"{run_dir}: no saved model; did the training run finish?")
    return model, load_label_map(run_dir / LABEL_MAP_FILE), config


def predict_proba(text_model, texts, batch_size=64):
    """Class probabilities `[len(texts), classes]` of a strings-in model, in input order."""
    batches = [
        np.asarray(text_model(tf.constant(list(texts[start : start + batch_size])), training=False))
        for start in range(0, len(texts), batch_size)
    ]
    return np.concatenate(batches) if batches else np.zeros((0, 0), np.float32)


def evaluate_texts(text_model, examples, batch_size=64):
    """A `ClassificationReport` of `text_model` on `TextExamples`."""
    probabilities = predict_proba(text_model, examples.texts, batch_size)
    return classification_metrics(examples.labels, probabilities.argmax(axis=-1), examples.label_names)
