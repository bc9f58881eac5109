"""Attention-map plots: per-head [query, key] heatmaps of one text, labelled with its tokens and
with how far each map is from uniform (`attention_uniformity`).

Figures are built on `matplotlib.figure.Figure` with the Agg canvas rather than pyplot, so plotting
works headless and never changes matplotlib's global backend or state.

Colour scales: "absolute" (the default) runs from 0 to a fixed top, 1 for attention weights, so a
near-uniform map of 15 tokens (every weight about 0.067) is drawn as evenly pale as it is;
"stretched" runs from the drawn maps' smallest to their largest value, which shows small
differences but makes them look large. The colour bar's label says which scale is drawn.

`attention_uniformity` is plain numpy and lives here so that plotting needs no TensorFlow;
`tfattn.attention` exports it too.
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

SCALES = ("absolute", "stretched")
# The line under every figure that says what the number in each panel's title means.
_UNIFORMITY_NOTE = "uniformity: mean over query rows of entropy / log(n keys); 1 = uniform, 0 = each row on one key"


def attention_uniformity(attention):
    """How close attention maps are to uniform: each row's entropy divided by log(n), the entropy
    of the uniform row over the same n keys, averaged over the rows of each map.

    1.0 means every row spreads its weight evenly over its n keys (the map singles out nothing);
    0.0 means every row puts all of its weight on one key. A map whose weights all lie within 2%
    of 1/n scores above 0.999, however dark a stretched colour scale draws its largest cells.

    Each row is divided by its sum first, so the measure also reads non-negative maps whose rows
    do not sum to 1 (gradient-weighted attention, a cropped map). Rows that sum to 0 (masked
    queries, or rows whose keys were all hidden) are left out of the mean; a map with no weight
    at all singles out nothing and scores 1.0, and so does a map with one key (n = 1), where the
    only possible row is uniform. Remove padding before measuring: padded keys count in n.

    Args:
        attention: array `[..., query, key]` of values >= 0, e.g. `[layers, heads, n, n]`.

    Returns:
        float64 array `[...]`, one value per map (a numpy float for a single `[query, key]` map).

    Example:
    >>> uniform, one_hot = [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]
    >>> round(float(attention_uniformity([uniform, one_hot])), 4)  # the mean of 1 and 0
    0.5
    >>> attention_uniformity([[[uniform]], [[one_hot]]]).round(4).tolist()
    [[1.0], [0.0]]
    """
    values = np.asarray(attention, dtype=np.float64)
    if values.ndim < 2:
        raise ValueError(f"attention maps are [..., query, key]; got an array of shape {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("attention_uniformity reads values >= 0; got negative or non-finite values")
    num_keys = values.shape[-1]
    if num_keys <= 1:
        return np.ones(values.shape[:-2])[()]
    sums = values.sum(axis=-1, keepdims=True)
    rows = np.divide(values, sums, out=np.zeros_like(values), where=sums > 0)
    # 0 log 0 = 0: log(1) stands in for the log of a zero weight.
    entropy = -(rows * np.log(np.where(rows > 0, rows, 1.0))).sum(axis=-1)
    weighted = sums[..., 0] > 0
    counted = weighted.sum(axis=-1)
    mean = np.where(weighted, entropy, 0.0).sum(axis=-1) / np.maximum(counted, 1) / np.log(num_keys)
    # Rounding can put a uniform row a hair above log(n).
    return np.clip(np.where(counted > 0, mean, 1.0), 0.0, 1.0)[()]


def plot_attention(
    attention,
    tokens,
    path,
    layers=(0,),
    heads=None,
    title=None,
    max_tokens=64,
    scale="absolute",
    absolute_max=1.0,
    value_label="attention weight",
):
    """Draw attention maps of one text as a grid: one row per layer, one column per head, each
    panel titled with its uniformity (`attention_uniformity`).

    Args:
        attention: array `[num_layers, num_heads, n, n]`, each `[query, key]` row a distribution.
        tokens: the n token strings of the text.
        path: where to write the PNG.
        layers: layer index or indices to draw.
        heads: head index or indices to draw; None draws every head.
        title: figure title.
        max_tokens: longer texts are cropped to their first `max_tokens` tokens (noted in the title).
        scale: "absolute" (default): colours from 0 to `absolute_max`; "stretched": from the
            smallest to the largest value drawn, shared by every panel (small differences look
            large). The colour bar's label names the scale.
        absolute_max: the top of the absolute scale: 1 for attention weights; for values with no
            fixed bound (gradient-weighted attention) pass their largest value, e.g. over every
            layer and head.
        value_label: what the values are, for the colour bar.

    Returns:
        The path of the written PNG.
    """
    attention = _check_attention(attention, tokens)
    num_layers, num_heads = attention.shape[:2]
    layers = _check_indices(layers, num_layers, "layer")
    heads = _check_indices(heads, num_heads, "head")
    panels = [[(attention[layer, head], f"layer {layer}, head {head}") for head in heads] for layer in layers]
    colour = _ColourScale(scale, absolute_max, value_label)
    return _save_grid(panels, tokens, path, title, max_tokens, colour)


def plot_attention_comparison(
    before,
    after,
    tokens,
    path,
    layer=0,
    heads=None,
    labels=("before", "after"),
    title=None,
    max_tokens=64,
    scale="absolute",
    absolute_max=1.0,
    value_label="attention weight",
):
    """Draw one layer's attention of the same text under two models (e.g. before/after fine-tuning).

    `before` and `after` are `[num_layers, num_heads, n, n]` arrays of the same shape; the figure
    has one row per model (named by `labels`) and one column per head, on one shared colour scale
    so the rows can be compared directly; `scale`, `absolute_max` and `value_label` are as in
    `plot_attention`. Returns the path of the written PNG.
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
    colour = _ColourScale(scale, absolute_max, value_label)
    return _save_grid(panels, tokens, path, title, max_tokens, colour)


