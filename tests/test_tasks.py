"""The task contract: every registered task implements it, the command line names no task, a run
names its task through the registry only, and the generic `classify` task trains on any table."""

import ast
import csv
import json
import shutil
from pathlib import Path

import pytest

import tfattn.cli
from tfattn.cli import main
from tfattn.tasks.base import Task, open_run
from tfattn.tasks.config import TrainConfig
from tfattn.tasks.registry import TASKS, task_class, task_classes, task_of

VERBS = ("prepare_training", "data_sources", "fit", "load_model", "serve", "evaluate", "attention", "export")
TINY_MODEL = ["--epochs", "1", "--max-length", "32", "--embed-dim", "16", "--ff-dim", "16", "--vocab-size", "500"]


def test_every_registered_task_implements_the_contract():
    classes = task_classes()
    assert list(classes) == list(TASKS)
    for name, cls in classes.items():
        assert issubclass(cls, Task) and cls.name == name, name
        assert cls.summary and cls.description and cls.serve_command, name
        for verb in VERBS:
            assert getattr(cls, verb) is not getattr(Task, verb), f"{name} does not implement {verb}"
        config = cls.config_class()
        assert cls.config_class.from_dict({**vars(config), "unknown": 1}) == config, name


def test_the_command_line_names_no_task_and_no_model_class():
    """cli.py dispatches through the registry: no task name as a string, no model class used."""
    tree = ast.parse(Path(tfattn.cli.__file__).read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree)
    strings = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value != docstring
    }
    assert not strings & set(TASKS), strings & set(TASKS)
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    model_classes = {"TextClassifier", "TokenClassifier", "TransformerTranslator", "RnnTranslator", "TaskModel"}
    assert not names & model_classes, names & model_classes


def test_an_unknown_task_is_refused_naming_the_file_and_the_known_tasks():
    with pytest.raises(ValueError, match="unknown task 'bogus'; tfattn's tasks are classify, agnews, math, ner"):
        task_class("bogus")
    with pytest.raises(ValueError, match=r"unknown task 'bogus'"):
        TrainConfig(task="bogus").resolve()


def test_a_run_naming_an_unknown_task_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "run.json").write_text(
        json.dumps({"written_by": "tfattn", "status": "finished", "config": {}}), encoding="utf-8"
    )
    (run / "config.json").write_text(json.dumps({"task": "os.system"}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"run/config.json: unknown task 'os.system'"):
        open_run(run)
    assert main(["predict", "--run", str(run), "hello"]) == 2
    assert "unknown task 'os.system'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "task, data, resolved",
    [
        ("classify", "reviews.tsv", {"data": "reviews.tsv", "text_column": "text", "label_column": "label"}),
        ("agnews", None, {"data": "tfds:ag_news_subset", "text_column": None, "label_column": None}),
        ("math", "math.jsonl", {"text_column": "problem", "label_column": "subject", "tokenizer": "wordpiece"}),
    ],
)
def test_presets_fill_what_was_left_out(task, data, resolved):
    config = TrainConfig(task=task, data=data).resolve()
    assert {name: getattr(config, name) for name in resolved} == resolved


def write_reviews(agnews_csv, path, rows=120):
    """A TSV with a header row and named columns, from real AG News rows (title -> topic)."""
    topics = ["World", "Sports", "Business", "Sci/Tech"]
    with open(agnews_csv, encoding="utf-8") as source, open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter="\t")
        writer.writerow(["id", "headline", "topic"])
        for index, (label, title, _) in enumerate(csv.reader(source)):
            if index == rows:
                break
            writer.writerow([index, title, topics[int(label) - 1]])
    return path


def test_classify_reads_a_tsv_by_its_column_names(agnews_csv, tmp_path):
    path = write_reviews(agnews_csv, tmp_path / "reviews.tsv")
    config = TrainConfig(task="classify", data=str(path), text_column="headline", label_column="topic").resolve()
    train, validation = task_of(config).load_splits()
    assert len(train) + len(validation) == 120 and train.label_names == ["Business", "Sci/Tech", "Sports", "World"]
    with pytest.raises(Exception, match=r"reviews.tsv.*'review'"):
        task_of(TrainConfig(task="classify", data=str(path), text_column="review").resolve()).load_splits()


@pytest.mark.slow
def test_classify_trains_serves_evaluates_and_exports_any_labelled_table(agnews_csv, tmp_path, capsys):
    path = write_reviews(agnews_csv, tmp_path / "reviews.tsv")
    run = tmp_path / "runs" / "reviews"
    columns = ["--text-column", "headline", "--label-column", "topic"]
    assert main(["train", "classify", "--data", str(path), "--run-dir", str(run), *columns, *TINY_MODEL]) == 0
    assert json.loads((run / "config.json").read_text())["task"] == "classify"
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "Stocks fell on Wall Street"]) == 0
    label, probability, text = capsys.readouterr().out.strip().split("\t")
    assert label in {"Business", "Sci/Tech", "Sports", "World"} and 0 < float(probability) <= 1
    assert main(["evaluate", "--run", str(run), "--data", str(path)]) == 0
    assert "examples 120" in capsys.readouterr().out and (run / "test_scores.json").is_file()
    # An option another task reads is refused naming it; nothing is exported.
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "export"), "--beam", "4"]) == 2
    assert "--beam does not apply to" in capsys.readouterr().err and not (tmp_path / "export").exists()
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "export")]) == 0
    # `ner` serves NER runs only: the refusal names the command that serves this one.
    shutil.rmtree(tmp_path / "export")
    assert main(["ner", "--run", str(run), "hello"]) == 2
    assert f"use 'tfattn predict --run {run} TEXT'" in capsys.readouterr().err
