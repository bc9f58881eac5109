"""The explorer page in a real headless Chromium, opened from disk with the network off: it draws
without a console error or a request, its controls change what it draws, and every map shows its
uniformity on an absolute colour scale unless the stretched one is chosen."""

import base64
import dataclasses
import io

import numpy as np
import pytest
from browser import (
    assert_offline_and_clean,
    by_testid,
    click,
    drawn_lines,
    hover,
    offline_chromium,
    open_page,
)
from matplotlib.image import imread
from selenium.webdriver.support.ui import Select
from test_explorer_page import TOKENS, synthetic_payload, synthetic_run
from test_image_explorer import LABELS, fake_explanation

from tfattn.explorer import image_explorer_page
from tfattn.explorer.page import decode_view, write_page
from tfattn.plotting import attention_uniformity

SPECIAL = {0, len(TOKENS) - 1}  # [CLS] and [SEP]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
NER_TOKENS = ["[CLS]", "angela", "merkel", "visited", "berlin", "today", "[SEP]"]
# A map the old stretched scale drew as selective: every weight within 2% of 1/7 (head 0), beside
# one where every row sits on one key (head 1).
NEAR_UNIFORM = np.tile(np.where(np.arange(len(TOKENS)) % 2 == 0, 1.02, 0.98), (len(TOKENS), 1))
NEAR_UNIFORM /= NEAR_UNIFORM.sum(axis=-1, keepdims=True)
NEAR_UNIFORM_RUN = np.stack([NEAR_UNIFORM, np.eye(len(TOKENS))])[None]  # [1 layer, 2 heads, 7, 7]
# A language model's page: 4 prompt tokens, 3 generated, causal attention.
GPT_TOKENS = ["</s>", "ROM", "EO", ":", "\n", "O", ","]
GENERATION = {"type": "generation", "prompt_tokens": 4, "strategy": "greedy"}
CAUSAL_RUN = np.tril(np.ones((len(GPT_TOKENS), len(GPT_TOKENS))))
CAUSAL_RUN = np.broadcast_to(CAUSAL_RUN / CAUSAL_RUN.sum(axis=-1, keepdims=True), (2, 3, 7, 7))
# JavaScript adds float32 values, Python float64: they agree far below the 3 decimals shown.
UNIFORMITY_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def driver():
    with offline_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Paths of the pages under test, by name."""
    folder = tmp_path_factory.mktemp("explorer")
    tags = {
        "type": "tags",
        "labels": NER_LABELS,
        "tags": [-1, 1, 2, 0, 3, 0, -1],
        "scores": [0.0, 0.99, 0.98, 0.97, 0.9, 0.99, 0.0],
    }
    long_tokens = ["[CLS]", *(f"token{index}-{'x' * (index % 30)}" for index in range(62)), "[SEP]"]
    payloads = {
        "classification": synthetic_payload(synthetic_run()),
        "ner": synthetic_payload(synthetic_run("ner", query_tokens=NER_TOKENS, prediction=tags)),
        "compare": synthetic_payload(synthetic_run("fine-tuned", 1), synthetic_run("frozen", 2), difference=True),
        "compare-other-tokens": synthetic_payload(
            synthetic_run("words", 1), synthetic_run("wordpiece", 2, query_tokens=[*TOKENS[:3], "##s", *TOKENS[3:]])
        ),
        "cross": synthetic_payload(synthetic_run("translation", query_tokens=TOKENS[:4], key_tokens=long_tokens)),
        "generation": synthetic_payload(
            synthetic_run("gpt", query_tokens=GPT_TOKENS, prediction=GENERATION, attention=CAUSAL_RUN)
        ),
        "near-uniform": synthetic_payload(
            synthetic_run("near-uniform", layers=(0,), heads=2, attention=NEAR_UNIFORM_RUN)
        ),
    }
    return {name: write_page(payload, folder / f"{name}.html") for name, payload in payloads.items()}


def element(driver, testid, **data):
    """The one element with this data-testid (and these data-* attributes)."""
    selector = f'[data-testid="{testid}"]' + "".join(f'[data-{key}="{value}"]' for key, value in data.items())
    return driver.find_element("css selector", selector)


def heatmap_cells(driver, panel=0, testid="heatmap"):
    """(query, key, value) of every cell of a run panel's heatmap (or the difference map)."""
    return [
        tuple(cell)
        for cell in driver.execute_script(
            "return [...document.querySelectorAll(`[data-testid='${arguments[1]}']`)[arguments[0]]"
            ".querySelectorAll('rect')].map(rect => [+rect.dataset.query, +rect.dataset.key, +rect.dataset.value])",
            panel,
            testid,
        )
    ]


