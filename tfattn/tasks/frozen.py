"""Frozen-encoder phases trained on cached encoder outputs: the encoder runs once, the head many times.

While the encoder is frozen, its outputs for a text never change, yet a plain `fit` recomputes
them every epoch: the head alone (one dense layer over a pooled vector) costs nothing next to
the encoder. So for a frozen phase the trainer computes what the head reads (`head_inputs`, e.g.
the [CLS] vector of each text) once for the training and validation texts, keeps it in memory
and on disk (`frozen_cache/` in the run folder, so a resumed run does not compute it again; it
is removed when the run finishes), and fits a `HeadModel`, which shares the task model's head
layers, on it: the task model's head is trained in place.

The encoder runs in inference mode for the cache (no dropout inside it); the head's own dropout
still applies in training. Used when the task model's head inputs are cacheable (text
classification), the training data are in memory and training runs on one device; otherwise a
frozen phase trains as before, on the whole model.
"""

import math
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.data.pipelines import AUTOTUNE, make_dataset
from tfattn.training.phases import EpochOrder

CACHE_DIR = "frozen_cache"
CACHE_BATCH_SIZE = 64
HEAD_STEPS_PER_EXECUTION = 50


class HeadModel(keras.Model):
    """The head of a task model as a model of its own: head inputs in, float32 logits out.

    Its weights are the task model's head layers themselves, so training it trains them.
    """

    def __init__(self, task_model, **kwargs):
        super().__init__(**kwargs)
        self.head_layers = task_model.head_layers()  # tracked: what save_weights and fit see
        self._logits = task_model.logits_from_head_inputs  # a method: not tracked
        # Built with the task model: its head's weights exist (BackupAndRestore needs them).
        self.built = all(layer.built for layer in self.head_layers)

    def call(self, head_inputs, training=None):
        return tf.cast(self._logits(head_inputs, training=training), tf.float32)


class FinishedCachedPhase:
    """The training order of a cached phase that had finished before a resume: `fit_phase` only
    loads its weights, and the run's own `EpochOrder` must not count it (an uninterrupted run's
    cached phase drew nothing from it)."""

    batches_per_epoch = 1

    def skip_phase(self, epochs):
        pass


def can_cache(config, model):
    """Whether a frozen phase of this run trains on cached head inputs (see the module docstring)."""
    return model.head_inputs_cacheable and not config.stream and config.strategy == "default"


def compute_head_inputs(model, dataset, what, every_seconds=30.0):
    """`(head inputs [n, ...] float32, labels [n])` of a frozen `model` over a dataset of
    `(features, labels)` batches, in the dataset's order, with a progress line every
    `every_seconds`."""

    @tf.function(reduce_retracing=True)
    def head_inputs(features):
        outputs = model.encoder(features, training=False)
        return tf.cast(model.head_inputs(features, outputs), tf.float32)

    vectors, labels = [], []
    start = last = time.perf_counter()
    done = 0
    total = int(dataset.cardinality()) if dataset.cardinality() >= 0 else None
    for batch, (features, batch_labels) in enumerate(dataset):
        vectors.append(head_inputs(features).numpy())
        labels.append(batch_labels.numpy())
        done += len(labels[-1])
        now = time.perf_counter()
        if now - last >= every_seconds:
            last = now
            of = f"/{total}" if total else ""
            print(
                f"frozen encoder over the {what} texts: batch {batch + 1}{of}, {done / (now - start):.1f} texts/s",
                flush=True,
            )
    print(
        f"frozen encoder over {done} {what} texts: {time.perf_counter() - start:.1f} s (once; the head trains on them)"
    )
    return np.concatenate(vectors), np.concatenate(labels)


def _save_arrays(path, vectors, labels):
    # Written beside, then renamed: an interrupted write never leaves a cache that loads.
    staging = path.with_name(path.name + ".partial.npz")
    with open(staging, "wb") as file:
        np.savez(file, vectors=vectors, labels=labels)
    os.replace(staging, path)


def cached_head_inputs(model, run_dir, name, dataset, what):
    """Head inputs and labels of `dataset` from `run_dir/frozen_cache/NAME.npz`, computed and
    written there first when missing."""
    path = Path(run_dir) / CACHE_DIR / f"{name}.npz"
    if path.is_file():
        with np.load(path) as arrays:
            print(f"frozen encoder outputs of the {what} texts: read from {path}")
            return arrays["vectors"], arrays["labels"]
    vectors, labels = compute_head_inputs(model, dataset, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_arrays(path, vectors, labels)
    return vectors, labels


def head_dataset(vectors, labels, batch_size, shuffle=False, seed=0):
    dataset = tf.data.Dataset.from_tensor_slices((vectors, labels.astype(np.int32)))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


def cached_phase_data(model, config, run_dir, order, validation):
    """`(EpochOrder, validation dataset)` of cached head inputs for a frozen phase.

    Args:
        model: the task model, its encoder frozen.
        config: the resolved `TrainConfig` (batch size, seed).
        run_dir: the run folder, which holds the cache.
        order: the run's `EpochOrder`; its `examples` are the training features and labels.
        validation: the task's `Validation`; its `data` batches the validation features.
    """
    features, labels = order.examples
    # Bucketed by length, unshuffled: little padding, and no draw from the run's epoch order.
    train_batches = make_dataset(features, labels, CACHE_BATCH_SIZE, shuffle=False, bucket_by_length=True)
    train_vectors, train_labels = cached_head_inputs(model, run_dir, "train", train_batches, "training")
    val_vectors, val_labels = cached_head_inputs(model, run_dir, "validation", validation.data, "validation")
    train = head_dataset(train_vectors, train_labels, config.batch_size, shuffle=True, seed=config.seed)
    batches = math.ceil(len(train_labels) / config.batch_size)
    return EpochOrder(train, batches), head_dataset(val_vectors, val_labels, config.batch_size)
