"""`tfattn train images` end to end on a tiny labelled folder: train, evaluate, predict, attention, export, resume."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfattn.cli import main

# Colour decides the class: the tiny models learn it in a few epochs.
COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}
SIZE = 8
TINY_VIT = [
    "--image-size", str(SIZE), "--patch-size", "4", "--embed-dim", "8", "--num-heads", "2", "--ff-dim", "16",
    "--num-blocks", "1", "--batch-size", "8", "--learning-rate", "1e-2", "--dropout", "0",
]  # fmt: skip


def _write_images(folder, per_class, seed):
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            noise = rng.integers(-25, 26, [SIZE, SIZE, 3])
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            (folder / name / f"{index:03d}.jpg").write_bytes(tf.io.encode_jpeg(pixels, quality=95).numpy())
    return folder


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return _write_images(root / "train", 12, 0), _write_images(root / "test", 4, 1)


@pytest.fixture(scope="module")
def vit_run(image_folders, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "vit"
    train_dir, _ = image_folders
    args = ["train", "images", "--data", str(train_dir), "--run-dir", str(run_dir), "--epochs", "6", *TINY_VIT]
    assert main([*args, "--validation-fraction", "0.25"]) == 0
    return run_dir


def _history(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return [
            (float(row["loss"]), float(row["val_loss"]), float(row["val_accuracy"])) for row in csv.DictReader(handle)
        ]


@pytest.mark.slow
def test_a_vit_run_trains_evaluates_and_predicts(vit_run, image_folders, capsys):
    history = _history(vit_run)
    assert history[-1][0] < history[0][0]  # it learned
    scores = json.loads((vit_run / "validation_scores.json").read_text())
    assert scores["label_names"] == ["blue", "green", "red"]
    assert scores["num_examples"] == 9  # a quarter of each class of 12
    assert scores["accuracy"] == 1.0  # colours this far apart are learned
    assert (vit_run / "validation_confusion.png").is_file()

    _, test_dir = image_folders
    assert main(["evaluate", "--run", str(vit_run), "--data", str(test_dir)]) == 0
    out = capsys.readouterr().out
    assert "accuracy 1.0000  macro-F1 1.0000  examples 12" in out
    assert json.loads((vit_run / "test_scores.json").read_text())["confusion"] == [[4, 0, 0], [0, 4, 0], [0, 0, 4]]

    files = [str(test_dir / name / "000.jpg") for name in COLOURS]
    assert main(["predict", "--run", str(vit_run), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == list(COLOURS)
    assert [line.split("\t")[2] for line in lines] == files


@pytest.mark.slow
def test_the_attention_page_and_png_of_an_image(vit_run, image_folders, tmp_path, capsys):
    _, test_dir = image_folders
    image = test_dir / "red" / "001.jpg"
    page, png = tmp_path / "page.html", tmp_path / "attention.png"
    assert main(["attention", "--run", str(vit_run), str(image), "--html", str(page), "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"{image}: red" in out and f"wrote {page}" in out and f"wrote {png}" in out
    html = page.read_text()
    assert '"kind": "image"' in html and "tfattn-attention-explorer" in html
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SERVE_EXPORT = """
import json, sys
import tensorflow as tf
request = json.loads(sys.stdin.read())
served = tf.saved_model.load(request["export_dir"])
images = tf.constant([open(path, "rb").read() for path in request["files"]])
outputs = served.signatures["serving_default"](images=images)
pixels = tf.io.decode_jpeg(images[0])[None]
from_pixels = served.signatures["pixels"](pixels=pixels)
assert not any(name.split(".")[0] == "tfattn" for name in sys.modules), "the export imported tfattn"
print(json.dumps({
    "probabilities": outputs["probabilities"].numpy().tolist(),
    "labels": [label.decode() for label in outputs["labels"].numpy()],
    "from_pixels": from_pixels["probabilities"].numpy().tolist(),
}))
"""


@pytest.mark.slow
def test_the_export_classifies_jpeg_bytes_with_tensorflow_alone(vit_run, image_folders, tmp_path, capsys):
    from tfattn.tasks.base import open_run

    _, test_dir = image_folders
    files = [str(test_dir / name / "002.jpg") for name in COLOURS]
    export_dir = tmp_path / "export"
    assert main(["export", "--run", str(vit_run), "--out", str(export_dir)]) == 0
    assert "images (encoded JPEG/PNG bytes" in capsys.readouterr().out
    request = json.dumps({"export_dir": str(export_dir), "files": files})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", SERVE_EXPORT], input=request, capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served["labels"] == list(COLOURS)

    task, model = open_run(vit_run)
    expected = task._probabilities(model, task._read_files(files))
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    np.testing.assert_allclose(served["from_pixels"][0], expected[0], atol=1e-5)

    # A second export into the same folder needs --overwrite; a folder holding the run is refused even so.
    capsys.readouterr()
    assert main(["export", "--run", str(vit_run), "--out", str(export_dir)]) == 2
    assert "already exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert main(["export", "--run", str(vit_run), "--out", str(vit_run.parent), "--overwrite"]) == 2
    assert (vit_run / "model" / "model.json").is_file()


@pytest.mark.slow
def test_an_interrupted_image_run_resumes_to_the_uninterrupted_result(image_folders, tmp_path, capsys):
    """The augmentation and order of each epoch are drawn from (seed, epoch): a resumed run
    replays the finished epochs' draws and logs the uninterrupted run's losses."""
    from conftest import InterruptTraining

    from tfattn.tasks.images import ImageConfig
    from tfattn.training.loop import train

    train_dir, _ = image_folders

    def config(run_dir):
        options = {"patch_size": 4, "embed_dim": 8, "num_heads": 2, "ff_dim": 16, "num_blocks": 1}
        return ImageConfig(
            data=str(train_dir), run_dir=str(run_dir), image_size=SIZE, batch_size=8, epochs=3, dropout=0.0, **options
        )

    train(config(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "resumed"), callbacks=[InterruptTraining(1)])
    train(config(tmp_path / "resumed"))
    assert "resuming the interrupted run" in capsys.readouterr().out
    assert _history(tmp_path / "resumed") == [pytest.approx(row, rel=1e-5) for row in _history(tmp_path / "whole")]


@pytest.mark.slow
def test_a_cnn_run_trains_and_has_no_attention_to_draw(image_folders, tmp_path, capsys):
    train_dir, test_dir = image_folders
    run_dir = tmp_path / "cnn"
    common = ["--data", str(train_dir), "--run-dir", str(run_dir), "--image-size", str(SIZE), "--epochs", "2"]
    assert main(["train", "images", "--model", "cnn", "--cnn-width", "4", "--batch-size", "8", *common]) == 0
    assert (run_dir / "validation_scores.json").is_file()
    capsys.readouterr()
    assert main(["attention", "--run", str(run_dir), str(test_dir / "red" / "000.jpg"), "--html", "x.html"]) == 2
    assert "is a CNN run: it has no attention to draw; train --model vit" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model", "cnn", "--num-heads", "2"], "--num-heads does not apply to --model cnn"),
        (["--cnn-width", "8"], "--cnn-width does not apply to --model vit"),
        (["--patch-size", "5"], "--patch-size 5 must divide --image-size 32"),
        (["--tokenizer", "conv", "--patch-size", "1"], "--patch-size must be 2, 4, 8, ..., got 1"),
        (["--stream"], "--stream does not apply to images"),
        (["--backbone", "some/vit", "--embed-dim", "8"], "--embed-dim does not apply to --backbone"),
        (["--model", "cnn", "--block-norm", "pre"], "--block-norm does not apply to --model cnn"),
        (["--backbone", "some/vit", "--self-attention", "locality"], "--self-attention does not apply to --backbone"),
    ],
)
def test_options_that_do_not_fit_are_refused_in_one_line(options, message, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "images", "--data", str(tmp_path), "--run-dir", str(run_dir), *options]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not run_dir.exists()


def test_block_options_reach_every_block_of_the_vit(image_folders):
    from tfattn.tasks.images import ImageClassificationTask, ImageConfig

    class Train:  # what building the model reads of the training images
        images, label_names = np.zeros([2, SIZE, SIZE, 3], np.uint8), ["a", "b"]

    def blocks(**options):
        config = ImageConfig(data="unused", image_size=SIZE, patch_size=4, num_blocks=2, **options).resolve()
        model = ImageClassificationTask(config)._build_model(Train, tf.distribute.get_strategy())
        return {(block.normalize_first, block.locality) for block in model.blocks}

    assert blocks() == {(False, False)}  # the defaults: post-norm, full attention
    assert blocks(block_norm="pre", self_attention="locality") == {(True, True)}


def test_a_corrupt_image_is_named_before_the_run_folder_is_made(tmp_path, capsys):
    data = _write_images(tmp_path / "data", 2, 0)
    (data / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    run_dir = tmp_path / "run"
    assert main(["train", "images", "--data", str(data), "--run-dir", str(run_dir), *TINY_VIT]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and len(err.strip().splitlines()) == 1
    assert not run_dir.exists()


@pytest.mark.slow
def test_a_hugging_face_vit_is_fine_tuned_explored_and_exported(image_folders, tmp_path, capsys):
    """--backbone: a tiny random ViT saved by the test stands for a hub checkpoint."""
    import tf_keras as keras
    import transformers

    keras.utils.set_random_seed(0)
    checkpoint = tmp_path / "tiny-vit"
    sizes = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
    hf_model = transformers.TFViTForImageClassification(transformers.ViTConfig(image_size=16, patch_size=4, **sizes))
    hf_model(hf_model.dummy_inputs)
    hf_model.save_pretrained(str(checkpoint))
    train_dir, test_dir = image_folders
    run_dir = tmp_path / "run"
    options = ["--image-size", str(SIZE), "--epochs", "2", "--batch-size", "8", "--learning-rate", "1e-3"]
    assert (
        main(
            [
                "train",
                "images",
                "--data",
                str(train_dir),
                "--run-dir",
                str(run_dir),
                "--backbone",
                str(checkpoint),
                *options,
            ]
        )
        == 0
    )
    assert "newly initialized (trained from scratch): the head, 3 outputs" in capsys.readouterr().out
    # The run holds its model: evaluating it needs the data, not the backbone it started from.
    trained_score = json.loads((run_dir / "validation_scores.json").read_text())["accuracy"]
    shutil.rmtree(checkpoint)
    assert main(["evaluate", "--run", str(run_dir)]) == 0
    assert json.loads((run_dir / "validation_scores.json").read_text())["accuracy"] == pytest.approx(trained_score)
    image = test_dir / "green" / "000.jpg"
    assert main(["attention", "--run", str(run_dir), str(image), "--html", str(tmp_path / "page.html")]) == 0
    assert '"family": "Hugging Face"' in (tmp_path / "page.html").read_text()
    assert main(["predict", "--run", str(run_dir), str(image)]) == 0
    predicted = capsys.readouterr().out.strip().splitlines()[-1].split("\t")
    export_dir = tmp_path / "export"
    assert main(["export", "--run", str(run_dir), "--out", str(export_dir)]) == 0
    served = tf.saved_model.load(str(export_dir)).signatures["serving_default"](
        images=tf.constant([image.read_bytes()])
    )
    assert served["labels"].numpy()[0].decode() == predicted[0]
    assert float(served["probabilities"].numpy()[0].max()) == pytest.approx(float(predicted[1]), abs=1e-3)


def test_limits_take_seeded_samples_of_every_class_not_the_first_files(image_folders):
    """The files come sorted by class: the first 6 validation images would all be blue."""
    from tfattn.tasks.images import ImageClassificationTask, ImageConfig

    train_dir, _ = image_folders
    config = ImageConfig(data=str(train_dir), validation_fraction=0.5, limit=9, validation_limit=6).resolve()
    train, validation = ImageClassificationTask(config).prepare_training()
    assert (len(train), len(validation)) == (9, 6)
    assert len(set(validation.labels.tolist())) > 1 and len(set(train.labels.tolist())) > 1
    again = ImageClassificationTask(config).prepare_training()[1]
    assert again.files == validation.files  # the same seed, the same sample