def test_classification_page_draws_offline_without_errors(driver, pages, tmp_path):
    open_page(driver, pages["classification"])
    assert driver.find_element("tag name", "h1").text == "Oil prices rose in Asia"
    assert element(driver, "legend").is_displayed()
    assert element(driver, "run-notes").text == "synthetic attention, seed 0"
    probabilities = by_testid(driver, "probability")
    assert [row.text.split("\n")[0] for row in probabilities] == ["World", "Sports", "Business", "Sci/Tech"]
    assert "predicted" in probabilities[2].get_attribute("class")
    layers = Select(driver.find_element("id", "layer-select"))
    assert [option.text for option in layers.options] == ["layer 0", "layer 1"]
    gradient = driver.find_element("css selector", "#view-select option[value=gradient]")
    assert not gradient.is_enabled() and "not on the path" in gradient.get_attribute("title")
    assert "not on the path" in element(driver, "unavailable-views").text
    assert len(by_testid(driver, "head-toggle")) == 3
    assert len(by_testid(driver, "model-thumb")) == 2 * 3
    assert len(heatmap_cells(driver)) == 7 * 7
    assert not by_testid(driver, "difference-map")[0].is_displayed()

    screenshot = tmp_path / "explorer.png"
    screenshot.write_bytes(driver.get_screenshot_as_png())
    pixels = imread(screenshot)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50
    assert_offline_and_clean(driver, pages["classification"])


def test_hovering_a_token_shows_only_its_lines(driver, pages):
    open_page(driver, pages["classification"])
    every_line = drawn_lines(driver)
    hover(driver, element(driver, "query-token", index=2))
    of_query = drawn_lines(driver)
    assert 0 < len(of_query) < len(every_line) and {line[0] for line in of_query} == {2}
    assert "hovered" in element(driver, "query-token", index=2).get_attribute("class")
    hover(driver, element(driver, "key-token", index=3))
    of_key = drawn_lines(driver)
    assert 0 < len(of_key) < len(every_line) and {line[1] for line in of_key} == {3}
    hover(driver, driver.find_element("tag name", "h1"))
    assert drawn_lines(driver) == every_line
    assert_offline_and_clean(driver, pages["classification"])


def test_layer_head_and_special_token_controls_change_the_drawing(driver, pages):
    open_page(driver, pages["classification"])
    first_layer = drawn_lines(driver)
    assert {line[2] for line in first_layer} == {0, 1, 2}
    Select(driver.find_element("id", "layer-select")).select_by_value("1")
    assert sorted(line[3] for line in drawn_lines(driver)) != sorted(line[3] for line in first_layer)
    assert "layer 1" in element(driver, "heatmap-caption").text

    click(driver, element(driver, "head-toggle", head=1))
    assert {line[2] for line in drawn_lines(driver)} == {0, 2}
    assert element(driver, "head-toggle", head=1).get_attribute("aria-pressed") == "false"
    assert "mean of heads 0, 2" in element(driver, "heatmap-caption").text

    click(driver, driver.find_element("id", "hide-special"))
    assert {int(token.get_attribute("data-index")) for token in by_testid(driver, "query-token")} == {1, 2, 3, 4, 5}
    assert {int(token.get_attribute("data-index")) for token in by_testid(driver, "key-token")} == {1, 2, 3, 4, 5}
    assert not {line[0] for line in drawn_lines(driver)} & SPECIAL
    cells = heatmap_cells(driver)
    assert len(cells) == 5 * 5 and not {query for query, _, _ in cells} & SPECIAL
    row_sums = [sum(value for query, _, value in cells if query == row) for row in range(1, 6)]
    np.testing.assert_allclose(row_sums, 1, atol=5e-4)
    assert_offline_and_clean(driver, pages["classification"])


