"""Tests of tfattn.explorer.images: mean attention distance on hand-made attention, an image
explanation of a tiny fake Vision Transformer (gradients checked against the chain rule), the
page payload of an image run and its checks, and the PNG.

`FakeVisionTransformer`, `sample_image` and `fake_explanation` also feed the browser test
(tests/test_explorer_browser.py).
"""

import base64
import json
import math
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from matplotlib.image import imread

from tfattn.attention import attention_rollout
from tfattn.explorer import (
    ExplorerPage,
    ImageExplanation,
    explain_image,
    image_explorer_page,
    mean_attention_distance,
    plot_image_attention,
)
from tfattn.explorer.images import distance_of_uniform_attention, patch_distances
from tfattn.explorer.page import decode_view, render_page

LABELS = ["airplane", "cat", "ship"]
EVEN_2X2 = 2 + math.sqrt(2)  # mean distance over a 2 x 2 grid of 4-pixel patches: (0 + 4 + 4 + 4 sqrt 2) / 4


class FakeVisionTransformer(keras.Model):
    """A tiny ViT with the spec's image-classifier interface: patches embedded by a Dense layer, a
    class token, single-projection attention layers (tokens += attention @ values) and logits read
    from the class token, so that the last layer's class-token attention reaches the logits only
    through `values @ classifier kernel`; `forward` also returns each layer's values for that check."""

    def __init__(self, image_size=8, patch_size=4, num_layers=2, num_heads=2, dim=8, num_classes=3, seed=0):
        super().__init__()
        self.image_size, self.patch_size, self.num_classes = image_size, patch_size, num_classes
        self.patch_grid = (image_size // patch_size, image_size // patch_size)
        self.has_attention, self.family_name = True, "from scratch"
        self.num_heads, self.dim = num_heads, dim

        def init(offset):
            return keras.initializers.RandomNormal(stddev=1.0, seed=seed * 1000 + offset)

        self.embed = keras.layers.Dense(dim, kernel_initializer=init(0))
        self.class_token = self.add_weight(name="class_token", shape=(1, 1, dim), initializer=init(1))
        self.projections = [
            [keras.layers.Dense(dim, use_bias=False, kernel_initializer=init(10 * layer + k)) for k in (2, 3, 4)]
            for layer in range(num_layers)
        ]
        self.classifier = keras.layers.Dense(num_classes, kernel_initializer=init(999))

    def _heads(self, tokens):
        """[batch, T, dim] -> [batch, heads, T, dim / heads]."""
        batch, length = tf.shape(tokens)[0], tf.shape(tokens)[1]
        split = tf.reshape(tokens, [batch, length, self.num_heads, self.dim // self.num_heads])
        return tf.transpose(split, [0, 2, 1, 3])

    def forward(self, pixels, training=False, output_attentions=True):
        images = tf.cast(pixels, tf.float32) / 255.0
        size = self.patch_size
        patches = tf.image.extract_patches(images, [1, size, size, 1], [1, size, size, 1], [1, 1, 1, 1], "VALID")
        batch = tf.shape(images)[0]
        tokens = self.embed(tf.reshape(patches, [batch, -1, size * size * 3]))
        tokens = tf.concat([tf.tile(self.class_token, [batch, 1, 1]), tokens], axis=1)
        scores, values = [], []
        for query, key, value in self.projections:
            queries, keys, head_values = (self._heads(layer(tokens)) for layer in (query, key, value))
            weights = tf.nn.softmax(tf.matmul(queries, keys, transpose_b=True) / math.sqrt(self.dim), axis=-1)
            mixed = tf.transpose(tf.matmul(weights, head_values), [0, 2, 1, 3])
            tokens = tokens + tf.reshape(mixed, tf.shape(tokens))
            scores.append(weights)
            values.append(head_values)
        logits = self.classifier(tokens[:, 0])
        return {"logits": logits, "attention_scores": scores if output_attentions else [], "values": values}

    def call(self, pixels, training=None):
        return self.forward(pixels, training=training, output_attentions=False)["logits"]


def sample_image(size=8, seed=0):
    """A uint8 [size, size, 3] image: a colour ramp with a bright square in its top-left quarter."""
    ramp = np.linspace(0, 200, size)
    image = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.full((size, size), 60.0)], -1)
    image[: size // 4, : size // 4] = [250, 30, 30]
    image += np.random.default_rng(seed).uniform(0, 20, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def fake_explanation(image_size=8, num_layers=2, num_heads=2, name="fake-vit"):
    """`explain_image` of a fake ViT with 4-pixel patches on `test_image`, and the model."""
    model = FakeVisionTransformer(image_size=image_size, num_layers=num_layers, num_heads=num_heads)
    return explain_image(model, sample_image(image_size), LABELS, name=name), model


def test_a_head_on_itself_has_distance_zero_and_an_even_head_the_mean_patch_distance():
    identity, even = np.eye(5), np.full((5, 5), 0.2)
    distances = mean_attention_distance([[identity, even], [even, identity]], (2, 2), 4)
    np.testing.assert_allclose(distances, [[0.0, EVEN_2X2], [EVEN_2X2, 0.0]])
    assert distance_of_uniform_attention((2, 2), 4) == pytest.approx(EVEN_2X2)
    np.testing.assert_allclose(patch_distances((2, 2), 4)[0], [0, 4, 4, 4 * math.sqrt(2)])


def test_mean_attention_distance_renormalises_over_patches_and_skips_rows_on_the_class_token():
    # 1 x 3 grid of 2-pixel patches. Head 0: every patch on its right neighbour (the last on its
    # left one), half its weight on the class token: 2 pixels. Head 1: patch 0 only on the class
    # token (left out), patch 1 on patch 0 (2 px), patch 2 split between patches 0 and 2 (4 * 0.5 = 2 px).
    head0 = np.array(
        [[1, 0, 0, 0], [0.5, 0, 0.5, 0], [0.5, 0, 0, 0.5], [0.5, 0, 0.5, 0]],
    )
    head1 = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0.2, 0.4, 0, 0.4]])
    on_class_token = np.zeros((4, 4))
    on_class_token[:, 0] = 1
    distances = mean_attention_distance([[head0, head1, on_class_token]], (1, 3), 2)
    np.testing.assert_allclose(distances, [[2.0, 2.0, 0.0]])
    # An even head over 1 x 3: the distances 0, 2, 4 / 2, 0, 2 / 4, 2, 0 average to 16 / 9.
    np.testing.assert_allclose(mean_attention_distance(np.full((1, 1, 4, 4), 0.25), (1, 3), 2), [[16 / 9]])


