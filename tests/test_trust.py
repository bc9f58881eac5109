"""The trust issue, case by case: loading a run folder never runs code named in it, --overwrite
never deletes what tfattn did not write, one process per run folder, damaged runs named in one
line. Each family of cases is one parametrized test whose table a reviewer can read: the case,
the command, and the one line it must end in (exit 2, nothing deleted, no traceback)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tf_keras as keras

from tfattn.cli import main
from tfattn.files import EXPORT_MARKER
from tfattn.runs.manifest import locked_run_folder

TINY_MODEL = ["--epochs", "1", "--max-length", "32", "--embed-dim", "16", "--ff-dim", "16", "--vocab-size", "500"]
TFATTN = str(Path(sys.executable).parent / "tfattn")  # the console script, as a user runs it


def snapshot(folder):
    """Every file under `folder` with its size and modification time."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def one_error_line(capsys):
    """The command's stderr, checked to be one `error: ...` line with no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_csv(agnews_csv, tmp_path_factory):
    """120 real AG News rows."""
    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    with open(agnews_csv, encoding="utf-8") as handle:
        path.write_text("".join(next(handle) for _ in range(120)), encoding="utf-8")
    return path


def train_argv(tiny_csv, run_dir):
    return ["train", "agnews", "--data", str(tiny_csv), "--run-dir", str(run_dir)] + TINY_MODEL


@pytest.fixture(scope="module")
def trained_run(tiny_csv, tmp_path_factory):
    """A finished tiny from-scratch AG News run (a few seconds of training)."""
    run_dir = tmp_path_factory.mktemp("runs") / "good"
    assert main(train_argv(tiny_csv, run_dir)) == 0
    return run_dir


@pytest.fixture()
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run, to damage or craft."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


# --- 1. A crafted model.json runs nothing -------------------------------------------------------


def function_config(module, name):
    return {"module": module, "class_name": "function", "config": name, "registered_name": "function"}


def lambda_layer(module, name, arguments=None):
    """A tf-keras `Lambda` layer config calling `module.name(inputs, **arguments)`."""
    return {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {
            "name": f"call_{name}",
            "trainable": True,
            "dtype": "float32",
            "function": function_config(module, name),
            "function_type": "function",
            "module": module,
            "output_shape": None,
            "output_shape_type": "raw",
            "output_shape_module": None,
            "arguments": arguments or {},
        },
        "registered_name": None,
    }


def pipepager_sequential(marker):
    """A `Sequential` whose Lambda makes pydoc run a shell command: a live exploit under plain tf-keras."""
    layers = [lambda_layer("pydoc", "pipepager", {"cmd": f"touch {marker}"})]
    return {"module": "keras", "class_name": "Sequential", "config": {"name": "evil", "layers": layers}}


def classifier_with(good_config, part, replacement):
    """The run's own TextClassifier description with its `part` (encoder, preprocessor) replaced."""
    config = json.loads(json.dumps(good_config))
    config["config"][part] = replacement
    return config


def hf_encoder(hf_config):
    return {
        "module": "tfattn.models.encoders",
        "class_name": "HuggingFaceEncoder",
        "config": {"name": "hf", "hf_config": hf_config},
        "registered_name": "tfattn>HuggingFaceEncoder",
    }