def test_clicking_a_model_view_thumbnail_selects_its_layer_and_head(driver, pages):
    open_page(driver, pages["classification"])
    click(driver, element(driver, "model-thumb", layer=1, head=2))
    assert Select(driver.find_element("id", "layer-select")).first_selected_option.text == "layer 1"
    pressed = [toggle.get_attribute("aria-pressed") for toggle in by_testid(driver, "head-toggle")]
    assert pressed == ["false", "false", "true"]
    assert {line[2] for line in drawn_lines(driver)} == {2}
    assert "layer 1, head 2" in element(driver, "heatmap-caption").text
    assert "selected" in element(driver, "model-thumb", layer=1, head=2).get_attribute("class")
    assert "flash" in element(driver, "heatmap").get_attribute("class")
    assert_offline_and_clean(driver, pages["classification"])


def test_a_view_with_one_map_per_layer_disables_the_head_toggles(driver, pages):
    open_page(driver, pages["classification"])
    Select(driver.find_element("id", "view-select")).select_by_value("mean")
    assert not any(toggle.is_enabled() for toggle in by_testid(driver, "head-toggle"))
    assert len(by_testid(driver, "model-thumb")) == 2
    assert {line[2] for line in drawn_lines(driver)} == {0}
    assert "one map for all heads" in element(driver, "heatmap-caption").text
    assert_offline_and_clean(driver, pages["classification"])


def test_ner_page_colours_tokens_by_tag(driver, pages):
    open_page(driver, pages["ner"])
    tokens = by_testid(driver, "tagged-token")
    assert [token.text for token in tokens] == NER_TOKENS
    colours = [token.value_of_css_property("background-color") for token in tokens]
    assert colours[1] == colours[2] != colours[4]  # B-PER and I-PER share PER's colour, LOC has its own
    assert colours[3] == colours[0]  # O and special tokens stay uncoloured
    assert element(driver, "tag-legend").text.split() == ["PER", "LOC"]
    assert_offline_and_clean(driver, pages["ner"])


def test_generation_page_marks_the_generated_tokens(driver, pages):
    open_page(driver, pages["generation"])
    tokens = by_testid(driver, "generated-token")
    assert [token.text for token in tokens] == [token.replace("\n", "↵") for token in GPT_TOKENS]  # drawn
    assert [token.get_attribute("data-generated") for token in tokens] == ["false"] * 4 + ["true"] * 3
    assert element(driver, "generation-caption").text == "4 prompt tokens, then 3 generated (greedy)"
    # The causal triangle: no cell above the diagonal has weight.
    assert all(value == 0 for query, key, value in heatmap_cells(driver) if key > query)
    assert_offline_and_clean(driver, pages["generation"])


def test_compare_page_draws_both_runs_and_their_difference(driver, pages):
    open_page(driver, pages["compare"])
    panels = by_testid(driver, "run-panel")
    assert [panel.find_element("tag name", "h2").text for panel in panels] == [
        "fine-tuned from scratch",
        "frozen from scratch",
    ]
    assert all(by_testid(panel, "head-view")[0].is_displayed() for panel in panels)
    assert element(driver, "difference-map").is_displayed()
    assert "fine-tuned minus frozen" in element(driver, "difference-caption").text
    first, second, difference = (
        heatmap_cells(driver, 0),
        heatmap_cells(driver, 1),
        heatmap_cells(driver, 0, "difference-map"),
    )
    np.testing.assert_allclose(
        [cell[2] for cell in difference], [a[2] - b[2] for a, b in zip(first, second)], atol=2e-4
    )
    # Diverging colours: red where runs[0] is higher, blue where runs[1] is.
    fills = driver.execute_script(
        "return [...document.querySelector('[data-testid=difference-map]').querySelectorAll('rect')]"
        ".map(rect => [+rect.dataset.value, rect.getAttribute('fill')])"
    )
    largest, smallest = max(fills), min(fills)
    red, _, blue = (int(channel) for channel in largest[1][4:-1].split(","))
    assert largest[0] > 0 and red > blue
    red, _, blue = (int(channel) for channel in smallest[1][4:-1].split(","))
    assert smallest[0] < 0 and blue > red

    Select(driver.find_element("id", "run-select")).select_by_value("1")
    assert [panel.is_displayed() for panel in by_testid(driver, "run-panel")] == [False, True]
    assert not element(driver, "difference-section").is_displayed()
    assert_offline_and_clean(driver, pages["compare"])


def test_compare_page_says_why_runs_that_tokenize_differently_have_no_difference(driver, pages):
    open_page(driver, pages["compare-other-tokens"])
    assert len(by_testid(driver, "run-panel")) == 2
    assert "tokenize the text differently" in element(driver, "difference-note").text
    assert not element(driver, "difference-map").is_displayed()
    assert len(heatmap_cells(driver, 1)) == 8 * 8
    assert_offline_and_clean(driver, pages["compare-other-tokens"])


