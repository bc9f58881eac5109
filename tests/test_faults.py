"""Fault tests: `tfattn train` killed with SIGKILL mid-epoch, while a checkpoint is being
written, and while the final model is being saved; rerunning the same command resumes and ends
with exactly the validation result of an uninterrupted run with the same seed, and running it
once more changes nothing.

Each run is a subprocess of `fault_runner.py` (written below), which enables TensorFlow op
determinism, installs the fault for one kill point, and calls `tfattn.cli.main`. The families
are the from-scratch classifier, a tiny random BERT backbone, NER on that backbone, and a
TF-Hub pair exported from it (`tfattn export-hub`), which trains in two phases: one epoch on a
frozen encoder, then two fine-tuning epochs, so its kills land in the second phase.

Every family saves the same run folder: `model/` (`model.json` + a `weights` checkpoint, by
`tfattn.models.save_model`) and `phases/PHASE/` (the final weights of each training phase,
removed once the run finished).
"""

import csv
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tensorflow as tf

from tfattn.training.callbacks import resumed_epoch

pytestmark = pytest.mark.slow

EPOCHS = 3
KILL_EPOCH = 1  # the second epoch ("Epoch 2/3")
KILL_BATCH = 3  # the mid-epoch kill comes after this batch of KILL_EPOCH
POINTS = ("mid-epoch", "checkpoint", "final-save")
FAMILIES = ("scratch", "pretrained", "ner", "hub")
# Each family's phases: (name, first epoch, end epoch); their epochs add up to EPOCHS.
PHASES = {
    "scratch": [("train", 0, EPOCHS)],
    "pretrained": [("train", 0, EPOCHS)],
    "ner": [("train", 0, EPOCHS)],
    "hub": [("frozen", 0, 1), ("fine-tuned", 1, EPOCHS)],
}
RESUMING = "resuming the interrupted run"
# Runs go on side by side, this many at a time (results do not depend on it).
PARALLEL_RUNS = max(1, min(2, os.cpu_count() or 1))

