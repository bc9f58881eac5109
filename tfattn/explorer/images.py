"""What the explorer shows for an image classifier: the class token's attention over the image's patches.

`explain_image(model, image, label_names)` runs a Vision Transformer once under a `tf.GradientTape`
and returns an `ImageExplanation`: the image, the prediction, the mean attention distance of every
head, and three views of the class token's attention over the P patches, each a float array
`[layers, heads, P]` (patches in row-major order, as the model numbers them):

- `raw`: every head's attention from the class token to each patch (its weight on itself left out);
- `rollout`: the class token's row of attention rollout after each layer (1 head;
  `tfattn.attention.attention_rollout`, computed over every layer before any is left out);
- `gradient`: attention times the gradient of the predicted class's logit, clipped at zero, per head.

`image_explorer_page` puts explanations in the offline explorer page (a RUN of kind "image",
`tfattn/explorer/page.py`); `plot_image_attention` draws the same as one PNG.

Example:
>>> from tfattn.explorer import explain_image, image_explorer_page
>>> explanation = explain_image(model, image, ["airplane", "automobile", ...])  # doctest: +SKIP
>>> image_explorer_page([explanation], title="cat/0001.jpg").save("cat.html")  # doctest: +SKIP
"""

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tensorflow as tf
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from tfattn.attention import attention_rollout, gradient_weighted_attention
from tfattn.explorer.page import PAYLOAD_FORMAT, encode_view
from tfattn.plotting import attention_uniformity

__all__ = [
    "IMAGE_VIEW_LABELS",
    "ImageExplanation",
    "distance_of_uniform_attention",
    "explain_image",
    "image_explorer_page",
    "mean_attention_distance",
    "patch_distances",
    "plot_image_attention",
]

# The views of an image in display order, with the names the page shows.
IMAGE_VIEW_LABELS = {
    "raw": "Raw attention of the class token (per head)",
    "rollout": "Attention rollout of the class token",
    "gradient": "Gradient-weighted attention of the class token (per head)",
}


def mean_attention_distance(attention, grid: Sequence[int], patch_size: int) -> np.ndarray:
    """How far each head looks: the attention-weighted distance, in pixels between patch centres,
    from each query patch to the patches it attends to, averaged over the query patches (the
    analysis of keras.io's "Investigating Vision Transformer representations"). Small: a local
    head, like a convolution; about the uniform value (`distance_of_uniform_attention`): a global one.

    Token 0, the class token, is left out as query and as key; each patch's row is renormalised
    to sum to 1 over the patches. A patch that attends only to the class token has no distance and
    is left out of the mean; a head where every patch does so scores 0.

    Args:
        attention: `[layers, heads, T, T]`, T = 1 + rows * cols, token 0 the class token, then the
            patches in row-major order.
        grid: `(rows, cols)` of patches.
        patch_size: pixels per patch side.

    Returns:
        float64 `[layers, heads]`, pixels.

    Example: a 2 x 2 grid of 4-pixel patches; a head on itself, a head spread evenly.
    >>> on_itself = np.eye(5)
    >>> even = np.full((5, 5), 0.2)
    >>> mean_attention_distance([[on_itself, even]], (2, 2), 4).round(4).tolist()  # 0 and 2 + sqrt(2)
    [[0.0, 3.4142]]
    """
    rows, cols = (int(size) for size in grid)
    values = np.asarray(attention, dtype=np.float64)
    patches = rows * cols
    if values.ndim != 4 or values.shape[-2:] != (patches + 1, patches + 1):
        raise ValueError(
            f"attention is [layers, heads, T, T] with T = 1 + {rows} x {cols} patches = {patches + 1}; "
            f"got an array of shape {values.shape}"
        )
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("mean_attention_distance reads attention weights >= 0; got negative or non-finite values")
    weights = values[..., 1:, 1:]
    sums = weights.sum(axis=-1, keepdims=True)
    weights = np.divide(weights, sums, out=np.zeros_like(weights), where=sums > 0)
    per_query = (weights * patch_distances(grid, patch_size)).sum(axis=-1)  # [layers, heads, patches]
    counted = (sums[..., 0] > 0).sum(axis=-1)
    return per_query.sum(axis=-1) / np.maximum(counted, 1)


def patch_distances(grid: Sequence[int], patch_size: int) -> np.ndarray:
    """`[P, P]`: the distance in pixels between the centres of every two patches of the grid
    (row-major patch order)."""
    rows, cols = (int(size) for size in grid)
    if rows < 1 or cols < 1 or int(patch_size) < 1:
        raise ValueError(f"a patch grid needs rows, cols and patch_size >= 1; got {rows} x {cols}, {patch_size}")
    row_of, col_of = np.divmod(np.arange(rows * cols), cols)
    return int(patch_size) * np.hypot(row_of[:, None] - row_of[None, :], col_of[:, None] - col_of[None, :])