class _ColourScale:
    """Which colour scale a figure uses (see the module docstring), checked once."""

    def __init__(self, scale, absolute_max, value_label):
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
        if not np.isfinite(absolute_max) or absolute_max < 0:
            raise ValueError(f"absolute_max must be a finite value >= 0; got {absolute_max!r}")
        self.scale, self.absolute_max, self.value_label = scale, float(absolute_max), value_label

    def limits(self, matrices):
        """(vmin, vmax) for these matrices; an empty range is widened so matplotlib can draw it."""
        if self.scale == "absolute":
            low, high = 0.0, self.absolute_max
        else:
            low = min(float(matrix.min()) for matrix in matrices)
            high = max(float(matrix.max()) for matrix in matrices)
        return low, (high if high > low else low + 1.0)

    def label(self, low, high):
        """The colour bar's label: the values and which scale they are drawn on."""
        if self.scale == "absolute":
            return f"{self.value_label}\nabsolute scale, {low:g} to {high:.3g}"
        return (
            f"{self.value_label}\nstretched to the maps' range, {low:.3g} to {high:.3g}\n(small differences look large)"
        )


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


def _save_grid(panels, tokens, path, title, max_tokens, colour):
    """Draw `panels` (rows of `(matrix, subtitle)`) as a grid of heatmaps sharing one colour scale
    (a `_ColourScale`), each subtitled with its uniformity."""
    tokens = [str(token) for token in tokens]
    if len(tokens) > max_tokens:
        note = f"first {max_tokens} of {len(tokens)} tokens"
        title = f"{title} ({note})" if title else note
        tokens = tokens[:max_tokens]
    n = len(tokens)
    panels = [[(matrix[:n, :n], subtitle) for matrix, subtitle in row] for row in panels]
    # One scale for every panel, so a pale head really is more diffuse than a dark one.
    vmin, vmax = colour.limits([matrix for row in panels for matrix, _ in row])

    rows, columns = len(panels), len(panels[0])
    panel_inches = max(_MIN_PANEL_INCHES, _INCHES_PER_TOKEN * n + _PANEL_MARGIN_INCHES)
    figure = Figure(figsize=(panel_inches * columns + 1.0, panel_inches * rows + 0.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for row_axes, row_panels in zip(axes, panels):
        for ax, (matrix, subtitle) in zip(row_axes, row_panels):
            subtitle = f"{subtitle}\nuniformity {attention_uniformity(matrix):.3f}"
            image = _draw_heatmap(ax, matrix, tokens, subtitle, vmax, vmin=vmin)
    figure.colorbar(image, ax=axes, shrink=min(1.0, 0.9 / rows + 0.1), label=colour.label(vmin, vmax))
    _note_uniformity(figure)
    return _save_figure(figure, title, path)


def _note_uniformity(figure):
    """Say under `figure` what the uniformity in its panel titles means, wrapped to its width."""
    # About 14 characters of an 8-point font per inch.
    width = max(30, int(figure.get_figwidth() * 14))
    figure.supxlabel(textwrap.fill(_UNIFORMITY_NOTE, width), fontsize=8)


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


def _draw_heatmap(ax, matrix, tokens, subtitle, vmax, row_tokens=None, labels=("key", "query"), vmin=0.0):
    """One head's `[query, key]` matrix on `ax`, queries (`row_tokens`, default `tokens`) down the
    side and keys (`tokens`) along the bottom, coloured from `vmin` to `vmax`; `labels` names the
    two axes (x, y)."""
    row_tokens = tokens if row_tokens is None else row_tokens
    image = ax.imshow(matrix, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(np.arange(len(tokens)), labels=tokens, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(row_tokens)), labels=row_tokens, fontsize=7)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(subtitle, fontsize=9)
    return image


def plot_alignment(attention, source_tokens, target_tokens, path, title=None):
    """Draw a translation's cross-attention, source tokens along the bottom and generated target
    tokens down the side (the alignment plot of Bahdanau et al.): one panel per layer, averaged
    over its heads and titled with its uniformity, on the absolute scale 0 to 1.

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
        subtitle = f"{subtitle}\nuniformity {attention_uniformity(matrix):.3f}"
        image = _draw_heatmap(
            ax, matrix, list(source_tokens), subtitle, 1.0, row_tokens=list(target_tokens), labels=("source", "output")
        )
    figure.colorbar(image, ax=axes, shrink=0.9, label="attention weight, absolute scale 0 to 1")
    _note_uniformity(figure)
    return _save_figure(figure, title, path)
