"""Attention maps of a trained model for given texts, every layer and head, and their plots."""

from collections.abc import Sequence

from tfattn.models.task_models import TaskModel, TextAttention
from tfattn.plotting import plot_attention, plot_attention_comparison

__all__ = ["TextAttention", "extract_attention", "plot_attention", "plot_attention_comparison"]


def extract_attention(model: TaskModel, texts: str | Sequence[str], batch_size: int = 32) -> list[TextAttention]:
    """Per-layer attention weights and token strings for each text.

    Args:
        model: a task model of any family (`tfattn.models.TextClassifier` or
            `TokenClassifier`), e.g. from `tfattn.tasks.runs.load_run`.
        texts: a string or a list of strings.
        batch_size: texts per forward pass.

    Returns:
        A list of `TextAttention`, one per text, with padding removed.
    """
    return model.attention(texts, batch_size=batch_size)
