"""Tests of tfattn.explorer.page: views encoded to bytes and back, the page self-contained, payloads checked.

`synthetic_run` and `synthetic_payload` also feed the browser tests (tests/test_explorer_browser.py).
"""

import base64
import json
import re
from importlib import resources

import numpy as np
import pytest

from tfattn.explorer.page import PAYLOAD_FORMAT, decode_view, encode_view, render_page, write_page

TOKENS = ["[CLS]", "oil", "prices", "rose", "in", "asia", "[SEP]"]
LABEL_PREDICTION = {
    "type": "label",
    "labels": ["World", "Sports", "Business", "Sci/Tech"],
    "probabilities": [0.1, 0.05, 0.8, 0.05],
    "predicted": 2,
}


def softmax_attention(seed, layers=2, heads=3, queries=7, keys=7):
    """Random attention `[layers, heads, queries, keys]`, each row a distribution."""
    weights = np.exp(np.random.default_rng(seed).normal(scale=2.0, size=(layers, heads, queries, keys)))
    return weights / weights.sum(axis=-1, keepdims=True)


def synthetic_run(
    name="agnews", seed=0, query_tokens=TOKENS, key_tokens=None, prediction=None, layers=(0, 1), heads=3, attention=None
):
    """A RUN of the payload with random attention (or the given `[layers, heads, Tq, Tk]` array):
    raw and mean views, gradient unavailable."""
    key_tokens = query_tokens if key_tokens is None else key_tokens
    if attention is None:
        attention = softmax_attention(seed, len(layers), heads, len(query_tokens), len(key_tokens))
    return {
        "name": name,
        "family": "from scratch",
        "text": " ".join(token for token in query_tokens if not token.startswith("[")),
        "kind": "self" if key_tokens is query_tokens else "cross",
        "query_tokens": list(query_tokens),
        "key_tokens": list(key_tokens),
        "query_special": [token in ("[CLS]", "[SEP]") for token in query_tokens],
        "key_special": [token in ("[CLS]", "[SEP]") for token in key_tokens],
        "notes": [f"synthetic attention, seed {seed}"],
        "layers": list(layers),
        "num_heads": heads,
        "prediction": prediction or LABEL_PREDICTION,
        "views": {
            "raw": encode_view(attention, "Raw attention (per head)"),
            "mean": encode_view(attention.mean(axis=1, keepdims=True), "Mean over heads"),
        },
        "unavailable": {"gradient": "the attention is not on the path to the logits"},
    }


def synthetic_payload(*runs, difference=False, title="Oil prices rose in Asia"):
    """The page payload of these runs."""
    return {
        "format": PAYLOAD_FORMAT,
        "title": title,
        "legend": "Rollout ranked tokens best for this family (synthetic figure).",
        "runs": list(runs),
        "difference": difference,
    }


def test_encode_decode_round_trip_is_within_half_a_byte_step_of_each_scale():
    rng = np.random.default_rng(0)
    # Matrices of very different sizes, one all zero, and more keys than queries.
    array = rng.uniform(size=(3, 4, 5, 9)) * rng.choice([1e-6, 1e-2, 1.0, 50.0], size=(3, 4, 1, 1))
    array[1, 2] = 0
    view = encode_view(array, "Raw attention")
    decoded = decode_view(view, num_keys=9)
    assert decoded.dtype == np.float32 and decoded.shape == array.shape
    scales = np.asarray(view["scales"]).reshape(3, 4, 1, 1)
    np.testing.assert_allclose(scales[..., 0, 0], array.max(axis=(2, 3)))
    assert (np.abs(decoded - array) <= scales / 510 * (1 + 1e-6)).all()
    assert not decoded[1, 2].any()


def test_encode_view_golden_bytes():
    # head 0: scale 0.4, bytes 0, 0.25*255 = 63.75 -> 64, 255, 0.75*255 = 191.25 -> 191; head 1: all zero
    view = encode_view([[[[0.0, 0.1], [0.4, 0.3]], [[0.0, 0.0], [0.0, 0.0]]]], "Mean over heads")
    assert view == {
        "label": "Mean over heads",
        "heads": 2,
        "signed": False,
        "absolute_max": 1.0,
        "scales": [0.4, 0.0],
        "data": base64.b64encode(bytes([0, 64, 255, 191, 0, 0, 0, 0])).decode("ascii"),
    }


