"""What produced a run folder, how far it got, and who may write it: a repeated command resumes
or stops instead of silently retraining, mixing two experiments or deleting someone's files.

Every trainer calls, in this order:

- `locked_run_folder(run_dir, overwrite)`: one process per run folder. An exclusive lock
  (`fcntl.flock` on the folder itself, so no lock file is ever written) is taken before anything
  in the folder is read or written and held for the run's life; the kernel releases it when the
  process exits, however it exits, so a killed run never leaves a stale lock. A second process
  stops at once, naming the holder's pid (read from /proc/locks). A folder holding files that are
  not a tfattn run is refused before anything is written into it.
- `open_run_folder(run_dir, config, data_sources, overwrite)`:
  - a new or empty folder starts a run;
  - the same config and data resume an interrupted run, or, once it finished, stop with a
    message (`RunFinished`);
  - anything else (another config, changed data) stops with `RunConflict`, naming what differs,
    and leaves the folder untouched;
  - `overwrite=True` empties the folder first, but only when everything in it was written by
    tfattn (`check_replaceable_run`): never the working folder or one holding it, never through
    a symbolic link, never a folder holding anything else.

The record is `run.json`: `{"written_by": "tfattn", "config": {...}, "data": [fingerprint, ...],
"status": ..., "outputs": [...]}` with status "training" (fit not done), "trained" (final weights
saved, saving/evaluating the model not done) or "finished"; `outputs` lists the reports and
plots that later commands (`tfattn evaluate`, `tfattn attention`) wrote into the folder, so that
`--overwrite` knows them as tfattn's. A damaged record is named in one line (`DamagedRun`), never a traceback.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from tfattn.files import describe_entries, is_tfattn_export

MANIFEST_FILE = "run.json"
MODEL_DIR = "model"
# The marker that says tfattn wrote a run.json (and so may empty its folder). It is the record's
# first key, so a truncated run.json still shows it (`MARKER_TEXT`).
WRITTEN_BY = {"written_by": "tfattn"}
MARKER_TEXT = '"written_by": "tfattn"'
# Config fields that do not change what a run computes, so they may differ on a rerun.
UNCOMPARED_FIELDS = ("run_dir",)
TRAINING, TRAINED, FINISHED = "training", "trained", "finished"
# What training writes into a run folder (files and folders); reports written later are listed
# in run.json's "outputs", and SavedModels exported into the folder carry their own marker.
RUN_ENTRIES = frozenset(
    {
        MANIFEST_FILE,
        f".{MANIFEST_FILE}.tmp",
        "config.json",
        "labels.json",
        MODEL_DIR,
        "history.csv",
        "logs",
        "checkpoints",
        "backup",
        "phases",
        "frozen_cache",
        "vocab.txt",
        "validation_scores.json",
        "validation_report.txt",
        "validation_confusion.png",
    }
)


class RunConflict(ValueError):
    """The run folder holds something other than this run; the message says what differs."""


class DamagedRun(ValueError):
    """A file of a run folder is missing, truncated or not what tfattn wrote; the message names it."""


class RunLocked(RunConflict):
    """Another process holds the run folder's lock; the message names its pid."""


class RunFinished(Exception):
    """The run folder already holds this run, finished; `summary` says what it reached."""

    def __init__(self, run_dir, summary=""):
        self.run_dir = Path(run_dir)
        self.summary = summary
        super().__init__(
            f"{run_dir}: this run already finished{' (' + summary + ')' if summary else ''}; nothing to do "
            "(pass --overwrite to train it again, or choose another --run-dir)"
        )


def fingerprint(source):
    """What identifies a data source: for a file its absolute path, size and SHA-256 of its
    bytes (read in chunks, so any size works); for a dataset name (`tfds:...`, `hf:...`) the name."""
    path = Path(str(source)).expanduser()
    if not path.is_file():
        return {"source": str(source)}
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {
        "source": str(source),
        "path": str(path.resolve()),
        "size": path.stat().st_size,
        "sha256": digest.hexdigest(),
    }


def read_manifest(run_dir):
    """The run record of `run_dir` (a dict), or None when the folder has no run.json.

    Raises:
        DamagedRun: run.json is not valid JSON or not a run record.
    """
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    manifest = read_json_file(path, advice=DAMAGED_ADVICE)
    if not isinstance(manifest, dict) or not {"config", "status"} <= set(manifest):
        what = f"a JSON {type(manifest).__name__}" if not isinstance(manifest, dict) else "no config or status"
        raise DamagedRun(f"{path} is not a tfattn run record ({what}); {DAMAGED_ADVICE}")
    return manifest


DAMAGED_ADVICE = "delete the folder, or train it again with --overwrite"


