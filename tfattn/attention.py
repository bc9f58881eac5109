"""Attention maps of a trained model for given texts: one forward pass per batch, every layer."""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfattn.layers import TokenAndPositionEmbedding, TransformerBlock
from tfattn.networks import token_model_of, vectorizer_of
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
        model: a text model from `tfattn.networks.build_text_classifier` (or one loaded back).
        texts: a string or a list of strings.
        batch_size: texts per forward pass.

    Returns:
        A list of `TextAttention`, one per text, with padding removed.
    """
    if isinstance(texts, str):
        texts = [texts]
    vectorizer = vectorizer_of(model)
    token_model = token_model_of(model)
    embedding = next(l for l in token_model.layers if isinstance(l, TokenAndPositionEmbedding))
    blocks = [l for l in token_model.layers if isinstance(l, TransformerBlock)]
    vocabulary = np.array(vectorizer.get_vocabulary())

    results = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        token_ids = vectorizer(tf.constant(batch))[:, : embedding.max_length]
        x = embedding(token_ids)
        mask = embedding.compute_mask(token_ids)
        layer_scores = []
        for block in blocks:
            x, scores = block(x, padding_mask=mask, training=False, return_attention_scores=True)
            layer_scores.append(scores)
        scores = tf.stack(layer_scores, axis=1).numpy()  # [batch, layers, heads, q, k]
        ids = token_ids.numpy()
        for row, text in enumerate(batch):
            length = int(np.count_nonzero(ids[row]))
            results.append(
                TextAttention(
                    text=text,
                    tokens=vocabulary[ids[row, :length]].tolist(),
                    attention=scores[row, :, :, :length, :length],
                )
            )
    return results
