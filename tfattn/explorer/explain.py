"""What the explorer shows for one model and one text: tokens, prediction and attention views.

`explain(model, text, label_names)` runs the model once under a `tf.GradientTape` and returns an
`Explanation`: the tokens (padding removed, cropped to `max_tokens`), which of them are special,
the prediction, and up to four views, each a float array `[layers, heads, query, key]`:

- `raw`: every head's attention;
- `mean`: the mean over heads (1 head);
- `rollout`: attention rollout after each layer (1 head; `tfattn.attention.attention_rollout`);
- `gradient`: attention times the gradient of the predicted logit, clipped at zero, per head
  (missing, with the reason in `unavailable`, where the attention is not on the path to the
  logits, as in a TF-Hub module).

Rollout and gradients are computed on the whole text before cropping, so a cropped page shows
the same numbers as an uncropped one for the tokens it keeps.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import tensorflow as tf

from tfattn.attention import (
    attention_and_gradients,
    attention_rollout,
    gradient_weighted_attention,
    mean_over_heads,
    special_token_mask,
)
from tfattn.explorer.page import encode_view
from tfattn.models.preprocessors import tokens_of
from tfattn.models.task_models import TaskModel, TextClassifier
from tfattn.models.wordpiece import BertPreprocessor

__all__ = ["VIEW_LABELS", "Explanation", "explain", "explain_generation", "family_name"]

# The views in display order, with the names the page shows.
VIEW_LABELS = {
    "raw": "Raw attention (per head)",
    "mean": "Mean over heads",
    "rollout": "Attention rollout",
    "gradient": "Gradient-weighted attention (per head)",
}


@dataclass
class Explanation:
    """One model's view of one text (see the module docstring); `to_payload` makes the page's
    JSON for it."""

    name: str
    family: str
    text: str
    tokens: list
    special: np.ndarray  # bool [tokens]
    layers: list
    num_heads: int
    prediction: dict
    views: dict  # name -> float32 [len(layers), heads, tokens, tokens]
    unavailable: dict = field(default_factory=dict)  # name -> why it is missing
    notes: list = field(default_factory=list)

    def with_layers(self, layers: Sequence[int]) -> "Explanation":
        """The same explanation restricted to the given model layer indices (views keep their
        values: rollout still multiplies every layer up to each one kept)."""
        layers = [int(layer) for layer in layers]
        missing = [layer for layer in layers if layer not in self.layers]
        if missing or not layers:
            raise ValueError(f"layers must be among {self.layers}; got {layers}")
        positions = [self.layers.index(layer) for layer in layers]
        return replace(self, layers=layers, views={name: view[positions] for name, view in self.views.items()})

    def absolute_max(self, name: str) -> float:
        """The top of view `name`'s absolute colour scale: 1 for attention weights (raw, mean and
        rollout rows sum to 1); gradient-weighted attention has no fixed bound, so its largest
        value over every layer and head shown, which keeps its maps comparable with each other."""
        return float(self.views[name].max(initial=0.0)) if name == "gradient" else 1.0

    def to_payload(self) -> dict:
        """The `RUN` object of the page payload (`tfattn/explorer/page.py`)."""
        special = [bool(value) for value in self.special]
        return {
            "name": self.name,
            "family": self.family,
            "text": self.text,
            "kind": "self",
            "query_tokens": list(self.tokens),
            "key_tokens": list(self.tokens),
            "query_special": special,
            "key_special": special,
            "notes": list(self.notes),
            "layers": list(self.layers),
            "num_heads": self.num_heads,
            "prediction": self.prediction,
            "views": {
                name: encode_view(array, VIEW_LABELS[name], self.absolute_max(name))
                for name, array in self.views.items()
            },
            "unavailable": dict(self.unavailable),
        }


def family_name(model: TaskModel) -> str:
    """The model family as the page names it ("from scratch", "Hugging Face", "TF-Hub": the
    encoder's `family_name`), or the encoder's class name."""
    return model.encoder.family_name or type(model.encoder).__name__


def explain(
    model: TaskModel,
    text: str,
    label_names: Sequence[str] | None = None,
    text_pair: str | None = None,
    layers: Sequence[int] | None = None,
    max_tokens: int = 64,
    name: str = "model",
) -> Explanation:
    """The tokens, prediction and attention views of `model` on `text`.

    Args:
        model: a `TextClassifier` or `TokenClassifier` of any family.
        text: the text.
        label_names: the class names (default: a token classifier's own, else "0", "1", ...).
        text_pair: a second text, for a sentence pair `[CLS] text [SEP] text_pair [SEP]`
            (BERT-family WordPiece preprocessors only).
        layers: the layer indices to include (default all); rollout still multiplies every
            layer up to each one included.
        max_tokens: show at most this many tokens (the first ones); a note says what was cut.
        name: what the page calls this model, e.g. the run folder's name.
    """
    if int(max_tokens) < 2:
        raise ValueError(f"max_tokens must be at least 2, got {max_tokens!r}")
    features = _encode(model, text, text_pair)
    length = int(tf.reduce_sum(features["input_mask"][0]))
    vocabulary = model.preprocessor.vocabulary
    vocabulary = None if vocabulary is None else np.asarray(vocabulary, dtype=object)
    tokens = tokens_of(vocabulary, features["input_word_ids"][0, :length].numpy())
    special = special_token_mask(tokens)
    padded_special = np.zeros(features["input_mask"].shape, bool)
    padded_special[0, :length] = special
    result = attention_and_gradients(model, features, special=padded_special)

    attention = result["attention"][0, :, :, :length, :length]
    views = {
        "raw": attention,
        "mean": mean_over_heads(attention)[:, None],
        "rollout": attention_rollout(attention)[:, None],
    }
    unavailable = {}
    if result["gradients"] is None:
        unavailable["gradient"] = (
            f"this {family_name(model)} encoder returns its attention as a separate output, "
            "not on the path to the logits, so it has no gradient"
        )
    else:
        gradients = result["gradients"][0, :, :, :length, :length]
        views["gradient"] = gradient_weighted_attention(attention, gradients)

    notes = []
    shown = min(length, int(max_tokens))
    if shown < length:
        notes.append(
            f"cropped to the first {shown} of {length} tokens (--max-tokens); attention to the rest is not shown"
        )
        views = {view: array[:, :, :shown, :shown] for view, array in views.items()}
    logits = result["logits"][0, :length][:shown] if result["logits"].ndim == 3 else result["logits"][0]
    if label_names is None:
        label_names = getattr(model, "label_names", None) or [str(i) for i in range(logits.shape[-1])]
    explanation = Explanation(
        name=name,
        family=family_name(model),
        text=text if text_pair is None else f"{text} ||| {text_pair}",
        tokens=tokens[:shown],
        special=special[:shown],
        layers=list(range(attention.shape[0])),
        num_heads=int(attention.shape[1]),
        prediction=_prediction(model, logits, list(label_names), special[:shown]),
        views={view: np.asarray(array, np.float32) for view, array in views.items()},
        unavailable=unavailable,
        notes=notes,
    )
    return explanation if layers is None else explanation.with_layers(layers)


def _encode(model, text, text_pair):
    """The feature dict of one text (or pair), batch 1."""
    if text_pair is None:
        return model.features([text])
    if not isinstance(model.preprocessor, BertPreprocessor) or getattr(model, "word_shape", False):
        raise ValueError(
            f"text_pair: sentence pairs need a BERT-family (WordPiece) classifier; this {family_name(model)} "
            f"model's {type(model.preprocessor).__name__} reads one text"
        )
    preprocessor = model.preprocessor
    return preprocessor.pack([preprocessor.tokenize([text]), preprocessor.tokenize([text_pair])])


def _prediction(model, logits, label_names, special):
    """The page's prediction object: a label with probabilities, or one tag per token."""
    if len(label_names) != logits.shape[-1]:
        raise ValueError(f"label_names has {len(label_names)} names for the model's {logits.shape[-1]} outputs")
    probabilities = tf.nn.softmax(logits).numpy()
    if isinstance(model, TextClassifier):
        return {
            "type": "label",
            "labels": label_names,
            "probabilities": [round(float(p), 6) for p in probabilities],
            "predicted": int(probabilities.argmax()),
        }
    tags = np.where(special, -1, probabilities.argmax(axis=-1))
    return {
        "type": "tags",
        "labels": label_names,
        "tags": [int(tag) for tag in tags],
        "scores": [round(float(score), 6) for score in probabilities.max(axis=-1)],
    }


def explain_generation(
    model,
    prompt: str,
    name: str = "",
    max_new_tokens: int = 20,
    max_tokens: int = 64,
    layers: Sequence[int] | None = None,
    **decoding_options,
) -> Explanation:
    """The explorer's view of a language model continuing `prompt`: the continuation decoded
    (greedy unless `decoding_options`, `tfattn.decoding.DecodingOptions` fields, say otherwise),
    then one forward pass over prompt + continuation for the causal self-attention of every
    layer and head (`raw`, `mean`, `rollout`; no gradient view: a generated text has no single
    predicted logit). Row i of a map is what token i attended to while predicting token i + 1:
    the first generated token comes from the last prompt token's row.

    Args:
        model: a language model with the step interface and `self_attention(ids)`, `pieces(ids)`
            (`tfattn.models.causal_lm.GPT`, `tfattn.models.hf_causal_lm.HuggingFaceCausalLM`).
        max_tokens: show at most this many tokens, the last ones (the continuation stays).
    """
    from tfattn.decoding import DecodingOptions, decode
    from tfattn.models.causal_lm import fit_prompts

    options = DecodingOptions(max_length=int(max_new_tokens), **decoding_options)
    (prompt_ids,) = fit_prompts(model.tokenize_prompts([prompt]), model.context_length, options.max_length)
    generated = decode(model, np.array([prompt_ids], np.int32), options).token_ids[0].numpy().tolist()
    if model.eos_id in generated:
        generated = generated[: generated.index(model.eos_id) + 1]
    ids = list(prompt_ids) + generated
    attention = np.asarray(model.self_attention(np.array([ids], np.int32))[0], np.float32)  # [layers, heads, T, T]
    views = {
        "raw": attention,
        "mean": mean_over_heads(attention)[:, None],
        "rollout": attention_rollout(attention)[:, None],
    }
    notes = []
    shown = min(len(ids), int(max_tokens))
    if shown < len(ids):
        notes.append(
            f"cropped to the last {shown} of {len(ids)} tokens (--max-tokens); attention to the rest is not shown"
        )
        views = {view: array[:, :, -shown:, -shown:] for view, array in views.items()}
    tokens = model.pieces(ids)[-shown:]
    continuation = model.detokenize(np.array([generated], np.int32))[0] if generated else ""
    explanation = Explanation(
        name=name,
        family=model.family_name,
        text=prompt + continuation,
        tokens=tokens,
        special=np.array([token_id == model.eos_id for token_id in ids[-shown:]]),
        layers=list(range(attention.shape[0])),
        num_heads=int(attention.shape[1]),
        prediction={
            "type": "generation",
            "prompt_tokens": max(0, len(prompt_ids) - (len(ids) - shown)),
            "strategy": options.strategy,
        },
        views={view: np.asarray(array, np.float32) for view, array in views.items()},
        unavailable={"gradient": "a generated text has no single predicted logit to take the gradient of"},
        notes=notes,
    )
    return explanation if layers is None else explanation.with_layers(layers)
