"""The explorer's HTML page: the payload checked, embedded with its script and styles, written as one offline file.

The page is one self-contained HTML document: `assets/explorer.css` and `assets/explorer.js`
inlined, the payload (a JSON object) in `<script type="application/json"
id="tfattn-explorer-data">`, and a Content-Security-Policy that forbids every network request, so
it opens from disk, offline, in any modern browser. Pure Python and numpy: no TensorFlow here.

The page colours maps on an absolute scale by default (0 to 1 for attention weights), with a
control to stretch each map to its own range, and shows each map's uniformity
(`tfattn.plotting.attention_uniformity`, computed again in the page's script on the map shown).

The payload, format "tfattn-attention-explorer/1":

    {
      "format": "tfattn-attention-explorer/1",
      "title": str,
      "legend": str | null,          # which aggregation ranked tokens best for this family, with the figure
      "runs": [RUN, ...],            # 1 run, or 2 for a comparison: runs[0] the main run, runs[1] the other;
                                     # either every run is an IMAGE_RUN or none is
      "difference": bool             # both runs have identical query_tokens, key_tokens and layers:
                                     # a difference map runs[0] - runs[1] is meaningful (false for images)
    }

    RUN = {
      "name": str,                   # e.g. the run folder's name
      "family": str,                 # "from scratch" | "Hugging Face" | "TF-Hub"
      "text": str,                   # the input text (a pair is shown as "A ||| B")
      "kind": "self",                # "cross" is reserved (queries = target, keys = source tokens):
                                     # the page never assumes query_tokens == key_tokens
      "query_tokens": [str],         # Tq tokens (rows)
      "key_tokens": [str],           # Tk tokens (columns)
      "query_special": [bool],       # Tq: [CLS]/[SEP]-like tokens the "hide special tokens" toggle removes
      "key_special": [bool],         # Tk
      "notes": [str],                # shown visibly, e.g. "cropped to the first 64 of 130 tokens"
      "layers": [int],               # the model's layer indices included, in order (L entries)
      "num_heads": int,              # H
      "prediction": {"type": "label", "labels": [str], "probabilities": [float], "predicted": int}
                  | {"type": "tags", "labels": [str], "tags": [int] (Tq, label index, -1 = none),
                     "scores": [float] (Tq)}
                  | {"type": "generation", "prompt_tokens": int (the first ones of the Tq tokens;
                     the rest were generated), "strategy": str (e.g. "greedy")},
      "views": {NAME: VIEW},         # in display order: "raw", "mean", "rollout", "gradient"
      "unavailable": {NAME: str}     # views that could not be computed, with the reason
    }

    VIEW = {                         # `encode_view` makes one
      "label": str,                  # human name, e.g. "Attention rollout"
      "heads": int,                  # H for per-head views, 1 for mean/rollout
      "signed": false,               # reserved: this page refuses true
      "absolute_max": float,         # optional (default 1): the top of the absolute colour scale,
                                     # 1 for attention weights, the largest value for a view with
                                     # no fixed bound (gradient-weighted attention)
      "scales": [float],             # one per matrix, L*heads of them, layer-major: each matrix's max
      "data": str                    # base64 of uint8 [L, heads, Tq, Tk], C order;
                                     # value = byte / 255 * scales[layer * heads + head]
    }

    IMAGE_RUN = {                    # an image classifier's view of one image (`tfattn.explorer.images`)
      "name": str,
      "family": str,
      "kind": "image",
      "image": {"height": int, "width": int,
                "data": str},        # base64 of uint8 [height, width, 3] (RGB), C order
      "grid": [int, int],            # rows, cols of patches: P = rows * cols, row-major like the model's tokens
      "patch_size": int,             # pixels per patch side; the grid covers rows x cols patches of the
                                     # image from its top-left corner
      "tokens": str,                 # optional: how the tokens were made, e.g. "cut into 8x8 patches of
                                     # 4x4 pixels" (the default wording)
      "notes": [str],
      "layers": [int],               # L entries
      "num_heads": int,              # H
      "prediction": {"type": "label", ...},   # as in RUN
      "views": {NAME: VIEW},         # "raw", "rollout", "gradient": the class token's attention over the
                                     # patches, VIEWs of Tq = 1, Tk = P (heads: H, or 1 for rollout)
      "unavailable": {NAME: str},
      "distances": [[float]]         # L x H: each head's mean attention distance, pixels (>= 0)
    }
"""

