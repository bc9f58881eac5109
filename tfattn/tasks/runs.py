"""Run folders: what a training run leaves behind, read back the same way by every command.

A finished run folder holds `run.json` (status, data fingerprints, summary), `config.json` (the
resolved `TrainConfig`), `labels.json` (the label names), `model/` (the task model: `model.json`
+ weights, `tfattn.models.save_model`), `history.csv`, TensorBoard `logs/`, `checkpoints/` and
the validation report. Every family and task saves the same way, so `load_run` needs no
guessing.
"""

from pathlib import Path

from tfattn.data import load_label_map, save_label_map
from tfattn.models import load_model
from tfattn.models.task_models import TaskModel
from tfattn.run_manifest import FINISHED, read_manifest
from tfattn.training import read_json

MODEL_DIR = "model"
LABEL_MAP_FILE = "labels.json"


def write_labels(run_dir, label_names):
    save_label_map(label_names, Path(run_dir) / LABEL_MAP_FILE)


def load_run_model(run_dir: str | Path) -> TaskModel:
    """The task model saved in a run folder."""
    return load_model(Path(run_dir) / MODEL_DIR)


def load_run(run_dir: str | Path) -> tuple[TaskModel, list[str], dict]:
    """`(model, label_names, config)` of a finished run: a `TextClassifier` or `TokenClassifier`
    (raw strings in), its label names and its config dict."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir}: no config.json; is this a tfattn run folder?")
    manifest = read_manifest(run_dir)
    if manifest is not None and manifest.get("status") != FINISHED:
        raise FileNotFoundError(
            f"{run_dir}: training has not finished (status {manifest.get('status')!r}); "
            "rerun its train command to resume it"
        )
    if not (run_dir / MODEL_DIR / "model.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no saved model in {MODEL_DIR}/; was it written by this tfattn version?")
    return load_run_model(run_dir), load_label_map(run_dir / LABEL_MAP_FILE), read_json(run_dir / "config.json")
