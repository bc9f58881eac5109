"""Models as three parts, for every family: preprocessor (strings -> features), encoder
(features -> contextual vectors, attention) and task model (head, freezing, saving)."""

from tfattn.models.encoders import Encoder, HuggingFaceEncoder, TransformerEncoder
from tfattn.models.hub import HubEncoder, HubPreprocessor
from tfattn.models.preprocessors import FEATURE_NAMES, VocabularyPreprocessor, preprocess_in_chunks
from tfattn.models.task_models import (
    POOLINGS,
    TextAttention,
    TextClassifier,
    TokenClassifier,
    load_model,
    save_model,
)

__all__ = [
    "FEATURE_NAMES",
    "POOLINGS",
    "Encoder",
    "HubEncoder",
    "HubPreprocessor",
    "HuggingFaceEncoder",
    "TextAttention",
    "TextClassifier",
    "TokenClassifier",
    "TransformerEncoder",
    "VocabularyPreprocessor",
    "load_model",
    "preprocess_in_chunks",
    "save_model",
]
