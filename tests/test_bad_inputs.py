"""Every reproduction of the reliability issue, as a test: bad text, bad options, bad model
handles, repeated or changed runs. Each asserts finite outputs, the exit code, the file, row,
option or value named in one line, and that a refused command leaves the run folder as it was."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfattn.cli import main

SMALL_MODEL = ["--embed-dim", "16", "--ff-dim", "32", "--vocab-size", "2000", "--batch-size", "32"]
TFATTN = str(Path(sys.executable).parent / "tfattn")  # the console script, as a user runs it


def _real_rows(agnews_csv, count):
    with open(agnews_csv, encoding="utf-8") as handle:
        return [next(handle) for _ in range(count)]


@pytest.fixture(scope="module")
def punctuation_csv(agnews_csv, tmp_path_factory):
    """400 real AG News rows plus one whose text is punctuation only."""
    path = tmp_path_factory.mktemp("data") / "p.csv"
    path.write_text("".join(_real_rows(agnews_csv, 400)) + '"2","!!!","..."\n', encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def punctuation_run(punctuation_csv, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "p"
    with pytest.warns(UserWarning, match=r"1 of \d+ training texts have no token"):
        assert (
            main(
                ["train", "agnews", "--data", str(punctuation_csv), "--epochs", "2", "--run-dir", str(run_dir)]
                + SMALL_MODEL
            )
            == 0
        )
    return run_dir


def _snapshot(folder):
    """Every file under `folder` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def _history_losses(run_dir):
    import csv

    with open(run_dir / "history.csv") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)] + [
            float(row["val_loss"]) for row in csv.DictReader(open(run_dir / "history.csv"))
        ]


# --- texts with no token --------------------------------------------------------------------


@pytest.mark.slow
def test_punctuation_only_row_trains_to_finite_loss(punctuation_run):
    losses = _history_losses(punctuation_run)
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)


@pytest.mark.slow
def test_empty_texts_predict_finite_probabilities(punctuation_run, tmp_path, capsys):
    assert main(["predict", "--run", str(punctuation_run), "", "!!!", "   ", "Oil prices rose"]) == 0
    lines = capsys.readouterr().out.rstrip("\n").split("\n")
    assert len(lines) == 4
    for line in lines:
        label, probability = line.split("\t")[:2]
        assert label in {"World", "Sports", "Business", "Sci/Tech"} and 0 < float(probability) <= 1
    assert main(["export", "--run", str(punctuation_run), "--out", str(tmp_path / "export")]) == 0
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    probabilities = serve(tf.constant(["", "?!", "Oil prices rose"]))["probabilities"].numpy()
    assert np.all(np.isfinite(probabilities)) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    # The rule: a text with no token reads as one [UNK], so every such text gets the same answer.
    np.testing.assert_allclose(probabilities[0], probabilities[1], atol=1e-6)


@pytest.mark.slow
def test_math_problem_of_punctuation_only_trains_finite(math_topics_jsonl, tmp_path):
    with open(math_topics_jsonl, encoding="utf-8") as handle:
        rows = handle.readlines()[::25]  # the file is grouped by subject: take every topic
    subject = json.loads(rows[0])["subject"]
    data = tmp_path / "m.jsonl"
    data.write_text("".join(rows) + json.dumps({"problem": "?", "subject": subject}) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="have no token"):
        assert (
            main(
                ["train", "math", "--data", str(data), "--epochs", "1", "--run-dir", str(tmp_path / "r")]
                + ["--tokenizer", "words"]  # words has no token for "?" (WordPiece, math's default, has)
                + SMALL_MODEL
            )
            == 0
        )
    assert all(math.isfinite(loss) for loss in _history_losses(tmp_path / "r"))


