"""Attention maps of a trained model for given texts: one forward pass per batch, every layer."""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfattn.layers import FitTokenIds, TokenAndPositionEmbedding, TransformerBlock
from tfattn.networks import fit_token_ids_of, token_model_of, vectorizer_of
from tfattn.plotting import plot_attention

__all__ = ["TextAttention", "extract_attention", "plot_attention"]


@dataclass
class TextAttention:
    """Attention of one text: `attention[layer]` is `[heads, tokens, tokens]` (query, key)."""

    text: str
    tokens: list
    attention: np.ndarray  # [layers, heads, tokens, tokens]

    @property
    def num_layers(self):
        return self.attention.shape[0]

    @property
    def num_heads(self):
        return self.attention.shape[1]


def extract_attention(model, texts, batch_size=32):
    """Per-layer attention weights and token strings for each text.

    Args:
        model: a strings-in model of any family: the from-scratch transformer
            (`tfattn.networks.build_text_classifier`), a pretrained one
            (`tfattn.pretrained.PretrainedTextClassifier`) or a TF-Hub one
            (`tfattn.hub.HubBertClassifier`), e.g. from `load_run`.
        texts: a string or a list of strings.
        batch_size: texts per forward pass.

    Returns:
        A list of `TextAttention`, one per text, with padding removed.
    """
    if isinstance(texts, str):
        texts = [texts]
    if hasattr(model, "attention_maps"):  # TF-Hub models: `tfattn.hub.HubBertClassifier`
        forward = model.attention_maps
    elif hasattr(model, "preprocessor"):
        forward = _pretrained_forward(model)
    else:
        forward = _scratch_forward(model)
    results = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        tokens, scores = forward(batch)  # tokens per text; scores [batch, layers, heads, q, k]
        for row, text in enumerate(batch):
            length = len(tokens[row])
            results.append(TextAttention(text, tokens[row], scores[row, :, :, :length, :length]))
    return results


def _scratch_forward(model):
    vectorizer = vectorizer_of(model)
    token_model = token_model_of(model)
    embedding = next(layer for layer in token_model.layers if isinstance(layer, TokenAndPositionEmbedding))
    blocks = [layer for layer in token_model.layers if isinstance(layer, TransformerBlock)]
    vocabulary = np.array(vectorizer.get_vocabulary())
    fit = fit_token_ids_of(model) or FitTokenIds(embedding.max_length)

    def forward(batch):
        token_ids = fit(vectorizer(tf.constant(batch)))
        x = embedding(token_ids)
        mask = embedding.compute_mask(token_ids)
        layer_scores = []
        for block in blocks:
            x, scores = block(x, padding_mask=mask, training=False, return_attention_scores=True)
            layer_scores.append(scores)
        ids = token_ids.numpy()
        tokens = [vocabulary[row[row != 0]].tolist() for row in ids]
        return tokens, tf.stack(layer_scores, axis=1).numpy()

    return forward


def _pretrained_forward(model):
    vocabulary = np.array(model.preprocessor.vocabulary)

    def forward(batch):
        features = model.preprocessor(tf.constant(batch))
        _, attentions = model.classifier(features, training=False, output_attentions=True)
        mask = features["attention_mask"].numpy().astype(bool)
        ids = features["input_ids"].numpy()
        tokens = [vocabulary[row[keep]].tolist() for row, keep in zip(ids, mask)]
        return tokens, tf.stack(attentions, axis=1).numpy()

    return forward