def read_json_file(path, advice=DAMAGED_ADVICE):
    """The JSON value in `path`; `DamagedRun` naming the file, the place and `advice` otherwise."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedRun(f"{path} is missing; {advice}") from None
    except UnicodeDecodeError as error:
        raise DamagedRun(f"{path} is not UTF-8 text (byte {error.start}); {advice}") from None
    except json.JSONDecodeError as error:
        raise DamagedRun(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); {advice}"
        ) from None


def _write_manifest(run_dir, manifest):
    path = Path(run_dir) / MANIFEST_FILE
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    staging.replace(path)  # atomic: a kill leaves the old record or the new one, never half


def set_status(run_dir, status):
    """Record how far the run got (`TRAINING`, `TRAINED`, `FINISHED`)."""
    manifest = read_manifest(run_dir)
    manifest["status"] = status
    _write_manifest(run_dir, manifest)


def _differences(saved, wanted):
    """Human-readable differences between two manifests' config and data, one clause each."""
    clauses = []
    saved_config, wanted_config = saved.get("config", {}), wanted["config"]
    for name in sorted(set(saved_config) | set(wanted_config)):
        if name in UNCOMPARED_FIELDS:
            continue
        before, after = saved_config.get(name), wanted_config.get(name)
        if before != after:
            clauses.append(f"{name} {before!r} -> {after!r}")
    saved_data, wanted_data = saved.get("data", []), wanted["data"]
    for index in range(max(len(saved_data), len(wanted_data))):
        before = saved_data[index] if index < len(saved_data) else {}
        after = wanted_data[index] if index < len(wanted_data) else {}
        if before == after:
            continue
        if before.get("source") == after.get("source"):
            clauses.append(f"data file {after.get('source')} changed since the run started")
        else:
            clauses.append(f"data {before.get('source')!r} -> {after.get('source')!r}")
    # One file read twice (training and validation data) changes once.
    return list(dict.fromkeys(clauses))


def foreign_entries(run_dir, manifest=None):
    """The entries of `run_dir` that tfattn did not write: not a run file (`RUN_ENTRIES`), not a
    report listed in the manifest's outputs, not a SavedModel tfattn exported there."""
    run_dir = Path(run_dir)
    outputs = set(manifest.get("outputs", [])) if isinstance(manifest, dict) else set()
    return [
        entry.name
        for entry in run_dir.iterdir()
        if entry.name not in RUN_ENTRIES
        and entry.name not in outputs
        and not (entry.is_dir() and not entry.is_symlink() and is_tfattn_export(entry))
    ]


def check_not_working_folder(folder, option):
    """`RunConflict` when `folder` is the working folder or holds it: never to be emptied."""
    resolved, here = Path(folder).resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise RunConflict(f"{option} {folder} is the working folder or holds it; refusing to empty it")


def check_replaceable_run(run_dir):
    """`RunConflict` unless `--overwrite` may empty `run_dir`: a real folder (not a symbolic
    link), not the working folder or one holding it, whose run.json carries tfattn's marker (when
    run.json is damaged: whose text still has it, as the first key of a truncated record does),
    and which holds nothing else."""
    run_dir = Path(run_dir)
    if run_dir.is_symlink():
        raise RunConflict(
            f"{run_dir} is a symbolic link (to {os.readlink(run_dir)}); --overwrite never empties a link's target: "
            "remove the link or choose another --run-dir"
        )
    check_not_working_folder(run_dir, "--run-dir")
    try:
        manifest = read_manifest(run_dir)
    except DamagedRun:
        manifest = None
        if MARKER_TEXT not in (run_dir / MANIFEST_FILE).read_text(encoding="utf-8", errors="replace"):
            raise
    else:
        if manifest is None or manifest.get("written_by") != WRITTEN_BY["written_by"]:
            why = "no run.json" if manifest is None else "its run.json has no tfattn marker (an older tfattn?)"
            raise RunConflict(
                f"{run_dir} is not a folder tfattn can replace ({why}); it holds "
                f"{describe_entries(p.name for p in run_dir.iterdir())}: delete it yourself, or choose another "
                "--run-dir"
            )
    foreign = foreign_entries(run_dir, manifest)
    if foreign:
        raise RunConflict(
            f"{run_dir} holds files tfattn did not write ({describe_entries(foreign)}); refusing to empty it: "
            "move them away, or choose another --run-dir"
        )


