"""SavedModel export of text classifiers: a serving signature from raw strings to labels.

The exported folder loads with plain `tf.saved_model.load` (no tfattn import) and serves
`serving_default(texts: string[batch]) -> {probabilities, label, label_names}`.
"""

import os
import shutil
import uuid
from pathlib import Path

import tensorflow as tf


class _TextClassifierModule(tf.Module):
    def __init__(self, text_model, label_names):
        super().__init__()
        self.model = text_model
        self.label_names = tf.constant(list(label_names))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
    def serve(self, texts):
        probabilities = tf.cast(self.model(texts, training=False), tf.float32)
        batch = tf.shape(texts)[0]
        return {
            "probabilities": probabilities,
            "label": tf.gather(self.label_names, tf.argmax(probabilities, axis=-1)),
            # Repeated per row so every output has the batch dimension first (TF Serving rule).
            "label_names": tf.tile(self.label_names[None, :], [batch, 1]),
        }


def export_text_classifier(text_model, label_names, export_dir, overwrite=False):
    """Write `text_model` as a SavedModel serving raw strings.

    The model is saved to a temporary sibling folder first and renamed into place, so an
    interrupted export never leaves a half-written model at `export_dir`.

    Args:
        text_model: a Keras model mapping strings `[batch]` to probabilities `[batch, classes]`.
        label_names: class names in output order.
        export_dir: destination folder.
        overwrite: replace an existing `export_dir` (otherwise it is an error).

    Returns:
        The export folder as a `Path`.
    """
    from tfattn.training import check_finite_weights

    check_finite_weights(text_model)
    module = _TextClassifierModule(text_model, label_names)
    return write_atomically(
        export_dir,
        lambda staging: tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve}),
        overwrite,
    )


def write_atomically(export_dir, write, overwrite=False):
    """Run `write(staging_folder)`, then rename the staging folder to `export_dir`.

    An interrupted export never leaves a half-written folder at `export_dir`; the staging
    folders that killed exports to the same target left behind (`.NAME.tmp-PID-*` of a process
    that no longer runs) are removed first. Without `overwrite`, an existing `export_dir` is an
    error. Returns `export_dir` as a `Path`.
    """
    export_dir = Path(export_dir)
    if export_dir.exists() and not overwrite:
        raise FileExistsError(f"{export_dir} already exists; pass overwrite=True (--overwrite) to replace it")
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(export_dir)
    staging = export_dir.with_name(f".{export_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(staging)
        if export_dir.exists():
            shutil.rmtree(export_dir)
        staging.rename(export_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return export_dir


def remove_stale_staging(export_dir):
    """Delete staging folders of `export_dir` whose writing process is gone; returns their count."""
    export_dir = Path(export_dir)
    removed = 0
    for staging in export_dir.parent.glob(f".{export_dir.name}.tmp-*"):
        pid = staging.name.rsplit(".tmp-", 1)[1].split("-")[0]
        if pid.isdigit() and _process_alive(int(pid)):
            continue  # another export to the same target is still writing
        shutil.rmtree(staging, ignore_errors=True)
        removed += 1
    return removed


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
