"""Tests of `tfattn.models.hf_vision`: a Hugging Face TF ViT / DeiT image classifier behind
tfattn's image-classifier interface gives the checkpoint's own logits and attention on pixels
normalised as its preprocessor_config.json says, trains with `model.fit`, saves and loads back,
and refuses what is not a ViT or DeiT checkpoint in one line, before any weights load.

No pretrained weights are reachable offline, so the checkpoints are tiny random ViT and DeiT
models built here and saved with `save_pretrained` (the ViT with a preprocessor_config.json of
made-up statistics, the DeiT without one: Hugging Face's defaults apply).
"""

import json
import shutil
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfattn.models.hf_vision import IMAGE_CLASSIFIER_CLASSES, HuggingFaceImageClassifier
from tfattn.models.safe_config import HF_IMAGE_MODEL_TYPES, UnsafeModelConfig
from tfattn.pretrained import PretrainedLoadError
from tfattn.runs.manifest import DamagedRun

transformers = pytest.importorskip("transformers")

TINY = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
VIT_MEAN, VIT_STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
CHECKPOINT_LABELS = ["LABEL_0", "LABEL_1"]  # what a config built with the defaults names its 2 classes
CLASSES = ["cat", "dog", "frog"]


def _save_tiny(folder, model_class, config, processor=None):
    keras.utils.set_random_seed(0)
    model = model_class(config)
    model(model.dummy_inputs)
    model.save_pretrained(str(folder))
    if processor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor), encoding="utf-8")
    return model


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """(folder, the Hugging Face model saved there) of a tiny random ViT with its own statistics."""
    folder = tmp_path_factory.mktemp("tiny-vit")
    processor = {"image_processor_type": "ViTImageProcessor", "image_mean": VIT_MEAN, "image_std": VIT_STD}
    config = transformers.ViTConfig(**TINY)
    return folder, _save_tiny(folder, transformers.TFViTForImageClassification, config, processor)


@pytest.fixture(scope="module")
def deit(tmp_path_factory):
    """(folder, model) of a tiny random DeiT, no preprocessor_config.json."""
    folder = tmp_path_factory.mktemp("tiny-deit")
    config = transformers.DeiTConfig(**TINY)
    return folder, _save_tiny(folder, transformers.TFDeiTForImageClassification, config)


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)


def _by_hand(pixels, mean, std):
    """What the checkpoint's image processor feeds the model: [0, 1], normalised, channels first."""
    x = (np.asarray(pixels, np.float32) / 255.0 - np.float32(mean)) / np.float32(std)
    return tf.constant(x.transpose(0, 3, 1, 2))


def _weights(model):
    """Weights by name below the model's own scope (names start with the model's unique name)."""
    return {weight.name.split("/", 1)[1]: weight.numpy() for weight in model.weights}


def test_from_pretrained_gives_a_new_head_for_the_labels_and_keeps_the_rest(vit, pixels):
    folder, saved = vit
    model = HuggingFaceImageClassifier.from_pretrained(folder, CLASSES)
    assert (model.num_classes, model.label_names, model.new_head) == (3, CLASSES, True)
    logits = model(pixels)
    assert logits.shape == (3, 3) and logits.dtype == tf.float32
    assert model.backbone.classifier.kernel.shape == (32, 3)
    loaded, original = _weights(model.backbone), _weights(saved)
    body = [name for name in original if not name.startswith("classifier/")]
    assert len(body) == 38 and sorted(loaded) == sorted(original)
    for name in body:
        np.testing.assert_array_equal(loaded[name], original[name], err_msg=name)
    # The model's trainable weights are the Hugging Face model's: fit trains them all.
    assert len(model.trainable_weights) == len(saved.trainable_weights) == 40