def test_mean_attention_distance_names_a_shape_that_does_not_match_the_grid():
    with pytest.raises(ValueError) as error:
        mean_attention_distance(np.ones((2, 3, 9, 9)), (2, 2), 4)
    assert str(error.value) == (
        "attention is [layers, heads, T, T] with T = 1 + 2 x 2 patches = 5; got an array of shape (2, 3, 9, 9)"
    )
    with pytest.raises(ValueError, match="negative or non-finite"):
        mean_attention_distance(np.full((1, 1, 5, 5), np.nan), (2, 2), 4)


def test_explain_image_on_a_fake_vision_transformer():
    explanation, model = fake_explanation()
    assert explanation.family == "from scratch" and explanation.name == "fake-vit"
    assert explanation.grid == (2, 2) and explanation.patch_size == 4
    assert explanation.layers == [0, 1] and explanation.num_heads == 2
    assert explanation.image.dtype == np.uint8 and (explanation.image == sample_image()).all()
    assert {name: view.shape for name, view in explanation.views.items()} == {
        "raw": (2, 2, 4),
        "rollout": (2, 1, 4),
        "gradient": (2, 2, 4),
    }
    assert explanation.unavailable == {}

    outputs = model.forward(sample_image()[None], training=False, output_attentions=True)
    attention = np.stack([layer[0].numpy() for layer in outputs["attention_scores"]])  # [2, 2, 5, 5]
    logits = outputs["logits"][0].numpy()
    prediction = explanation.prediction
    assert prediction["labels"] == LABELS and prediction["predicted"] == int(logits.argmax())
    np.testing.assert_allclose(prediction["probabilities"], tf.nn.softmax(logits).numpy(), atol=1e-6)
    np.testing.assert_allclose(explanation.views["raw"], attention[:, :, 0, 1:], atol=1e-6)
    np.testing.assert_allclose(explanation.views["rollout"][:, 0], attention_rollout(attention)[:, 0, 1:], atol=1e-6)
    np.testing.assert_allclose(explanation.distances, mean_attention_distance(attention, (2, 2), 4), atol=1e-5)

    # The last layer's class-token attention reaches the predicted logit c only through
    # logit_c = kernel[:, c] . (... + sum_j a[h, 0, j] values[h, j]): its gradient is
    # values[h, j] . kernel[head h's rows, c].
    kernel = model.classifier.kernel.numpy()[:, prediction["predicted"]].reshape(2, 4)  # [heads, dim per head]
    values = outputs["values"][-1][0].numpy()  # [heads, T, dim per head]
    gradient = np.einsum("htd,hd->ht", values, kernel)[:, 1:]
    expected = np.maximum(attention[-1, :, 0, 1:] * gradient, 0)
    np.testing.assert_allclose(explanation.views["gradient"][-1], expected, atol=1e-5)
    assert explanation.views["gradient"].max() > 0


