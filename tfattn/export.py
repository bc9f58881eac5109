"""SavedModel export of task models: serving signatures that take raw strings.

The exported folder loads with plain `tf.saved_model.load` (no tfattn import; a WordPiece model
also needs `import tensorflow_text` first, for its tokenizer ops) and serves
`serving_default(texts: string[batch])`:
- text classifiers -> `probabilities` `[batch, classes]`, `label` `[batch]`, `label_names`;
- token classifiers (NER) -> per token `label_ids`, `labels`, `scores`, `probabilities`,
  character `offsets` `[batch, seq, 2]` and `word_ids` (-1 outside words), plus `label_names`:
  enough to group entities (`tfattn.ner.group_entities`) without a Python tokenizer.
"""

from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

TEXTS_SPEC = tf.TensorSpec([None], tf.string, name="texts")


def _batch_first(values, batch):
    # Repeated per row so every output has the batch dimension first (TF Serving rule).
    return tf.tile(values[None, :], [batch, 1])


class _ServingModule(tf.Module):
    """What a SavedModel holds: the model and its label names."""

    def __init__(self, model, label_names):
        super().__init__()
        self.model = model
        self.label_names = tf.constant(list(label_names))


class _TextClassifierModule(_ServingModule):
    @tf.function(input_signature=[TEXTS_SPEC])
    def serve(self, texts):
        probabilities = tf.nn.softmax(self.model(texts, training=False))
        return {
            "probabilities": probabilities,
            "label": tf.gather(self.label_names, tf.argmax(probabilities, axis=-1)),
            "label_names": _batch_first(self.label_names, tf.shape(texts)[0]),
        }


class _TokenClassifierModule(_ServingModule):
    @tf.function(input_signature=[TEXTS_SPEC])
    def serve(self, texts):
        tagged = self.model.tag_tokens(texts)
        return {
            **tagged,
            "labels": tf.gather(self.label_names, tagged["label_ids"]),
            "label_names": _batch_first(self.label_names, tf.shape(texts)[0]),
        }


def export_model(model, label_names: Sequence[str], export_dir: str | Path, overwrite: bool = False) -> Path:
    """Write a task model (`TextClassifier` or `TokenClassifier`) as a SavedModel serving raw strings.

    The model is saved to a temporary sibling folder first and renamed into place, so an
    interrupted export never leaves a half-written model at `export_dir`.

    Args:
        model: a task model of `tfattn.models`, e.g. from `tfattn.tasks.runs.load_run`.
        label_names: class (or tag) names in output order.
        export_dir: destination folder.
        overwrite: replace an existing `export_dir` (otherwise it is an error).

    Returns:
        The export folder as a `Path`.
    """
    from tfattn.files import write_atomically
    from tfattn.models import TokenClassifier
    from tfattn.training import check_finite_weights

    check_finite_weights(model)
    module_class = _TokenClassifierModule if isinstance(model, TokenClassifier) else _TextClassifierModule
    module = module_class(model, label_names)
    return write_atomically(
        export_dir,
        lambda staging: tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve}),
        overwrite,
    )
