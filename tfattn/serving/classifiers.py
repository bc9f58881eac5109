"""SavedModel export of task models: serving signatures that take raw strings.

The exported folder loads with plain `tf.saved_model.load` (no tfattn import; a WordPiece model
also needs `import tensorflow_text` first, for its tokenizer ops) and serves
`serving_default(texts: string[batch])`:
- text classifiers -> `probabilities` `[batch, classes]`, `label` `[batch]`, `label_names`;
- token classifiers (NER) -> per token `label_ids`, `labels`, `scores`, `probabilities`,
  character `offsets` `[batch, seq, 2]` and `word_ids` (-1 outside words), plus `label_names`:
  enough to group entities (`tfattn.tagging.group_entities`) without a Python tokenizer.

Speed. A served batch mixes short and long texts; padded to its longest row, a batch of news
texts is about half padding, and the encoder's cost grows with the padded size. So the
serving function sorts the batch's rows by length and runs the encoder on buckets of
`bucket_rows` rows, each padded only to its own longest row, then puts the outputs back in
input order: each text's outputs are those it gets alone (to float rounding), whatever its
neighbours. `dtype="bfloat16"` computes the model under Keras's mixed_bfloat16 policy (float32
weights, bfloat16 products; the feed-forward GELU in float32), faster where the CPU has
bfloat16 instructions. bench/serving.py measures both, with their accuracy.
"""

from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

TEXTS_SPEC = tf.TensorSpec([None], tf.string, name="texts")

# Rows per length bucket of a text classifier's export. Rows are sorted by length first, so a
# bucket pads little; 16 rows keep the encoder's matrix products large enough (16 x 50 tokens)
# to run near the machine's matmul rate, and few enough buckets per batch that the per-call
# overhead stays small (8 and 16 serve alike on MiniLM; 32 pads noticeably more).
DEFAULT_BUCKET_ROWS = 16
SERVING_DTYPES = ("float32", "bfloat16")


def _batch_first(values, batch):
    # Repeated per row so every output has the batch dimension first (TF Serving rule).
    return tf.tile(values[None, :], [batch, 1])


def in_length_buckets(compute, features, bucket_rows, output_shape, per_token=False):
    """`compute(features)` over a batch, run on buckets of rows of similar length.

    Rows are sorted by length (`input_mask`); each bucket of `bucket_rows` consecutive sorted
    rows is cut to its own longest row before `compute` sees it; the outputs come back in the
    order of `features`. Rows do not interact in a task model, so each row's outputs are those
    of `compute` on the row alone, to float rounding.

    Args:
        compute: function from a feature dict `[rows, width]` to float32 outputs `[rows, ...]`,
            or `[rows, width, ...]` with `per_token`.
        features: the batch's feature dict, every value `[batch, seq]`.
        bucket_rows: rows per bucket, at least 1.
        output_shape: the static shape of one row's outputs after the per-token axis (e.g.
            `[num_classes]`), so that an empty batch has outputs of the right shape.
        per_token: outputs have a position axis, padded back to the batch's `seq` with zeros.

    Returns:
        float32 `[batch, *output_shape]`, or `[batch, seq, *output_shape]` with `per_token`.
    """
    if bucket_rows < 1:
        raise ValueError(f"bucket_rows must be at least 1, got {bucket_rows}")
    lengths = tf.reduce_sum(tf.cast(features["input_mask"], tf.int32), axis=1)
    batch_width = tf.shape(features["input_mask"])[1]
    order = tf.argsort(lengths, stable=True)
    num_buckets = (tf.size(order) + bucket_rows - 1) // bucket_rows

    def run_bucket(index, outputs):
        rows = order[index * bucket_rows : (index + 1) * bucket_rows]
        width = tf.reduce_max(tf.gather(lengths, rows))
        bucket = {name: tf.gather(value, rows)[:, :width] for name, value in features.items()}
        values = tf.cast(compute(bucket), tf.float32)
        if per_token:
            padding = [[0, 0], [0, batch_width - tf.shape(values)[1]]] + [[0, 0]] * len(output_shape)
            values = tf.pad(values, padding)
        return index + 1, outputs.write(index, values)

    piece_shape = [None, None, *output_shape] if per_token else [None, *output_shape]
    outputs = tf.TensorArray(
        tf.float32, size=num_buckets + 1, infer_shape=False, element_shape=tf.TensorShape(piece_shape)
    )
    # A last piece of zero rows, so that an empty batch concatenates to zero rows (an eager
    # TensorArray cannot concatenate nothing).
    empty_shape = [0, batch_width, *output_shape] if per_token else [0, *output_shape]
    outputs = outputs.write(num_buckets, tf.zeros(tf.stack(empty_shape)))
    _, outputs = tf.while_loop(lambda index, _: index < num_buckets, run_bucket, [tf.constant(0), outputs])
    # Sorted row i is input row order[i]: gathering at the inverse permutation restores the order.
    return tf.gather(outputs.concat(), tf.argsort(order))


class _ServingModule(tf.Module):
    """What a SavedModel holds: the model, its label names and how it serves a batch."""

    def __init__(self, model, label_names, bucket_rows):
        super().__init__()
        self.model = model
        self.label_names = tf.constant(list(label_names))
        self.bucket_rows = int(bucket_rows)


class _TextClassifierModule(_ServingModule):
    @tf.function(input_signature=[TEXTS_SPEC])
    def serve(self, texts):
        if self.bucket_rows:
            logits = in_length_buckets(
                lambda features: self.model(features, training=False),
                self.model.features(texts),
                self.bucket_rows,
                [self.model.num_classes],
            )
        else:
            logits = self.model(texts, training=False)
        probabilities = tf.nn.softmax(logits)
        return {
            "probabilities": probabilities,
            "label": tf.gather(self.label_names, tf.argmax(probabilities, axis=-1)),
            "label_names": _batch_first(self.label_names, tf.shape(texts)[0]),
        }


