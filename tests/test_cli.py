"""End-to-end tests of the `tfattn` command and the AG News task on a slice of the real data."""

import csv
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import InterruptTraining

from tfattn.cli import main
from tfattn.models import TextClassifier
from tfattn.tasks.config import TrainConfig
from tfattn.tasks.encoder_task import load_run
from tfattn.tasks.registry import task_of
from tfattn.training.loop import train
from tfattn.training.strategy import get_strategy

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
    assert {
        "run.json",
        "config.json",
        "labels.json",
        "model",
        "vocab.txt",
        "history.csv",
        "logs",
        "checkpoints",
    } <= names
    assert {"validation_scores.json", "validation_report.txt", "validation_confusion.png"} <= names
    # The model folder: the Keras config (vocabulary included) and one weights checkpoint.
    assert {"model.json", "weights.index"} <= {p.name for p in (trained_run / "model").iterdir()}
    model_config = json.loads((trained_run / "model" / "model.json").read_text())
    assert model_config["registered_name"] == "tfattn>TextClassifier"
    assert model_config["config"]["pooling"] == "mean"  # the from-scratch default
    words = model_config["config"]["preprocessor"]["config"]["vocabulary"]
    assert words == (trained_run / "vocab.txt").read_text(encoding="utf-8").split("\n")
    # What a resume needs is removed once the run finished: nothing left to resume from.
    assert not (trained_run / "backup").exists() and not (trained_run / "phases").exists()
    metrics = json.loads((trained_run / "validation_scores.json").read_text())
    assert metrics["num_examples"] == 40 and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["config"]["limit"] == 400 and metrics["config"]["max_length"] == 256
    with open(trained_run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and float(rows[-1]["examples_per_second"]) > 0
    assert 0.0 <= float(rows[-1]["val_macro_f1"]) <= 1.0

    model, label_names, config = load_run(trained_run)
    assert isinstance(model, TextClassifier) and model.num_classes == 4 and model.pooling == "mean"
    assert label_names == ["World", "Sports", "Business", "Sci/Tech"] and config["limit"] == 400


@pytest.mark.slow
def test_predict_evaluate_attention_export(trained_run, agnews_csv, tmp_path, capsys, monkeypatch):
    texts = ["Oil prices rose", "The Red Sox won"]
    model, label_names, _ = load_run(trained_run)
    probabilities = model.predict_proba(texts)
    assert probabilities.shape == (2, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    capsys.readouterr()
    assert main(["predict", "--run", str(trained_run), *texts]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"{label_names[p.argmax()]}\t{p.max():.3f}\t{text}" for p, text in zip(probabilities, texts)]

    before = json.loads((trained_run / "validation_scores.json").read_text())
    assert main(["evaluate", "--run", str(trained_run)]) == 0
    recomputed = json.loads((trained_run / "validation_scores.json").read_text())
    assert recomputed["num_examples"] == 40  # the same validation split, rebuilt from config.json
    assert recomputed["accuracy"] == before["accuracy"] and recomputed["confusion"] == before["confusion"]

    # --data: a whole file, reported under the "test" prefix.
    head = tmp_path / "head.csv"
    with open(agnews_csv, encoding="utf-8") as handle:
        head.write_text("".join(next(handle) for _ in range(30)), encoding="utf-8")
    assert main(["evaluate", "--run", str(trained_run), "--data", str(head)]) == 0
    tested = json.loads((trained_run / "test_scores.json").read_text())
    assert tested["num_examples"] == 30 and tested["config"] == {"data": str(head), "run": str(trained_run)}

    png = tmp_path / "attention.png"
    assert main(["attention", "--run", str(trained_run), "Oil prices rose sharply", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The explorer page and a rollout PNG from the same pass; the run compared with itself.
    page, rollout_png = tmp_path / "page.html", tmp_path / "rollout.png"
    argv = ["attention", "--run", str(trained_run), "Oil prices rose sharply", "--html", str(page)]
    assert main([*argv, "--compare", str(trained_run), "--out", str(rollout_png), "--view", "rollout"]) == 0
    html = page.read_text(encoding="utf-8")
    assert '"difference":true' in html.replace(" ", "") and "https://" not in html
    assert rollout_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert main([*argv, "--layers", "0"]) == 0
    assert not (tmp_path / "cwd" / "attention.png").exists()  # --html alone writes the page only
    assert main([*argv, "--layers", "3"]) == 2
    assert "error: layers must be among [0]; got [3]" in capsys.readouterr().err
    assert main([*argv, "--pair", "Oil fell"]) == 2
    assert "sentence pairs need a BERT-family" in capsys.readouterr().err

    assert main(["export", "--run", str(trained_run), "--out", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "saved_model.pb").exists()
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"](texts=tf.constant(texts))
    np.testing.assert_allclose(served["probabilities"].numpy(), probabilities, atol=1e-5)
    assert [label.decode() for label in served["label"].numpy()] == [label_names[p.argmax()] for p in probabilities]

    # The NER command refuses a text classification run.
    assert main(["ner", "--run", str(trained_run), "Oil prices rose"]) == 2
    assert f"{trained_run} is a run of task 'agnews', not for 'tfattn ner': use 'tfattn predict --run" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_mirrored_strategy_trains_over_two_cpu_devices(agnews_csv, tmp_path):
    assert get_strategy("mirrored").num_replicas_in_sync == 2
    config = TrainConfig(
        data=str(agnews_csv),
        run_dir=str(tmp_path / "run"),
        limit=200,
        epochs=1,
        embed_dim=16,
        ff_dim=32,
        vocab_size=1000,
        batch_size=32,
        strategy="mirrored",
        pooling="cls",
    )
    report = train(config)
    assert report.num_examples == len(task_of(config.resolve()).load_splits()[1]) == 19
    # Saved under the strategy, loaded outside it: the same model, serving raw strings.
    model, label_names, _ = load_run(tmp_path / "run")
    assert isinstance(model, TextClassifier) and model.num_classes == len(label_names) == 4
    assert model.pooling == "cls"
    assert model.predict_proba(["Oil prices rose", ""]).shape == (2, 4)


@pytest.mark.slow
def test_interrupted_training_resumes_from_last_epoch(agnews_csv, tmp_path):
    config = TrainConfig(
        data=str(agnews_csv),
        run_dir=str(tmp_path / "run"),
        limit=200,
        epochs=3,
        patience=5,
        embed_dim=16,
        ff_dim=32,
        vocab_size=1000,
        batch_size=32,
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


COMMANDS = ("train", "translate", "generate", "evaluate", "predict", "ner", "attention", "export", "export-hub")


def test_help_lists_every_command(capsys):
    """Every command is a real subcommand with its own help line, and runs `--help` (the
    description also names commands, so finding the word in the text would prove nothing)."""
    import argparse

    from tfattn.cli import build_parser

    parser = build_parser()
    [subcommands] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    assert sorted(subcommands.choices) == sorted(COMMANDS)
    listed = {choice.dest: choice.help for choice in subcommands._choices_actions}
    assert sorted(listed) == sorted(COMMANDS) and all(listed.values())
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command} " in out, command  # its row in the command list
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0 and "usage: tfattn " + command in capsys.readouterr().out


def test_help_states_the_defaults_the_code_uses():
    # The help strings are written by hand (the CLI imports no TensorFlow to print them): they
    # must name the values the configs really fill in.
    from tfattn.families.base import FROZEN_DEFAULTS, PRETRAINED_DEFAULTS
    from tfattn.families.scratch import SCRATCH_DEFAULTS
    from tfattn.families.translators import TRANSLATOR_FAMILIES
    from tfattn.tasks.classification import MathTopicsTask
    from tfattn.tasks.translation import DEFAULT_VOCAB_SIZES, TranslationConfig

    help_of = TrainConfig.field_help()  # with each family's own options
    scratch, pretrained, math = SCRATCH_DEFAULTS, PRETRAINED_DEFAULTS, MathTopicsTask.scratch_defaults
    for name in ("max_length", "batch_size", "epochs"):
        assert f"default {scratch[name]} from scratch, {pretrained[name]} pretrained" in help_of[name]
    assert f"{FROZEN_DEFAULTS['epochs']} with --freeze" in help_of["epochs"]
    rates = [scratch["learning_rate"], math["learning_rate"], FROZEN_DEFAULTS["learning_rate"]]
    assert help_rates(help_of["learning_rate"]) == rates + [pretrained["learning_rate"]]
    assert f"default {scratch['patience']};" in help_of["patience"]
    assert f"math {math['bigram_buckets']}" in help_of["bigram_buckets"]
    assert f"math {math['token_dropout']}" in help_of["token_dropout"]
    translation_help = TranslationConfig.field_help()  # the translator families' lines are generated
    transformer, rnn = TRANSLATOR_FAMILIES["transformer"].defaults, TRANSLATOR_FAMILIES["rnn"].defaults
    assert transformer["embed_dim"] == rnn["embed_dim"]
    assert f"(default {transformer['embed_dim']})" in translation_help["embed_dim"]
    for name in ("num_heads", "ff_dim", "num_blocks"):
        assert "transformer: " in translation_help[name] and f"(default {transformer[name]})" in translation_help[name]
    assert f"rnn: GRU and attention size (default {rnn['units']})" == translation_help["units"]
    assert (
        f"default {DEFAULT_VOCAB_SIZES['subword']} subword, {DEFAULT_VOCAB_SIZES['words']} words"
        in translation_help["vocab_size"]
    )
    assert help_rates(translation_help["learning_rate"]) == [transformer["learning_rate"], rnn["learning_rate"]]


def help_rates(text):
    """The learning rates a help string names ("1e-3", "5e-4"), in order."""
    return [float(rate) for rate in re.findall(r"\d+e-\d+", text)]


@pytest.mark.parametrize("task", ["agnews", "math", "ner"])
def test_every_task_is_a_train_command_with_the_same_options(task, capsys):
    with pytest.raises(SystemExit):
        main(["train", task, "--help"])
    out = capsys.readouterr().out
    for option in (
        "--data",
        "--backbone",
        "--hub-preprocess",
        "--pooling",
        "--freeze",
        "--limit",
        "--validation-limit",
    ):
        assert option in out
    assert "--head" not in out


def test_pooling_takes_cls_mean_or_pooled_and_head_is_gone(tmp_path, capsys):
    argv = ["train", "agnews", "--data", "x.csv", "--run-dir", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as exited:
        main(argv + ["--pooling", "max"])
    assert exited.value.code == 2
    assert "argument --pooling: invalid choice: 'max' (choose from 'cls', 'mean', 'pooled')" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(argv + ["--head", "auto"])
    assert exited.value.code == 2 and "unrecognized arguments: --head auto" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--pooling must be one of cls, mean, pooled, got 'max'"):
        TrainConfig(pooling="max").resolve()
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--workers", "127.0.0.1:1234,hostonly"], "--workers takes HOST:PORT,HOST:PORT,...; got 'hostonly'"),
        (["--workers", "a:1,a:1", "--worker-index", "0"], "--workers lists an address twice"),
        (["--workers", "a:1,b:2", "--worker-index", "2"], "--worker-index must be in 0..1 for 2 workers, got 2"),
        (["--worker-index", "1"], "--worker-index needs --workers"),
        (["--strategy", "multiworker"], "--strategy multiworker needs the cluster"),
        (["--workers", "a:1,b:2", "--worker-index", "0", "--strategy", "mirrored"], "not mirrored"),
    ],
)
def test_bad_worker_options_stop_in_one_line(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    argv = ["train", "agnews", "--data", "missing.csv", "--run-dir", str(tmp_path / "run")] + extra
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error
    assert "TF_CONFIG" not in os.environ
    assert not (tmp_path / "run").exists()