RUNNER = textwrap.dedent(
    f'''
    """Runs `tfattn` with op determinism, after installing the fault for POINT (argv[1])."""
    import os
    import signal
    import sys
    from pathlib import Path

    KILL_EPOCH, KILL_BATCH = {KILL_EPOCH}, {KILL_BATCH}


    def die():
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


    def truncate(path):
        """Leave only the first half of `path`, as a write cut short would."""
        path = Path(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


    def kill_mid_epoch():
        import tf_keras as keras

        import tfattn.training.phases

        class KillMidEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if self.epoch == KILL_EPOCH and batch == KILL_BATCH:
                    die()

        original = tfattn.training.phases.standard_callbacks

        def standard_callbacks(*args, **kwargs):
            return original(*args, **kwargs) + [KillMidEpoch()]

        tfattn.training.phases.standard_callbacks = standard_callbacks  # what compile_and_fit calls


    def kill_during_checkpoint():
        """At the BackupAndRestore backup of KILL_EPOCH's end: the checkpoint's data and index
        files are written under the manager's next prefix, then the process dies before the
        `checkpoint` state file names them."""
        import tensorflow as tf

        original = tf.train.CheckpointManager.save

        def save(self, *args, **kwargs):
            epoch = getattr(self._checkpoint, "ckpt_saved_epoch", None)  # only BackupAndRestore's
            if epoch is not None and int(epoch.numpy()) == KILL_EPOCH:
                counter = self._checkpoint.save_counter
                counter.assign_add(1)
                self._checkpoint.write(f"{{self._prefix}}-{{int(counter.numpy())}}")
                die()
            return original(self, *args, **kwargs)

        tf.train.CheckpointManager.save = save


    def kill_during_final_save():
        """The final model is written (`model/`: model.json and the weights checkpoint), then its
        weights data cut to half their size, then the process dies."""
        import tfattn.tasks.encoder_task

        original = tfattn.tasks.encoder_task.save_model

        def save_model(model, folder):
            original(model, folder)
            data = list(Path(folder).glob("weights.data-*"))
            assert data, "no weights data file written"
            for path in data:
                truncate(path)
            die()

        tfattn.tasks.encoder_task.save_model = save_model


    def main():
        point, args = sys.argv[1], sys.argv[2:]
        from tfattn.quiet import start_tensorflow

        start_tensorflow()
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        if point == "mid-epoch":
            kill_mid_epoch()
        elif point == "checkpoint":
            kill_during_checkpoint()
        elif point == "final-save":
            kill_during_final_save()
        elif point != "none":
            raise SystemExit(f"unknown kill point {{point!r}}")
        from tfattn.cli import main as tfattn_main

        return tfattn_main(args)


    if __name__ == "__main__":
        sys.exit(main())
    '''
)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "fault_runner.py"
    path.write_text(RUNNER, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hub_dir(tiny_bert_dir, tmp_path_factory):
    """TF-Hub preprocess and encoder SavedModels of the tiny BERT."""
    from tfattn.models.hub import export_hub_bert

    folder = tmp_path_factory.mktemp("hub")
    export_hub_bert(tiny_bert_dir, folder, seq_length=32)
    return folder


@pytest.fixture(scope="module")
def commands(request, agnews_csv, conll_train, conll_valid, tiny_bert_dir):
    """family -> (run_dir -> the `tfattn` arguments of that family's run)."""
    common = ["--patience", "5"]
    epochs = ["--epochs", str(EPOCHS)]
    optimizer = ["--batch-size", "16", "--learning-rate", "1e-3"]
    pretrained = ["--max-length", "32", "--backbone", str(tiny_bert_dir)] + optimizer + epochs
    arguments = {
        "scratch": [
            "train",
            "agnews",
            "--data",
            str(agnews_csv),
            "--limit",
            "300",
            "--embed-dim",
            "16",
            "--ff-dim",
            "32",
            "--vocab-size",
            "2000",
            "--batch-size",
            "32",
            "--dropout",
            "0",
            "--token-dropout",
            "0",
        ]
        + epochs,
        "pretrained": ["train", "agnews", "--data", str(agnews_csv), "--limit", "200", "--dropout", "0"] + pretrained,
        "ner": [
            "train",
            "ner",
            "--data",
            str(conll_train),
            "--validation-data",
            str(conll_valid),
            "--limit",
            "200",
            "--validation-limit",
            "100",
            "--dropout",
            "0",
        ]
        + pretrained,
    }
    if any(
        item.callspec.params.get("family") == "hub"
        for item in request.session.items
        if item.module.__name__ == __name__ and hasattr(item, "callspec")
    ):
        hub = request.getfixturevalue("hub_dir")
        # --epochs counts the fine-tuning epochs, after the --freeze-epochs on a frozen encoder.
        arguments["hub"] = [
            "train",
            "agnews",
            "--data",
            str(agnews_csv),
            "--limit",
            "200",
            "--dropout",
            "0",
            "--hub-preprocess",
            str(hub / "preprocess"),
            "--hub-encoder",
            str(hub / "encoder"),
            "--freeze-epochs",
            "1",
            "--epochs",
            str(EPOCHS - 1),
        ] + optimizer
    return {family: (lambda run_dir, a=a: a + common + ["--run-dir", str(run_dir)]) for family, a in arguments.items()}


def run_tfattn(runner, point, args):
    result = subprocess.run([sys.executable, str(runner), point, *args], capture_output=True, text=True, timeout=600)
    result.log = f"\n$ {point} {' '.join(args)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-5000:]}"
    return result


def history_rows(run_dir):
    with open(Path(run_dir) / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def result_of(run_dir, family):
    """What must not change with interruptions: the validation result, and every epoch's
    losses and metrics (all but the wall-clock throughput), exactly."""
    run_dir = Path(run_dir)
    if family == "ner":
        validation = json.loads((run_dir / "validation_scores.json").read_text(encoding="utf-8"))
    else:
        metrics = json.loads((run_dir / "validation_scores.json").read_text(encoding="utf-8"))
        validation = {name: metrics[name] for name in ("accuracy", "macro_f1", "per_class", "confusion")}
    epochs = [{k: v for k, v in row.items() if k != "examples_per_second"} for row in history_rows(run_dir)]
    return {"validation": validation, "epochs": epochs}


def snapshot(run_dir):
    """Every file under `run_dir` with its size and modification time."""
    return {
        str(path.relative_to(run_dir)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(Path(run_dir).rglob("*"))
        if path.is_file()
    }


def kill_phase(family):
    """(name, first epoch) of the phase that KILL_EPOCH belongs to."""
    [(name, first)] = [(name, first) for name, first, end in PHASES[family] if first <= KILL_EPOCH < end]
    return name, first


def weights_readable(prefix):
    """Whether every tensor of the TensorFlow checkpoint at `prefix` can be read."""
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError):
        return False
    return True


def check_killed_state(run_dir, family, point):
    """The kill happened where it was meant to, and left what such a kill leaves."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    phase, phase_start = kill_phase(family)
    backup = run_dir / "backup" / phase
    # Epochs of the kill's phase that finished before it (BackupAndRestore backs up each one).
    backed_up = KILL_EPOCH - phase_start
    earlier_phases = [name for name, first, _ in PHASES[family] if first < phase_start]
    if point in ("mid-epoch", "checkpoint"):
        assert manifest["status"] == "training"
        assert not (run_dir / "model").exists()
        # Earlier phases finished: their final weights are kept, the kill's phase has none yet.
        kept = sorted(p.name for p in (run_dir / "phases").iterdir()) if (run_dir / "phases").exists() else []
        assert kept == sorted(earlier_phases)
        assert [int(row["epoch"]) for row in history_rows(run_dir)] == list(range(KILL_EPOCH))
        # The resume starts at the epoch that was killed.
        assert resumed_epoch(backup) == (KILL_EPOCH if backed_up else 0)
    if point == "checkpoint":
        # The new checkpoint's files are on disk, but the state file still names the previous
        # one (or, killed at the phase's first backup, none).
        latest = tf.train.latest_checkpoint(str(backup / "chief"))
        if backed_up:
            assert latest is not None and latest.endswith(f"ckpt-{backed_up}")
        else:
            assert latest is None
        assert (backup / "chief" / f"ckpt-{backed_up + 1}.index").is_file()
        assert list((backup / "chief").glob(f"ckpt-{backed_up + 1}.data-*"))
    if point == "final-save":
        assert manifest["status"] == "trained"  # the fit is over, its final weights kept
        for name, _, _ in PHASES[family]:
            assert (run_dir / "phases" / name / "weights.index").is_file()
        assert [int(row["epoch"]) for row in history_rows(run_dir)] == list(range(EPOCHS))
        # A half-written model is left behind, whose weights cannot be read.
        assert (run_dir / "model" / "model.json").is_file() and (run_dir / "model" / "weights.index").is_file()
        assert not weights_readable(run_dir / "model" / "weights")
        assert weights_readable(run_dir / "phases" / PHASES[family][-1][0] / "weights")
        assert not (run_dir / "validation_scores.json").exists()


def uninterrupted_then_repeated(runner, args, run_dir):
    """Train uninterrupted, then run the same command again (it must find the run finished)."""
    first = run_tfattn(runner, "none", args)
    if first.returncode != 0:
        return {"first": first}
    before = snapshot(run_dir)
    again = run_tfattn(runner, "none", args)
    return {"first": first, "before": before, "again": again, "after": snapshot(run_dir)}


def killed_then_resumed(runner, args, run_dir, family, point):
    """Kill the run at `point`, check what the kill left, then rerun the same command."""
    killed = run_tfattn(runner, point, args)
    if killed.returncode != -9:
        return {"killed": killed}
    try:
        check_killed_state(run_dir, family, point)
    except AssertionError as error:
        return {"killed": killed, "state_error": error}
    return {"killed": killed, "resumed": run_tfattn(runner, "none", args)}


@pytest.fixture(scope="module")
def runs(request, runner, commands, tmp_path_factory):
    """(family, point) -> (future of its runs, run folder); point "none" is the uninterrupted run.

    The runs the selected tests need are all started at once, PARALLEL_RUNS subprocesses at a
    time, in test order.
    """
    needed = []
    for item in request.session.items:
        if getattr(item, "module", None) is not None and item.module.__name__ == __name__ and hasattr(item, "callspec"):
            family, point = item.callspec.params["family"], item.callspec.params.get("point", "none")
            needed += [key for key in ((family, "none"), (family, point)) if key not in needed]
    root = tmp_path_factory.mktemp("runs")
    started = {}
    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        for family, point in needed:
            run_dir = root / family / point
            args = commands[family](run_dir)
            if point == "none":
                future = pool.submit(uninterrupted_then_repeated, runner, args, run_dir)
            else:
                future = pool.submit(killed_then_resumed, runner, args, run_dir, family, point)
            started[family, point] = future, run_dir
        yield started
        for future, _ in started.values():
            future.cancel()


def uninterrupted_run(runs, family):
    future, run_dir = runs[family, "none"]
    first = future.result()["first"]
    assert first.returncode == 0, first.log
    assert RESUMING not in first.stdout, first.log
    assert [int(row["epoch"]) for row in history_rows(run_dir)] == list(range(EPOCHS)), first.log
    return run_dir


# A kill while a checkpoint is written is the training callbacks' affair, the same code for every
# family of one phase: the from-scratch run covers it for the pretrained and NER ones (their saves
# and final saves differ, and are killed apiece); the two-phase TF-Hub run has its own.
KILLS = [(family, point) for family in FAMILIES for point in POINTS]
KILLS = [kill for kill in KILLS if kill not in (("pretrained", "checkpoint"), ("ner", "checkpoint"))]


@pytest.mark.parametrize(("family", "point"), KILLS)
def test_killed_run_resumes_to_the_uninterrupted_result(family, point, runs):
    expected = result_of(uninterrupted_run(runs, family), family)
    future, run_dir = runs[family, point]
    outcome = future.result()

    killed = outcome["killed"]
    assert killed.returncode == -9, killed.log
    if "state_error" in outcome:
        raise AssertionError(f"the kill left an unexpected state: {outcome['state_error']}{killed.log}")
    resumed = outcome["resumed"]
    assert resumed.returncode == 0, killed.log + resumed.log
    assert RESUMING in resumed.stdout, resumed.log
    assert [int(row["epoch"]) for row in history_rows(run_dir)] == list(range(EPOCHS)), resumed.log
    assert json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["status"] == "finished"
    assert not (run_dir / "phases").exists() and not (run_dir / "backup").exists()
    assert weights_readable(run_dir / "model" / "weights")
    assert result_of(run_dir, family) == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_finished_run_is_not_trained_again(family, runs):
    uninterrupted_run(runs, family)
    outcome = runs[family, "none"][0].result()
    again = outcome["again"]
    assert again.returncode == 0, again.log
    assert "already finished" in again.stdout, again.log
    assert RESUMING not in again.stdout, again.log
    assert outcome["after"] == outcome["before"]