@pytest.mark.slow
def test_pretrained_models_give_finite_outputs_for_texts_with_no_token(tiny_bert_dir):
    from tfattn.data import NER_LABELS
    from tfattn.models import POOLINGS, HuggingFaceEncoder, TextClassifier, TokenClassifier
    from tfattn.models.wordpiece import bert_preprocessor_from_pretrained

    preprocessor = bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=16)
    texts = tf.constant(["", "   ", "!!!", "a real text"])
    encoder = HuggingFaceEncoder.from_pretrained(tiny_bert_dir)
    assert POOLINGS == ("cls", "mean", "pooled")
    for pooling in POOLINGS:
        classifier = TextClassifier(preprocessor, encoder, 3, pooling=pooling)
        logits = classifier(texts, training=False).numpy()
        assert logits.shape == (4, 3) and np.all(np.isfinite(logits)), pooling
        probabilities = classifier.predict_proba(["", "   ", "!!!", "a real text"])
        assert np.all(np.isfinite(probabilities)) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5), pooling
        # "" and "   " are both [CLS] [SEP]: the same answer.
        np.testing.assert_allclose(probabilities[0], probabilities[1], atol=1e-6)
    tagged = TokenClassifier(preprocessor, encoder, NER_LABELS).tag_tokens(texts)
    assert np.all(np.isfinite(tagged["probabilities"].numpy()))
    # Texts with no word have no token to tag: only [CLS] and [SEP], spans (0, 0), no word.
    assert (tagged["word_ids"][:2].numpy() == -1).all() and not tagged["offsets"][:2].numpy().any()
    assert tagged["word_ids"][3].numpy().tolist() == [-1, 0, 1, 2, -1]


def test_tokenize_texts_counts_truncated_and_special_only_texts(tiny_bert_dir):
    from tfattn.pretrained import load_tokenizer, tokenize_texts

    tokenizer = load_tokenizer(tiny_bert_dir)
    with pytest.warns(UserWarning) as caught:
        features = tokenize_texts(tokenizer, ["", "one two", "word " * 50, "!!! ???"], max_length=8, what="texts")
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("1 of 4 texts are longer than max_length=8") for m in messages)
    assert any(m.startswith("1 of 4 texts have no token") for m in messages)
    assert set(features) == {"input_word_ids", "input_mask", "input_type_ids"}
    assert features["input_word_ids"].row_lengths().numpy().tolist() == [2, 4, 8, 8]
    assert features["input_word_ids"][0].numpy().tolist() == [tokenizer.cls_token_id, tokenizer.sep_token_id]


# --- repeated and changed runs --------------------------------------------------------------


