"""What produced a run folder (config and data fingerprints) and how far it got, so that a
repeated command resumes or stops instead of silently retraining or mixing two experiments.

`open_run(run_dir, config, data_sources)` is called by every trainer before anything is written:

- a new or empty folder starts a run;
- the same config and data resume an interrupted run, or, once it finished, stop with a
  message (`RunFinished`);
- anything else already in the folder (another config, changed data, files that are not a
  tfattn run) stops with `RunConflict`, naming what differs, and leaves the folder untouched;
- `overwrite=True` empties a tfattn run folder first and starts over.

The record is `run.json`: `{"config": {...}, "data": [fingerprint, ...], "status": ...}` with
status "training" (fit not done), "trained" (final weights saved, saving/evaluating the model
not done) or "finished".
"""

import hashlib
import json
import shutil
from pathlib import Path

MANIFEST_FILE = "run.json"
# Config fields that do not change what a run computes, so they may differ on a rerun.
UNCOMPARED_FIELDS = ("run_dir",)
TRAINING, TRAINED, FINISHED = "training", "trained", "finished"


class RunConflict(ValueError):
    """The run folder holds something other than this run; the message says what differs."""


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
    path = Path(run_dir) / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


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
    return clauses


def _is_run_folder(run_dir):
    return (run_dir / MANIFEST_FILE).is_file() or (run_dir / "config.json").is_file()


def open_run(run_dir, config, data_sources, overwrite=False):
    """Check `run_dir` against this run and prepare it; returns the manifest's status before
    this call: None (new run), `TRAINING` (resume fit) or `TRAINED` (only saving remains).

    Args:
        run_dir: the run folder.
        config: the resolved config as a dict (JSON-serializable).
        data_sources: the data files or dataset names the run reads.
        overwrite: empty an existing tfattn run folder and start over.

    Raises:
        RunFinished: the same run already finished.
        RunConflict: the folder holds another run, changed data, or files that are not a run.
    """
    run_dir = Path(run_dir)
    wanted = {"config": config, "data": [fingerprint(source) for source in data_sources], "status": TRAINING}
    if run_dir.exists() and not run_dir.is_dir():
        raise RunConflict(f"{run_dir}: not a folder; choose another --run-dir")
    occupied = run_dir.is_dir() and any(run_dir.iterdir())
    saved = read_manifest(run_dir) if occupied else None
    if occupied and overwrite:
        if not _is_run_folder(run_dir):
            raise RunConflict(
                f"{run_dir}: not a tfattn run folder (no run.json); refusing to empty it, choose another --run-dir"
            )
        shutil.rmtree(run_dir)
        occupied, saved = False, None
    if occupied:
        if saved is None:
            what = (
                "a run of an earlier tfattn (no run.json)"
                if _is_run_folder(run_dir)
                else "files that are not a tfattn run"
            )
            raise RunConflict(f"{run_dir} holds {what}; pass --overwrite to replace it, or choose another --run-dir")
        differences = _differences(saved, wanted)
        if differences:
            raise RunConflict(
                f"{run_dir} holds another run: {'; '.join(differences)}; pass --overwrite to replace it, "
                "or choose another --run-dir"
            )
        if saved.get("status") == FINISHED:
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
