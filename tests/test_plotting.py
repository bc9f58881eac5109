"""Tests of tfattn.plotting: attention grids are written, sized by the grid, and inputs are validated."""

import numpy as np
import pytest
from matplotlib.image import imread

from tfattn.plotting import plot_attention, plot_attention_comparison

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
