"""Transformer building blocks as tf-keras layers (registered for deserialization as "tfattn>...")."""

from tfattn.layers.seq2seq import AdditiveAttention, BahdanauAttention, TransformerDecoderBlock
from tfattn.layers.transformer import (
    FitTokenIds,
    HashedBigramEmbedding,
    TokenAndPositionEmbedding,
    TransformerBlock,
    scaled_dot_product_attention,
    sinusoidal_position_encoding,
)
from tfattn.layers.vision import PATCH_TOKENIZERS, PatchEmbedding

__all__ = [
    "AdditiveAttention",
    "BahdanauAttention",
    "TransformerDecoderBlock",
    "FitTokenIds",
    "PATCH_TOKENIZERS",
    "PatchEmbedding",
    "HashedBigramEmbedding",
    "TokenAndPositionEmbedding",
    "TransformerBlock",
    "scaled_dot_product_attention",
    "sinusoidal_position_encoding",
]
