"""Folders written whole or not at all (a staging sibling renamed into place, stale staging
cleaned up), and exports that `--overwrite` may replace because tfattn wrote them."""

import json
import os
import shutil
import uuid
from pathlib import Path

# Every SavedModel tfattn exports carries this file; `--overwrite` replaces only such folders.
# assets.extra/ is the SavedModel's place for files the graph does not read (TF Serving's too).
EXPORT_MARKER = "assets.extra/tfattn_export.json"
# What a SavedModel folder holds besides the marker.
SAVED_MODEL_ENTRIES = frozenset(
    {"saved_model.pb", "saved_model.pbtxt", "variables", "assets", "assets.extra", "fingerprint.pb"}
    | {"keras_metadata.pb"}
)


def write_atomically(export_dir, write, overwrite=False):
    """Run `write(staging_folder)`, then rename the staging folder to `export_dir`.

    An interrupted export never leaves a half-written folder at `export_dir`; the staging
    folders that killed exports to the same target left behind (`.NAME.tmp-PID-*` of a process
    that no longer runs) are removed first. Without `overwrite`, an existing `export_dir` is an
    error. Returns `export_dir` as a `Path`.
    """
    export_dir = Path(export_dir)
    if export_dir.exists() and not overwrite:
        raise FileExistsError(f"{export_dir} already exists; pass overwrite=True (--overwrite) to replace it")
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(export_dir)
    staging = export_dir.with_name(f".{export_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(staging)
        if export_dir.exists():
            shutil.rmtree(export_dir)
        staging.rename(export_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return export_dir


def remove_stale_staging(export_dir):
    """Delete staging folders of `export_dir` whose writing process is gone; returns their count."""
    export_dir = Path(export_dir)
    removed = 0
    for staging in export_dir.parent.glob(f".{export_dir.name}.tmp-*"):
        pid = staging.name.rsplit(".tmp-", 1)[1].split("-")[0]
        if pid.isdigit() and _process_alive(int(pid)):
            continue  # another export to the same target is still writing
        shutil.rmtree(staging, ignore_errors=True)
        removed += 1
    return removed


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def describe_entries(names, shown=5):
    """`a, b, c and 4 more`: what a folder holds, for one-line messages."""
    names = sorted(names)
    listed = ", ".join(names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def is_tfattn_export(folder):
    """Whether `folder` is a SavedModel that tfattn exported: its marker says so, and it holds
    nothing but a SavedModel's files."""
    folder = Path(folder)
    marker = folder / EXPORT_MARKER
    try:
        written_by = json.loads(marker.read_text(encoding="utf-8")).get("written_by")
    except (OSError, ValueError, AttributeError):
        return False
    return written_by == "tfattn" and all(entry.name in SAVED_MODEL_ENTRIES for entry in folder.iterdir())


def check_export_target(export_dir, overwrite, protected=()):
    """Refuse (`FileExistsError`, one line naming the folder) an export target that exists,
    unless `overwrite` and it is a SavedModel tfattn exported (or an empty folder). Never replaced, whatever it
    holds: a symbolic link, the working folder or one holding it, and any of the `protected`
    folders (e.g. the run being exported) or a folder holding one."""
    export_dir = Path(export_dir)
    if not export_dir.exists() and not export_dir.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{export_dir} already exists; pass overwrite=True (--overwrite) to replace it")
    if export_dir.is_symlink():
        raise FileExistsError(
            f"{export_dir} is a symbolic link (to {os.readlink(export_dir)}); --overwrite never replaces a link's "
            "target: remove the link or choose another --out"
        )
    resolved = export_dir.resolve()
    for folder, what in [(Path.cwd(), "the working folder")] + [(Path(p), f"{p}") for p in protected]:
        folder = folder.resolve()
        if resolved == folder or resolved in folder.parents:
            raise FileExistsError(f"{export_dir} is or holds {what}; refusing to replace it, choose another --out")
    if not export_dir.is_dir():
        raise FileExistsError(f"{export_dir} is a file, not an export; refusing to replace it, choose another --out")
    if not any(export_dir.iterdir()):
        return  # an empty folder: nothing anyone could lose
    if not is_tfattn_export(export_dir):
        entries = [entry.name for entry in export_dir.iterdir()]
        raise FileExistsError(
            f"{export_dir} is not an export tfattn wrote (no {EXPORT_MARKER}, or other files); it holds "
            f"{describe_entries(entries) or 'nothing'}: refusing to replace it, remove it yourself or choose "
            "another --out"
        )


def write_export(export_dir, write, overwrite=False, protected=(), info=None):
    """Write a SavedModel folder whole (`write(staging)`, then `write_atomically`) with tfattn's
    marker (`EXPORT_MARKER`: `{"written_by": "tfattn", **info}`).

    An existing `export_dir` is replaced only with `overwrite` and only if tfattn exported it
    (`check_export_target`, also with the `protected` folders). Returns `export_dir` as a `Path`.
    """
    check_export_target(export_dir, overwrite, protected)

    def write_with_marker(staging):
        write(staging)
        marker = Path(staging) / EXPORT_MARKER
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"written_by": "tfattn", **(info or {})}, indent=2) + "\n", encoding="utf-8")

    return write_atomically(export_dir, write_with_marker, overwrite)


def write_json(path, payload):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