def test_explain_image_keeps_chosen_layers_with_rollout_over_every_layer():
    explanation, _ = fake_explanation(num_layers=3)
    last = explanation.with_layers([2])
    assert last.layers == [2] and last.views["raw"].shape == (1, 2, 4) and last.distances.shape == (1, 2)
    np.testing.assert_array_equal(last.views["rollout"][0], explanation.views["rollout"][2])
    with pytest.raises(ValueError, match=r"layers must be among \[0, 1, 2\]; got \[5\]"):
        explanation.with_layers([5])


def test_explain_image_refuses_what_it_cannot_explain():
    model = FakeVisionTransformer()
    with pytest.raises(ValueError) as error:
        explain_image(model, sample_image(16), LABELS)
    assert str(error.value) == "the image must be [8, 8, 3] (the model's image_size, RGB); got (16, 16, 3)"
    with pytest.raises(ValueError, match="^label_names has 2 names for the model's 3 outputs$"):
        explain_image(model, sample_image(), LABELS[:2])
    model.has_attention, model.family_name = False, "CNN baseline"
    with pytest.raises(ValueError) as error:
        explain_image(model, sample_image(), LABELS)
    assert str(error.value) == (
        "FakeVisionTransformer (CNN baseline) has no attention to explain: "
        "the attention views need a Vision Transformer"
    )


def hand_made_explanation(seed=0, layers=2, heads=3, grid=(2, 3), patch_size=4):
    """An ImageExplanation of random attention (no model), for the payload tests."""
    rng = np.random.default_rng(seed)
    tokens = 1 + grid[0] * grid[1]
    weights = np.exp(rng.normal(scale=2.0, size=(layers, heads, tokens, tokens)))
    attention = weights / weights.sum(axis=-1, keepdims=True)
    return ImageExplanation(
        name="hand-made",
        family="from scratch",
        image=rng.integers(0, 256, size=(grid[0] * patch_size, grid[1] * patch_size, 3), dtype=np.uint8),
        grid=grid,
        patch_size=patch_size,
        layers=list(range(layers)),
        num_heads=heads,
        prediction={"type": "label", "labels": LABELS, "probabilities": [0.2, 0.7, 0.1], "predicted": 1},
        views={
            "raw": attention[:, :, 0, 1:].astype(np.float32),
            "rollout": attention_rollout(attention)[:, None, 0, 1:],
            "gradient": rng.uniform(0, 3, size=(layers, heads, tokens - 1)).astype(np.float32),
        },
        distances=mean_attention_distance(attention, grid, patch_size),
        notes=["hand-made attention"],
    )


def embedded_payload(page_html):
    """The JSON payload a rendered page embeds."""
    found = re.search(r'<script type="application/json" id="tfattn-explorer-data">(.*?)</script>', page_html, re.S)
    return json.loads(found.group(1))