import base64
import binascii
import html
import json
import math
import numbers
import os
import uuid
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["PAYLOAD_FORMAT", "decode_view", "encode_view", "render_page", "write_page"]

PAYLOAD_FORMAT = "tfattn-attention-explorer/1"

# Inline script and styles only: the page can fetch nothing, not even by mistake.
_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)


def encode_view(array, label: str, absolute_max: float = 1.0) -> dict:
    """A VIEW of the payload from a float array `[layers, heads, Tq, Tk]` of values >= 0.

    Each `[Tq, Tk]` matrix is stored as bytes relative to its own maximum (its scale; an all-zero
    matrix has scale 0), so every matrix keeps 256 levels however small its values.

    Args:
        array: the values, `[layers, heads, Tq, Tk]`.
        label: the view's name on the page.
        absolute_max: the value the top of the page's absolute colour scale stands for: 1 for
            attention weights; for values with no fixed bound, their largest value.

    Example:
    >>> view = encode_view([[[[0.0, 0.1], [0.4, 0.3]]]], "Raw attention")
    >>> view["scales"], view["data"]
    ([0.4], 'AED/vw==')
    """
    values = np.asarray(array, dtype=np.float64)
    if values.ndim != 4:
        raise ValueError(f"a view is [layers, heads, query, key]; got an array of shape {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"view {label!r} has negative or non-finite values; a view holds values >= 0")
    if not math.isfinite(absolute_max) or absolute_max < 0:
        raise ValueError(f"view {label!r}: absolute_max must be a finite value >= 0, got {absolute_max!r}")
    scales = values.max(axis=(2, 3), initial=0.0)
    # An all-zero matrix stores zeros: dividing by 1 instead of its scale 0 keeps them zero.
    divisors = np.where(scales > 0, scales, 1.0)[:, :, None, None]
    data = np.rint(values / divisors * 255).astype(np.uint8)
    return {
        "label": label,
        "heads": values.shape[1],
        "signed": False,
        "absolute_max": float(absolute_max),
        "scales": [float(scale) for scale in scales.ravel()],
        "data": base64.b64encode(data.tobytes()).decode("ascii"),
    }


def decode_view(view: dict, num_keys: int | None = None) -> np.ndarray:
    """The float32 array `[layers, heads, Tq, Tk]` a VIEW stores: `encode_view`'s inverse, to
    within half a byte step (1/510 of each matrix's scale).

    A VIEW does not record Tq and Tk apart: pass `num_keys` (Tk), or leave it out for square
    matrices (self-attention), where Tq = Tk.

    Example:
    >>> decode_view(encode_view([[[[0.0, 0.1], [0.4, 0.3]]]], "Raw attention")).round(3)[0, 0]
    array([[0. , 0.1],
           [0.4, 0.3]], dtype=float32)
    """
    scales = np.asarray(view["scales"], dtype=np.float64)
    heads = int(view["heads"])
    data = np.frombuffer(base64.b64decode(view["data"]), dtype=np.uint8)
    cells = data.size // scales.size
    if num_keys is None:
        num_keys = math.isqrt(cells)
        if num_keys * num_keys != cells:
            raise ValueError(f"the view's matrices hold {cells} values each, not a square number: pass num_keys")
    num_queries = cells // num_keys if num_keys else 0
    if num_queries * num_keys != cells or data.size != scales.size * cells or scales.size % heads:
        raise ValueError(f"view data of {data.size} bytes is not {scales.size} matrices with {num_keys} keys each")
    matrices = data.reshape(scales.size // heads, heads, num_queries, num_keys)
    return (matrices / 255 * scales.reshape(-1, heads, 1, 1)).astype(np.float32)


def render_page(payload: dict) -> str:
    """The whole HTML document of the explorer for `payload` (checked first; see the module
    docstring for its format), with everything inlined."""
    _check_payload(payload)
    data = json.dumps(payload, ensure_ascii=False, allow_nan=False, default=_json_value)
    # Inside a <script> element "</" could close it and "<!--" could change how the browser
    # finds its end; both are escaped within JSON strings, where they can only occur.
    data = data.replace("</", "<\\/").replace("<!--", "\\u003c!--")
    assets = resources.files("tfattn.explorer") / "assets"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CONTENT_SECURITY_POLICY}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(payload['title'])}</title>",
            "<style>",
            (assets / "explorer.css").read_text(encoding="utf-8"),
            "</style>",
            "</head>",
            "<body>",
            '<main id="explorer"><noscript>This page draws its figures with JavaScript: allow it to see the '
            "attention maps.</noscript></main>",
            f'<script type="application/json" id="tfattn-explorer-data">{data}</script>',
            "<script>",
            (assets / "explorer.js").read_text(encoding="utf-8"),
            "</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def write_page(payload: dict, path: str | Path) -> Path:
    """Write the explorer page of `payload` to `path` (UTF-8) and return it as a `Path`.

    The page goes to a temporary file beside `path`, then replaces it in one step, so `path` is
    never half written; missing parent folders are created.
    """
    path = Path(path)
    page = render_page(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        staging.write_text(page, encoding="utf-8")
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def _json_value(value):
    """numpy scalars and arrays as JSON values (a payload may carry them straight from a model)."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"payload value of type {type(value).__name__} is not JSON")


def _check_payload(payload):
    """Raise a one-line ValueError naming the first thing in `payload` the page cannot draw."""
    if not isinstance(payload, dict):
        raise ValueError(f"the payload must be a dict, got {type(payload).__name__}")
    if payload.get("format") != PAYLOAD_FORMAT:
        raise ValueError(f"payload format is {payload.get('format')!r}, expected {PAYLOAD_FORMAT!r}")
    _require(payload, "payload", ["title", "legend", "runs", "difference"])
    runs = payload["runs"]
    if not isinstance(runs, list) or len(runs) not in (1, 2):
        raise ValueError("payload runs must be a list of 1 run, or 2 for a comparison")
    images = [isinstance(run, dict) and run.get("kind") == "image" for run in runs]
    if any(images) and not all(images):
        raise ValueError("payload runs mix images and texts: a page shows runs of one kind")
    for number, run in enumerate(runs):
        (_check_image_run if images[number] else _check_run)(run, f"runs[{number}]")
    if payload["difference"] and any(images):
        raise ValueError("payload difference is true for image runs; the page draws no difference of images")
    if payload["difference"]:
        keys = ["query_tokens", "key_tokens", "layers"]
        if len(runs) != 2 or any(list(runs[0][key]) != list(runs[1][key]) for key in keys):
            raise ValueError("payload difference is true, but it needs 2 runs with the same tokens and layers")


def _check_run(run, where):
    """`_check_payload` for one RUN, named `where` in messages."""
    _require(run, where, ["name", "family", "text", "kind", "query_tokens", "key_tokens", "query_special"])
    _require(run, where, ["key_special", "notes", "layers", "num_heads", "prediction", "views", "unavailable"])
    if not run["layers"] or run["num_heads"] < 1:
        raise ValueError(f"{where} needs at least one layer and one head")
    num_queries, num_keys = len(run["query_tokens"]), len(run["key_tokens"])
    if len(run["query_special"]) != num_queries or len(run["key_special"]) != num_keys:
        raise ValueError(f"{where}: query_special and key_special must have one entry per query and key token")
    prediction = run["prediction"]
    kind = prediction.get("type")
    if kind == "label":
        if len(prediction["probabilities"]) != len(prediction["labels"]):
            raise ValueError(f"{where}.prediction: one probability per label expected")
        if not 0 <= prediction["predicted"] < len(prediction["labels"]):
            raise ValueError(f"{where}.prediction: predicted {prediction['predicted']} is not a label index")
    elif kind == "tags":
        if len(prediction["tags"]) != num_queries or len(prediction["scores"]) != num_queries:
            raise ValueError(f"{where}.prediction: one tag and one score per query token expected")
    elif kind == "generation":
        if not 0 <= prediction["prompt_tokens"] <= num_queries:
            raise ValueError(
                f"{where}.prediction: prompt_tokens {prediction['prompt_tokens']} is not in [0, {num_queries}]"
            )
    else:
        raise ValueError(f"{where}.prediction type is {kind!r}, expected 'label', 'tags' or 'generation'")
    if not run["views"] and not run["unavailable"]:
        raise ValueError(f"{where} has no views, and no unavailable views saying why")
    for name, view in run["views"].items():
        _check_view(view, f"{where}.views[{name!r}]", len(run["layers"]), run["num_heads"], num_queries * num_keys)


def _check_image_run(run, where):
    """`_check_payload` for one IMAGE_RUN, named `where` in messages."""
    _require(run, where, ["name", "family", "kind", "image", "grid", "patch_size", "notes", "layers", "num_heads"])
    _require(run, where, ["prediction", "views", "unavailable", "distances"])
    if not run["layers"] or run["num_heads"] < 1:
        raise ValueError(f"{where} needs at least one layer and one head")
    image = run["image"]
    _require(image, f"{where}.image", ["height", "width", "data"])
    height, width = image["height"], image["width"]
    if not all(isinstance(size, numbers.Integral) and size >= 1 for size in (height, width)):
        raise ValueError(f"{where}.image height and width must be integers >= 1, got {height!r} x {width!r}")
    try:
        size = len(base64.b64decode(image["data"], validate=True))
    except binascii.Error as error:
        raise ValueError(f"{where}.image data is not base64: {error}") from None
    if size != height * width * 3:
        raise ValueError(
            f"{where}.image data holds {size} bytes, expected height x width x 3 = {height} x {width} x 3 = "
            f"{height * width * 3}"
        )
    grid, patch_size = run["grid"], run["patch_size"]
    if (
        not isinstance(grid, list | tuple)
        or len(grid) != 2
        or not all(isinstance(value, numbers.Integral) and value >= 1 for value in [*grid, patch_size])
    ):
        raise ValueError(
            f"{where}: grid must be [rows, cols] and patch_size an integer, all >= 1; got {grid!r}, {patch_size!r}"
        )
    rows, cols = grid
    if rows * patch_size > height or cols * patch_size > width:
        raise ValueError(
            f"{where}: a {rows} x {cols} grid of {patch_size}-pixel patches does not fit the {height} x {width} image"
        )
    prediction = run["prediction"]
    if prediction.get("type") != "label":
        raise ValueError(f"{where}.prediction type is {prediction.get('type')!r}, expected 'label' for an image")
    if len(prediction["probabilities"]) != len(prediction["labels"]):
        raise ValueError(f"{where}.prediction: one probability per label expected")
    if not 0 <= prediction["predicted"] < len(prediction["labels"]):
        raise ValueError(f"{where}.prediction: predicted {prediction['predicted']} is not a label index")
    if not run["views"] and not run["unavailable"]:
        raise ValueError(f"{where} has no views, and no unavailable views saying why")
    for name, view in run["views"].items():
        _check_view(view, f"{where}.views[{name!r}]", len(run["layers"]), run["num_heads"], rows * cols)
    distances = run["distances"]
    shape_ok = isinstance(distances, list) and len(distances) == len(run["layers"])
    if not shape_ok or any(not isinstance(layer, list) or len(layer) != run["num_heads"] for layer in distances):
        raise ValueError(
            f"{where}.distances must be layers x heads = {len(run['layers'])} x {run['num_heads']} numbers"
        )
    for layer in distances:
        for value in layer:
            if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"{where}.distances holds {value!r}; a mean attention distance is a finite number >= 0"
                )


def _check_view(view, where, num_layers, num_heads, cells):
    """`_check_payload` for one VIEW of `num_layers` layers of [Tq, Tk] matrices of `cells` values."""
    _require(view, where, ["label", "heads", "signed", "scales", "data"])
    if view["signed"]:
        raise ValueError(f"{where} is signed; signed views are reserved and this page does not draw them")
    absolute_max = view.get("absolute_max", 1.0)
    if not isinstance(absolute_max, numbers.Real) or not math.isfinite(absolute_max) or absolute_max < 0:
        raise ValueError(f"{where} absolute_max is {absolute_max!r}, expected a finite number >= 0")
    if view["heads"] not in (1, num_heads):
        raise ValueError(f"{where} has {view['heads']} heads; a view has 1 or num_heads ({num_heads})")
    matrices = num_layers * view["heads"]
    if len(view["scales"]) != matrices:
        raise ValueError(f"{where} has {len(view['scales'])} scales, expected layers x heads = {matrices}")
    try:
        size = len(base64.b64decode(view["data"], validate=True))
    except binascii.Error as error:
        raise ValueError(f"{where} data is not base64: {error}") from None
    if size != matrices * cells:
        raise ValueError(f"{where} data holds {size} bytes, expected layers x heads x Tq x Tk = {matrices * cells}")


def _require(mapping, where, keys):
    """Raise a ValueError naming the `keys` that `mapping` (named `where`) lacks."""
    missing = [key for key in keys if key not in mapping]
    if missing:
        raise ValueError(f"{where} is missing {', '.join(repr(key) for key in missing)}")
