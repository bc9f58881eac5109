"""Attention views: rollout, gradient weighting, special-token hiding and token importance on a
hand-computed 2-layer, 2-head, 4-token case; attention gradients from real (tiny) models of every
family; `explain` and `explore` (payloads, crops, pairs, comparisons, errors)."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from task_harness import exported_tiny_hub_bert, tiny_scratch_classifier

from tfattn import plotting
from tfattn.attention import (
    attention_and_gradients,
    attention_rollout,
    attention_uniformity,
    gradient_weighted_attention,
    hide_special_tokens,
    mean_over_heads,
    special_token_mask,
    token_importance,
)
from tfattn.cli import build_parser
from tfattn.explorer import _RANKING_NAMES, FAITHFULNESS, VIEW_LABELS, explain, explore, faithfulness_legend
from tfattn.explorer.page import decode_view
from tfattn.models import (
    HubEncoder,
    HubPreprocessor,
    HuggingFaceEncoder,
    TextClassifier,
    TokenClassifier,
)
from tfattn.models.wordpiece import bert_preprocessor_from_pretrained
from tfattn.tasks.encoder_task import VIEW_NAMES, plot_explanations

# --- the hand-made case: [CLS] a b [SEP] ---------------------------------------------------------

IDENTITY, UNIFORM = np.eye(4), np.full((4, 4), 0.25)
TO_FIRST = np.zeros((4, 4))
TO_FIRST[:, 0] = 1  # every token attends to [CLS]
TO_LAST = np.zeros((4, 4))
TO_LAST[:, 3] = 1  # every token attends to [SEP]
ATTENTION = np.array([[IDENTITY, UNIFORM], [TO_FIRST, TO_LAST]])  # [layers, heads, query, key]
SPECIAL = np.array([True, False, False, True])

# Worked by hand. Layer 0: mean over heads 0.5 I + 0.125; with the residual, (mean + I) / 2 =
# 0.75 I + 0.0625 (rows sum to 1). Layer 1: mean 0.5 at [CLS] and 0.5 at [SEP]; with the residual
# row i is 0.25 at [CLS], 0.25 at [SEP] and 0.5 more at i. Rollout = layer 1 @ layer 0
# = 0.75 * layer 1 + 0.0625 (layer 1's rows sum to 1).
ROLLOUT_AFTER_0 = 0.75 * IDENTITY + 0.0625
ROLLOUT_AFTER_1 = np.array(
    [
        [0.625, 0.0625, 0.0625, 0.25],
        [0.25, 0.4375, 0.0625, 0.25],
        [0.25, 0.0625, 0.4375, 0.25],
        [0.25, 0.0625, 0.0625, 0.625],
    ]
)


def test_mean_over_heads_and_rollout_match_the_hand_computed_values():
    np.testing.assert_allclose(mean_over_heads(ATTENTION)[1, 2], [0.5, 0, 0, 0.5], atol=1e-6)
    rollout = attention_rollout(ATTENTION)
    assert rollout.shape == (2, 4, 4)
    np.testing.assert_allclose(rollout[0], ROLLOUT_AFTER_0, atol=1e-6)
    np.testing.assert_allclose(rollout[1], ROLLOUT_AFTER_1, atol=1e-6)
    np.testing.assert_allclose(rollout.sum(axis=-1), 1, atol=1e-6)


def test_gradient_weighting_keeps_only_what_raises_the_prediction():
    gradients = np.zeros_like(ATTENTION)
    gradients[0, 1, 0] = [1.0, -2.0, 0.5, 4.0]  # layer 0, head 1 (uniform 0.25), query [CLS]
    gradients[1, 0, 2] = [-3.0, 0, 0, 0]  # layer 1, head 0 (all to [CLS]), query b: lowers it
    weighted = gradient_weighted_attention(ATTENTION, gradients)
    expected = np.zeros_like(ATTENTION)
    expected[0, 1, 0] = [0.25, 0.0, 0.125, 1.0]
    np.testing.assert_allclose(weighted, expected, atol=1e-6)
    # Summed over layers, heads and query rows: one score per key token.
    np.testing.assert_allclose(
        token_importance("gradient", ATTENTION, read_rows=None, gradients=gradients), [0.25, 0, 0.125, 1.0], atol=1e-6
    )


def test_hiding_special_tokens_renormalizes_the_rows_left():
    hidden = hide_special_tokens(ROLLOUT_AFTER_1, SPECIAL)
    np.testing.assert_allclose(hidden, [[0.875, 0.125], [0.125, 0.875]], atol=1e-6)
    # A row with nothing left stays zero (no NaN): layer 1, head 0 attends only to [CLS].
    np.testing.assert_array_equal(hide_special_tokens(ATTENTION[1, 0], SPECIAL), np.zeros((2, 2)))
    # Works on a whole stack [layers, heads, q, k].
    assert hide_special_tokens(ATTENTION, SPECIAL).shape == (2, 2, 2, 2)


def test_token_importance_reads_the_rows_the_head_reads():
    cls_row = np.array([1.0, 0, 0, 0])
    np.testing.assert_allclose(token_importance("raw", ATTENTION, cls_row), [0.5, 0, 0, 0.5], atol=1e-6)
    np.testing.assert_allclose(token_importance("rollout", ATTENTION, cls_row), ROLLOUT_AFTER_1[0], atol=1e-6)
    mean_rows = np.full(4, 0.25)
    np.testing.assert_allclose(
        token_importance("rollout", ATTENTION, mean_rows), ROLLOUT_AFTER_1.mean(axis=0), atol=1e-6
    )
    with pytest.raises(ValueError, match="method must be one of raw, rollout, gradient; got 'lime'"):
        token_importance("lime", ATTENTION, cls_row)
    with pytest.raises(ValueError, match="needs the attention gradients"):
        token_importance("gradient", ATTENTION, cls_row)


def test_the_command_line_offers_every_view():
    # The CLI names the views without importing TensorFlow to build its parser.
    assert VIEW_NAMES == tuple(VIEW_LABELS)


def test_uniformity_of_the_hand_made_maps():
    # Tolerance 1e-6: float64 logs, far below the 3 decimals the page and PNG show.
    assert attention_uniformity is plotting.attention_uniformity
    # Layer 0: head 0 is the identity (one key per row), head 1 uniform; layer 1: one key per row.
    np.testing.assert_allclose(attention_uniformity(ATTENTION), [[0.0, 1.0], [0.0, 0.0]], atol=1e-6)
    # Rollout after layer 0, 0.75 I + 0.0625: each row is 0.8125 once and 0.0625 three times, so
    # H = -(0.8125 ln 0.8125 + 3 x 0.0625 ln 0.0625) = 0.168707 + 0.519860 = 0.688567 nats, / ln 4.
    assert attention_uniformity(ROLLOUT_AFTER_0) == pytest.approx(0.688567 / np.log(4), abs=1e-6)


def test_special_token_mask():
    assert special_token_mask(["[CLS]", "oil", "[UNK]", "[SEP]"]).tolist() == [True, False, False, True]


# --- gradients from real models -----------------------------------------------------------------

WORDS = ["stocks", "fell", "oil", "prices", "rose", "goal", "won"]


def _scratch_classifier(pooling="cls", num_blocks=2, seed=0):
    return tiny_scratch_classifier(WORDS, 3, pooling=pooling, num_blocks=num_blocks, seed=seed)


def test_gradients_reach_only_the_rows_the_head_reads():
    model = _scratch_classifier(pooling="cls")
    result = attention_and_gradients(model, model.features(["stocks fell as oil prices rose"]))
    assert result["attention"].shape == result["gradients"].shape == (1, 2, 2, 6, 6)
    last_layer = np.abs(result["gradients"][0, -1]).sum(axis=(0, 2))  # per query row
    # With cls pooling the last layer's other rows feed nothing the head reads.
    assert last_layer[0] > 0 and np.all(last_layer[1:] == 0)
    # The first layer's rows all feed [CLS] at the last layer.
    assert np.all(np.abs(result["gradients"][0, 0]).sum(axis=(0, 2)) > 0)


def test_gradients_of_a_frozen_encoder_and_of_a_batch_equal_those_of_one_text():
    model = _scratch_classifier(pooling="mean")
    texts = ["stocks fell as oil prices rose", "goal"]
    alone = [attention_and_gradients(model, model.features([text]))["gradients"][0] for text in texts]
    model.freeze_encoder()
    batch = attention_and_gradients(model, model.features(texts))["gradients"]
    np.testing.assert_allclose(batch[0], alone[0], atol=1e-6)
    np.testing.assert_allclose(batch[1, :, :, :1, :1], alone[1], atol=1e-6)
    assert np.abs(alone[0]).sum() > 0


# --- explain and explore ------------------------------------------------------------------------


def test_explain_a_scratch_classifier_gives_four_views_and_the_prediction():
    model = _scratch_classifier()
    explanation = explain(model, "Stocks fell as oil prices rose", ["World", "Sports", "Business"], name="scratch")
    assert explanation.family == "from scratch"
    assert explanation.tokens == ["stocks", "fell", "[UNK]", "oil", "prices", "rose"]
    assert not explanation.special.any()
    assert {name: view.shape for name, view in explanation.views.items()} == {
        "raw": (2, 2, 6, 6),
        "mean": (2, 1, 6, 6),
        "rollout": (2, 1, 6, 6),
        "gradient": (2, 2, 6, 6),
    }
    prediction = explanation.prediction
    assert prediction["type"] == "label" and prediction["labels"] == ["World", "Sports", "Business"]
    expected = model.predict_proba(["Stocks fell as oil prices rose"])[0]
    np.testing.assert_allclose(prediction["probabilities"], expected, atol=1e-5)
    assert prediction["predicted"] == int(expected.argmax())


def test_explain_crops_after_computing_and_selects_layers():
    model = _scratch_classifier()
    text = "Stocks fell as oil prices rose"
    whole = explain(model, text)
    cropped = explain(model, text, layers=[1], max_tokens=3)
    assert cropped.tokens == whole.tokens[:3] and cropped.layers == [1]
    assert cropped.notes == ["cropped to the first 3 of 6 tokens (--max-tokens); attention to the rest is not shown"]
    for name, view in cropped.views.items():
        np.testing.assert_allclose(view, whole.views[name][1:, :, :3, :3], atol=1e-6)
    with pytest.raises(ValueError, match=r"layers must be among \[0, 1\]; got \[2\]"):
        explain(model, text, layers=[2])
    with pytest.raises(ValueError, match="sentence pairs need a BERT-family"):
        explain(model, text, text_pair="Oil rose")
    with pytest.raises(ValueError, match="label_names has 2 names for the model's 3 outputs"):
        explain(model, text, ["a", "b"])


def test_explain_a_bert_sentence_pair(tiny_bert_dir):
    model = TextClassifier(
        bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=32),
        HuggingFaceEncoder.from_pretrained(tiny_bert_dir),
        num_classes=2,
    )
    explanation = explain(model, "Is it raining?", text_pair="Yes, it is.")
    assert explanation.family == "Hugging Face"
    assert explanation.tokens == ["[CLS]", "is", "it", "raining", "?", "[SEP]", "yes", ",", "it", "is", ".", "[SEP]"]
    assert np.flatnonzero(explanation.special).tolist() == [0, 5, 11]
    assert explanation.text == "Is it raining? ||| Yes, it is."
    assert explanation.views["gradient"].shape == (2, 2, 12, 12)
    np.testing.assert_allclose(explanation.views["raw"].sum(axis=-1), 1, atol=1e-5)


def test_explain_a_token_classifier_tags_the_real_tokens(tiny_bert_dir):
    model = TokenClassifier(
        bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=32),
        HuggingFaceEncoder.from_pretrained(tiny_bert_dir),
        ["O", "B-PER", "I-PER"],
        word_shape=True,
    )
    explanation = explain(model, "Angela Merkel spoke")
    prediction = explanation.prediction
    assert prediction["type"] == "tags" and prediction["labels"] == ["O", "B-PER", "I-PER"]
    assert prediction["tags"][0] == prediction["tags"][-1] == -1  # [CLS], [SEP]
    assert all(0 <= tag < 3 for tag in prediction["tags"][1:-1])
    assert len(prediction["scores"]) == len(explanation.tokens)
    # The target leaves out the special tokens, yet their rows feed the real tokens below the top.
    assert explanation.views["gradient"].sum() > 0


@pytest.mark.slow
def test_tf_hub_attention_has_no_gradient_view_and_says_why(tiny_bert_dir, tmp_path_factory):
    preprocess_dir, encoder_dir = exported_tiny_hub_bert(tiny_bert_dir, tmp_path_factory)
    model = TextClassifier(HubPreprocessor(preprocess_dir), HubEncoder(encoder_dir), num_classes=2, pooling="pooled")
    explanation = explain(model, "Oil prices rose")
    assert explanation.family == "TF-Hub"
    assert sorted(explanation.views) == ["mean", "raw", "rollout"]
    assert "not on the path to the logits" in explanation.unavailable["gradient"]
    assert explanation.tokens[0] == "[CLS]"


def test_explore_compares_two_models_and_the_payload_decodes_to_the_views():
    first, second = _scratch_classifier(seed=0), _scratch_classifier(seed=1)
    page = explore(first, "Oil prices rose", compare=second, label_names=["a", "b", "c"])
    payload = page.payload
    assert payload["difference"] is True and len(payload["runs"]) == 2
    expected = explain(first, "Oil prices rose", ["a", "b", "c"])
    for name, view in payload["runs"][0]["views"].items():
        scale = expected.views[name].max(axis=(-2, -1), keepdims=True)
        assert np.all(np.abs(decode_view(view) - expected.views[name]) <= scale / 510 + 1e-7)
    assert "<script" in page.html and "Oil prices rose" in page.html

    # Another number of layers: side by side, no difference map.
    other = _scratch_classifier(num_blocks=1)
    assert explore(first, "Oil prices rose", compare=other, label_names=["a", "b", "c"]).payload["difference"] is False


def test_the_absolute_scale_of_each_view():
    explanation = explain(_scratch_classifier(), "Stocks fell as oil prices rose", ["a", "b", "c"])
    assert [explanation.absolute_max(name) for name in ("raw", "mean", "rollout")] == [1.0] * 3
    gradient_max = float(explanation.views["gradient"].max())
    assert 0 < gradient_max and explanation.absolute_max("gradient") == pytest.approx(gradient_max, rel=1e-6)
    views = explanation.to_payload()["views"]
    assert views["raw"]["absolute_max"] == 1.0
    assert views["gradient"]["absolute_max"] == pytest.approx(gradient_max, rel=1e-6)


def test_the_png_is_drawn_on_the_scale_the_command_line_asks_for(tmp_path, monkeypatch):
    parser = build_parser()
    assert parser.parse_args(["attention", "--run", "runs/x", "text"]).scale == "absolute"
    explanation = explain(_scratch_classifier(), "Stocks fell as oil prices rose", ["a", "b", "c"])
    limits = []  # (vmin, vmax, subtitle) of each panel drawn
    draw = plotting._draw_heatmap

    def spy(ax, matrix, tokens, subtitle, vmax, **options):
        limits.append((options["vmin"], vmax, subtitle))
        return draw(ax, matrix, tokens, subtitle, vmax, **options)

    monkeypatch.setattr(plotting, "_draw_heatmap", spy)
    for scale, view in (("absolute", "raw"), ("absolute", "gradient"), ("stretched", "raw")):
        args = parser.parse_args(["attention", "--run", "runs/x", "text", "--scale", scale, "--view", view])
        limits.clear()
        assert plot_explanations([explanation], tmp_path / f"{scale}_{view}.png", args, "title").is_file()
        shown = explanation.views[view][0]  # layer 0, both heads
        vmin, vmax, subtitle = limits[0]
        if scale == "stretched":
            assert (vmin, vmax) == pytest.approx((shown.min(), shown.max()), rel=1e-5)
        else:
            assert (vmin, vmax) == pytest.approx((0.0, explanation.absolute_max(view)), rel=1e-6)
        assert f"uniformity {attention_uniformity(shown[0]):.3f}" in subtitle


def test_explore_a_missing_run_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope: no such run folder"):
        explore(tmp_path / "nope", "text")


def test_page_file_is_written(tmp_path):
    model = _scratch_classifier()
    path = explore(model, "goal won", label_names=["a", "b", "c"]).save(tmp_path / "pages" / "goal.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "tfattn-attention-explorer/1" in text
    assert tf.io.gfile.exists(str(path))


def test_the_legend_quotes_the_faithfulness_benchmark():
    results = json.loads((Path(__file__).parents[1] / "bench/results/attention_faithfulness.json").read_text())
    measured = {
        run["family"]: {method: figures["aopc_comprehensiveness"] for method, figures in run["methods"].items()}
        for run in results["runs"].values()
    }
    assert results["texts"] == 500 and FAITHFULNESS == measured
    for run in results["runs"].values():
        best = run["best_by_comprehensiveness"]
        legend = faithfulness_legend(run["family"])
        assert f"the {run['family']} family on AG News, {_RANKING_NAMES[best]} ranked tokens best" in legend
        assert f"by {measured[run['family']][best]:.3f} on average" in legend
    assert faithfulness_legend("an unmeasured family") is None