def test_a_head_of_the_same_size_is_drawn_anew_unless_it_has_these_labels(vit):
    folder, saved = vit
    original = saved.classifier.kernel.numpy()
    other = HuggingFaceImageClassifier.from_pretrained(folder, ["cat", "dog"])
    assert other.new_head and other.label_names == ["cat", "dog"]
    drawn = other.backbone.classifier.kernel.numpy()
    assert drawn.shape == original.shape and not np.allclose(drawn, original)
    assert np.all(other.backbone.classifier.bias.numpy() == 0)
    # A head drawn as Hugging Face draws one (truncated normal, stddev initializer_range 0.02).
    assert 0.01 < drawn.std() < 0.03 and np.abs(drawn).max() <= 2 * 0.02
    same = HuggingFaceImageClassifier.from_pretrained(folder, CHECKPOINT_LABELS)
    assert not same.new_head
    np.testing.assert_array_equal(same.backbone.classifier.kernel.numpy(), original)


def test_logits_and_attention_are_the_checkpoints_own_on_pixels_normalised_by_hand(vit, pixels):
    folder, saved = vit
    model = HuggingFaceImageClassifier.from_pretrained(folder, CHECKPOINT_LABELS)
    assert model.image_mean == tuple(VIT_MEAN) and model.image_std == tuple(VIT_STD)
    expected = saved(pixel_values=_by_hand(pixels, VIT_MEAN, VIT_STD), output_attentions=True, return_dict=True)
    np.testing.assert_allclose(model(pixels).numpy(), expected.logits.numpy(), atol=1e-5)
    outputs = model.forward(pixels)
    np.testing.assert_allclose(outputs["logits"].numpy(), expected.logits.numpy(), atol=1e-5)
    assert len(outputs["attention_scores"]) == 2
    for ours, theirs in zip(outputs["attention_scores"], expected.attentions):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6)
    assert model.forward(pixels, output_attentions=False)["attention_scores"] is None


def test_forward_gives_each_layers_attention_over_the_class_token_and_patches(vit, pixels):
    model = HuggingFaceImageClassifier.from_pretrained(vit[0], CLASSES)
    assert (model.image_size, model.patch_size, model.patch_grid) == (32, 8, (4, 4))
    assert (model.leading_tokens, model.has_attention, model.family_name) == (1, True, "Hugging Face")
    scores = model.forward(pixels, training=False)["attention_scores"]
    assert [tuple(layer.shape) for layer in scores] == [(3, 2, 17, 17)] * 2  # T = 1 + 4 x 4
    for layer in scores:
        assert layer.dtype == tf.float32
        np.testing.assert_allclose(layer.numpy().sum(axis=-1), 1.0, atol=1e-5)


def test_other_image_sizes_are_resized_to_the_checkpoints(vit):
    model = HuggingFaceImageClassifier.from_pretrained(vit[0], CLASSES)
    # A flat colour stays that colour whatever the resizing: a 7 x 50 image is the 32 x 32 one.
    colour = np.array([200, 30, 90], np.uint8)
    small = np.broadcast_to(colour, (1, 7, 50, 3))
    np.testing.assert_allclose(model(small).numpy(), model(np.broadcast_to(colour, (1, 32, 32, 3))).numpy(), atol=1e-5)
    # Any other image: bilinear (antialiased) to 32 x 32 in floats, then normalised.
    image = np.random.default_rng(1).integers(0, 256, size=(2, 48, 40, 3), dtype=np.uint8)
    resized = tf.image.resize(tf.cast(image, tf.float32), [32, 32], method="bilinear", antialias=True).numpy()
    expected = model.backbone(pixel_values=_by_hand(resized, VIT_MEAN, VIT_STD)).logits.numpy()
    np.testing.assert_allclose(model(image).numpy(), expected, atol=1e-5)
    # Floats 0..255 are pixels too.
    np.testing.assert_allclose(model(image.astype(np.float32)).numpy(), model(image).numpy(), atol=1e-6)