class _TokenClassifierModule(_ServingModule):
    @tf.function(input_signature=[TEXTS_SPEC])
    def serve(self, texts):
        tagged = self._tag_in_buckets(texts) if self.bucket_rows else self.model.tag_tokens(texts)
        return {
            **tagged,
            "labels": tf.gather(self.label_names, tagged["label_ids"]),
            "label_names": _batch_first(self.label_names, tf.shape(texts)[0]),
        }

    def _tag_in_buckets(self, texts):
        """`tag_tokens` with the encoder run in length buckets; positions past a text's last
        token (padding) get probabilities and scores 0 and label id 0."""
        # One tokenization: the model's features (with word shape ids when it reads them) and the offsets.
        features, encoded = self.model.encode_for_tagging(texts)
        logits = in_length_buckets(
            lambda bucket: self.model(bucket, training=False),
            features,
            self.bucket_rows,
            [len(self.model.label_names)],
            per_token=True,
        )
        real = tf.cast(features["input_mask"], tf.float32)[:, :, None]
        return self.model.tagged(tf.nn.softmax(logits) * real, encoded)


def computing_in(model, dtype):
    """`model` itself for float32; for bfloat16, a copy built under Keras's mixed_bfloat16
    policy (float32 weights, bfloat16 products) holding the same weights, its feed-forward
    activations computed in float32 (`_float32_feed_forward_activations`)."""
    if dtype not in SERVING_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(SERVING_DTYPES)}; got {dtype!r}")
    if dtype == "float32":
        return model
    model(tf.constant(["build"]), training=False)  # a model not called yet lacks its head's weights
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        # Rebuilt from its config, so every layer (a Hugging Face backbone included) is made
        # under the policy, as a model trained with mixed precision is.
        copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
        copy(tf.constant(["build"]), training=False)  # creates the variables
    finally:
        keras.mixed_precision.set_global_policy(previous)
    # Names may differ (Keras numbers the copy's layers); the order and shapes may not.
    shapes = [tuple(weight.shape) for weight in model.weights]
    if [tuple(weight.shape) for weight in copy.weights] != shapes:
        raise ValueError(f"{type(model).__name__}: the bfloat16 copy does not have the model's weights")
    copy.set_weights(model.get_weights())
    _float32_feed_forward_activations(copy)
    return copy


def _float32_feed_forward_activations(model):
    """Compute the feed-forward activation of every Hugging Face BERT-family layer that holds one
    (`intermediate_act_fn`, GELU) in float32, in place.

    TensorFlow's bfloat16 `erf` (the exact GELU) is not vectorized on CPU: measured on MiniLM it
    took four times its float32 time, a quarter of the whole bfloat16 forward. Cast to float32
    and back, it costs what it does in a float32 model, and it is exact in float32 besides.
    """
    for layer in model._flatten_layers(include_self=False, recursive=True):
        activation = getattr(layer, "intermediate_act_fn", None)
        if activation is None or getattr(activation, "_tfattn_float32", False):
            continue

        def in_float32(x, activation=activation):
            return tf.cast(activation(tf.cast(x, tf.float32)), x.dtype)

        in_float32._tfattn_float32 = True
        layer.intermediate_act_fn = in_float32


def export_model(
    model,
    label_names: Sequence[str],
    export_dir: str | Path,
    overwrite: bool = False,
    bucket_rows: int | None = None,
    dtype: str = "float32",
    protected: Sequence[str | Path] = (),
) -> Path:
    """Write a task model (`TextClassifier` or `TokenClassifier`) as a SavedModel serving raw strings.

    The model is saved to a temporary sibling folder first and renamed into place, so an
    interrupted export never leaves a half-written model at `export_dir`.

    Args:
        model: a task model of `tfattn.models`, e.g. from `tfattn.tasks.encoder_task.load_run`.
        label_names: class (or tag) names in output order.
        export_dir: destination folder.
        overwrite: replace an existing `export_dir` that tfattn exported (otherwise it is an
            error; a folder holding anything else is never replaced, see `tfattn.files.write_export`).
        bucket_rows: serve a batch in buckets of this many rows of similar length, each padded
            to its own longest row (see the module docstring); 0 pads the whole batch to its
            longest row. Default: `DEFAULT_BUCKET_ROWS` for text classifiers; 0 for token
            classifiers, whose per-token outputs at padding positions then stay those of
            `TokenClassifier.tag_tokens` (bucketed, padding positions are zeros).
        dtype: "float32", or "bfloat16" to compute the model in bfloat16 (mixed precision).
        protected: folders `export_dir` must not be or hold, e.g. the run being exported.

    Returns:
        The export folder as a `Path`.
    """
    from tfattn.files import check_export_target, write_export
    from tfattn.models import TokenClassifier
    from tfattn.models.weights import check_finite_weights

    check_export_target(export_dir, overwrite, protected)  # before the slow work
    check_finite_weights(model)
    token_classifier = isinstance(model, TokenClassifier)
    if bucket_rows is None:
        bucket_rows = 0 if token_classifier else DEFAULT_BUCKET_ROWS
    if bucket_rows < 0:
        raise ValueError(f"bucket_rows must be 0 (no buckets) or more, got {bucket_rows}")
    module_class = _TokenClassifierModule if token_classifier else _TextClassifierModule
    module = module_class(computing_in(model, dtype), label_names, bucket_rows)
    return write_export(
        export_dir,
        lambda staging: tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve}),
        overwrite,
        protected,
        info={"kind": "token classifier" if token_classifier else "text classifier"},
    )