# case -> (the model.json, given the marker path and the run's own model.json; the class named in the refusal)
CRAFTED = {
    "Sequential of Lambdas, pydoc.pipepager runs a shell command": (
        lambda marker, good: pipepager_sequential(marker),
        "'Sequential' (module 'keras')",
    ),
    "the encoder a Lambda naming os.system": (
        lambda marker, good: classifier_with(good, "encoder", lambda_layer("os", "system")),
        "'Lambda' (module 'keras.layers')",
    ),
    "a bare function, builtins.exec": (
        lambda marker, good: function_config("builtins", "exec"),
        "'function' (module 'builtins')",
    ),
    "a registered-looking name from another module": (
        lambda marker, good: classifier_with(
            good, "preprocessor", {"module": "os", "class_name": "system", "registered_name": "tfattn>system"}
        ),
        "'system' (module 'os')",
    ),
    "a Hugging Face config with remote code (auto_map)": (
        lambda marker, good: classifier_with(
            good, "encoder", hf_encoder({"model_type": "bert", "auto_map": {"TFAutoModel": "evil.Model"}})
        ),
        "auto_map",
    ),
    "a Hugging Face model type off the BERT family": (
        lambda marker, good: classifier_with(good, "encoder", hf_encoder({"model_type": "evil-remote"})),
        "model type 'evil-remote'",
    ),
}
COMMANDS = {
    "predict": ["predict", "--run", "{run}", "hello"],
    "ner": ["ner", "--run", "{run}", "hello"],
    "export": ["export", "--run", "{run}", "--out", "{tmp}/export"],
    "evaluate": ["evaluate", "--run", "{run}"],
    "attention": ["attention", "--run", "{run}", "hello", "--out", "{tmp}/a.png"],
}


def test_the_pipepager_payload_is_live_under_plain_tf_keras(tmp_path):
    """The control: tf-keras alone, given the crafted description, runs the command."""
    import tensorflow as tf

    marker = tmp_path / "ran"
    model = keras.saving.deserialize_keras_object(pipepager_sequential(marker))
    with pytest.raises(TypeError):  # pipepager then fails writing a tensor, after starting the command
        model(tf.constant(["build"]))
    for _ in range(50):  # the shell runs beside us
        if marker.exists():
            break
        subprocess.run(["sleep", "0.1"], check=True)
    assert marker.exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CRAFTED)
def test_a_crafted_model_description_runs_nothing(case, command, run_copy, tmp_path, capsys):
    make, refused = CRAFTED[case]
    marker = tmp_path / "ran"
    model_json = run_copy / "model" / "model.json"
    model_json.write_text(json.dumps(make(marker, json.loads(model_json.read_text()))), encoding="utf-8")
    if command == "ner":  # `tfattn ner` opens NER runs only: the run claims to be one
        config = json.loads((run_copy / "config.json").read_text())
        (run_copy / "config.json").write_text(json.dumps({**config, "task": "ner"}), encoding="utf-8")
    before = snapshot(run_copy)
    argv = [part.format(run=run_copy, tmp=tmp_path) for part in COMMANDS[command]]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert str(model_json) in line and refused in line, line
    assert not marker.exists() and snapshot(run_copy) == before
    assert not (tmp_path / "export").exists() and not (tmp_path / "a.png").exists()


# --- 2. train --overwrite deletes only what tfattn wrote -----------------------------------------


def hf_checkpoint(tmp_path, run):
    folder = tmp_path / "MY_HF_CHECKPOINT"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "notes.txt").write_text("mine")
    return str(folder), tmp_path


def project_folder(tmp_path, run):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "main.py").write_text("print('hi')")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "lib.py").write_text("")
    return ".", tmp_path


def run_with_a_foreign_file(tmp_path, run):
    (run / "notes.txt").write_text("mine")
    return str(run), tmp_path


def symlink_to_a_run(tmp_path, run):
    (tmp_path / "link").symlink_to(run)
    return str(tmp_path / "link"), tmp_path


def run_of_an_older_tfattn(tmp_path, run):
    manifest = json.loads((run / "run.json").read_text())
    del manifest["written_by"]
    (run / "run.json").write_text(json.dumps(manifest))
    return str(run), tmp_path


def the_working_folder_is_the_run(tmp_path, run):
    return ".", run


def a_parent_of_the_working_folder(tmp_path, run):
    return "..", run / "logs"