def test_an_image_payload_survives_the_page_round_trip():
    explanation = hand_made_explanation()
    page = image_explorer_page(explanation)
    assert isinstance(page, ExplorerPage)
    payload = embedded_payload(page.html)
    assert payload["title"] == "cat (0.700), hand-made" and payload["legend"] is None
    (run,) = payload["runs"]
    assert run["kind"] == "image" and run["grid"] == [2, 3] and run["patch_size"] == 4
    pixels = np.frombuffer(base64.b64decode(run["image"]["data"]), np.uint8)
    assert (run["image"]["height"], run["image"]["width"]) == (8, 12)
    np.testing.assert_array_equal(pixels.reshape(8, 12, 3), explanation.image)
    for name, array in explanation.views.items():
        view = run["views"][name]
        decoded = decode_view(view, num_keys=6)  # [layers, heads, 1 query (the class token), 6 patches]
        assert decoded.shape == (2, array.shape[1], 1, 6)
        step = np.asarray(view["scales"]).reshape(2, -1, 1) / 510 * (1 + 1e-6)
        assert (np.abs(decoded[:, :, 0] - array) <= step).all()
        assert view["absolute_max"] == pytest.approx(float(array.max()))
    np.testing.assert_allclose(run["distances"], explanation.distances, atol=5e-5)
    assert run["notes"] == ["hand-made attention"]


def bad_run(**changes):
    """The hand-made image RUN with some fields replaced."""
    return {**hand_made_explanation().to_payload(), **changes}


def image_page(*runs, difference=False):
    return {
        "format": "tfattn-attention-explorer/1",
        "title": "t",
        "legend": None,
        "runs": list(runs),
        "difference": difference,
    }


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            image_page(bad_run(image={"height": 8, "width": 12, "data": base64.b64encode(bytes(10)).decode()})),
            "runs[0].image data holds 10 bytes, expected height x width x 3 = 8 x 12 x 3 = 288",
        ),
        (
            image_page(bad_run(grid=[3, 3])),
            "runs[0]: a 3 x 3 grid of 4-pixel patches does not fit the 8 x 12 image",
        ),
        (
            image_page(bad_run(distances=[[1.0, 2.0, 3.0]])),
            "runs[0].distances must be layers x heads = 2 x 3 numbers",
        ),
        (
            image_page(bad_run(distances=[[1.0, 2.0, 3.0], [1.0, -2.0, 3.0]])),
            "runs[0].distances holds -2.0; a mean attention distance is a finite number >= 0",
        ),
        (
            image_page(bad_run(prediction={"type": "tags", "labels": [], "tags": [], "scores": []})),
            "runs[0].prediction type is 'tags', expected 'label' for an image",
        ),
        (
            image_page(bad_run(), bad_run(), difference=True),
            "payload difference is true for image runs; the page draws no difference of images",
        ),
        (
            image_page({k: v for k, v in bad_run().items() if k != "distances"}),
            "runs[0] is missing 'distances'",
        ),
    ],
)
def test_the_page_refuses_a_malformed_image_run_in_one_line(payload, message):
    with pytest.raises(ValueError) as error:
        render_page(payload)
    assert str(error.value) == message


def test_the_page_refuses_a_view_of_the_wrong_size_and_runs_of_two_kinds():
    run = bad_run()
    short = {**run["views"]["raw"], "data": base64.b64encode(bytes(30)).decode()}
    with pytest.raises(ValueError) as error:
        render_page(image_page({**run, "views": {"raw": short}}))
    assert str(error.value) == "runs[0].views['raw'] data holds 30 bytes, expected layers x heads x Tq x Tk = 36"
    text_run = {"kind": "self", "name": "text"}
    with pytest.raises(ValueError, match="^payload runs mix images and texts: a page shows runs of one kind$"):
        render_page(image_page(run, text_run))


def test_plot_image_attention_writes_a_png(tmp_path):
    explanation = hand_made_explanation(layers=1, heads=2)
    path = plot_image_attention(explanation, tmp_path / "plots" / "image.png")
    assert path == tmp_path / "plots" / "image.png"
    pixels = imread(path)
    # 1 + 1 rows of max(4, 2 heads) panels, 1.9 inches each and margins, at 100 dpi.
    assert pixels.shape[0] == 460 and pixels.shape[1] == 880
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 200
