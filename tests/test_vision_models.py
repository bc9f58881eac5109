"""PatchEmbedding (the layer harness, patch order, position interpolation) and the from-scratch image models."""

import json

import numpy as np
import pytest
import tensorflow as tf
from harness import run_layer_test

from tfattn.layers import PatchEmbedding
from tfattn.models.vision import (
    ConvNet,
    ImagePreprocessor,
    VisionTransformer,
    build_image_model,
    load_image_model,
    save_image_model,
)
from tfattn.runs.manifest import DamagedRun


@pytest.mark.parametrize(
    ("tokenizer", "weights"),
    # The class token and positions, + the projection / the patch norm / two conv stages. The
    # harness's mixed-precision runs take a second or so each: the other tokenizers are slow tests.
    [
        ("patches", 4),
        pytest.param("shifted", 6, marks=pytest.mark.slow),
        pytest.param("conv", 6, marks=pytest.mark.slow),
    ],
)
def test_patch_embedding_passes_the_layer_harness(tokenizer, weights):
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    run_layer_test(
        PatchEmbedding,
        {"image_size": 8, "patch_size": 4, "embed_dim": 6, "tokenizer": tokenizer, "conv_channels": 5},
        images,
        expected_output_shape=(2, 5, 6),
        expected_num_trainable_weights=weights,
    )


def test_patches_are_tokens_in_row_major_order_after_the_class_token():
    """Token 1 + r * cols + c is the patch at row r, column c: one pixel lit in a patch changes
    that token alone."""
    layer = PatchEmbedding(image_size=8, patch_size=4, embed_dim=3)
    blank = layer(tf.zeros([1, 8, 8, 3]))[0].numpy()
    image = np.zeros([1, 8, 8, 3], np.float32)
    image[0, 5, 2] = 1.0  # row 1, column 0 of the 2 x 2 grid: token 1 + 1 * 2 + 0 = 3
    changed = np.abs(layer(image)[0].numpy() - blank).sum(axis=-1) > 0
    np.testing.assert_array_equal(changed, [False, False, False, True, False])


def test_position_table_is_interpolated_for_another_grid_and_kept_for_its_own():
    layer = PatchEmbedding(image_size=8, patch_size=2, embed_dim=4)
    layer(tf.zeros([1, 8, 8, 3]))
    np.testing.assert_array_equal(layer.position_table(4, 4).numpy(), layer.positions.numpy())
    larger = layer.position_table(8, 8).numpy()
    assert larger.shape == (1, 65, 4)
    np.testing.assert_array_equal(larger[0, 0], layer.positions.numpy()[0, 0])  # the class token's
    # A constant table resizes to the same constant: bicubic interpolation keeps flat regions.
    layer.positions.assign(tf.fill(layer.positions.shape, 0.25))
    np.testing.assert_allclose(layer.position_table(6, 6).numpy(), 0.25, atol=1e-6)
    assert layer(tf.zeros([2, 16, 16, 3])).shape == (2, 65, 4)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"image_size": 30, "patch_size": 4}, "patch_size 4 must divide image_size 30"),
        ({"patch_size": 6, "image_size": 36, "tokenizer": "conv"}, "patch_size must be 2, 4, 8"),
        ({"tokenizer": "pixels"}, "tokenizer must be one of patches, shifted, conv, got 'pixels'"),
        ({"embed_dim": 0}, "embed_dim must be a positive integer, got 0"),
    ],
)
def test_patch_embedding_names_a_bad_argument(arguments, message):
    with pytest.raises(ValueError, match=message):
        PatchEmbedding(**{"image_size": 32, "patch_size": 4, "embed_dim": 8, **arguments})


def test_preprocessor_statistics_are_the_images_per_channel_mean_and_std():
    images = np.zeros([2, 2, 2, 3], np.uint8)
    images[0] = [255, 0, 51]
    preprocessor = ImagePreprocessor.from_images(images, 2)
    np.testing.assert_allclose(preprocessor.mean, [0.5, 0.0, 0.1], atol=1e-6)
    np.testing.assert_allclose(preprocessor.std, [0.5, 1e-6, 0.1], atol=1e-5)
    np.testing.assert_allclose(preprocessor(images)[0, 0, 0], [1.0, 0.0, 1.0], atol=1e-4)


