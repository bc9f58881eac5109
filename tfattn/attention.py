"""Attention of a trained model: every layer and head, its gradients, and the aggregations that
turn them into one map (mean over heads, rollout, gradient-weighted) or one score per token.

Arrays follow one layout: `[layers, heads, query, key]` for one text (a leading batch axis where
a function says so), each row a query token's attention over the key tokens.

- `extract_attention`: every layer's attention of raw texts (`TextAttention`, padding removed).
- `attention_and_gradients`: attention, logits and the gradient of the predicted class's logit
  with respect to every attention weight, from one forward pass under one `tf.GradientTape`.
- `mean_over_heads`, `attention_rollout` (Abnar & Zuidema 2020), `gradient_weighted_attention`
  (attention times its gradient, clipped at zero), `hide_special_tokens` (drop `[CLS]`/`[SEP]`
  rows and columns, renormalize rows), `token_importance` (one score per input token, to rank
  tokens for the faithfulness benchmark).
- `attention_uniformity`: how far a map is from uniform, each row's entropy over log(n)
  averaged over rows (1 = uniform, 0 = each row on one key); the explorer and the PNG plots
  show it beside every map. It is plain numpy, defined in `tfattn.plotting`.
"""

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfattn.models.task_models import TaskModel, TextAttention, TextClassifier
from tfattn.plotting import attention_uniformity, plot_attention, plot_attention_comparison

__all__ = [
    "ADDED_SPECIAL_TOKENS",
    "IMPORTANCE_METHODS",
    "TextAttention",
    "attention_and_gradients",
    "attention_rollout",
    "attention_uniformity",
    "extract_attention",
    "gradient_weighted_attention",
    "hide_special_tokens",
    "mean_over_heads",
    "plot_attention",
    "plot_attention_comparison",
    "special_token_mask",
    "token_importance",
]

# Tokens a tokenizer adds around the text (BERT's, and RoBERTa-style ones): never ranked, and
# hidden by the explorer's toggle. Padding is removed before any aggregation.
ADDED_SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"})


def extract_attention(model: TaskModel, texts: str | Sequence[str], batch_size: int = 32) -> list[TextAttention]:
    """Per-layer attention weights and token strings for each text.

    Args:
        model: a task model of any family (`tfattn.models.TextClassifier` or
            `TokenClassifier`), e.g. from `tfattn.tasks.encoder_task.load_run`.
        texts: a string or a list of strings.
        batch_size: texts per forward pass.

    Returns:
        A list of `TextAttention`, one per text, with padding removed.
    """
    return model.attention(texts, batch_size=batch_size)


def special_token_mask(tokens: Sequence[str]) -> np.ndarray:
    """Bool `[tokens]`: which tokens are special (`ADDED_SPECIAL_TOKENS`)."""
    return np.array([token in ADDED_SPECIAL_TOKENS for token in tokens], dtype=bool)


def attention_and_gradients(model: TaskModel, features: dict, special: np.ndarray | None = None) -> dict:
    """Attention, logits and attention gradients of a batch of features, from one forward pass.

    The target is the predicted class's logit: for a `TextClassifier` the logit of each text's
    argmax class; for a `TokenClassifier` the sum, over the real tokens that are not special,
    of each token's predicted-tag logit. Texts in a batch do not interact, so the gradient of
    the batch's summed target is each text's own gradient.

    Args:
        model: a task model.
        features: the padded feature dict of a batch (`model.features(texts)`).
        special: optional bool `[batch, seq]`, tokens left out of a token classifier's target.

    Returns:
        A dict of numpy arrays: `attention` `[batch, layers, heads, seq, seq]`, `logits`, and
        `gradients` (same shape as `attention`), or None when the encoder's attention is not on
        the path to the logits (a TF-Hub module returns it as a separate output).
    """
    if not model.built:
        model(features, training=False)  # creates the weights, which the tape must watch
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        # Watch every float weight, trainable or not: the ops of a frozen encoder are recorded
        # only when something they read is watched, and the attention is computed from them.
        tape.watch([variable for variable in model.variables if variable.dtype.is_floating])
        outputs = model.forward(features, training=False, output_attentions=True)
        logits, scores = outputs["logits"], outputs["attention_scores"]
        target = _predicted_logit(model, logits, features, special)
    gradients = tape.gradient(target, scores)
    return {
        "attention": _stack_layers(scores),
        "logits": logits.numpy(),
        "gradients": None if any(g is None for g in gradients) else _stack_layers(gradients),
    }


