"""Training on streamed files (`tfattn train ... --stream`): the run resumes to the uninterrupted
result, validates on its --validation-data file, and works with the other commands; options
that make no sense with streaming stop in one line."""

import csv

import pytest
from conftest import InterruptTraining

from tfattn.cli import main
from tfattn.tasks.config import TrainConfig
from tfattn.training.loop import train


@pytest.fixture(scope="module")
def shards(agnews_csv, tmp_path_factory):
    """The first 640 AG News rows as 4 shard files, and the next 80 as the validation file."""
    with open(agnews_csv, newline="", encoding="utf-8") as handle:
        rows = [row for _, row in zip(range(720), csv.reader(handle))]
    folder = tmp_path_factory.mktemp("shards")
    for index in range(4):
        with open(folder / f"part-{index}.csv", "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows[index:640:4])
    with open(folder / "valid.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows[640:])
    return folder


def stream_config(shards, run_dir, **overrides):
    values = dict(
        data=str(shards / "part-*.csv"),
        validation_data=str(shards / "valid.csv"),
        stream=True,
        shuffle_buffer=200,
        run_dir=str(run_dir),
        epochs=3,
        batch_size=32,
        max_length=32,
        embed_dim=16,
        ff_dim=32,
        vocab_size=2000,
        dropout=0.0,
        token_dropout=0.0,
        patience=5,
    )
    return TrainConfig(**{**values, **overrides})


def losses(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return [(int(row["epoch"]), float(row["loss"]), float(row["val_loss"])) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_streamed_run_resumes_to_the_uninterrupted_result(shards, tmp_path, capsys):
    report = train(stream_config(shards, tmp_path / "whole"))
    out = capsys.readouterr().out
    assert "640 training / 80 validation examples from 4 files" in out
    assert report.num_examples == 80

    config = stream_config(shards, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[InterruptTraining(1)])  # after epoch 2 ends, before its backup
    resumed = train(config)
    assert "resuming the interrupted run" in capsys.readouterr().out
    # The stream is rebuilt and the consumed batches skipped: the same batches, the same losses.
    whole, resumed_losses = losses(tmp_path / "whole"), losses(tmp_path / "resumed")
    assert [row[0] for row in resumed_losses] == [0, 1, 2]
    assert [row[1:] for row in resumed_losses] == [pytest.approx(row[1:], rel=1e-6) for row in whole]
    assert resumed.accuracy == report.accuracy

    # The other commands read a streamed run like any other.
    assert main(["evaluate", "--run", str(tmp_path / "whole")]) == 0
    assert "examples 80" in capsys.readouterr().out
    assert main(["predict", "--run", str(tmp_path / "whole"), "Stocks rally as tech earnings beat forecasts"]) == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(validation_data=None), "--stream needs --validation-data"),
        (dict(limit=100), "--limit subsets data read into memory"),
        (dict(data="tfds:ag_news_subset"), "--stream needs --data: files, a folder or a glob pattern"),
        (dict(task="ner", backbone="x", token_dropout=None), "--stream reads text classification data; ner reads"),
    ],
)
def test_options_that_do_not_stream_are_refused(overrides, message, shards, tmp_path):
    with pytest.raises(ValueError, match=message):
        train(stream_config(shards, tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()


def test_a_glob_matching_nothing_is_one_line_naming_it(shards, tmp_path, capsys):
    argv = ["train", "agnews", "--stream", "--data", str(shards / "nothing-*.csv")]
    argv += ["--validation-data", str(shards / "valid.csv"), "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {shards / 'nothing-*.csv'}: no file matches this pattern\n"
    assert not (tmp_path / "run").exists()
