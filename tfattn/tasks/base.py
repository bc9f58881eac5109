"""The task contract: what every tfattn task gives the trainer, the run folder and the command line.

A task (text classification, NER, translation) is one class on `Task`, registered by name in
`tfattn.tasks.registry`. The command line never names a task: `tfattn train NAME` builds the
task's config from its flags and calls `Task.train`; every other command opens a run folder
(`open_run`), which finds the task in the run's `config.json`, and calls the task's verb:

    task, model = open_run("runs/agnews", "tfattn predict")
    task.serve(model, ["Stocks fell"], args)      # lines to print (labels, entities, translations)
    text, write = task.evaluate(model, args)       # scores, and a function writing the report files
    task.attention(model, texts, args)             # plots; the paths written
    task.export(model, args)                       # a SavedModel serving raw strings

Adding a task: subclass `Task` (or `EncoderTask`, for a head on a BERT-style encoder trained by
`tfattn.training.loop.train`), fill in the verbs, and add one line to `TASKS` in the registry.
"""

import os
from pathlib import Path


class Task:
    """One task: its name, help, config and verbs. An instance holds the run's resolved config.

    Class attributes:
        name: the registry name (`tfattn train NAME`), also saved as the config's `task`.
        summary: one line for `tfattn train --help`; description: the task's `--help` text.
        config_class: the dataclass of everything that defines a run (saved as `config.json`).
        serve_command: the command that runs the task's model on texts (`tfattn predict`, ...).
        serve_help: that command's one-line help.
        monitor: the epoch metric that picks the best epoch and stops training early.
        explorable: whether the attention explorer draws its runs (the task's `explain`).
    """

    name = ""
    summary = ""
    description = ""
    config_class = None
    serve_command = "predict"
    serve_help = ""
    monitor = "val_loss"
    explorable = False

    def __init__(self, config):
        self.config = config

    def explain(self, model, text: str, name: str, text_pair: str | None = None, max_tokens: int = 64):
        """The attention explorer's `tfattn.explorer.Explanation` of `model` (this task's run,
        named `name` on the page) on `text`; only explorable tasks have one."""
        raise NotImplementedError(f"the attention explorer does not draw runs of task {self.name!r}")

    # --- the command line
    @classmethod
    def add_arguments(cls, command: str, parser) -> None:
        """Add the options this task needs on `command` ("serve", "evaluate" or "export").
        Tasks sharing an implementation add them once (the command line calls each one once)."""

    @classmethod
    def train_description(cls) -> str:
        """The `tfattn train NAME --help` text."""
        return cls.description

    @classmethod
    def add_run_argument(cls, parser, help_text: str) -> None:
        """The `--run` option of the task's serve command (a task may offer other sources)."""
        parser.add_argument("--run", required=True, help=help_text)

    # --- training
    def train(self, overwrite: bool = False, callbacks=()):
        """Train a run of `self.config` into its run folder (`tfattn.training.loop.train`, the
        one loop of every task); returns the validation report."""
        from tfattn.training.loop import train

        return train(self.config, callbacks=callbacks, overwrite=overwrite)

    def prepare_training(self):
        """The training and validation data, read and checked (and the model's source checked)
        before the run folder is touched; handed to `fit`."""
        raise NotImplementedError

    def data_sources(self) -> list[str]:
        """The files a run reads, fingerprinted in its run.json (a changed file is a new run)."""
        raise NotImplementedError

    def fit(self, run_dir: Path, prepared, strategy, callbacks=()):
        """Build the model in `strategy`'s scope, train it (`tfattn.training.phases.compile_and_fit`),
        save it into `run_dir` and write the validation report; returns the report."""
        raise NotImplementedError

    # --- a finished run (`open_run` builds the task from the run's config)
    def load_model(self, run_dir: Path):
        """The model a finished run saved, raw strings in."""
        raise NotImplementedError

    def serve(self, model, texts: list[str], args) -> list[str]:
        """The lines the serve command prints for `texts`."""
        raise NotImplementedError

    def evaluate(self, model, args):
        """`(text, write)`: the scores of `model` on `args.data` (default: the run's validation
        data) as text to print, and `write(run_dir, prefix) -> paths` writing the report files."""
        raise NotImplementedError

    def attention(self, model, texts: list[str], args) -> list[Path]:
        """Draw the attention of `model` on `texts`; returns the files written."""
        raise NotImplementedError

    def export(self, model, args) -> tuple[Path, str]:
        """Write a SavedModel serving raw strings at `args.out`; returns it and its signature in
        words ("texts -> label, probabilities")."""
        raise NotImplementedError


def open_run(run_dir: str | Path, command: str = "", expect: type[Task] = Task, serving: bool = False):
    """`(task, model)` of a finished run folder: the task named by its `config.json` (looked up
    in the registry, never imported from a name in the file) and the model it saved.

    Damage and missing pieces are one line naming the file (`tfattn.runs.folders.finished_run_config`);
    a run whose task is not an `expect`, or with `serving` one whose serve command is not
    `command`, is refused naming the command that serves it, before its model is loaded."""
    from tfattn.runs.folders import finished_run_config
    from tfattn.tasks.registry import task_class

    config = finished_run_config(run_dir)
    cls = task_class(config.get("task"), where=f"{Path(run_dir) / 'config.json'}")
    if not issubclass(cls, expect) or (serving and command != f"tfattn {cls.serve_command}"):
        raise wrong_command(run_dir, cls, command)
    task = cls(cls.config_class.from_dict(config))
    return task, task.load_model(Path(run_dir))


def wrong_command(run_dir, task_class: type[Task], command: str) -> ValueError:
    """The error for a run handed to a command that does not serve its task."""
    return ValueError(
        f"{run_dir} is a run of task {task_class.name!r}, not for '{command or 'this command'}': "
        f"use 'tfattn {task_class.serve_command} --run {run_dir} TEXT'"
    )


def numbered_path(path, index: int, count: int) -> str:
    """`path`, or `stem_<index>.suffix` when one command writes several files of the kind."""
    if count == 1:
        return path
    stem, suffix = os.path.splitext(path)
    return f"{stem}_{index}{suffix}"