def _stack_layers(layers):
    """A list of `[batch, heads, q, k]` tensors -> float32 numpy `[batch, layers, heads, q, k]`."""
    return tf.stack([tf.cast(layer, tf.float32) for layer in layers], axis=1).numpy()


def _predicted_logit(model, logits, features, special):
    """The scalar whose gradient `attention_and_gradients` takes (see there)."""
    chosen = tf.reduce_max(logits, axis=-1)  # the predicted class's logit, per text or per token
    if isinstance(model, TextClassifier):
        return tf.reduce_sum(chosen)
    weights = tf.cast(features["input_mask"], tf.float32)
    if special is not None:
        weights *= tf.cast(~np.asarray(special, bool), tf.float32)
    return tf.reduce_sum(chosen * weights)


def mean_over_heads(attention: np.ndarray) -> np.ndarray:
    """`[..., layers, heads, query, key]` -> `[..., layers, query, key]`, the mean over heads."""
    return tf.reduce_mean(tf.convert_to_tensor(attention, tf.float32), axis=-3).numpy()


def attention_rollout(attention: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) after each layer: `[layers, heads, q, k]` ->
    `[layers, q, k]`, square (self-attention).

    Each layer's head-mean attention gets the identity added for the residual connection and its
    rows renormalized, `A_l = (mean_h(attention_l) + I) / row sums`; the rollout after layer `l`
    is the product `A_l @ A_(l-1) @ ... @ A_0`: how much each token at layer `l`'s output draws
    on each input token.
    """
    mixed = tf.convert_to_tensor(mean_over_heads(attention))
    mixed = mixed + tf.eye(mixed.shape[-1], dtype=mixed.dtype)
    mixed = mixed / tf.reduce_sum(mixed, axis=-1, keepdims=True)
    rollout, result = None, []
    for layer in tf.unstack(mixed):
        rollout = layer if rollout is None else tf.matmul(layer, rollout)
        result.append(rollout)
    return tf.stack(result).numpy()


def gradient_weighted_attention(attention: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Attention times the gradient of the predicted logit with respect to it, clipped at zero:
    the weights that, raised, would raise the prediction. Same shape as `attention`."""
    product = tf.convert_to_tensor(attention, tf.float32) * tf.convert_to_tensor(gradients, tf.float32)
    return tf.nn.relu(product).numpy()


def hide_special_tokens(matrix: np.ndarray, query_special: np.ndarray, key_special: np.ndarray | None = None):
    """Drop special query rows and key columns of `[..., query, key]` and renormalize each row to
    sum to 1 (a row that sums to 0 stays 0): how the rest of the text shares the attention."""
    key_special = query_special if key_special is None else key_special
    kept = tf.convert_to_tensor(matrix, tf.float32)
    kept = tf.boolean_mask(kept, ~np.asarray(query_special, bool), axis=kept.shape.rank - 2)
    kept = tf.boolean_mask(kept, ~np.asarray(key_special, bool), axis=kept.shape.rank - 1)
    sums = tf.reduce_sum(kept, axis=-1, keepdims=True)
    return tf.math.divide_no_nan(kept, sums).numpy()


# How `token_importance` ranks tokens, in the order the explorer and benchmark report them.
IMPORTANCE_METHODS = ("raw", "rollout", "gradient")


def token_importance(
    method: str,
    attention: np.ndarray,
    read_rows: np.ndarray,
    gradients: np.ndarray | None = None,
) -> np.ndarray:
    """One score per key token of one text, higher = more important to the prediction.

    Args:
        method: `"raw"` (the last layer's head-mean attention), `"rollout"` (the rollout after
            the last layer) or `"gradient"` (gradient-weighted attention summed over layers,
            heads and query rows: the gradient is already zero where a row does not reach the
            prediction).
        attention: `[layers, heads, seq, seq]`.
        read_rows: float `[seq]`, how much the head reads each position's output vector: 1 at
            `[CLS]` for cls/pooled pooling, 1/n at each of the n real tokens for mean pooling.
            Used by "raw" and "rollout", as the weights of the query rows.
        gradients: `[layers, heads, seq, seq]`, needed by "gradient".
    """
    if method == "raw":
        return np.asarray(read_rows, np.float32) @ mean_over_heads(attention)[-1]
    if method == "rollout":
        return np.asarray(read_rows, np.float32) @ attention_rollout(attention)[-1]
    if method == "gradient":
        if gradients is None:
            raise ValueError("method 'gradient' needs the attention gradients")
        return gradient_weighted_attention(attention, gradients).sum(axis=(0, 1, 2))
    raise ValueError(f"method must be one of {', '.join(IMPORTANCE_METHODS)}; got {method!r}")