@pytest.mark.slow
def test_resuming_with_other_data_is_refused_and_changes_nothing(agnews_csv, tmp_path, capsys):
    from conftest import InterruptTraining

    from tfattn.tasks.config import TrainConfig
    from tfattn.training.loop import train

    other = tmp_path / "b.csv"
    other.write_text("".join(_real_rows(agnews_csv, 300)), encoding="utf-8")
    run_dir = tmp_path / "r"
    config = TrainConfig(
        data=str(agnews_csv), run_dir=str(run_dir), limit=400, epochs=3, embed_dim=16, ff_dim=32, vocab_size=2000
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[InterruptTraining(1, when="begin")])
    before = _snapshot(run_dir)
    argv = ["train", "agnews", "--data", str(other), "--limit", "300", "--epochs", "3", "--run-dir", str(run_dir)]
    assert main(argv + SMALL_MODEL[:-2]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "holds another run" in error
    assert f"data {str(agnews_csv)!r} -> {str(other)!r}" in error and "limit 400 -> 300" in error
    assert _snapshot(run_dir) == before
    # The same run also refuses once its data file changed.
    second_run = ["train", "agnews", "--data", str(other), "--limit", "300", "--epochs", "1"]
    second_run += ["--run-dir", str(tmp_path / "r2")] + SMALL_MODEL
    assert main(second_run) == 0
    with open(other, "a", encoding="utf-8") as handle:
        handle.write('"1","Extra row","appended later"\n')
    assert main(second_run) == 2
    assert "b.csv changed since the run started" in capsys.readouterr().err


@pytest.mark.slow
def test_rerunning_a_finished_run_stops_and_overwrite_retrains(punctuation_csv, punctuation_run, capsys):
    argv = ["train", "agnews", "--data", str(punctuation_csv), "--epochs", "2", "--run-dir", str(punctuation_run)]
    before = _snapshot(punctuation_run)
    assert main(argv + SMALL_MODEL) == 0
    assert "this run already finished (validation accuracy" in capsys.readouterr().out
    assert _snapshot(punctuation_run) == before


@pytest.mark.slow
def test_overwrite_retrains(agnews_csv, tmp_path, capsys):
    data = tmp_path / "a.csv"
    data.write_text("".join(_real_rows(agnews_csv, 200)), encoding="utf-8")
    argv = ["train", "agnews", "--data", str(data), "--epochs", "1", "--run-dir", str(tmp_path / "r")] + SMALL_MODEL
    assert main(argv) == 0
    model_time = (tmp_path / "r" / "model" / "model.json").stat().st_mtime_ns
    assert main(argv + ["--overwrite"]) == 0
    assert (tmp_path / "r" / "model" / "model.json").stat().st_mtime_ns != model_time
    # A folder that is not a run is never emptied, even with --overwrite.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(argv[: -len(SMALL_MODEL)][:-1] + [str(tmp_path / "mine"), "--overwrite"] + SMALL_MODEL) == 2
    assert "holds files that are not a tfattn run (notes.txt)" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_diverging_training_stops_naming_epoch_and_batch_and_saves_no_model(punctuation_csv, tmp_path, capsys):
    run_dir = tmp_path / "r"
    argv = ["train", "agnews", "--data", str(punctuation_csv), "--learning-rate", "1e30", "--run-dir", str(run_dir)]
    assert main(argv + SMALL_MODEL) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: training diverged: loss is nan at epoch 1, batch ")
    assert not (run_dir / "model").exists()
    assert main(["predict", "--run", str(run_dir), "text"]) == 2
    assert "training has not finished" in capsys.readouterr().err


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--max-length", "0", "must be a positive integer, got '0'"),
        ("--batch-size", "0", "must be a positive integer, got '0'"),
        ("--epochs", "0", "must be a positive integer, got '0'"),
        ("--limit", "-5", "must be an integer >= 2"),
        ("--learning-rate", "nan", "must be a positive number, got 'nan'"),
        ("--learning-rate", "-1e-3", "must be a positive number"),
        ("--validation-fraction", "1.5", "must be a number between 0 and 1 (exclusive)"),
        ("--dropout", "1", "must be a number in [0, 1)"),
        ("--batch-size", "2.5", "must be a positive integer, got '2.5'"),
    ],
)
def test_numeric_options_are_checked_when_parsed(option, value, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "agnews", "--data", "x.csv", f"{option}={value}", "--run-dir", str(tmp_path / "r")])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"argument {option}: {message}" in error
    assert not (tmp_path / "r").exists()


def test_the_python_api_checks_the_same_options():
    from tfattn.tasks.config import TrainConfig

    with pytest.raises(ValueError, match="--batch-size must be a positive integer, got 0"):
        TrainConfig(batch_size=0).resolve()
    with pytest.raises(ValueError, match=r"--embed-dim \(16\) must be a multiple of --num-heads \(3\)"):
        TrainConfig(embed_dim=16, num_heads=3).resolve()
    with pytest.raises(ValueError, match="--epochs must be a positive integer, got 0"):
        TrainConfig(task="ner", data="t.txt", backbone="b", epochs=0).resolve()
    with pytest.raises(ValueError, match="--validation-limit must be a positive integer, got 0"):
        TrainConfig(task="ner", data="t.txt", backbone="b", validation_limit=0).resolve()
    with pytest.raises(ValueError, match="--pooling must be one of cls, mean, pooled, got 'auto'"):
        TrainConfig(pooling="auto").resolve()


