"""Frozen phases on cached encoder outputs (`tfattn.tasks.frozen`): the head trained alone on
vectors computed once is the task model's own head, a resumed run reads the cache and repeats
the uninterrupted run exactly, and the encoder never changes."""

import csv

import numpy as np
import pytest
import tensorflow as tf
from conftest import InterruptTraining
from task_harness import tiny_scratch_classifier

from tfattn.data.pipelines import make_dataset
from tfattn.models import HuggingFaceEncoder, load_model
from tfattn.tasks.config import TrainConfig
from tfattn.tasks.frozen import CACHE_DIR, HeadModel, compute_head_inputs
from tfattn.training.loop import train


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_head_model_on_cached_inputs_gives_the_task_models_logits(pooling):
    model = tiny_scratch_classifier(["stocks", "fell", "goal", "won"], num_classes=3, pooling=pooling)
    texts = ["stocks fell", "goal", "won the goal stocks fell fell", "fell"]
    features = model.preprocessor(tf.constant(texts))
    lengths = tf.reduce_sum(features["input_mask"], axis=1)
    data = make_dataset(
        {name: tf.RaggedTensor.from_tensor(value, lengths=lengths) for name, value in features.items()},
        np.arange(len(texts)),
        batch_size=3,
        shuffle=False,
    )
    vectors, labels = compute_head_inputs(model, data, "test", every_seconds=1e9)
    assert vectors.shape == (4, 8) and vectors.dtype == np.float32 and labels.tolist() == [0, 1, 2, 3]
    # Texts padded to another length in their batch get the same vectors: padding is masked.
    head = HeadModel(model)
    np.testing.assert_allclose(head(vectors, training=False), model(tf.constant(texts), training=False), atol=1e-5)
    assert [w.name for w in head.trainable_weights] == [w.name for w in model.head.trainable_weights]


def _history(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "examples_per_second"} for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_frozen_run_trains_the_head_on_the_cache_and_resumes_exactly(tiny_bert_dir, agnews_csv, tmp_path, capsys):
    def config(run_dir):
        return TrainConfig(
            data=str(agnews_csv),
            run_dir=str(run_dir),
            limit=200,
            epochs=3,
            batch_size=16,
            backbone=str(tiny_bert_dir),
            freeze=True,
            patience=5,
            dropout=0.0,  # dropout masks are drawn anew in a resumed process
        )

    whole = tmp_path / "whole"
    report = train(config(whole))
    out = capsys.readouterr().out
    assert "frozen encoder over 181 training texts" in out and "frozen encoder over 19 validation texts" in out
    assert not (whole / CACHE_DIR).exists()  # removed with the other resume state
    assert len(_history(whole)) == 3

    # The encoder is the checkpoint's, bit for bit; the head has trained.
    saved = load_model(whole / "model")
    pretrained = HuggingFaceEncoder.from_pretrained(tiny_bert_dir)
    pretrained(saved.preprocessor(tf.constant(["build"])))
    for trained, original in zip(saved.encoder.weights, pretrained.weights, strict=True):
        np.testing.assert_array_equal(trained.numpy(), original.numpy())
    assert saved.head.kernel.shape == (32, 4) and np.abs(saved.head.kernel.numpy()).max() > 0

    # Interrupted after epoch 2, then rerun: the cache is read back, not recomputed, and the
    # run ends where the uninterrupted one did.
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(config(resumed), callbacks=[InterruptTraining(1)])
    assert (resumed / CACHE_DIR / "train.npz").is_file()
    capsys.readouterr()
    resumed_report = train(config(resumed))
    out = capsys.readouterr().out
    assert "read from" in out and "frozen encoder over 181" not in out
    assert _history(resumed) == _history(whole)
    assert resumed_report.accuracy == report.accuracy


def test_frozen_defaults_train_the_head_to_convergence_and_options_still_win():
    frozen = TrainConfig(backbone="folder", freeze=True).resolve()
    assert (frozen.epochs, frozen.learning_rate, frozen.dropout, frozen.patience) == (50, 1e-2, 0.0, 50)
    # No early stop by default, however many epochs are asked for.
    assert TrainConfig(backbone="folder", freeze=True, epochs=80).resolve().patience == 80
    tuned = TrainConfig(backbone="folder", freeze=True, epochs=5, dropout=0.2, patience=1).resolve()
    assert (tuned.epochs, tuned.learning_rate, tuned.dropout, tuned.patience) == (5, 1e-2, 0.2, 1)
    fine_tuned = TrainConfig(backbone="folder").resolve()
    assert (fine_tuned.epochs, fine_tuned.learning_rate, fine_tuned.dropout, fine_tuned.patience) == (3, 3e-5, 0.1, 2)
    scratch = TrainConfig().resolve()
    assert (scratch.dropout, scratch.patience) == (0.1, 2)
