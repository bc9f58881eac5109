"""The explorer on real (tiny) models of two families, opened in offline headless Chromium: a
from-scratch classifier and a BERT token classifier (NER tags), with their gradient views."""

import numpy as np
import pytest
from browser import assert_offline_and_clean, by_testid, click, drawn_lines, hover, offline_chromium, open_page
from selenium.webdriver.support.ui import Select
from task_harness import tiny_scratch_classifier

from tfattn.explorer import explore
from tfattn.models import HuggingFaceEncoder, TokenClassifier
from tfattn.models.wordpiece import bert_preprocessor_from_pretrained

WORDS = ["oil", "prices", "rose", "stocks", "fell"]


@pytest.mark.slow
def test_scratch_and_ner_pages_in_a_real_browser(tiny_bert_dir, tmp_path):
    scratch = explore(tiny_scratch_classifier(WORDS, 2), "Oil prices rose, stocks fell", label_names=["down", "up"])
    tagger = TokenClassifier(
        bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=32),
        HuggingFaceEncoder.from_pretrained(tiny_bert_dir),
        ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
    )
    ner = explore(tagger, "Angela Merkel visited Berlin")
    with offline_chromium() as driver:
        path = scratch.save(tmp_path / "scratch.html")
        open_page(driver, path)
        assert [p.text for p in by_testid(driver, "probability")][0].startswith("down")
        lines = drawn_lines(driver)
        hover(driver, by_testid(driver, "query-token")[0])
        assert 0 < len(drawn_lines(driver)) < len(lines)
        Select(driver.find_element("id", "view-select")).select_by_value("gradient")
        gradient_cells = [
            float(cell.get_attribute("data-value"))
            for cell in by_testid(driver, "heatmap")[0].find_elements("css selector", "rect[data-value]")
        ]
        assert len(gradient_cells) == 5 * 5 and max(gradient_cells) > 0
        assert_offline_and_clean(driver, path)

        path = ner.save(tmp_path / "ner.html")
        open_page(driver, path)
        tagged = by_testid(driver, "tagged-token")
        assert [token.text for token in tagged][:3] == ["[CLS]", "angela", "mer"]  # "merkel" is mer ##kel
        keys = [token.text for token in by_testid(driver, "key-token")]
        click(driver, driver.find_element("id", "hide-special"))
        hidden = [token.text for token in by_testid(driver, "key-token")]
        assert keys[0] == "[CLS]" and keys[-1] == "[SEP]" and hidden == keys[1:-1]
        # Switching layer redraws the lines with that layer's weights.
        before = sorted(weight for *_, weight in drawn_lines(driver))
        Select(driver.find_element("id", "layer-select")).select_by_value("1")
        after = sorted(weight for *_, weight in drawn_lines(driver))
        assert before != after
        assert_offline_and_clean(driver, path)
    # The page's numbers are the model's: the scratch page's heatmap showed gradient weights > 0.
    assert np.asarray(scratch.payload["runs"][0]["views"]["gradient"]["scales"]).max() > 0