# case -> (setup(tmp_path, run) -> (--run-dir, working folder); what the one line says)
OVERWRITE_REFUSALS = {
    "a Hugging Face checkpoint folder": (hf_checkpoint, "holds files that are not a tfattn run (config.json, "),
    "a project folder as --run-dir .": (project_folder, "holds files that are not a tfattn run (config.json, main.py"),
    "a tfattn run holding a notes file": (run_with_a_foreign_file, "holds files tfattn did not write (notes.txt)"),
    "a symbolic link to a tfattn run": (symlink_to_a_run, "is a symbolic link (to "),
    "a run.json with no tfattn marker": (run_of_an_older_tfattn, "has no tfattn marker"),
    "the working folder itself": (the_working_folder_is_the_run, "is the working folder or holds it"),
    "a folder holding the working folder": (a_parent_of_the_working_folder, "is the working folder or holds it"),
}


@pytest.mark.parametrize("case", OVERWRITE_REFUSALS)
def test_train_overwrite_refuses_what_tfattn_did_not_write(case, tiny_csv, run_copy, tmp_path, monkeypatch, capsys):
    setup, message = OVERWRITE_REFUSALS[case]
    run_dir, working_folder = setup(tmp_path, run_copy)
    monkeypatch.chdir(working_folder)
    before = snapshot(tmp_path)
    assert main(train_argv(tiny_csv, run_dir) + ["--overwrite"]) == 2
    line = one_error_line(capsys)
    assert message in line, line
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_overwrite_replaces_a_damaged_run_and_the_reports_tfattn_wrote(tiny_csv, run_copy, capsys):
    """What tfattn wrote into a run after training (a report of `tfattn evaluate`, a plot of
    `tfattn attention`, an export: what scripts/run_agnews.sh leaves there) is replaced with the
    run by --overwrite; so is a run whose run.json was truncated."""
    assert main(["evaluate", "--run", str(run_copy), "--prefix", "mine"]) == 0
    assert main(["attention", "--run", str(run_copy), "Oil prices rose", "--out", str(run_copy / "oil.png")]) == 0
    assert main(["export", "--run", str(run_copy), "--out", str(run_copy / "export")]) == 0
    assert main(train_argv(tiny_csv, run_copy) + ["--overwrite"]) == 0  # every entry is tfattn's
    for written in ("mine_scores.json", "oil.png", "export"):
        assert not (run_copy / written).exists(), written
    manifest = (run_copy / "run.json").read_text()
    (run_copy / "run.json").write_text(manifest[:42])
    capsys.readouterr()
    assert main(train_argv(tiny_csv, run_copy)) == 2
    assert "run.json is not valid JSON (line" in one_error_line(capsys)
    assert main(train_argv(tiny_csv, run_copy) + ["--overwrite"]) == 0
    assert json.loads((run_copy / "run.json").read_text())["status"] == "finished"


# --- 3. export --overwrite deletes only an export tfattn wrote -----------------------------------


def nest_of_runs(tmp_path, run):
    nest = tmp_path / "nest"
    nest.mkdir()
    shutil.move(run, nest / "runA")
    shutil.copytree(nest / "runA", nest / "runB")
    (nest / "notes.txt").write_text("mine")
    return nest / "runA", nest, tmp_path


def export_into_the_run(tmp_path, run):
    return run, run, tmp_path


def export_to_the_working_folder(tmp_path, run):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "main.py").write_text("")
    return run, ".", tmp_path / "work"


def folder_of_someone_else(tmp_path, run):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "saved_model.pb").write_text("not tfattn's")
    return run, tmp_path / "mine", tmp_path


def tfattn_export(folder):
    (folder / "assets.extra").mkdir(parents=True)
    (folder / "saved_model.pb").write_text("a previous export")
    (folder / EXPORT_MARKER).write_text('{"written_by": "tfattn"}')


def export_plus_a_notes_file(tmp_path, run):
    tfattn_export(tmp_path / "export")
    (tmp_path / "export" / "notes.txt").write_text("mine")
    return run, tmp_path / "export", tmp_path


