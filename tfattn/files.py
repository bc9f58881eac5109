"""Folders written whole or not at all: a staging sibling renamed into place, stale staging cleaned up."""

import os
import shutil
import uuid
from pathlib import Path


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