def test_too_few_examples_per_class_are_refused(punctuation_csv, tmp_path, capsys):
    argv = ["train", "agnews", "--data", str(punctuation_csv), "--limit", "5", "--run-dir", str(tmp_path / "r")]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "p.csv (the --limit 5 subset): too few examples per class" in error and "needs at least 2" in error
    assert not (tmp_path / "r").exists()


def test_one_class_data_is_refused_and_labels_are_stripped(tmp_path, capsys):
    one_class = tmp_path / "one.jsonl"
    one_class.write_text("".join(json.dumps({"problem": f"p {i}", "subject": "Algebra"}) + "\n" for i in range(10)))
    assert main(["train", "math", "--data", str(one_class), "--run-dir", str(tmp_path / "r")]) == 2
    assert "one.jsonl: only class 'Algebra'; classification needs at least two classes" in capsys.readouterr().err

    from tfattn.data import read_labelled_texts

    spaced = tmp_path / "spaced.csv"
    spaced.write_text("problem,subject\nx + 1,algebra \ny + 2,algebra\nz,geometry\n", encoding="utf-8")
    examples = read_labelled_texts(spaced, "problem", "subject")
    assert examples.label_names == ["algebra", "geometry"] and examples.labels.tolist() == [0, 0, 1]


@pytest.mark.slow
def test_a_ten_megabyte_text_is_read_and_truncated_with_a_warning(agnews_csv, tmp_path):
    big = tmp_path / "big.csv"
    huge_text = "market " * (10 * 1024 * 1024 // 7)
    big.write_text("".join(_real_rows(agnews_csv, 120)) + f'"3","Huge","{huge_text}"\n', encoding="utf-8")
    from tfattn.data import read_agnews_csv

    examples = read_agnews_csv(big)
    assert len(examples) == 121 and len(examples.texts[-1]) > 10_000_000
    with pytest.warns(UserWarning, match=r"1 of \d+ (training|validation) texts are longer than max_length=200"):
        assert (
            main(
                [
                    "train",
                    "agnews",
                    "--data",
                    str(big),
                    "--epochs",
                    "1",
                    "--max-length",
                    "200",
                    "--run-dir",
                    str(tmp_path / "r"),
                ]
                + SMALL_MODEL
            )
            == 0
        )


# --- model handles ---------------------------------------------------------------------------


def test_model_handles_fail_in_one_line_naming_what_is_missing(punctuation_csv, tiny_bert_dir, tmp_path, capsys):
    import shutil

    def refused(backbone):
        run_dir = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        started = time.perf_counter()
        assert (
            main(
                [
                    "train",
                    "agnews",
                    "--data",
                    str(punctuation_csv),
                    "--backbone",
                    str(backbone),
                    "--run-dir",
                    str(run_dir),
                ]
            )
            == 2
        )
        assert not run_dir.exists()  # refused before the run folder was made
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and "Traceback" not in error
        return error, time.perf_counter() - started

    assert (
        refused("/nonexistent/bert")[0]
        == "error: /nonexistent/bert: no such folder (expected a Hugging Face checkpoint folder)"
    )
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_bert_dir, no_weights, ignore=shutil.ignore_patterns("*.h5", "*.safetensors"))
    assert "no_weights: not a Hugging Face checkpoint folder for the model: no tf_model.h5" in refused(no_weights)[0]
    no_vocab = tmp_path / "no_vocab"
    shutil.copytree(tiny_bert_dir, no_vocab, ignore=shutil.ignore_patterns("vocab.txt", "tokenizer*"))
    assert (
        "no_vocab: not a Hugging Face checkpoint folder for the tokenizer: no tokenizer.json or vocab.txt"
        in refused(no_vocab)[0]
    )
    error, seconds = refused("no-such-org/no-such-bert")
    assert "'no-such-org/no-such-bert'" in error and "local checkpoint folder" in error and seconds < 10


# --- export and attention --------------------------------------------------------------------