def _empty_run_folder(run_dir):
    """Delete everything in `run_dir` (not the folder itself: this process holds its lock)."""
    for entry in Path(run_dir).iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def open_run_folder(run_dir, config, data_sources, overwrite=False):
    """Check `run_dir` against this run and prepare it; returns the manifest's status before
    this call: None (new run), `TRAINING` (resume fit) or `TRAINED` (only saving remains).
    Call it holding the folder's lock (`locked_run_folder`).

    Args:
        run_dir: the run folder.
        config: the resolved config as a dict (JSON-serializable).
        data_sources: the data files or dataset names the run reads.
        overwrite: empty an existing tfattn run folder and start over.

    Raises:
        RunFinished: the same run already finished.
        RunConflict: the folder holds another run, changed data, or files that are not a run.
        DamagedRun: run.json is unreadable, or a finished run lost its model.
    """
    run_dir = Path(run_dir)
    wanted = {**WRITTEN_BY, "config": config, "data": [fingerprint(source) for source in data_sources]}
    wanted["status"] = TRAINING
    if run_dir.exists() and not run_dir.is_dir():
        raise RunConflict(f"{run_dir}: not a folder; choose another --run-dir")
    occupied = run_dir.is_dir() and any(run_dir.iterdir())
    if occupied and overwrite:
        check_replaceable_run(run_dir)
        _empty_run_folder(run_dir)
        occupied = False
    if occupied:
        saved = read_manifest(run_dir)
        if saved is None:
            raise RunConflict(
                f"{run_dir} holds files that are not a tfattn run ({describe_entries(foreign_entries(run_dir))}); "
                "choose another --run-dir"
            )
        differences = _differences(saved, wanted)
        if differences:
            raise RunConflict(
                f"{run_dir} holds another run: {'; '.join(differences)}; pass --overwrite to replace it, "
                "or choose another --run-dir"
            )
        if saved.get("status") == FINISHED:
            if not (run_dir / MODEL_DIR).is_dir():
                raise DamagedRun(f"{run_dir / MODEL_DIR} is missing from this finished run; {DAMAGED_ADVICE}")
            raise RunFinished(run_dir, saved.get("summary", ""))
        return saved.get("status", TRAINING)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_manifest(run_dir, wanted)
    return None


def finish_run(run_dir, summary):
    """Mark the run finished, with a one-line `summary` of its result for later reruns."""
    manifest = read_manifest(run_dir)
    manifest.update(status=FINISHED, summary=summary)
    _write_manifest(run_dir, manifest)


def record_outputs(run_dir, paths):
    """List report files a command wrote into the run folder in its run.json, so that
    `--overwrite` knows them as tfattn's. Paths outside the folder are not recorded. Call it
    holding the folder's lock (`run_lock`)."""
    run_dir = Path(run_dir)
    names = [Path(path).name for path in paths if Path(path).resolve().parent == run_dir.resolve()]
    if not names or not (run_dir / MANIFEST_FILE).is_file():
        return
    manifest = read_manifest(run_dir)
    manifest["outputs"] = sorted(set(manifest.get("outputs", [])) | set(names))
    _write_manifest(run_dir, manifest)


@contextlib.contextmanager
def locked_run_folder(run_dir, overwrite=False):
    """Hold `run_dir`'s lock for the body: one process per run folder.

    Refuses, before writing anything: a path that is not a folder, a folder holding files that
    are not a tfattn run (no run.json), and with `overwrite` a symbolic link. The folder is
    created if needed.

    Raises:
        RunLocked: another process holds the lock (the message names its pid).
        RunConflict: as above.
    """
    run_dir = Path(run_dir)
    if overwrite and run_dir.is_symlink():
        check_replaceable_run(run_dir)  # raises, naming the link's target
    if run_dir.exists() and not run_dir.is_dir():
        raise RunConflict(f"{run_dir}: not a folder; choose another --run-dir")
    if run_dir.is_dir():
        names = {entry.name for entry in run_dir.iterdir()}
        if names and MANIFEST_FILE not in names:
            raise RunConflict(
                f"{run_dir} holds files that are not a tfattn run ({describe_entries(names)}); "
                "choose another --run-dir" + ("; --overwrite replaces only tfattn runs" if overwrite else "")
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        yield run_dir


@contextlib.contextmanager
def run_lock(run_dir, wait_seconds=0.0):
    """Hold `run_dir`'s lock for the body (`RunLocked` if another process holds it for longer
    than `wait_seconds`): `fcntl.flock` on the folder itself. Locking the folder, not a
    file in it, writes nothing: a refused command leaves the folder exactly as it was."""
    descriptor = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise RunLocked(
                        f"{run_dir} is in use by another tfattn process (pid {_lock_holder(run_dir)}); wait for it "
                        "to finish, or choose another --run-dir"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock; the kernel does the same when a process dies


def _lock_holder(path):
    """The pid holding a flock on `path`, from /proc/locks (Linux), or "unknown"."""
    status = os.stat(path)
    key = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "unknown"
    for line in lines:
        fields = line.split()  # e.g. "1: FLOCK ADVISORY WRITE 1234 fe:00:2195597 0 EOF"
        if "FLOCK" in fields and "->" not in fields and key in fields:
            return fields[fields.index(key) - 1]
    return "unknown"