def symlink_to_an_export(tmp_path, run):
    tfattn_export(tmp_path / "export")
    (tmp_path / "link").symlink_to(tmp_path / "export")
    return run, tmp_path / "link", tmp_path


# case -> (setup(tmp_path, run) -> (--run, --out, working folder); what the one line says)
EXPORT_REFUSALS = {
    "the parent of the source run": (nest_of_runs, "is or holds"),
    "the source run itself": (export_into_the_run, "is or holds"),
    "the working folder": (export_to_the_working_folder, "is or holds the working folder"),
    "a folder tfattn did not export": (folder_of_someone_else, "is not an export tfattn wrote"),
    "a tfattn export holding a notes file": (export_plus_a_notes_file, "is not an export tfattn wrote"),
    "a symbolic link to a tfattn export": (symlink_to_an_export, "is a symbolic link (to "),
}


@pytest.mark.parametrize("case", EXPORT_REFUSALS)
def test_export_overwrite_refuses_what_tfattn_did_not_export(case, run_copy, tmp_path, monkeypatch, capsys):
    setup, message = EXPORT_REFUSALS[case]
    run_dir, out, working_folder = setup(tmp_path, run_copy)
    monkeypatch.chdir(working_folder)
    before = snapshot(tmp_path)
    assert main(["export", "--run", str(run_dir), "--out", str(out), "--overwrite"]) == 2
    line = one_error_line(capsys)
    assert message in line, line
    assert snapshot(tmp_path) == before


