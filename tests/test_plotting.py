"""Tests of tfattn.plotting: attention grids are written, sized by the grid, and inputs are validated;
the uniformity measure's golden values; every panel shows it, on an absolute colour scale by default."""

import numpy as np
import pytest
from matplotlib.image import imread

from tfattn import plotting
from tfattn.plotting import attention_uniformity, plot_alignment, plot_attention, plot_attention_comparison

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOKENS = ["the", "match", "ended", "in", "a", "draw"]


NUM_TOKENS = len(TOKENS)


def softmax_attention(seed, layers=2, heads=4, n=NUM_TOKENS):
    logits = np.random.default_rng(seed).normal(size=(layers, heads, n, n))
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


def assert_non_blank_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = imread(path)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10
    return pixels


def test_plot_attention_writes_png(tmp_path):
    path = plot_attention(
        softmax_attention(0), TOKENS, tmp_path / "maps" / "attention.png", layers=[0, 1], title="demo"
    )
    assert path == tmp_path / "maps" / "attention.png"
    assert_non_blank_png(path)


def test_figure_width_grows_with_number_of_heads(tmp_path):
    attention = softmax_attention(1)
    one = imread(plot_attention(attention, TOKENS, tmp_path / "one.png", heads=[2]))
    four = imread(plot_attention(attention, TOKENS, tmp_path / "four.png"))
    assert four.shape[1] > 2 * one.shape[1]
    assert four.shape[0] == one.shape[0]


def test_figure_grows_with_number_of_tokens_and_crops_long_texts(tmp_path):
    short = imread(plot_attention(softmax_attention(2, n=6), TOKENS, tmp_path / "short.png"))
    tokens = [f"t{i}" for i in range(40)]
    long = imread(plot_attention(softmax_attention(2, n=40), tokens, tmp_path / "long.png"))
    cropped = imread(plot_attention(softmax_attention(2, n=40), tokens, tmp_path / "crop.png", max_tokens=6))
    assert long.shape[1] > short.shape[1]
    assert cropped.shape[1] < long.shape[1]


def test_out_of_range_layer_or_head_names_the_index(tmp_path):
    attention = softmax_attention(3)
    with pytest.raises(ValueError, match=r"layer 5 .*2 layers"):
        plot_attention(attention, TOKENS, tmp_path / "x.png", layers=[0, 5])
    with pytest.raises(ValueError, match=r"head 4 .*4 heads"):
        plot_attention(attention, TOKENS, tmp_path / "x.png", heads=[4])
    with pytest.raises(ValueError, match=r"head -1"):
        plot_attention(attention, TOKENS, tmp_path / "x.png", heads=-1)
    assert not (tmp_path / "x.png").exists()


def test_token_count_mismatch_raises(tmp_path):
    with pytest.raises(ValueError, match="6 tokens but 5"):
        plot_attention(softmax_attention(4), TOKENS[:5], tmp_path / "x.png")


def test_plot_attention_comparison_writes_png(tmp_path):
    path = plot_attention_comparison(
        softmax_attention(5), softmax_attention(6), TOKENS, tmp_path / "compare.png", layer=1, heads=[0, 3]
    )
    assert_non_blank_png(path)


