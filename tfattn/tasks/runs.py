"""Run folders: what a training run leaves behind, read back the same way by every command.

A finished run folder holds `run.json` (status, data fingerprints, summary), `config.json` (the
resolved `TrainConfig`), `labels.json` (the label names), `model/` (the task model: `model.json`
+ weights, `tfattn.models.save_model`), `history.csv`, TensorBoard `logs/`, `checkpoints/` and
the validation report. Every family and task saves the same way, so opening a run
(`tfattn.tasks.base.open_run`) needs no guessing.
"""

from pathlib import Path

from tfattn.data import save_label_map
from tfattn.models import load_model
from tfattn.models.task_models import TaskModel
from tfattn.run_manifest import DAMAGED_ADVICE, FINISHED, MODEL_DIR, DamagedRun, read_json_file, read_manifest

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