@pytest.mark.parametrize(
    ("array", "message"),
    [(np.ones((2, 3, 3)), "shape"), (-np.ones((1, 1, 2, 2)), "negative"), (np.full((1, 1, 2, 2), np.nan), "finite")],
)
def test_encode_view_refuses_what_it_cannot_store(array, message):
    with pytest.raises(ValueError, match=message):
        encode_view(array, "Raw attention")


def test_a_view_says_where_its_absolute_colour_scale_ends():
    assert encode_view(np.ones((1, 1, 2, 2)), "Gradient", absolute_max=0.25)["absolute_max"] == 0.25
    with pytest.raises(ValueError, match="absolute_max must be a finite value >= 0"):
        encode_view(np.ones((1, 1, 2, 2)), "Gradient", absolute_max=float("nan"))
    run = synthetic_run()
    # Payloads written before the scale existed have no absolute_max: the page reads it as 1.
    old = {**run, "views": {"raw": {k: v for k, v in run["views"]["raw"].items() if k != "absolute_max"}}}
    render_page(synthetic_payload(old))
    bad = {**run, "views": {"raw": {**run["views"]["raw"], "absolute_max": -1}}}
    with pytest.raises(ValueError, match=r"runs\[0\].views\['raw'\] absolute_max is -1"):
        render_page(synthetic_payload(bad))


def test_decode_view_needs_num_keys_for_matrices_that_are_not_square():
    view = encode_view(np.ones((1, 1, 2, 3)), "Raw attention")
    with pytest.raises(ValueError, match="num_keys"):
        decode_view(view)
    assert decode_view(view, num_keys=3).shape == (1, 1, 2, 3)


def test_render_page_is_self_contained_and_embeds_the_payload():
    payload = synthetic_payload(synthetic_run(), title="Oil </script><!--<script> rose")
    page = render_page(payload)
    for external in ("http://", "https://", "src=", "href=", "url(", "@import"):
        assert external not in page
    assert "default-src 'none'" in page
    # The title cannot close the script that holds the payload: only the page's own two closings remain.
    assert page.count("</script>") == 2
    embedded = re.search(r'<script type="application/json" id="tfattn-explorer-data">(.*?)</script>', page, re.S)
    assert json.loads(embedded.group(1)) == payload
    assert "<title>Oil &lt;/script&gt;&lt;!--&lt;script&gt; rose</title>" in page


def test_assets_cannot_close_their_inline_elements():
    assets = resources.files("tfattn.explorer") / "assets"
    assert "</script" not in (assets / "explorer.js").read_text(encoding="utf-8").lower()
    assert "</style" not in (assets / "explorer.css").read_text(encoding="utf-8").lower()


def test_render_page_names_what_is_wrong_with_a_payload():
    run = synthetic_run()
    with pytest.raises(ValueError, match="^payload format is 'tfattn-attention-explorer/0', expected 'tfattn-"):
        render_page({**synthetic_payload(run), "format": "tfattn-attention-explorer/0"})
    short = {**run["views"]["raw"], "data": base64.b64encode(bytes(196)).decode("ascii")}
    with pytest.raises(ValueError, match=r"runs\[0\].views\['raw'\] data holds 196 bytes, expected .* = 294"):
        render_page(synthetic_payload({**run, "views": {"raw": short}}))
    with pytest.raises(ValueError, match=r"runs\[0\] is missing 'layers'"):
        render_page(synthetic_payload({key: value for key, value in run.items() if key != "layers"}))
    other = synthetic_run(query_tokens=[*TOKENS[:-1], "today", "[SEP]"])
    with pytest.raises(ValueError, match="difference is true") as error:
        render_page(synthetic_payload(run, other, difference=True))
    assert "\n" not in str(error.value)


def test_write_page_replaces_the_file_whole(tmp_path):
    target = tmp_path / "pages" / "oil.html"
    assert write_page(synthetic_payload(synthetic_run()), target) == target
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError):
        write_page({"format": "something else"}, target)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [path.name for path in target.parent.iterdir()] == ["oil.html"]
