"""The explorer page in a real headless Chromium, opened from disk with the network off: it draws
without a console error or a request, and its controls change what it draws."""

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

from tfattn.explorer.page import write_page

SPECIAL = {0, len(TOKENS) - 1}  # [CLS] and [SEP]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
NER_TOKENS = ["[CLS]", "angela", "merkel", "visited", "berlin", "today", "[SEP]"]


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


def test_offline_check_sees_a_request_the_page_makes(driver, tmp_path):
    page = tmp_path / "leaky.html"
    page.write_text("<body><script>document.body.dataset.ready = 'true'; fetch('http://example.com/x')</script>")
    open_page(driver, page)
    driver.execute_script("return new Promise(resolve => setTimeout(resolve, 200))")  # let the request start
    with pytest.raises(AssertionError, match="example.com"):
        assert_offline_and_clean(driver, page)