def _tiny_vit(**kwargs):
    options = {"embed_dim": 8, "num_heads": 2, "ff_dim": 16, "num_blocks": 2, "patch_size": 4, "dropout": 0.0}
    return VisionTransformer(3, ImagePreprocessor(8), **{**options, **kwargs})


@pytest.mark.parametrize(
    ("tokenizer", "tokens"),
    [
        ("patches", "cut into 2x2 patches of 4x4 pixels"),
        ("conv", "turned into 2x2 tokens by a convolutional tokenizer, one for each 4x4-pixel cell"),
    ],
)
def test_the_explorer_page_says_how_the_vit_made_its_tokens(tokenizer, tokens):
    from tfattn.explorer.images import explain_image

    model = build_image_model(_tiny_vit(tokenizer=tokenizer))
    image = np.random.default_rng(2).integers(0, 256, [8, 8, 3]).astype(np.uint8)
    assert explain_image(model, image, ["a", "b", "c"]).to_payload()["tokens"].startswith(tokens)


def test_vit_attention_is_the_class_token_and_patches_softmax():
    model = build_image_model(_tiny_vit())
    pixels = np.random.default_rng(1).integers(0, 256, [2, 8, 8, 3]).astype(np.uint8)
    outputs = model.forward(pixels)
    assert model.patch_grid == (2, 2) and model.has_attention
    assert [tuple(s.shape) for s in outputs["attention_scores"]] == [(2, 2, 5, 5)] * 2
    for scores in outputs["attention_scores"]:
        np.testing.assert_allclose(tf.reduce_sum(scores, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(outputs["logits"], model(pixels), atol=1e-6)
    # Each image is classified on its own: a neighbour in the batch changes nothing.
    np.testing.assert_allclose(model(pixels[:1]), model(pixels)[:1], atol=1e-5)


@pytest.mark.parametrize("make", [lambda: _tiny_vit(tokenizer="shifted"), lambda: ConvNet(3, ImagePreprocessor(8), 4)])
def test_image_models_round_trip_through_their_folder(tmp_path, make):
    model = build_image_model(make())
    pixels = np.random.default_rng(2).integers(0, 256, [3, 8, 8, 3]).astype(np.uint8)
    save_image_model(model, tmp_path / "model")
    loaded = load_image_model(tmp_path / "model")
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(pixels), model(pixels), atol=1e-6)


def test_a_pre_norm_locality_vit_round_trips_with_its_learned_temperatures_and_final_norm(tmp_path):
    model = build_image_model(_tiny_vit(normalize_first=True, locality=True))
    assert all(block.normalize_first and block.locality for block in model.blocks)
    for index, block in enumerate(model.blocks):
        block.temperature.assign(0.5 + index)
    model.final_norm.gamma.assign(np.linspace(0.5, 1.5, 8))
    pixels = np.random.default_rng(2).integers(0, 256, [3, 8, 8, 3]).astype(np.uint8)
    scores = model.forward(pixels)["attention_scores"]
    assert all(np.all(np.diagonal(s.numpy(), axis1=-2, axis2=-1) == 0) for s in scores)
    save_image_model(model, tmp_path / "model")
    loaded = load_image_model(tmp_path / "model")
    assert loaded.get_config() == model.get_config() and loaded.get_config()["normalize_first"]
    assert [float(block.temperature.numpy()) for block in loaded.blocks] == [0.5, 1.5]
    np.testing.assert_allclose(loaded(pixels), model(pixels), atol=1e-6)
    # Without the final norm (the post-norm model's path) the logits differ: the test can fail.
    loaded.final_norm.gamma.assign(np.ones(8))
    assert np.abs(loaded(pixels) - model(pixels)).max() > 1e-4


def test_loading_refuses_an_unknown_kind_without_building_anything(tmp_path):
    model = build_image_model(_tiny_vit())
    save_image_model(model, tmp_path)
    saved = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**saved, "model": "os.system"}))
    with pytest.raises(DamagedRun, match=r"unknown image model 'os.system' \(known: vit, cnn\)"):
        load_image_model(tmp_path)


def test_the_cnn_has_no_attention_to_explore():
    model = build_image_model(ConvNet(3, ImagePreprocessor(8), 4))
    assert not model.has_attention
    with pytest.raises(ValueError, match="the CNN baseline has no attention"):
        model.forward(np.zeros([1, 8, 8, 3], np.uint8))