def test_long_key_lists_different_from_queries_stay_legible(driver, pages):
    open_page(driver, pages["cross"])
    assert len(by_testid(driver, "query-token")) == 4 and len(by_testid(driver, "key-token")) == 64
    assert len(heatmap_cells(driver)) == 4 * 64
    heatmap = element(driver, "heatmap")
    assert "rotate(-90" in heatmap.find_elements("css selector", "text")[-1].get_attribute("transform")
    window = driver.get_window_size()
    driver.set_window_size(700, window["height"])
    try:
        scroll_width, client_width = driver.execute_script(
            "const box = arguments[0].parentElement; return [box.scrollWidth, box.clientWidth]", heatmap
        )
    finally:
        driver.set_window_size(window["width"], window["height"])
    assert scroll_width > client_width  # in a narrow window the heatmap scrolls instead of shrinking its labels
    assert_offline_and_clean(driver, pages["cross"])


def heatmap_fills(driver, panel=0, testid="heatmap"):
    """The (r, g, b) fill of every cell of a heatmap."""
    fills = driver.execute_script(
        "return [...document.querySelectorAll(`[data-testid='${arguments[1]}']`)[arguments[0]]"
        ".querySelectorAll('rect')].map(rect => rect.getAttribute('fill'))",
        panel,
        testid,
    )
    return [tuple(int(channel) for channel in fill[4:-1].split(",")) for fill in fills]


def shown_uniformity(driver, panel=0):
    """The uniformity a run panel says its map has, as the page computed it."""
    return float(by_testid(driver, "uniformity")[panel].get_attribute("data-value"))


def test_every_map_shows_its_uniformity_as_python_computes_it(driver, pages):
    payload_view = synthetic_run()["views"]["raw"]
    stored = decode_view(payload_view)  # the 8-bit values the page draws, [layers, heads, 7, 7]
    open_page(driver, pages["classification"])
    # The heatmap shows the mean of all three heads of layer 0.
    expected = attention_uniformity(stored[0].mean(axis=0))
    assert shown_uniformity(driver) == pytest.approx(expected, abs=UNIFORMITY_TOLERANCE)
    assert f"Uniformity of this map: {expected:.3f}" in element(driver, "uniformity").text
    for thumb in by_testid(driver, "model-thumb"):
        layer, head = int(thumb.get_attribute("data-layer")), int(thumb.get_attribute("data-head"))
        value = attention_uniformity(stored[layer, head])
        assert float(thumb.get_attribute("data-uniformity")) == pytest.approx(value, abs=UNIFORMITY_TOLERANCE)
        assert thumb.text == f"{value:.3f}"
    # With special tokens hidden, the measure reads the rows and columns left (renormalized).
    click(driver, driver.find_element("id", "hide-special"))
    kept = stored[0, :, 1:-1, 1:-1].mean(axis=0)
    assert shown_uniformity(driver) == pytest.approx(attention_uniformity(kept), abs=UNIFORMITY_TOLERANCE)
    assert_offline_and_clean(driver, pages["classification"])


def test_a_near_uniform_map_looks_even_on_the_default_absolute_scale(driver, pages):
    open_page(driver, pages["near-uniform"])
    assert Select(driver.find_element("id", "scale-select")).first_selected_option.get_attribute("value") == "absolute"
    click(driver, element(driver, "model-thumb", layer=0, head=0))
    assert element(driver, "uniformity").text.startswith("Uniformity of this map: 1.000")
    assert shown_uniformity(driver) > 0.999
    caption = element(driver, "heatmap-caption").text
    assert "colour on the absolute scale, 0 (white) to 1 (dark blue)" in caption
    assert "this map's values run from 0.140 to 0.145" in caption  # 0.98 / 7.02 and 1.02 / 7.02
    # About 1/7 of the way from white: every cell the same pale blue, none dark.
    fills = heatmap_fills(driver)
    assert len(set(fills)) <= 2 and min(red for red, _, _ in fills) > 220

    Select(driver.find_element("id", "scale-select")).select_by_value("stretched")
    caption = element(driver, "heatmap-caption").text
    assert "colour stretched to this map's own range, 0.140 (white) to 0.145 (dark blue)" in caption
    assert "small differences look large" in caption
    fills = heatmap_fills(driver)
    assert (255, 255, 255) in fills and (8, 48, 107) in fills  # white and the darkest blue
    assert shown_uniformity(driver) > 0.999  # the measure does not depend on the scale

    Select(driver.find_element("id", "scale-select")).select_by_value("absolute")
    click(driver, element(driver, "model-thumb", layer=0, head=1))
    assert shown_uniformity(driver) == pytest.approx(0.0, abs=UNIFORMITY_TOLERANCE)
    fills = heatmap_fills(driver)
    assert set(fills) == {(255, 255, 255), (8, 48, 107)}  # weights 0 and 1 at the ends of the absolute scale
    assert_offline_and_clean(driver, pages["near-uniform"])


