"""Transformer building blocks as tf-keras layers (registered for deserialization as "tfattn>...")."""

from tfattn.layers.transformer import (
    FitTokenIds,
    HashedBigramEmbedding,
    TokenAndPositionEmbedding,
    TransformerBlock,
    scaled_dot_product_attention,
    sinusoidal_position_encoding,
)

__all__ = [
    "FitTokenIds",
    "HashedBigramEmbedding",
    "TokenAndPositionEmbedding",
    "TransformerBlock",
    "scaled_dot_product_attention",
    "sinusoidal_position_encoding",
]
