"""Attention-map plots: per-head [query, key] heatmaps of one text, labelled with its tokens.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas rather than pyplot, so plotting
works headless and never changes matplotlib's global backend or state.
"""

import textwrap
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
    return _save_figure(figure, title, path)


def _save_figure(figure, title, path):
    """Title `figure` (when `title`, wrapped to the figure's width), write it as a PNG to `path`
    (folders created); the path."""
    if title:
        # About 9 characters of the default title font per inch: a long title wraps, not crops.
        width = max(20, int(figure.get_figwidth() * 9))
        figure.suptitle("\n".join(textwrap.fill(line, width) for line in title.splitlines()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _draw_heatmap(ax, matrix, tokens, subtitle, vmax, row_tokens=None, labels=("key", "query")):
    """One head's `[query, key]` matrix on `ax`, queries (`row_tokens`, default `tokens`) down the
    side and keys (`tokens`) along the bottom; `labels` names the two axes (x, y)."""
    row_tokens = tokens if row_tokens is None else row_tokens
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_xticks(np.arange(len(tokens)), labels=tokens, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(row_tokens)), labels=row_tokens, fontsize=7)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(subtitle, fontsize=9)
    return image


def plot_alignment(attention, source_tokens, target_tokens, path, title=None):
    """Draw a translation's cross-attention, source tokens along the bottom and generated target
    tokens down the side (the alignment plot of Bahdanau et al.): one panel per layer, averaged
    over its heads.

    Args:
        attention: array `[num_layers, num_heads, target_len, source_len]`.
        source_tokens, target_tokens: the token strings of both sides.
        path: where to write the PNG.
        title: figure title.

    Returns:
        The written path.
    """
    attention = np.asarray(attention, dtype=np.float32)
    if attention.ndim != 4 or attention.shape[2:] != (len(target_tokens), len(source_tokens)):
        raise ValueError(
            f"attention must be [layers, heads, {len(target_tokens)} target, {len(source_tokens)} source tokens], "
            f"got shape {attention.shape}"
        )
    layers = attention.mean(axis=1)
    width = max(_MIN_PANEL_INCHES, _INCHES_PER_TOKEN * len(source_tokens) + _PANEL_MARGIN_INCHES)
    height = max(_MIN_PANEL_INCHES, _INCHES_PER_TOKEN * len(target_tokens) + _PANEL_MARGIN_INCHES)
    figure = Figure(figsize=(width * len(layers) + 1.0, height + 0.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(layers), squeeze=False)[0]
    for index, (ax, matrix) in enumerate(zip(axes, layers)):
        subtitle = f"layer {index}, mean of {attention.shape[1]} heads" if attention.shape[1] > 1 else f"layer {index}"
        image = _draw_heatmap(
            ax, matrix, list(source_tokens), subtitle, 1.0, row_tokens=list(target_tokens), labels=("source", "output")
        )
    figure.colorbar(image, ax=axes, shrink=0.9, label="attention weight")
    return _save_figure(figure, title, path)
