"""Every task tfattn trains, by name: the one table the command line and `open_run` look tasks up in.

Adding a task is one module with a `tfattn.tasks.base.Task` subclass and one line here. Classes
are named by import path and imported on first use, so reading the table imports nothing, and a
run folder can only ever name one of these classes.
"""

from importlib import import_module

TASKS = {
    "classify": "tfattn.tasks.classification:ClassifyTask",  # any labelled texts: csv, tsv, jsonl, xlsx
    "agnews": "tfattn.tasks.classification:AgNewsTask",  # presets of classify
    "math": "tfattn.tasks.classification:MathTopicsTask",
    "ner": "tfattn.tasks.ner:NerTask",
    "translate": "tfattn.tasks.translation:TranslationTask",
    "lm": "tfattn.tasks.language_model:LanguageModelTask",  # causal language model (GPT)
    "images": "tfattn.tasks.images:ImageClassificationTask",  # Vision Transformer, CNN, Hugging Face ViT/DeiT
}


def task_class(name, where: str = ""):
    """The `Task` subclass registered as `name`; ValueError naming the known tasks otherwise
    (`where`: the file that named it, for the message)."""
    if not isinstance(name, str) or name not in TASKS:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}unknown task {name!r}; tfattn's tasks are {', '.join(TASKS)}")
    module_name, class_name = TASKS[name].split(":")
    return getattr(import_module(module_name), class_name)


def task_classes():
    """`{name: Task subclass}` of every registered task, in the table's order."""
    return {name: task_class(name) for name in TASKS}


def task_of(config):
    """The registered task of `config` (`tfattn.tasks.registry`), holding it."""
    from tfattn.tasks.registry import task_class

    return task_class(config.task)(config)