def distance_of_uniform_attention(grid: Sequence[int], patch_size: int) -> float:
    """The mean attention distance of a head that attends to every patch evenly: the reference
    between local heads (below it) and global ones (near it)."""
    return float(patch_distances(grid, patch_size).mean())


# How the page's header says the tokens were made, by `PatchEmbedding` tokenizer (Hugging Face ViTs
# and DeiTs cut patches): a conv-tokenizer token is drawn on its cell but sees past it.
TOKEN_DESCRIPTIONS = {
    "patches": "cut into {rows}x{cols} patches of {size}x{size} pixels",
    "shifted": "cut into {rows}x{cols} patches of {size}x{size} pixels, each stacked with its four half-patch shifts",
    "conv": "turned into {rows}x{cols} tokens by a convolutional tokenizer, one for each {size}x{size}-pixel "
    "cell (each sees the pixels around its cell too)",
}


@dataclass
class ImageExplanation:
    """One model's view of one image (see the module docstring); `to_payload` makes the page's
    JSON for it."""

    name: str
    family: str
    image: np.ndarray  # uint8 [H, W, 3]
    grid: tuple  # (rows, cols) of patches
    patch_size: int
    layers: list
    num_heads: int
    prediction: dict  # {"type": "label", "labels", "probabilities", "predicted"}
    views: dict  # name -> float32 [len(layers), heads, P]: the class token's attention over the patches
    distances: np.ndarray  # float [len(layers), num_heads]: mean attention distance, pixels
    notes: list = field(default_factory=list)
    unavailable: dict = field(default_factory=dict)  # name -> why it is missing
    tokenizer: str = "patches"  # a key of TOKEN_DESCRIPTIONS

    def with_layers(self, layers: Sequence[int]) -> "ImageExplanation":
        """The same explanation restricted to the given model layer indices (rollout still
        multiplies every layer up to each one kept)."""
        layers = [int(layer) for layer in layers]
        missing = [layer for layer in layers if layer not in self.layers]
        if missing or not layers:
            raise ValueError(f"layers must be among {self.layers}; got {layers}")
        positions = [self.layers.index(layer) for layer in layers]
        return replace(
            self,
            layers=layers,
            views={name: view[positions] for name, view in self.views.items()},
            distances=np.asarray(self.distances)[positions],
        )

    def absolute_max(self, name: str) -> float:
        """The top of view `name`'s colour scale on the page and in the PNG: its largest value over
        every layer and head shown. The class token's weights are spread over many patches (1/64
        each when even on an 8 x 8 grid), so a scale up to 1 would draw most maps invisibly pale;
        one top per view still keeps its maps comparable with each other."""
        return float(self.views[name].max(initial=0.0))

    def to_payload(self) -> dict:
        """The image `RUN` object of the page payload (`tfattn/explorer/page.py`)."""
        image = np.ascontiguousarray(self.image, dtype=np.uint8)
        return {
            "name": self.name,
            "family": self.family,
            "kind": "image",
            "image": {
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
                "data": base64.b64encode(image.tobytes()).decode("ascii"),
            },
            "grid": [int(size) for size in self.grid],
            "patch_size": int(self.patch_size),
            "tokens": TOKEN_DESCRIPTIONS[self.tokenizer].format(
                rows=int(self.grid[0]), cols=int(self.grid[1]), size=int(self.patch_size)
            ),
            "notes": list(self.notes),
            "layers": list(self.layers),
            "num_heads": int(self.num_heads),
            "prediction": self.prediction,
            "views": {
                name: encode_view(array[:, :, None, :], IMAGE_VIEW_LABELS[name], self.absolute_max(name))
                for name, array in self.views.items()
            },
            "unavailable": dict(self.unavailable),
            "distances": [[round(float(value), 4) for value in layer] for layer in np.asarray(self.distances)],
        }