def test_export_removes_staging_folders_of_killed_exports(tmp_path):
    from tfattn.files import write_atomically

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    stale = tmp_path / f".export.tmp-{dead_pid}-0123abcd"
    legacy = tmp_path / ".export.tmp-89abcdef"  # named before the pid was part of the name
    alive = tmp_path / f".export.tmp-{os.getpid()}-feedbeef"  # a concurrent export still writing
    for folder in (stale, legacy, alive):
        (folder / "variables").mkdir(parents=True)
    write_atomically(
        tmp_path / "export", lambda staging: (staging.mkdir(), (staging / "saved_model.pb").write_text("x"))
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["export", alive.name])


@pytest.mark.slow
def test_attention_file_with_many_texts_asks_for_limit(punctuation_run, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"Stocks moved on day {i}\n" for i in range(1000)), encoding="utf-8")
    out = tmp_path / "maps" / "a.png"
    out.parent.mkdir()
    assert main(["attention", "--run", str(punctuation_run), "--file", str(texts), "--out", str(out)]) == 2
    assert "1000 texts would write 1000 files (one per text); pass --limit N" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []
    assert (
        main(["attention", "--run", str(punctuation_run), "--file", str(texts), "--out", str(out), "--limit", "2"]) == 0
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["a_0.png", "a_1.png"]


# --- quiet output and documented commands in their own process --------------------------------


def _run(*args, timeout=600):
    return subprocess.run([TFATTN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_importing_the_cli_does_not_start_tensorflow():
    # The quiet output filters TensorFlow's native start-up lines only if `main` imports it first.
    probe = (
        "import sys, tfattn.cli; "
        "print(sorted(m for m in ('tensorflow', 'tf_keras', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_native_noise_filter_drops_cpu_notes_and_keeps_real_errors():
    from tfattn.quiet import NATIVE_NOISE

    prefix = "2026-12-07 07:50:09.293216: E tensorflow/core/util/util.cc:131] "
    for width in ("32", "64"):  # both seen on this project's AMD EPYC machines, with and without AVX-512
        line = f"{prefix}oneDNN supports DT_INT{width} only on platforms with AVX-512. Falling back to Eigen."
        assert NATIVE_NOISE.search(line)
    assert not NATIVE_NOISE.search(prefix + "OP_REQUIRES failed at conv_ops.cc:1068 : RESOURCE_EXHAUSTED: OOM")


@pytest.mark.slow
def test_errors_are_one_line_without_framework_noise(tmp_path):
    result = _run("train", "agnews", "--data", tmp_path / "nope.csv", "--run-dir", tmp_path / "r")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: {tmp_path / 'nope.csv'}: no such file (expected an AG News CSV path or 'tfds:ag_news_subset')"
    )
    assert "cuInit" not in result.stdout + result.stderr
    verbose = _run("--verbose", "train", "agnews", "--data", tmp_path / "nope.csv", "--run-dir", tmp_path / "r")
    assert verbose.returncode == 2 and len(verbose.stderr.strip().splitlines()) > 1  # TensorFlow's own lines


@pytest.mark.slow
def test_readme_tfhub_training_command_runs_in_its_own_process(tiny_bert_dir, punctuation_csv, tmp_path):
    # Nothing but the command itself imports tensorflow_text here, as for a user.
    hub_dir = tmp_path / "hub"
    exported = _run("export-hub", "--from", tiny_bert_dir, "--out", hub_dir, "--seq-length", "32")
    assert exported.returncode == 0, exported.stderr
    result = _run(
        "train",
        "agnews",
        "--data",
        punctuation_csv,
        "--hub-preprocess",
        hub_dir / "preprocess",
        "--hub-encoder",
        hub_dir / "encoder",
        "--freeze-epochs",
        "1",
        "--epochs",
        "1",
        "--limit",
        "80",
        "--batch-size",
        "16",
        "--run-dir",
        tmp_path / "run",
    )
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "Traceback" not in result.stderr
    noise = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert noise == [], noise