def test_the_difference_map_follows_the_colour_scale(driver, pages):
    open_page(driver, pages["compare"])
    assert "colour on the absolute scale, -1.000 to +1.000" in element(driver, "difference-caption").text
    Select(driver.find_element("id", "scale-select")).select_by_value("stretched")
    assert "stretched to the largest difference" in element(driver, "difference-caption").text
    assert len(by_testid(driver, "uniformity")) == 2
    assert_offline_and_clean(driver, pages["compare"])


def test_offline_check_sees_a_request_the_page_makes(driver, tmp_path):
    page = tmp_path / "leaky.html"
    page.write_text("<body><script>document.body.dataset.ready = 'true'; fetch('http://example.com/x')</script>")
    open_page(driver, page)
    driver.execute_script("return new Promise(resolve => setTimeout(resolve, 200))")  # let the request start
    with pytest.raises(AssertionError, match="example.com"):
        assert_offline_and_clean(driver, page)


# The image page: a fake ViT's 32x32 image, 8x8 patches of 4 pixels, 3 layers of 4 heads, drawn 8x.
IMAGE_SCALE = 8
# The overlay's darkest red and its opacity at the top of the colour scale (explorer.js HEAT, OVERLAY_ALPHA).
TOP_RED, TOP_ALPHA = np.array([189, 0, 38]), 0.75


@pytest.fixture(scope="module")
def image_page(tmp_path_factory):
    """(explanation, path) of the image page."""
    explanation, _ = fake_explanation(image_size=32, num_layers=3, num_heads=4)
    explanation = dataclasses.replace(explanation, tokenizer="conv")  # the from-scratch ViT's default
    page = image_explorer_page([explanation], title="cat/0001.jpg")
    return explanation, page.save(tmp_path_factory.mktemp("image") / "image.html")


def canvas_pixels(driver, canvas):
    """The RGB pixels uint8 [height, width, 3] a canvas element holds."""
    url = driver.execute_script("return arguments[0].toDataURL('image/png')", canvas)
    pixels = imread(io.BytesIO(base64.b64decode(url.split(",", 1)[1])), format="png")
    return np.rint(pixels[..., :3] * 255).astype(np.int64)


