"""Multi-worker training: two worker processes on 127.0.0.1 (`tfattn train --workers ...`) train
the same model as one process with the same global batch and seed; a killed worker stops the
other with a one-line error in bounded time, and rerunning both resumes from the backup.

Exact equivalence needs equal halves of every global batch (Keras averages each worker's loss
over its own examples) and no dropout (each worker draws its own masks): the data are 80 long
texts, truncated to one length, so 64 training examples make 4 full batches of 16 per epoch.
What remains is the order of float sums in the all-reduce: losses agree to `RELATIVE_TOLERANCE`.
"""

import csv
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RELATIVE_TOLERANCE = 1e-5
EPOCHS = 3
# Worker 1 kills itself (SIGKILL) here: epoch 2 (0-based 1), after its second batch.
KILL_AT = "1,1"
# The survivor must stop within this many seconds of the kill (TensorFlow's health check
# noticed a silent peer 10 s after the kill here).
LOST_WORKER_SECONDS = 60

RUNNER = textwrap.dedent(
    """
    import os, signal, sys
    import tf_keras as keras
    import tfattn.training.phases

    kill_at = os.environ.get("TFATTN_TEST_KILL_AT")
    if kill_at:
        epoch_to_kill, batch_to_kill = map(int, kill_at.split(","))

        class KillAt(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if (self.epoch, batch) == (epoch_to_kill, batch_to_kill):
                    os.kill(os.getpid(), signal.SIGKILL)

        standard = tfattn.training.phases.standard_callbacks

        def with_kill(*args, **kwargs):
            return standard(*args, **kwargs) + [KillAt()]

        # Every phase of every task gets its callbacks here (`compile_and_fit`).
        tfattn.training.phases.standard_callbacks = with_kill

    from tfattn.cli import main

    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    path = tmp_path_factory.mktemp("multiworker") / "runner.py"
    path.write_text(RUNNER)
    return path


def write_long_texts(source, path):
    """80 AG News rows of `source` (20 per class) of at least 40 words, as a CSV at `path`: every
    text is truncated to the same length, so every batch is full and splits evenly between the
    two workers."""
    per_class = {label: [] for label in "1234"}
    with open(source, newline="", encoding="utf-8") as handle:
        for label, title, description in csv.reader(handle):
            if len(f"{title} {description}".split()) >= 40 and len(per_class[label]) < 20:
                per_class[label].append((label, title, description))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(row for rows in per_class.values() for row in rows)
    return path


@pytest.fixture(scope="module")
def long_texts_csv(agnews_csv, tmp_path_factory):
    return write_long_texts(agnews_csv, tmp_path_factory.mktemp("data") / "long.csv")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def arguments(family, data, run_dir, tiny_bert_dir):
    common = ["train", "agnews", "--data", str(data), "--validation-fraction", "0.2", "--batch-size", "16"]
    common += ["--epochs", str(EPOCHS), "--dropout", "0", "--seed", "3", "--run-dir", str(run_dir)]
    if family == "scratch":
        scratch = ["--max-length", "24", "--embed-dim", "16", "--ff-dim", "32", "--vocab-size", "500"]
        return common + scratch + ["--token-dropout", "0"]
    return common + ["--max-length", "16", "--backbone", str(tiny_bert_dir), "--learning-rate", "1e-3"]


def start(runner, args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    env.pop("TF_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, str(runner), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def run_workers(runner, args, kill_worker_1=False, temp_dir=None):
    """Both workers' (returncode, output, seconds from start to exit), run to the end;
    `temp_dir`: their TMPDIR (where worker 1 keeps its copy of the run folder)."""
    workers = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    processes = [
        start(
            runner,
            args + ["--workers", workers, "--worker-index", str(index)],
            {
                **({"TFATTN_TEST_KILL_AT": KILL_AT} if kill_worker_1 and index == 1 else {}),
                **({"TMPDIR": str(temp_dir)} if temp_dir else {}),
            },
        )
        for index in range(2)
    ]
    began = time.monotonic()
    finished = [None, None]
    outputs = [[], []]
    # Read both outputs as they come (a full pipe would block a worker) and note when each exits.
    threads = [threading.Thread(target=lambda i=i: outputs[i].extend(processes[i].stdout)) for i in range(2)]
    for thread in threads:
        thread.start()
    while None in finished and time.monotonic() - began < 600:
        for index, process in enumerate(processes):
            if finished[index] is None and process.poll() is not None:
                finished[index] = time.monotonic() - began
        time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=60)
    return [(process.wait(timeout=1), "".join(outputs[i]), finished[i]) for i, process in enumerate(processes)]


def history(run_dir):
    with open(Path(run_dir) / "history.csv", newline="") as handle:
        return [
            {k: float(v) for k, v in row.items() if k in ("epoch", "loss", "val_loss")}
            for row in csv.DictReader(handle)
        ]


def assert_same_history(got, expected):
    assert [row["epoch"] for row in got] == [row["epoch"] for row in expected]
    for got_row, expected_row in zip(got, expected):
        for key in ("loss", "val_loss"):
            assert got_row[key] == pytest.approx(expected_row[key], rel=RELATIVE_TOLERANCE), (key, got, expected)


@pytest.fixture(scope="module")
def one_process_history(runner, long_texts_csv, tiny_bert_dir, tmp_path_factory):
    """`history(family)`: the losses of the family's run in one process, trained once per module
    (the reference for both the two-worker run and the killed-and-resumed one)."""
    histories = {}

    def run_once(family):
        if family not in histories:
            run_dir = tmp_path_factory.mktemp(f"single_{family}")
            single = subprocess.run(
                [sys.executable, str(runner), *arguments(family, long_texts_csv, run_dir, tiny_bert_dir)],
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert single.returncode == 0, single.stdout + single.stderr[-3000:]
            histories[family] = history(run_dir)
        return histories[family]

    return run_once


@pytest.mark.parametrize("family", ["scratch", "pretrained"])
def test_two_workers_train_as_one_process_with_the_same_global_batch(
    family, runner, long_texts_csv, tiny_bert_dir, tmp_path, one_process_history
):
    (tmp_path / "tmp").mkdir()
    results = run_workers(
        runner, arguments(family, long_texts_csv, tmp_path / "workers", tiny_bert_dir), temp_dir=tmp_path / "tmp"
    )
    for returncode, output, _ in results:
        assert returncode == 0, output[-3000:]
    assert_same_history(history(tmp_path / "workers"), one_process_history(family))
    # Only the chief wrote: its run folder is complete, and no worker copy is left behind.
    assert (tmp_path / "workers" / "model" / "model.json").is_file()
    assert not list((tmp_path / "tmp").glob("tfattn-worker*"))
    assert not list((tmp_path / "workers").rglob("workertemp_*"))  # Keras's own per-worker backups
    assert "Traceback" not in results[1][1]


def test_a_killed_worker_stops_the_other_and_a_rerun_resumes(
    runner, long_texts_csv, tiny_bert_dir, tmp_path, one_process_history
):
    args = arguments("scratch", long_texts_csv, tmp_path / "run", tiny_bert_dir)
    (chief_code, chief_output, chief_seconds), (killed_code, _, killed_seconds) = run_workers(
        runner, args, kill_worker_1=True
    )
    assert killed_code == -signal.SIGKILL
    assert chief_code == 3, chief_output[-3000:]
    assert "error: lost contact with another worker" in chief_output
    assert "Traceback" not in chief_output
    assert chief_seconds - killed_seconds < LOST_WORKER_SECONDS
    assert len(history(tmp_path / "run")) == 1  # epoch 1 finished and was backed up

    results = run_workers(runner, args)
    for returncode, output, _ in results:
        assert returncode == 0, output[-3000:]
        assert "resuming the interrupted run" in output
    # The resumed run ends where an uninterrupted one does: two workers train as one process
    # (the test above), so the one-process run is the reference, and a second pair is not started.
    assert_same_history(history(tmp_path / "run"), one_process_history("scratch"))


def test_two_workers_stream_their_own_files(runner, long_texts_csv, tiny_bert_dir, tmp_path):
    """Streamed data are sharded by file: each worker reads two of the four files."""
    with open(long_texts_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    for index in range(4):
        with open(tmp_path / f"part-{index}.csv", "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows[index:64:4])
    with open(tmp_path / "valid.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows[64:])
    args = arguments("scratch", tmp_path / "part-*.csv", tmp_path / "run", tiny_bert_dir)
    args += ["--stream", "--validation-data", str(tmp_path / "valid.csv"), "--shuffle-buffer", "16"]
    results = run_workers(runner, args)
    for returncode, output, _ in results:
        assert returncode == 0, output[-3000:]
        assert "64 training / 16 validation examples from 4 files" in output
    assert [row["epoch"] for row in history(tmp_path / "run")] == list(range(EPOCHS))