def explain_image(
    model,
    image,
    label_names: Sequence[str] | None = None,
    name: str = "model",
    layers: Sequence[int] | None = None,
) -> ImageExplanation:
    """The prediction, attention views and mean attention distances of an image classifier on one image.

    Args:
        model: a Vision Transformer with the image-classifier interface (`forward(pixels,
            training, output_attentions)`, `image_size`, `patch_size`, `patch_grid`,
            `has_attention`, `family_name`), e.g. `tfattn.models.vision`'s.
        image: uint8 `[H, W, 3]` at the model's `image_size`.
        label_names: the class names (default "0", "1", ...).
        name: what the page calls this model, e.g. the run folder's name.
        layers: the layer indices to include (default all); rollout still multiplies every
            layer up to each one included.
    """
    family = getattr(model, "family_name", None) or type(model).__name__
    if not getattr(model, "has_attention", False):
        raise ValueError(
            f"{type(model).__name__} ({family}) has no attention to explain: the attention views need a Vision "
            "Transformer"
        )
    image = _checked_image(image, int(model.image_size))
    pixels = tf.convert_to_tensor(image[None])
    if not model.built:
        model(pixels, training=False)  # creates the weights, which the tape must watch
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        # Every float weight, trainable or not: a frozen backbone's ops are recorded only when
        # something they read is watched.
        tape.watch([variable for variable in model.variables if variable.dtype.is_floating])
        outputs = model.forward(pixels, training=False, output_attentions=True)
        logits = tf.cast(outputs["logits"], tf.float32)
        scores = list(outputs["attention_scores"])
        target = tf.reduce_sum(tf.reduce_max(logits, axis=-1))  # the predicted class's logit
    gradients = tape.gradient(target, scores)
    attention = np.stack([np.asarray(tf.cast(layer[0], tf.float32)) for layer in scores])  # [L, H, T, T]

    grid = tuple(int(size) for size in model.patch_grid)
    patches = grid[0] * grid[1]
    # Tokens before the patches: the class token (index 0), and DeiT's distillation token after it.
    lead = int(getattr(model, "leading_tokens", 1))
    if attention.shape[-1] != patches + lead:
        raise ValueError(
            f"the model's attention covers {attention.shape[-1]} tokens; its {grid[0]} x {grid[1]} patch grid "
            f"and {lead} leading token(s) make {patches + lead}"
        )
    views = {"raw": attention[:, :, 0, lead:], "rollout": attention_rollout(attention)[:, None, 0, lead:]}
    unavailable = {}
    if any(gradient is None for gradient in gradients):
        unavailable["gradient"] = f"this {family} model's attention is not on the path to its logits"
    else:
        gradient = np.stack([np.asarray(tf.cast(layer[0], tf.float32)) for layer in gradients])
        views["gradient"] = gradient_weighted_attention(attention, gradient)[:, :, 0, lead:]

    logits = logits[0].numpy()
    if label_names is None:
        label_names = [str(index) for index in range(logits.shape[-1])]
    if len(label_names) != logits.shape[-1]:
        raise ValueError(f"label_names has {len(label_names)} names for the model's {logits.shape[-1]} outputs")
    probabilities = tf.nn.softmax(logits).numpy()
    explanation = ImageExplanation(
        name=name,
        family=family,
        image=image,
        grid=grid,
        patch_size=int(model.patch_size),
        layers=list(range(attention.shape[0])),
        num_heads=int(attention.shape[1]),
        prediction={
            "type": "label",
            "labels": [str(label) for label in label_names],
            "probabilities": [round(float(p), 6) for p in probabilities],
            "predicted": int(probabilities.argmax()),
        },
        views={view: np.asarray(array, np.float32) for view, array in views.items()},
        # Over the patches: the leading tokens but one are cut, and that one is left out as the class token.
        distances=mean_attention_distance(attention[:, :, lead - 1 :, lead - 1 :], grid, int(model.patch_size)),
        unavailable=unavailable,
        tokenizer=getattr(model, "tokenizer", "patches"),
    )
    return explanation if layers is None else explanation.with_layers(layers)


def _checked_image(image, size):
    """`image` as uint8 `[size, size, 3]`, or a one-line ValueError saying what it is instead."""
    array = np.asarray(image)
    if array.shape != (size, size, 3):
        raise ValueError(f"the image must be [{size}, {size}, 3] (the model's image_size, RGB); got {array.shape}")
    if array.dtype != np.uint8:
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
            raise ValueError(f"the image's pixels must be 0..255; got {array.dtype} values outside that range")
        array = np.rint(array).astype(np.uint8)
    return array


def image_explorer_page(explanations, title: str | None = None):
    """The offline explorer page (`tfattn.explorer.ExplorerPage`) of one image explanation, or of
    two models' explanations of the same image, side by side.

    The title defaults to the first model's prediction, e.g. "cat (0.912), model".
    """
    from tfattn.explorer import ExplorerPage

    if isinstance(explanations, ImageExplanation):
        explanations = [explanations]
    explanations = list(explanations)
    if not explanations:
        raise ValueError("image_explorer_page needs at least one explanation")
    if title is None:
        prediction = explanations[0].prediction
        predicted = prediction["predicted"]
        title = (
            f"{prediction['labels'][predicted]} ({prediction['probabilities'][predicted]:.3f}), {explanations[0].name}"
        )
    return ExplorerPage(
        {
            "format": PAYLOAD_FORMAT,
            "title": title,
            # The faithfulness figures are AG News classifiers': an image page has no legend.
            "legend": None,
            "runs": [explanation.to_payload() for explanation in explanations],
            "difference": False,
        }
    )


