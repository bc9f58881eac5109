"""Translation on the task contract's training loop: two worker processes on 127.0.0.1 train the
translator of one process (the same global batch and seed), two workers stream their own pair
files, and a streamed run killed with SIGKILL resumes to the uninterrupted result.

The translation loss is a mean over the target tokens of the whole global batch (each replica
divides by the all-reduced token count), so the workers need not get equal halves of every
batch: the summed gradients are one process's, and so are the weights. Dropout is off (each
worker draws its own masks). The validation loss, computed from those weights, agrees to
`RELATIVE_TOLERANCE` (the order of float sums in the all-reduce). The training loss Keras
prints is a mean of the replicas' values weighted by their examples, which differs from the
token mean when a bucketed batch of odd size splits unevenly: it agrees to `SHOWN_LOSS_TOLERANCE`.
"""

import signal
import subprocess
import sys

import pytest
from test_multiworker import RELATIVE_TOLERANCE, assert_same_history, history, run_workers, runner, start  # noqa: F401

pytestmark = pytest.mark.slow

KILL_AT = "1,2"  # epoch 2 (0-based 1), after its third batch
SHOWN_LOSS_TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    """96 training pairs as one file and as two shards, and 40 validation pairs, all real."""
    from conftest import shared_data_dir

    lines = (shared_data_dir() / "translation" / "spa_eng_train.tsv").read_text(encoding="utf-8").splitlines()
    folder = tmp_path_factory.mktemp("pairs")
    (folder / "train.tsv").write_text("\n".join(lines[:96]) + "\n", encoding="utf-8")
    for index in range(2):
        (folder / f"part-{index}.tsv").write_text("\n".join(lines[index:96:2]) + "\n", encoding="utf-8")
    (folder / "valid.tsv").write_text("\n".join(lines[96:136]) + "\n", encoding="utf-8")
    return folder


def arguments(pair_files, run_dir, stream=False):
    data = (
        ["--data", str(pair_files / "part-*.tsv"), "--stream"] if stream else ["--data", str(pair_files / "train.tsv")]
    )
    tiny = ["--embed-dim", "16", "--num-heads", "2", "--ff-dim", "32", "--num-blocks", "1", "--vocab-size", "200"]
    return ["train", "translate", *data, "--validation-data", str(pair_files / "valid.tsv"), *tiny] + [
        *("--vocabulary", "words", "--max-length", "16", "--batch-size", "16", "--epochs", "2", "--dropout", "0"),
        *("--seed", "3", "--shuffle-buffer", "64", "--run-dir", str(run_dir)),
    ]


def run_alone(runner, args, env_extra=None):  # noqa: F811
    process = start(runner, args, env_extra)
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


def test_two_workers_translate_as_one_process(runner, pair_files, tmp_path):  # noqa: F811
    code, output = run_alone(runner, arguments(pair_files, tmp_path / "single"))
    assert code == 0, output[-3000:]
    results = run_workers(runner, arguments(pair_files, tmp_path / "workers"))
    for returncode, output, _ in results:
        assert returncode == 0, output[-3000:]
    workers, single = history(tmp_path / "workers"), history(tmp_path / "single")
    assert [row["epoch"] for row in workers] == [row["epoch"] for row in single] == [0, 1]
    for got, expected in zip(workers, single):
        assert got["val_loss"] == pytest.approx(expected["val_loss"], rel=RELATIVE_TOLERANCE), (workers, single)
        assert got["loss"] == pytest.approx(expected["loss"], rel=SHOWN_LOSS_TOLERANCE), (workers, single)
    assert (tmp_path / "workers" / "model" / "model.json").is_file()


def test_two_workers_stream_their_own_pair_files(runner, pair_files, tmp_path):  # noqa: F811
    """Streamed pairs are sharded by file, as streamed texts are: each worker reads one of the two
    files (so the batches, and the losses, are not one process's)."""
    results = run_workers(runner, arguments(pair_files, tmp_path / "run", stream=True))
    for returncode, output, _ in results:
        assert returncode == 0, output[-3000:]
        assert "translate: 96 training / 40 validation pairs" in output
    assert [row["epoch"] for row in history(tmp_path / "run")] == [0, 1]
    assert (tmp_path / "run" / "model" / "model.json").is_file()


def test_a_killed_streamed_translation_resumes_to_the_uninterrupted_result(runner, pair_files, tmp_path):  # noqa: F811
    code, _ = run_alone(runner, arguments(pair_files, tmp_path / "run", stream=True), {"TFATTN_TEST_KILL_AT": KILL_AT})
    assert code == -signal.SIGKILL
    assert len(history(tmp_path / "run")) == 1  # epoch 1 finished and was backed up
    code, output = run_alone(runner, arguments(pair_files, tmp_path / "run", stream=True))
    assert code == 0 and "resuming the interrupted run" in output, output[-3000:]
    code, output = run_alone(runner, arguments(pair_files, tmp_path / "uninterrupted", stream=True))
    assert code == 0, output[-3000:]
    assert_same_history(history(tmp_path / "run"), history(tmp_path / "uninterrupted"))


def test_mixed_precision_translation_trains_and_saves_float32_weights(pair_files, tmp_path):
    """--mixed-precision: bfloat16 compute, float32 weights, a finite loss; the run translates."""
    args = arguments(pair_files, tmp_path / "mixed") + ["--mixed-precision", "--epochs", "1"]
    result = subprocess.run([sys.executable, "-m", "tfattn.cli", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = [row["loss"] for row in history(tmp_path / "mixed")]
    assert len(losses) == 1 and 0 < losses[0] < 20
    translate = [sys.executable, "-m", "tfattn.cli", "translate", "--run", str(tmp_path / "mixed"), "Hola."]
    assert subprocess.run(translate, capture_output=True, text=True, timeout=600).returncode == 0
