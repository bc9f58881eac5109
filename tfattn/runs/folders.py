"""Run folders: what a training run leaves behind, read back the same way by every command.

A finished run folder holds `run.json` (status, data fingerprints, summary), `config.json` (the
resolved `TrainConfig`), `labels.json` (the label names), `model/` (the task model: `model.json`
+ weights, `tfattn.models.save_model`), `history.csv`, TensorBoard `logs/`, `checkpoints/` and
the validation report. Every family and task saves the same way, so opening a run
(`tfattn.tasks.base.open_run`) needs no guessing.
"""

import shutil
from pathlib import Path

import tf_keras as keras

from tfattn.data import save_label_map
from tfattn.files import write_json
from tfattn.models import load_model
from tfattn.models.task_models import TaskModel
from tfattn.runs.manifest import (
    DAMAGED_ADVICE,
    FINISHED,
    MODEL_DIR,
    TRAINED,
    TRAINING,
    DamagedRun,
    finish_run,
    open_run_folder,
    read_json_file,
    read_manifest,
    set_status,
)
from tfattn.training.callbacks import backup_dir, is_resuming
from tfattn.training.strategy import set_mixed_precision

LABEL_MAP_FILE = "labels.json"


def write_labels(run_dir, label_names):
    save_label_map(label_names, Path(run_dir) / LABEL_MAP_FILE)


def load_run_model(run_dir: str | Path) -> TaskModel:
    """The task model saved in a run folder."""
    return load_model(Path(run_dir) / MODEL_DIR)


def finished_run_config(run_dir: str | Path) -> dict:
    """The config dict of a finished run folder, after checking that the folder is one: its
    run.json says training finished and its model/ is there; any damage or missing piece is one
    line naming the file (`DamagedRun`, `FileNotFoundError`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir}: no config.json; is this a tfattn run folder?")
    manifest = read_manifest(run_dir)
    if manifest is not None and manifest.get("status") != FINISHED:
        raise FileNotFoundError(
            f"{run_dir}: training has not finished (status {manifest.get('status')!r}); "
            "rerun its train command to resume it"
        )
    config = read_json_file(run_dir / "config.json")
    if not isinstance(config, dict):
        raise DamagedRun(f"{run_dir / 'config.json'} is not a run config (a JSON object); {DAMAGED_ADVICE}")
    if not (run_dir / MODEL_DIR).is_dir():
        raise DamagedRun(f"{run_dir / MODEL_DIR} is missing from this finished run; {DAMAGED_ADVICE}")
    return config


def start_run(run_dir, config, data_sources, seed, mixed_precision=False, overwrite=False):
    """Open the run folder for this run (`tfattn.runs.manifest.open_run_folder`: refuses another run's
    folder, stops on a finished one), save `config` (a dict) as its config.json, say whether an
    interrupted run is being resumed, and seed Keras (same seed, same initial weights, dropout
    masks and shuffles, up to nondeterministic kernels).

    Returns the folder as a `Path`.
    """
    run_dir = Path(run_dir)
    status = open_run_folder(run_dir, config, data_sources, overwrite=overwrite)
    if status == TRAINING and is_resuming(run_dir):
        print(f"resuming the interrupted run in {run_dir}")
    elif status is not None:
        print(f"resuming the interrupted run in {run_dir}: training finished, saving the model")
    write_json(run_dir / "config.json", config)
    keras.utils.set_random_seed(seed)
    set_mixed_precision(mixed_precision)
    return run_dir


def mark_trained(run_dir):
    """Training is done and its weights are kept: a rerun only saves and evaluates."""
    set_status(run_dir, TRAINED)


def finish_training(run_dir, summary):
    """Mark the run finished with a one-line `summary`, and remove what only a resume needed."""
    finish_run(run_dir, summary)
    # frozen_cache: the frozen encoder's outputs (tfattn.tasks.frozen), large and now unneeded.
    for folder in (backup_dir(run_dir), Path(run_dir) / "phases", Path(run_dir) / "frozen_cache"):
        shutil.rmtree(folder, ignore_errors=True)


def write_report(run_dir, prefix: str, scores: dict, text: str) -> list[Path]:
    """Every task's report files: `PREFIX_scores.json` (the numbers, and what was scored) and
    `PREFIX_report.txt` (the table a person reads), in `run_dir`; returns their paths."""
    run_dir = Path(run_dir)
    text_path = run_dir / f"{prefix}_report.txt"
    json_path = write_json(run_dir / f"{prefix}_scores.json", scores)
    text_path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    return [json_path, text_path]
