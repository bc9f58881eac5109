"""End-to-end tests of the `tfattn` command and the AG News task on a slice of the real data."""

import csv
import json

import pytest
import tf_keras as keras
from conftest import InterruptTraining

from tfattn.cli import main
from tfattn.tasks.config import TrainConfig, load_splits
from tfattn.tasks.trainer import train
from tfattn.training import get_strategy

SMALL_MODEL = ["--embed-dim", "16", "--ff-dim", "32", "--vocab-size", "2000", "--batch-size", "32"]


@pytest.fixture(scope="module")
def trained_run(agnews_csv, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "agnews"
    argv = ["train", "agnews", "--data", str(agnews_csv), "--run-dir", str(run_dir), "--limit", "400", "--epochs", "2"]
    assert main(argv + SMALL_MODEL) == 0
    return run_dir


@pytest.mark.slow
def test_train_writes_a_complete_run_folder(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.json", "labels.json", "model.keras", "vocab.txt", "history.csv", "logs", "checkpoints"} <= names
    assert {"validation_metrics.json", "validation_report.txt", "validation_confusion.png"} <= names
    # What a resume needs is removed once the run finished: nothing left to resume from.
    assert not (trained_run / "backup").exists() and not (trained_run / "phases").exists()
    metrics = json.loads((trained_run / "validation_metrics.json").read_text())
    assert metrics["num_examples"] == 40 and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["config"]["limit"] == 400 and metrics["config"]["max_length"] == 256
    with open(trained_run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and float(rows[-1]["examples_per_second"]) > 0
    assert 0.0 <= float(rows[-1]["val_macro_f1"]) <= 1.0


@pytest.mark.slow
def test_predict_evaluate_attention_export(trained_run, tmp_path, capsys):
    assert main(["predict", "--run", str(trained_run), "Oil prices rose", "The Red Sox won"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in {"World", "Sports", "Business", "Sci/Tech"}

    assert main(["evaluate", "--run", str(trained_run)]) == 0
    recomputed = json.loads((trained_run / "validation_metrics.json").read_text())
    assert recomputed["num_examples"] == 40  # the same validation split, rebuilt from config.json

    png = tmp_path / "attention.png"
    assert main(["attention", "--run", str(trained_run), "Oil prices rose sharply", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["export", "--run", str(trained_run), "--out", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "saved_model.pb").exists()


@pytest.mark.slow
def test_mirrored_strategy_trains_over_two_cpu_devices(agnews_csv, tmp_path):
    assert get_strategy("mirrored").num_replicas_in_sync == 2
    config = TrainConfig(
        data=str(agnews_csv), run_dir=str(tmp_path / "run"), limit=200, epochs=1,
        embed_dim=16, ff_dim=32, vocab_size=1000, batch_size=32, strategy="mirrored",
    )
    report = train(config)
    assert report.num_examples == len(load_splits(config.resolve())[1]) == 19
    assert keras.models.load_model(tmp_path / "run" / "model.keras").output_shape == (None, 4)


@pytest.mark.slow
def test_interrupted_training_resumes_from_last_epoch(agnews_csv, tmp_path):
    config = TrainConfig(
        data=str(agnews_csv), run_dir=str(tmp_path / "run"), limit=200, epochs=3, patience=5,
        embed_dim=16, ff_dim=32, vocab_size=1000, batch_size=32,
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[InterruptTraining(1)])
    assert list((tmp_path / "run" / "backup").iterdir())  # a checkpoint to resume from
    train(config)
    with open(tmp_path / "run" / "history.csv") as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [0, 1, 2]  # the second run did only the missing epoch


def test_missing_data_file_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", "agnews", "--data", str(tmp_path / "nope.csv"), "--run-dir", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert "nope.csv" in error and "Traceback" not in error


def test_bad_label_error_names_file_and_row(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text('"1","Title","Text"\n"9","Other","Text"\n', encoding="utf-8")
    assert main(["train", "agnews", "--data", str(bad), "--run-dir", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert "bad.csv" in error and "row 2" in error and "9" in error


def test_unreachable_backbone_is_a_one_line_error(agnews_csv, tmp_path, capsys):
    argv = ["train", "agnews", "--data", str(agnews_csv), "--limit", "40", "--run-dir", str(tmp_path / "r")]
    assert main(argv + ["--backbone", "no-such-org/no-such-bert"]) == 2
    error = capsys.readouterr().err
    assert "no-such-org/no-such-bert" in error and "local checkpoint folder" in error and "Traceback" not in error


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "predict", "attention", "export"):
        assert command in out
