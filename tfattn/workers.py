"""Training on several workers (hosts or processes) with `tf.distribute.MultiWorkerMirroredStrategy`.

Each worker runs the same `tfattn train` command; `TF_CONFIG` (written by `set_worker_cluster`
from `--workers HOST:PORT,HOST:PORT --worker-index I`) tells it the cluster and its place in it.
Worker 0 is the chief: it alone writes the run folder. Every other worker runs the same code
on a private copy of the run folder, taken before anyone writes, so that all workers make the
same decisions (resume from the same epoch, same vocabulary, same early stop), and which is
removed when it finishes. TensorFlow reads the run folder's `backup/` itself on every worker
when resuming, so the run folder must be one that every worker reaches under the same path
(the same host, or a shared filesystem).

A worker that dies makes the others stop within TensorFlow's health-check interval with
`WorkerLost`; rerunning every worker's command resumes from the last finished epoch.
"""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

TF_CONFIG = "TF_CONFIG"
# What a worker's private copy of the run folder leaves out: nothing in them steers training.
_NOT_COPIED = ("logs", "model")


class WorkerLost(RuntimeError):
    """Another worker stopped answering (crashed, killed or unreachable) during training."""


def parse_worker_addresses(text: str) -> list[str]:
    """`"HOST:PORT,HOST:PORT"` as a list; ValueError naming `--workers` for anything else."""
    addresses = [part.strip() for part in text.split(",")]
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--workers takes HOST:PORT,HOST:PORT,...; got {address!r} in {text!r}")
    if len(set(addresses)) != len(addresses):
        raise ValueError(f"--workers lists an address twice: {text!r}")
    return addresses


def set_worker_cluster(addresses: Sequence[str], index: int) -> dict:
    """Write `TF_CONFIG` for worker `index` of the cluster `addresses` (worker 0 is the chief)."""
    if not 0 <= index < len(addresses):
        raise ValueError(f"--worker-index must be in 0..{len(addresses) - 1} for {len(addresses)} workers, got {index}")
    config = {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}}
    os.environ[TF_CONFIG] = json.dumps(config)
    return config


def check_worker_cluster() -> dict:
    """The cluster `TF_CONFIG` describes; ValueError in one line when it is missing or malformed
    (without it, TensorFlow would silently train alone)."""
    text = os.environ.get(TF_CONFIG)
    if not text:
        raise ValueError(
            "--strategy multiworker needs the cluster: pass --workers HOST:PORT,HOST:PORT --worker-index I "
            "(or set TF_CONFIG)"
        )
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        index = int(config["task"]["index"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"TF_CONFIG is not a worker cluster description: {text!r}") from None
    if not isinstance(workers, list) or not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG: task index {index} is not one of the {len(workers)} workers")
    return config


@dataclass(frozen=True)
class WorkerRole:
    """This process's place among the workers of a strategy."""

    index: int = 0
    count: int = 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def worker_role(strategy) -> WorkerRole:
    """Which worker this process is under `strategy` (0 of 1 for any single-worker strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return WorkerRole()
    workers = resolver.cluster_spec().as_dict().get("worker", [])
    return WorkerRole(index=int(resolver.task_id or 0), count=max(1, len(workers)))


def barrier(strategy) -> None:
    """Wait until every worker gets here (a collective sum of ones; checks that they all came)."""
    import tensorflow as tf

    @tf.function
    def one():
        return tf.ones([])

    arrived = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(one), axis=None)
    if int(arrived) != strategy.num_replicas_in_sync:
        raise WorkerLost(f"{int(arrived)} of {strategy.num_replicas_in_sync} replicas reached the barrier")


@contextlib.contextmanager
def worker_run_dir(run_dir: str | Path, strategy) -> Iterator[Path]:
    """The folder this worker writes its run into: `run_dir` for the chief (and any
    single-worker strategy); for another worker, a private copy of `run_dir` as it was before
    anyone wrote to it, removed on exit."""
    run_dir = Path(run_dir)
    role = worker_role(strategy)
    if role.count == 1:
        yield run_dir
        return
    private = None
    if not role.is_chief:
        private = Path(tempfile.mkdtemp(prefix=f"tfattn-worker{role.index}-")) / run_dir.name
        if run_dir.is_dir():
            shutil.copytree(run_dir, private, ignore=shutil.ignore_patterns(*_NOT_COPIED))
    try:
        # The chief writes only once every worker has its copy of the folder as it was.
        with lost_workers_reported():
            barrier(strategy)
        yield run_dir if role.is_chief else private
    finally:
        if private is not None:
            shutil.rmtree(private.parent, ignore_errors=True)


@contextlib.contextmanager
def lost_workers_reported():
    """Turn TensorFlow's errors for a vanished worker into one-line `WorkerLost`."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError) as error:
        reason = _reason(error)
        raise WorkerLost(
            f"lost contact with another worker ({reason[:200]}); rerun every worker's command to resume "
            "from the last finished epoch"
        ) from None


def _reason(error) -> str:
    """The line of a TensorFlow error that says what happened to the other worker."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "unhealthy" in line or "aborted" in line or "heartbeat" in line:
            line = line.split("}} ", 1)[-1]
            # "The following tasks are unhealthy (...):" is followed by the tasks' names.
            return f"{line} {lines[index + 1]}" if line.endswith(":") and index + 1 < len(lines) else line
    return next((line for line in lines if not line.endswith("execution error:")), type(error).__name__)