def test_comparison_shape_mismatch_raises(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        plot_attention_comparison(softmax_attention(5), softmax_attention(6, heads=2), TOKENS, tmp_path / "compare.png")


# --- how far a map is from uniform, and the colour scale -----------------------------------------

UNIFORMITY_TOLERANCE = 1e-6  # float64 sums of a few logs: far below the 3 decimals shown


def test_attention_uniformity_golden_values():
    uniform = np.full((5, 5), 0.2)
    one_hot = np.eye(5)
    assert attention_uniformity(uniform) == pytest.approx(1.0, abs=UNIFORMITY_TOLERANCE)
    assert attention_uniformity(one_hot) == pytest.approx(0.0, abs=UNIFORMITY_TOLERANCE)
    # By hand: H = -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) = 0.249672 + 0.321888 + 0.230259 = 0.801819
    # nats; log n = ln 3 = 1.098612; 0.801819 / 1.098612 = 0.729847.
    assert attention_uniformity([[0.7, 0.2, 0.1]]) == pytest.approx(0.729847, abs=UNIFORMITY_TOLERANCE)
    # Rows are read as distributions, so their scale does not matter (gradient-weighted views).
    assert attention_uniformity([[1.4, 0.4, 0.2]]) == pytest.approx(0.729847, abs=UNIFORMITY_TOLERANCE)
    # Every weight within 2% of 1/15, as in the report that a stretched scale made look selective.
    near_uniform = np.where(np.arange(15) % 2 == 0, 1.02, 0.98) / 15
    assert attention_uniformity(np.tile(near_uniform, (15, 1))) > 0.999


def test_attention_uniformity_of_one_key_and_of_empty_rows_is_never_nan():
    assert attention_uniformity([[1.0]]) == pytest.approx(1.0, abs=UNIFORMITY_TOLERANCE)
    # A row with no weight (masked, or all its keys hidden) is left out of the mean: log 2 / log 3.
    assert attention_uniformity([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]) == pytest.approx(
        np.log(2) / np.log(3), abs=UNIFORMITY_TOLERANCE
    )
    assert attention_uniformity(np.zeros((3, 3))) == pytest.approx(1.0, abs=UNIFORMITY_TOLERANCE)
    stack = softmax_attention(7)
    stack[1, 2] = 0
    values = attention_uniformity(stack)
    assert values.shape == (2, 4) and np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    with pytest.raises(ValueError, match="values >= 0"):
        attention_uniformity([[0.5, -0.5]])
    with pytest.raises(ValueError, match="query, key"):
        attention_uniformity([0.5, 0.5])


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, in order (they are still written to disk)."""
    saved = []
    save = plotting._save_figure

    def keep(figure, title, path):
        saved.append(figure)
        return save(figure, title, path)

    monkeypatch.setattr(plotting, "_save_figure", keep)
    return saved


def heatmaps_and_colour_bar(figure):
    """The heatmap axes of a figure (those with an image) and its colour bar's label."""
    heatmaps = [ax for ax in figure.axes if ax.images and ax.get_title()]
    (colour_bar,) = [ax for ax in figure.axes if ax not in heatmaps]
    return heatmaps, colour_bar.get_ylabel()


def test_the_default_colour_scale_is_absolute_and_every_panel_shows_its_uniformity(tmp_path, figures):
    near_uniform = np.where(np.arange(NUM_TOKENS) % 2 == 0, 1.02, 0.98) / NUM_TOKENS
    attention = np.stack([np.tile(near_uniform, (NUM_TOKENS, 1)), np.eye(NUM_TOKENS)])[None]  # 1 layer, 2 heads
    plot_attention(attention, TOKENS, tmp_path / "absolute.png")
    heatmaps, label = heatmaps_and_colour_bar(figures[-1])
    assert [ax.images[0].get_clim() for ax in heatmaps] == [(0.0, 1.0)] * 2
    assert [ax.get_title() for ax in heatmaps] == [
        "layer 0, head 0\nuniformity 1.000",
        "layer 0, head 1\nuniformity 0.000",
    ]
    assert "absolute scale, 0 to 1" in label
    assert "1 = uniform" in figures[-1].get_supxlabel()

    plot_attention(attention, TOKENS, tmp_path / "stretched.png", heads=[0], scale="stretched")
    (heatmap,), label = heatmaps_and_colour_bar(figures[-1])
    np.testing.assert_allclose(heatmap.images[0].get_clim(), (0.98 / NUM_TOKENS, 1.02 / NUM_TOKENS), rtol=1e-5)
    assert "stretched" in label and "small differences look large" in label
    assert_non_blank_png(tmp_path / "absolute.png")


def test_a_view_with_no_fixed_bound_gets_its_own_absolute_top(tmp_path, figures):
    gradient = softmax_attention(8) * 0.01
    plot_attention(gradient, TOKENS, tmp_path / "g.png", absolute_max=0.02, value_label="attention x gradient")
    heatmaps, label = heatmaps_and_colour_bar(figures[-1])
    assert heatmaps[0].images[0].get_clim() == (0.0, 0.02)
    assert label == "attention x gradient\nabsolute scale, 0 to 0.02"
    plot_attention_comparison(softmax_attention(5), softmax_attention(6), TOKENS, tmp_path / "c.png", heads=[0])
    heatmaps, _ = heatmaps_and_colour_bar(figures[-1])
    assert [ax.images[0].get_clim() for ax in heatmaps] == [(0.0, 1.0)] * 2
    assert all("uniformity" in ax.get_title() for ax in heatmaps)
    with pytest.raises(ValueError, match="scale must be one of absolute, stretched; got 'log'"):
        plot_attention(gradient, TOKENS, tmp_path / "x.png", scale="log")


def test_alignment_panels_show_their_uniformity(tmp_path, figures):
    source, target = ["hola", "mundo", "<eos>"], ["hello", "world"]
    attention = np.zeros((1, 2, 2, 3))
    attention[0, :, 0, 0] = attention[0, :, 1, 1] = 1.0  # one-hot alignment
    plot_alignment(attention, source, target, tmp_path / "a.png")
    heatmaps, label = heatmaps_and_colour_bar(figures[-1])
    assert heatmaps[0].get_title().endswith("uniformity 0.000") and "absolute scale 0 to 1" in label