def test_save_then_load_gives_the_same_model(vit, pixels, tmp_path):
    model = HuggingFaceImageClassifier.from_pretrained(vit[0], CLASSES)
    folder = model.save(tmp_path / "saved")
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "preprocessor_config.json", "tf_model.h5"]
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == VIT_MEAN and processor["image_std"] == VIT_STD
    assert processor["size"] == {"height": 32, "width": 32} and processor["rescale_factor"] == 1 / 255
    loaded = HuggingFaceImageClassifier.load(folder)
    assert (loaded.label_names, loaded.new_head, loaded.image_std) == (CLASSES, False, tuple(VIT_STD))
    before, after = model.forward(pixels), loaded.forward(pixels)
    np.testing.assert_allclose(after["logits"].numpy(), before["logits"].numpy(), atol=1e-6)
    for ours, theirs in zip(after["attention_scores"], before["attention_scores"]):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6)
    # Hugging Face's own image processor reads the saved normalisation as this model applies it.
    hf_processor = transformers.ViTImageProcessor.from_pretrained(str(folder))
    assert list(hf_processor.image_mean) == VIT_MEAN and hf_processor.size == {"height": 32, "width": 32}


def _bright_or_dark(count, seed):
    """Images whose class is whether they are bright (1) or dark (0), with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=count).astype(np.int32)
    base = np.where(labels == 1, 170, 85)[:, None, None, None]
    images = np.clip(base + rng.normal(0, 40, size=(count, 32, 32, 3)), 0, 255).astype(np.uint8)
    return images, labels


def _fit(model, epochs=4):
    images, labels = _bright_or_dark(64, seed=2)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model.fit(images, labels, batch_size=16, epochs=epochs, verbose=0).history["loss"]


@pytest.mark.slow
def test_fit_trains_the_whole_model_and_lowers_the_loss(vit):
    keras.utils.set_random_seed(0)
    model = HuggingFaceImageClassifier.from_pretrained(vit[0], ["dark", "bright"])
    before = _weights(model.backbone)
    losses = _fit(model)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]
    after = _weights(model.backbone)
    assert all(not np.array_equal(after[name], before[name]) for name in before)  # the head and the encoder


@pytest.mark.slow
def test_mixed_precision_trains_and_gives_float32_outputs(vit, pixels):
    reference = HuggingFaceImageClassifier.from_pretrained(vit[0], CHECKPOINT_LABELS)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = HuggingFaceImageClassifier.from_pretrained(vit[0], CHECKPOINT_LABELS)
        assert model.backbone.classifier.compute_dtype == "float16"
        outputs = model.forward(pixels)
        assert outputs["logits"].dtype == tf.float32 and outputs["attention_scores"][0].dtype == tf.float32
        np.testing.assert_allclose(outputs["logits"].numpy(), reference(pixels).numpy(), atol=2e-2)
        losses = _fit(model, epochs=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_deit_has_a_distillation_token_before_the_patches(deit, pixels):
    folder, saved = deit
    model = HuggingFaceImageClassifier.from_pretrained(folder, CHECKPOINT_LABELS)
    assert (model.leading_tokens, model.patch_grid) == (2, (4, 4))
    # No preprocessor_config.json: Hugging Face's ViT defaults.
    assert model.image_mean == (0.5, 0.5, 0.5) and model.image_std == (0.5, 0.5, 0.5)
    expected = saved(pixel_values=_by_hand(pixels, 0.5, 0.5), output_attentions=True, return_dict=True)
    outputs = model.forward(pixels)
    np.testing.assert_allclose(outputs["logits"].numpy(), expected.logits.numpy(), atol=1e-5)
    assert [tuple(layer.shape) for layer in outputs["attention_scores"]] == [(3, 2, 18, 18)] * 2  # T = 2 + 4 x 4
    for ours, theirs in zip(outputs["attention_scores"], expected.attentions):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6)
        np.testing.assert_allclose(ours.numpy().sum(axis=-1), 1.0, atol=1e-5)
    fresh = HuggingFaceImageClassifier.from_pretrained(folder, CLASSES)
    assert fresh.new_head and fresh(pixels).shape == (3, 3)


def test_a_distilled_deit_checkpoint_is_fine_tuned_through_its_class_token_head(deit, tmp_path):
    """A distilled DeiT names `DeiTForImageClassificationWithTeacher` (two heads, inference only):
    it loads as `TFDeiTForImageClassification`, its encoder kept, one new head."""
    folder = tmp_path / "distilled"
    teacher = _save_tiny(folder, transformers.TFDeiTForImageClassificationWithTeacher, transformers.DeiTConfig(**TINY))
    assert json.loads((folder / "config.json").read_text())["architectures"] == [
        "DeiTForImageClassificationWithTeacher"
    ]
    model = HuggingFaceImageClassifier.from_pretrained(folder, CLASSES)
    assert type(model.backbone).__name__ == "TFDeiTForImageClassification" and model.new_head
    with pytest.raises(ValueError, match=r": a TFDeiTForImageClassificationWithTeacher is not an image classifier"):
        HuggingFaceImageClassifier(teacher)
    loaded, original = _weights(model.backbone), _weights(teacher)
    body = [name for name in original if name.startswith("deit/")]
    assert len(body) == 39 and set(body) <= set(loaded)
    for name in body:
        np.testing.assert_array_equal(loaded[name], original[name], err_msg=name)


def test_every_allowed_model_type_has_its_class():
    assert set(IMAGE_CLASSIFIER_CLASSES) == HF_IMAGE_MODEL_TYPES
    assert all(hasattr(transformers, name) for name in IMAGE_CLASSIFIER_CLASSES.values())


# --- refusals: one line each, before any weights load


def _one_line(caught):
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_bert_folder_is_refused_naming_its_type(tmp_path):
    folder = tmp_path / "bert"
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(folder)
    (folder / "tf_model.h5").write_bytes(b"not weights: loading them would fail otherwise")
    expected = (
        f"{folder}: refusing Hugging Face model type 'bert': tfattn fine-tunes only image classifiers of type deit, vit"
    )
    for load in (
        lambda: HuggingFaceImageClassifier.from_pretrained(folder, CLASSES),
        lambda: HuggingFaceImageClassifier.load(folder),
    ):
        with pytest.raises(UnsafeModelConfig) as caught:
            load()
        assert _one_line(caught) == expected


def test_a_config_with_auto_map_is_refused(vit, tmp_path):
    folder = shutil.copytree(vit[0], tmp_path / "remote-code")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.EvilForImageClassification"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeModelConfig) as caught:
        HuggingFaceImageClassifier.from_pretrained(folder, CLASSES)
    assert _one_line(caught) == f"{folder}: refusing a Hugging Face config with auto_map (code from a hub repository)"


def test_a_folder_without_weights_or_config_is_named(vit, tmp_path):
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(vit[0] / "config.json", folder)
    with pytest.raises(PretrainedLoadError) as caught:
        HuggingFaceImageClassifier.from_pretrained(folder, CLASSES)
    assert _one_line(caught) == (
        f"{folder}: not a Hugging Face checkpoint folder for the model: no tf_model.h5 or model.safetensors or "
        "pytorch_model.bin"
    )
    with pytest.raises(PretrainedLoadError) as caught:
        HuggingFaceImageClassifier.load(tmp_path / "missing")
    assert _one_line(caught) == f"{tmp_path / 'missing'}: no such folder (expected a Hugging Face checkpoint folder)"


def test_damaged_json_files_are_named(vit, tmp_path):
    folder = shutil.copytree(vit[0], tmp_path / "damaged")
    processor = folder / "preprocessor_config.json"
    processor.write_text(json.dumps({"image_mean": [0.5, 0.5], "image_std": VIT_STD}))
    with pytest.raises(ValueError) as caught:
        HuggingFaceImageClassifier.from_pretrained(folder, CLASSES)
    assert _one_line(caught) == f"{processor}: image_mean must be 3 numbers (one per RGB channel), got [0.5, 0.5]"
    processor.write_text(json.dumps({"image_mean": VIT_MEAN, "image_std": [0.2, 0.0, 0.3]}))
    with pytest.raises(ValueError, match=r"image_std must be positive, got \[0.2, 0.0, 0.3\]$"):
        HuggingFaceImageClassifier.from_pretrained(folder, CLASSES)
    (folder / "config.json").write_text('{"model_type": "vit",')
    with pytest.raises(DamagedRun) as caught:
        HuggingFaceImageClassifier.from_pretrained(folder, CLASSES)
    assert _one_line(caught).startswith(f"{folder / 'config.json'} is not valid JSON (line 1")


@pytest.mark.parametrize("offline_switch", [True, False])
def test_a_hub_name_offline_fails_at_once_in_one_line(offline_switch, monkeypatch):
    if offline_switch:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        reason = "HF_HUB_OFFLINE is set"
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr("tfattn.hosts.host_resolves", lambda host: False)  # as without a network
        reason = "offline?"
    start = time.perf_counter()
    with pytest.raises(PretrainedLoadError) as caught:
        HuggingFaceImageClassifier.from_pretrained("no-such-org/no-such-vit", CLASSES)
    assert time.perf_counter() - start < 5  # not the hub client's minute of retries
    assert _one_line(caught) == (
        f"could not load the image classifier 'no-such-org/no-such-vit': the Hugging Face Hub cannot be reached "
        f"({reason}) and it is not in the local cache; pass a local checkpoint folder instead"
    )


def test_bad_labels_and_pixels_are_refused(vit):
    for labels in (["cat"], ["cat", "dog", "cat"]):
        with pytest.raises(ValueError, match=r"^label_names must be at least 2 distinct names, got \["):
            HuggingFaceImageClassifier.from_pretrained(vit[0], labels)
    model = HuggingFaceImageClassifier.from_pretrained(vit[0], CLASSES)
    with pytest.raises(ValueError, match=r"takes pixels \[batch, height, width, 3\], got shape \(2, 32, 32\)$"):
        model(np.zeros([2, 32, 32], np.uint8))


def test_the_attention_is_on_the_path_to_the_logits(vit, pixels):
    """The explorer's gradient-weighted view needs d(predicted logit)/d(attention)."""
    model = HuggingFaceImageClassifier.from_pretrained(vit[0], CLASSES)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch([variable for variable in model.variables if variable.dtype.is_floating])
        outputs = model.forward(pixels)
        target = tf.reduce_sum(tf.reduce_max(outputs["logits"], axis=-1))
    gradients = tape.gradient(target, outputs["attention_scores"])
    assert [tuple(gradient.shape) for gradient in gradients] == [(3, 2, 17, 17)] * 2
    assert all(float(tf.reduce_max(tf.abs(gradient))) > 0 for gradient in gradients)


def test_the_explorer_reads_deits_patches_after_its_two_leading_tokens(deit, pixels):
    """The class token's row over the patches: the distillation token's column is left out."""
    from tfattn.explorer.images import explain_image

    folder, _ = deit
    model = HuggingFaceImageClassifier.from_pretrained(folder, CHECKPOINT_LABELS)
    explanation = explain_image(model, pixels[0], CHECKPOINT_LABELS)
    attention = model.forward(pixels[:1])["attention_scores"]
    assert explanation.views["raw"].shape == (2, 2, 16)
    np.testing.assert_allclose(explanation.views["raw"][1], attention[1].numpy()[0, :, 0, 2:], atol=1e-6)
    assert explanation.distances.shape == (2, 2) and np.isfinite(explanation.distances).all()