# Inches per panel of the PNG.
_PANEL_INCHES = 1.9
# The overlay, as the page draws it (assets/explorer.js): clear at 0, yellow to dark red and at
# most this opaque towards the top of the view's scale, so that the image shows through.
_OVERLAY_COLOURS = "YlOrRd"
_OVERLAY_ALPHA = 0.75


def plot_image_attention(explanation: ImageExplanation, path, title: str | None = None) -> Path:
    """Draw an image explanation as one PNG: the image, the last layer's rollout and
    gradient-weighted attention over it, the mean attention distance per head, then one row per
    layer of every head's raw attention. As on the page, each view is laid over the image from
    clear (0) to dark red (its largest value over its layers and heads,
    `ImageExplanation.absolute_max`, the "top" in each map's title), each map titled with its
    uniformity.

    Returns the path of the written PNG (folders created).
    """
    heads = explanation.num_heads
    columns = max(4, heads)
    rows = 1 + len(explanation.layers)
    figure = Figure(figsize=(_PANEL_INCHES * columns + 1.2, _PANEL_INCHES * rows + 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()

    last = explanation.layers[-1]
    axes[0, 0].imshow(explanation.image, interpolation="nearest")
    predicted = explanation.prediction["predicted"]
    label = explanation.prediction["labels"][predicted]
    axes[0, 0].set_title(f"predicted {label}\n({explanation.prediction['probabilities'][predicted]:.3f})", fontsize=9)
    for ax, view in zip(axes[0, 1:3], ("rollout", "gradient")):
        if view in explanation.views:
            _overlay(ax, explanation, view, -1, 0, f"{view}, layer {last}")
        else:
            ax.text(0.5, 0.5, f"no {view} view:\n{explanation.unavailable.get(view, '')}", ha="center", wrap=True)
    _plot_distances(axes[0, 3], explanation)
    for row, layer in enumerate(explanation.layers, start=1):
        for head in range(heads):
            _overlay(axes[row, head], explanation, "raw", row - 1, head, f"layer {layer}, head {head}")
    scale = ScalarMappable(Normalize(0, explanation.absolute_max("raw") or 1.0), cmap=_OVERLAY_COLOURS)
    label = "raw attention of the class token\n(more opaque where higher)"
    figure.colorbar(scale, ax=axes[1:], shrink=0.6, label=label)
    if title is None:
        title = f"{explanation.name} ({explanation.family}): the class token's attention"
    figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _overlay(ax, explanation, view, layer_index, head, subtitle):
    """The image with view `view`'s map of one layer and head over it, coloured from 0 (clear) to
    the view's largest value (dark red, `_OVERLAY_ALPHA` opaque)."""
    rows, cols = explanation.grid
    values = explanation.views[view][layer_index, head].reshape(rows, cols)
    extent = (-0.5, cols * explanation.patch_size - 0.5, rows * explanation.patch_size - 0.5, -0.5)
    top = explanation.absolute_max(view)
    fraction = np.clip(values / top, 0, 1) if top > 0 else np.zeros_like(values)
    tint = colormaps[_OVERLAY_COLOURS](fraction)
    tint[..., 3] = _OVERLAY_ALPHA * fraction
    ax.imshow(explanation.image, interpolation="nearest")
    ax.imshow(tint, extent=extent, interpolation="nearest")
    uniformity = attention_uniformity(values.reshape(1, -1))
    ax.set_title(f"{subtitle}\nuniformity {uniformity:.3f}, top {top:.3g}", fontsize=8)


def _plot_distances(ax, explanation):
    """Mean attention distance per head against layer, with the uniform head's for reference."""
    ax.set_axis_on()
    distances = np.asarray(explanation.distances)
    for head in range(distances.shape[1]):
        ax.scatter(explanation.layers, distances[:, head], s=12, label=f"head {head}")
    uniform = distance_of_uniform_attention(explanation.grid, explanation.patch_size)
    ax.axhline(uniform, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("layer", fontsize=8)
    ax.set_ylabel("mean attention distance (px)", fontsize=8)
    ax.set_ylim(0, max(uniform, float(distances.max(initial=0.0))) * 1.1 or 1.0)
    ax.set_xticks(explanation.layers)
    ax.tick_params(labelsize=7)
    ax.set_title(f"dashed: even attention ({uniform:.1f} px)", fontsize=8)