# --- 4. One process per run folder ---------------------------------------------------------------

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from tfattn.runs.manifest import locked_run_folder
    with locked_run_folder(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def hold_lock(run_dir):
    """A process holding `run_dir`'s lock, as a training run does; returned once it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_process_stops_at_once_naming_the_holder_and_a_killed_holder_frees_the_folder(
    tiny_csv, run_copy, capsys, monkeypatch
):
    holder = hold_lock(run_copy)
    try:
        before = snapshot(run_copy)
        assert main(train_argv(tiny_csv, run_copy) + ["--overwrite"]) == 2
        line = one_error_line(capsys)
        assert f"{run_copy} is in use by another tfattn process (pid {holder.pid})" in line, line
        assert snapshot(run_copy) == before  # nothing read into the model, nothing written
        monkeypatch.setattr("tfattn.cli.REPORT_LOCK_SECONDS", 0.5)
        assert main(["evaluate", "--run", str(run_copy)]) == 2  # writing its report waits, then gives up
        assert f"(pid {holder.pid})" in one_error_line(capsys)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel released the dead holder's lock: the folder is free, and the lock left no file.
    assert snapshot(run_copy) == before
    with locked_run_folder(run_copy):
        # Another process is refused while this one holds it.
        refused = subprocess.run([sys.executable, "-c", HOLD_LOCK, str(run_copy)], capture_output=True, text=True)
        assert refused.returncode == 1 and f"RunLocked: {run_copy} is in use" in refused.stderr
        assert f"(pid {os.getpid()})" in refused.stderr
    with locked_run_folder(run_copy):  # released on exit
        pass


def test_a_folder_of_someone_elses_files_gets_no_lock_file(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files that are not a tfattn run \(notes.txt\); choose another"):
        with locked_run_folder(tmp_path / "mine"):
            pass
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_two_identical_trainings_started_together_one_trains_one_stops(tiny_csv, tmp_path):
    run_dir = tmp_path / "race"
    argv = [TFATTN] + train_argv(tiny_csv, run_dir)[: -len(TINY_MODEL)] + TINY_MODEL[:1] + ["2"] + TINY_MODEL[2:]
    racers = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(racer.wait(timeout=600), racer.stdout.read(), racer.stderr.read()) for racer in racers]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert f"{run_dir} is in use by another tfattn process (pid " in refused and "Traceback" not in refused
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", "0", "1"]  # two whole epochs, once


# --- 5. Damaged runs are named in one line ------------------------------------------------------


def truncate(path, size=42):
    path.write_bytes(path.read_bytes()[:size])


def make_translation_run(run):
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "task": "translate"}))


# case -> (damage(run), command, what the one line says)
DAMAGED = {
    "truncated run.json, predict": (
        lambda run: truncate(run / "run.json"),
        "predict",
        "run.json is not valid JSON (line",
    ),
    "truncated run.json, train": (lambda run: truncate(run / "run.json"), "train", "run.json is not valid JSON (line"),
    "run.json holding []": (
        lambda run: (run / "run.json").write_text("[]"),
        "predict",
        "run.json is not a tfattn run record (a JSON list)",
    ),
    "empty weights file": (
        lambda run: (run / "model" / "weights.data-00000-of-00001").write_bytes(b""),
        "predict",
        "weights checkpoint is missing or damaged",
    ),
    "deleted weights index": (
        lambda run: (run / "model" / "weights.index").unlink(),
        "predict",
        "weights checkpoint is missing or damaged",
    ),
    "deleted model/, predict": (
        lambda run: shutil.rmtree(run / "model"),
        "predict",
        "model is missing from this finished",
    ),
    "deleted model/, train": (lambda run: shutil.rmtree(run / "model"), "train", "model is missing from this finished"),
    "truncated config.json": (
        lambda run: truncate(run / "config.json", 20),
        "predict",
        "config.json is not valid JSON (line",
    ),
    "truncated model.json": (
        lambda run: truncate(run / "model" / "model.json"),
        "predict",
        "model.json is not valid JSON (line",
    ),
    "a translation run handed to predict": (make_translation_run, "predict", "use 'tfattn translate --run"),
    "a classifier run handed to translate": (lambda run: None, "translate", "use 'tfattn predict --run"),
    "no such run folder": (lambda run: shutil.rmtree(run), "predict", "no such run folder"),
}
DAMAGE_COMMANDS = {
    "predict": lambda run, csv: ["predict", "--run", str(run), "hello"],
    "translate": lambda run, csv: ["translate", "--run", str(run), "hola"],
    "train": lambda run, csv: train_argv(csv, run),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_run_is_named_in_one_line(case, tiny_csv, run_copy, tmp_path, capsys):
    damage, command, message = DAMAGED[case]
    damage(run_copy)
    before = snapshot(tmp_path)
    assert main(DAMAGE_COMMANDS[command](run_copy, tiny_csv)) == 2
    line = one_error_line(capsys)
    assert message in line and line.startswith("error: "), line
    assert "pass --overwrite" not in line or "train" in command  # advice only where it works
    assert snapshot(tmp_path) == before


def test_a_folder_with_no_tfattn_files_is_not_told_to_pass_overwrite(tiny_csv, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(train_argv(tiny_csv, tmp_path / "mine")) == 2
    line = one_error_line(capsys)
    assert "holds files that are not a tfattn run (notes.txt)" in line and "--overwrite" not in line


# --- 6. Smaller cases ---------------------------------------------------------------------------

NON_UTF8 = b"fine\n\xff\xfe broken\n"


# case -> (argv given the run and a tmp folder, what the one line says)
SMALL = {
    "predict with no texts": (lambda run, tmp: ["predict", "--run", str(run)], "give texts as arguments or --file"),
    "predict --file not UTF-8": (
        lambda run, tmp: ["predict", "--run", str(run), "--file", str(tmp / "bad.txt")],
        "bad.txt, line 2: not UTF-8 text",
    ),
    "translate --file not UTF-8": (
        lambda run, tmp: ["translate", "--run", str(run), "--file", str(tmp / "bad.txt")],
        "bad.txt, line 2: not UTF-8 text",
    ),
}


@pytest.mark.parametrize("case", SMALL)
def test_small_bad_inputs_exit_2_in_one_line(case, trained_run, tmp_path, capsys):
    (tmp_path / "bad.txt").write_bytes(NON_UTF8)
    argv, message = SMALL[case]
    assert main(argv(trained_run, tmp_path)) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize("command", ["translate", "evaluate", "export"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_length_penalty_must_be_finite(command, value, capsys):
    argv = [command, "--run", "r", f"--length-penalty={value}"] + (["--out", "o"] if command == "export" else [])
    with pytest.raises(SystemExit) as exited:
        main(argv + (["hola"] if command == "translate" else []))
    assert exited.value.code == 2
    assert f"--length-penalty: must be a finite number, got '{value}'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_quoted_tilde_means_the_home_folder(trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    shutil.copytree(trained_run, tmp_path / "home" / "run")
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--run", "~/run", "Oil prices rose"]) == 0
    assert main(["export", "--run", "~/run", "--out", "~/export"]) == 0
    assert (tmp_path / "home" / "export" / "saved_model.pb").is_file() and not (tmp_path / "~").exists()


def test_changed_data_is_said_once(tiny_csv, trained_run, tmp_path, capsys):
    changed = tmp_path / "tiny.csv"
    changed.write_text(tiny_csv.read_text(encoding="utf-8") + tiny_csv.read_text(encoding="utf-8").splitlines()[0])
    copy = Path(shutil.copytree(trained_run, tmp_path / "run"))
    manifest = json.loads((copy / "run.json").read_text())
    manifest["config"]["data"] = str(changed)
    for fingerprint in manifest["data"]:  # the run read the file now at `changed`
        fingerprint.update(source=str(changed), path=str(changed.resolve()))
    (copy / "run.json").write_text(json.dumps(manifest))
    argv = ["train", "agnews", "--data", str(changed), "--run-dir", str(copy)] + TINY_MODEL
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert line.count("changed since the run started") == 1, line


def test_ner_tagging_warns_when_texts_are_cut():
    """`EntityTagger` says how many texts had words past the last token the model read."""
    import numpy as np

    from tfattn.tasks.ner import EntityTagger

    def tag_first_two_words(texts):  # a model that reads 2 tokens, whatever the text
        batch = len(texts.numpy())
        offsets = np.zeros((batch, 4, 2), np.int32)
        offsets[:, 1:3] = [[0, 3], [4, 7]]
        word_ids = np.array([[-1, 0, 1, -1]] * batch)
        return {"offsets": offsets, "probabilities": np.full((batch, 4, 1), 1.0), "word_ids": word_ids}

    tagger = EntityTagger(tag_first_two_words, ["O"])
    with pytest.warns(UserWarning, match=r"1 of 2 texts are longer than max_length=2 tokens .* first 2 tokens only"):
        tagger(["one two", "one two three"])


def test_translation_warns_when_sources_are_cut():
    from tfattn.models.translation import TransformerTranslator, TranslationPreprocessor, build_sample

    preprocessor = TranslationPreprocessor.learn(
        ["hola amigo"] * 20, ["hello friend"] * 20, vocab_size=16, vocabulary="words", max_source_length=3
    )
    model = build_sample(TransformerTranslator(preprocessor, embed_dim=8, num_heads=1, ff_dim=8, num_blocks=1))
    with pytest.warns(UserWarning, match=r"1 of 2 texts are longer than max_length=2 tokens .* first 2 tokens"):
        model.translate(["hola", "hola amigo amigo hola"], max_length=2)


def test_a_changed_file_read_twice_is_one_clause(tmp_path):
    """A streamed run reads its file for training and validation: one change, one clause."""
    from tfattn.runs.manifest import _differences, fingerprint

    data = tmp_path / "a.csv"
    data.write_text("1,a,b\n")
    saved = {"config": {}, "data": [fingerprint(data), fingerprint(data)]}
    data.write_text("1,a,b\n2,c,d\n")
    wanted = {"config": {}, "data": [fingerprint(data), fingerprint(data)]}
    assert _differences(saved, wanted) == [f"data file {data} changed since the run started"]
