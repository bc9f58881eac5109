"""The one training loop of every task: read the data, open the run folder, fit, report."""

from collections.abc import Sequence
from dataclasses import asdict

import tf_keras as keras

from tfattn.runs.folders import start_run
from tfattn.runs.manifest import locked_run_folder
from tfattn.tasks.registry import task_of
from tfattn.training.strategy import get_strategy
from tfattn.workers import lost_workers_reported, worker_run_dir


def train(config, callbacks: Sequence[keras.callbacks.Callback] = (), overwrite: bool = False):
    """Train any registered task: read its data, open the run folder, fit, evaluate on the
    validation data and save everything under `config.run_dir`.

    Args:
        config: a task's config (`TrainConfig`, `TranslationConfig`); None fields take the
            task's and family's defaults.
        callbacks: extra Keras callbacks, run after the standard ones.
        overwrite: replace a run folder that holds another (or the same, finished) run.

    Returns:
        The task's validation report: a `ClassificationReport`, for NER the `entity_scores`
        dict, for translation the BLEU and chrF scores.

    Raises:
        tfattn.runs.manifest.RunFinished: the run folder holds this run, already finished.
        tfattn.runs.manifest.RunConflict: it holds something else (another config or data).
        tfattn.models.weights.TrainingDiverged: the loss became NaN or infinite.
    """
    config = config.resolve()
    # First: a multi-worker strategy must exist before any other TensorFlow work in the process.
    strategy = get_strategy(config.strategy)
    task = task_of(config)
    prepared = task.prepare_training()
    with worker_run_dir(config.run_dir, strategy) as run_dir, lost_workers_reported():
        # One process per run folder, for the whole run (each worker locks the folder it writes).
        with locked_run_folder(run_dir, overwrite):
            run_dir = start_run(
                run_dir, asdict(config), task.data_sources(), config.seed, config.mixed_precision, overwrite
            )
            return task.fit(run_dir, prepared, strategy, callbacks)