def patch_centre(pixels, patch, cols=8, side=4 * IMAGE_SCALE):
    """A canvas's pixel at the centre of a patch (row-major index), away from the patch borders."""
    row, col = divmod(patch, cols)
    return pixels[row * side + side // 2, col * side + side // 2]


@pytest.mark.slow
def test_image_page_draws_the_image_and_its_attention_and_follows_the_controls(driver, image_page):
    explanation, path = image_page
    open_page(driver, path)
    assert driver.find_element("tag name", "h1").text == "cat/0001.jpg"
    assert (
        "A 32x32 image turned into 8x8 tokens by a convolutional tokenizer, one for each 4x4-pixel cell (each sees "
        "the pixels around its cell too), plus the class token whose attention is drawn."
    ) in element(driver, "run-summary").text
    probabilities = by_testid(driver, "probability")
    assert [row.text.split("\n")[0] for row in probabilities] == LABELS
    assert "predicted" in probabilities[explanation.prediction["predicted"]].get_attribute("class")

    # The image, pixel for pixel, enlarged 8 times without smoothing.
    image = canvas_pixels(driver, element(driver, "image-canvas"))
    assert image.shape == (32 * IMAGE_SCALE, 32 * IMAGE_SCALE, 3)
    np.testing.assert_array_equal(
        image[IMAGE_SCALE // 2 :: IMAGE_SCALE, IMAGE_SCALE // 2 :: IMAGE_SCALE], explanation.image
    )

    # Default: raw attention of the last layer, mean of its heads, laid over the image.
    caption = element(driver, "overlay-caption").text
    assert caption.startswith("Raw attention of the class token (per head), layer 2, mean of its 4 heads")
    overlay = canvas_pixels(driver, element(driver, "overlay-canvas"))
    assert (np.abs(overlay - image).sum(axis=-1) > 30).mean() > 0.05  # a visible share of the image is tinted
    raw = decode_view(embedded_run(driver)["views"]["raw"], num_keys=64)  # [3, 4, 1, 64], the bytes drawn
    expected = attention_uniformity(raw[2].mean(axis=0))
    assert shown_uniformity(driver) == pytest.approx(expected, abs=UNIFORMITY_TOLERANCE)
    thumbs = by_testid(driver, "image-thumb")
    assert len(thumbs) == 3 * 4
    for thumb in thumbs:
        pixels = canvas_pixels(driver, thumb.find_element("tag name", "canvas"))
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # the image and its tint, not a blank square
        layer, head = int(thumb.get_attribute("data-layer")), int(thumb.get_attribute("data-head"))
        value = attention_uniformity(raw[layer, head])
        assert float(thumb.get_attribute("data-uniformity")) == pytest.approx(value, abs=UNIFORMITY_TOLERANCE)

    # One head on its own range: its largest patch dark red at 75%, its smallest untouched.
    Select(driver.find_element("id", "head-select")).select_by_value("0")
    Select(driver.find_element("id", "scale-select")).select_by_value("stretched")
    assert "layer 2, head 0" in element(driver, "overlay-caption").text
    overlay = canvas_pixels(driver, element(driver, "overlay-canvas"))
    stored = raw[2, 0, 0]
    top, bottom = int(stored.argmax()), int(stored.argmin())
    blended = TOP_ALPHA * TOP_RED + (1 - TOP_ALPHA) * patch_centre(image, top)
    np.testing.assert_allclose(patch_centre(overlay, top), blended, atol=2)
    np.testing.assert_array_equal(patch_centre(overlay, bottom), patch_centre(image, bottom))

    # Rollout: one map per layer, so no head to choose, and another overlay.
    Select(driver.find_element("id", "view-select")).select_by_value("rollout")
    assert not driver.find_element("id", "head-select").is_enabled()
    assert len(by_testid(driver, "image-thumb")) == 3
    assert element(driver, "overlay-caption").text.startswith("Attention rollout of the class token, layer 2, one map")
    rollout = canvas_pixels(driver, element(driver, "overlay-canvas"))
    assert not np.array_equal(rollout, overlay)
    Select(driver.find_element("id", "layer-select")).select_by_value("0")
    assert "layer 0, one map for all heads" in element(driver, "overlay-caption").text
    assert not np.array_equal(canvas_pixels(driver, element(driver, "overlay-canvas")), rollout)

    # Gradient-weighted: per head again; a thumbnail click picks its layer and head.
    Select(driver.find_element("id", "view-select")).select_by_value("gradient")
    assert driver.find_element("id", "head-select").is_enabled() and len(by_testid(driver, "image-thumb")) == 12
    click(driver, element(driver, "image-thumb", layer=1, head=3))
    assert Select(driver.find_element("id", "layer-select")).first_selected_option.text == "layer 1"
    assert Select(driver.find_element("id", "head-select")).first_selected_option.text == "head 3"
    assert "layer 1, head 3" in element(driver, "overlay-caption").text
    assert "selected" in element(driver, "image-thumb", layer=1, head=3).get_attribute("class")

    # Mean attention distance: a dot per layer and head at the payload's value; a click picks it.
    dots = by_testid(driver, "distance-dot")
    shown = {(int(dot.get_attribute("data-layer")), int(dot.get_attribute("data-head"))): dot for dot in dots}
    assert sorted(shown) == [(layer, head) for layer in range(3) for head in range(4)]
    for (layer, head), dot in shown.items():
        assert float(dot.get_attribute("data-distance")) == pytest.approx(explanation.distances[layer, head], abs=1e-4)
    assert element(driver, "distance-caption").text == "Dashed: attending evenly to every patch, 16.5 px."
    click(driver, shown[(0, 2)])
    assert "layer 0, head 2" in element(driver, "overlay-caption").text
    assert_offline_and_clean(driver, path)


def embedded_run(driver):
    """The page's first run, as its script reads it from the payload."""
    return driver.execute_script(
        "return JSON.parse(document.getElementById('tfattn-explorer-data').textContent).runs[0]"
    )
