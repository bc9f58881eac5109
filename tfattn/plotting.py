"""Attention-map plots: per-head [query, key] heatmaps of one text, labelled with its tokens.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas rather than pyplot, so plotting
works headless and never changes matplotlib's global backend or state.
"""

from numbers import Integral
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Inches per token along a heatmap side, and room for the token labels and title around it;
# chosen so that 7-point token labels do not overlap.
_INCHES_PER_TOKEN = 0.14
_PANEL_MARGIN_INCHES = 1.6
_MIN_PANEL_INCHES = 2.5


def plot_attention(attention, tokens, path, layers=(0,), heads=None, title=None, max_tokens=64):
    """Draw attention maps of one text as a grid: one row per layer, one column per head.

    Args:
        attention: array `[num_layers, num_heads, n, n]`, each `[query, key]` row a distribution.
        tokens: the n token strings of the text.
        path: where to write the PNG.
        layers: layer index or indices to draw.
        heads: head index or indices to draw; None draws every head.
        title: figure title.
        max_tokens: longer texts are cropped to their first `max_tokens` tokens (noted in the title).

    Returns:
        The path of the written PNG.
    """
    attention = _check_attention(attention, tokens)
    num_layers, num_heads = attention.shape[:2]
    layers = _check_indices(layers, num_layers, "layer")
    heads = _check_indices(heads, num_heads, "head")
    panels = [[(attention[layer, head], f"layer {layer}, head {head}") for head in heads] for layer in layers]
    return _save_grid(panels, tokens, path, title, max_tokens)


def plot_attention_comparison(
    before, after, tokens, path, layer=0, heads=None, labels=("before", "after"), title=None, max_tokens=64
):
    """Draw one layer's attention of the same text under two models (e.g. before/after fine-tuning).

    `before` and `after` are `[num_layers, num_heads, n, n]` arrays of the same shape; the figure
    has one row per model (named by `labels`) and one column per head, on one shared colour scale
    so the rows can be compared directly. Returns the path of the written PNG.
    """
    before = _check_attention(before, tokens)
    after = _check_attention(after, tokens)
    if before.shape != after.shape:
        raise ValueError(f"before has shape {before.shape} but after has shape {after.shape}")
    if len(labels) != 2:
        raise ValueError(f"labels needs one name per model (2), got {len(labels)}")
    (layer,) = _check_indices(layer, before.shape[0], "layer")
    heads = _check_indices(heads, before.shape[1], "head")
    panels = [
        [(maps[layer, head], f"{label}: layer {layer}, head {head}") for head in heads]
        for maps, label in zip((before, after), labels)
    ]
    return _save_grid(panels, tokens, path, title, max_tokens)


def _check_attention(attention, tokens):
    attention = np.asarray(attention, dtype=np.float32)
    if attention.ndim != 4 or attention.shape[2] != attention.shape[3]:
        raise ValueError(f"attention must have shape [layers, heads, n, n], got {attention.shape}")
    if attention.shape[2] != len(tokens):
        raise ValueError(f"attention covers {attention.shape[2]} tokens but {len(tokens)} tokens were given")
    if len(tokens) == 0:
        raise ValueError("no tokens to plot")
    return attention


def _check_indices(indices, count, kind):
    """`indices` (None = all, one int, or several) as a list, each checked against `count`."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, Integral):
        indices = [indices]
    indices = [int(index) for index in indices]
    if not indices:
        raise ValueError(f"no {kind}s chosen")
    for index in indices:
        if not 0 <= index < count:
            raise ValueError(f"{kind} {index} out of range: there are {count} {kind}s (0..{count - 1})")
    return indices


def _save_grid(panels, tokens, path, title, max_tokens):
    """Draw `panels` (rows of `(matrix, subtitle)`) as a grid of heatmaps sharing one colour scale."""
    tokens = [str(token) for token in tokens]
    if len(tokens) > max_tokens:
        note = f"first {max_tokens} of {len(tokens)} tokens"
        title = f"{title} ({note})" if title else note
        tokens = tokens[:max_tokens]
    n = len(tokens)
    panels = [[(matrix[:n, :n], subtitle) for matrix, subtitle in row] for row in panels]
    # One scale for every panel, so a pale head really is more diffuse than a dark one.
    vmax = max(float(matrix.max()) for row in panels for matrix, _ in row) or 1.0

    rows, columns = len(panels), len(panels[0])
    panel_inches = max(_MIN_PANEL_INCHES, _INCHES_PER_TOKEN * n + _PANEL_MARGIN_INCHES)
    figure = Figure(figsize=(panel_inches * columns + 1.0, panel_inches * rows + 0.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for row_axes, row_panels in zip(axes, panels):
        for ax, (matrix, subtitle) in zip(row_axes, row_panels):
            image = _draw_heatmap(ax, matrix, tokens, subtitle, vmax)
    figure.colorbar(image, ax=axes, shrink=min(1.0, 0.9 / rows + 0.1), label="attention weight")
    if title:
        figure.suptitle(title)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _draw_heatmap(ax, matrix, tokens, subtitle, vmax):
    """One head's `[query, key]` matrix on `ax`, queries down the side and keys along the bottom."""
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
    ticks = np.arange(len(tokens))
    ax.set_xticks(ticks, labels=tokens, rotation=90, fontsize=7)
    ax.set_yticks(ticks, labels=tokens, fontsize=7)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(subtitle, fontsize=9)
    return image
