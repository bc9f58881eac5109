"""The `tfattn` command line: train, evaluate, predict, plot attention and export models.

tfattn train agnews --data train.csv --run-dir runs/agnews
tfattn train math --data train.jsonl --backbone path/to/bert [--freeze]
tfattn train classify --data reviews.csv --text-column review --label-column sentiment
tfattn evaluate --run runs/agnews [--data test.csv]
tfattn predict --run runs/agnews "Stocks fell sharply on Monday"
tfattn attention --run runs/agnews "Stocks fell sharply" --out attention.png
tfattn attention --run runs/agnews "Stocks fell sharply" --html stocks.html [--compare runs/other]
tfattn export --run runs/agnews --out exported/agnews [--bucket-rows 16] [--dtype bfloat16]
tfattn export-hub --from path/to/hf_bert --out hub/bert
tfattn train agnews --hub-preprocess hub/bert/preprocess --hub-encoder hub/bert/encoder [--freeze-epochs 1]
tfattn train ner --data conll2003/train.txt --backbone path/to/bert --run-dir runs/ner
tfattn ner --run runs/ner "Dmitry flew from Moscow to Berlin."
tfattn train translate --data spa_eng_train.tsv --validation-data spa_eng_valid.tsv --model rnn|transformer
tfattn translate --run runs/translate "¿Dónde está la biblioteca?" [--beam 4 | --temperature 0.8 --top-p 0.9]
tfattn evaluate --run runs/translate [--data pairs.tsv] [--beam 4]   (sacreBLEU and chrF)
tfattn train lm --data tiny_shakespeare.txt --block-size 128 --run-dir runs/lm
tfattn generate --run runs/lm "ROMEO:" [--max-new-tokens 100] [--beam 4 | --temperature 0.8 --top-p 0.9 --seed 1]
tfattn evaluate --run runs/lm [--data text.txt]   (loss, perplexity, bits per character)
tfattn train images --data cifar10/train.tar [--model vit|cnn | --backbone google/vit-base-patch16-224]
tfattn predict --run runs/images cat.jpg ship.png
tfattn attention --run runs/images cat.jpg --html cat.html [--out cat.png]
tfattn export --run runs/images --out exported/images   (encoded image bytes in)

The command line names no task: `train NAME` and every command on a run folder go through the
task registry (`tfattn.tasks.registry`, the contract in `tfattn.tasks.base`).
"""

import argparse
import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from tfattn.data import DataError
from tfattn.runs.manifest import RunFinished, record_outputs, run_lock
from tfattn.tasks.config import NON_NEGATIVE_INT, NUMERIC_OPTIONS, POSITIVE_INT, checked_option
from tfattn.workers import WorkerLost

# `tfattn attention` writes files per text; more than this many texts needs an explicit --limit.
MAX_ATTENTION_FILES = 20
# How long `evaluate` waits for a run folder another process is writing before it gives up.
REPORT_LOCK_SECONDS = 10
OVERWRITE_HELP = "replace what the run folder holds (another run, or this one finished) and train again"
RUN_HELP = "a run folder written by 'tfattn train'"


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage block would bury the message)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_arguments(parser, config_class, skip=()):
    """One `--option` per config field, typed from its default and range-checked as it is
    parsed (`NUMERIC_OPTIONS`), so the CLI and the config dataclass cannot drift apart. A field
    defaulting to None takes its help from the config's `field_help`; the others show their default."""
    defaults = config_class()
    choices = config_class.field_choices()
    optional_types = _optional_field_types(config_class)
    helps = config_class.field_help()
    for field in fields(config_class):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        field_help = helps.get(field.name)
        if isinstance(default, bool) or optional_types.get(field.name) is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=field_help)
            continue
        value_type = optional_types[field.name] if default is None else type(default)
        if field.name in NUMERIC_OPTIONS:
            value_type = checked_option(field.name, NUMERIC_OPTIONS[field.name])
        help_text = field_help if default is None else f"default: {default}"
        parser.add_argument(flag, type=value_type, default=default, choices=choices.get(field.name), help=help_text)


def _optional_field_types(config_class):
    """The runtime type inside `X | None` (or `Optional[X]`) of each field (for fields defaulting to None)."""
    import types
    import typing

    hints = typing.get_type_hints(config_class)
    return {
        name: next(t for t in typing.get_args(hint) if t is not type(None))
        for name, hint in hints.items()
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
    }


class _TaskOptions:
    """The parser a task adds a command's options to (`Task.add_arguments`). Tasks that share an
    implementation offer the same option once; each task's options are remembered, so a run of
    one task refuses an option only another task reads (`_refuse_foreign_options`)."""

    def __init__(self, parser, owned):
        self._parser = parser
        self._owned = owned  # the set of (dest, flag) this task added or shares

    def add_argument(self, *flags, **kwargs):
        existing = self._parser._option_string_actions.get(flags[0])  # argparse has no public lookup
        action = existing or self._parser.add_argument(*flags, **kwargs)
        self._owned.add((action.dest, flags[0]))
        return action

    def add_argument_group(self, title):
        groups = {group.title: group for group in self._parser._action_groups}
        group = groups.get(title) or self._parser.add_argument_group(title)
        return _TaskOptions(group, self._owned)

    def add_mutually_exclusive_group(self, **kwargs):
        return _TaskOptions(self._parser.add_mutually_exclusive_group(**kwargs), self._owned)


def _add_task_options(parser, command, task_classes):
    """Let each task add its `command` options; `parser` remembers which task reads which."""
    owned = {}
    for name, cls in task_classes.items():
        owned[name] = set()
        cls.add_arguments(command, _TaskOptions(parser, owned[name]))
    parser.set_defaults(task_options=owned)


def _refuse_foreign_options(args, parser_defaults, task):
    """ValueError for an option given on the command line that `task` does not read."""
    own = {dest for dest, _ in args.task_options.get(task.name, ())}
    for options in args.task_options.values():
        for dest, flag in options:
            if dest not in own and getattr(args, dest) != parser_defaults.get(dest):
                raise ValueError(f"{flag} does not apply to {args.run}, a run of task {task.name!r}")


def _cmd_train(args):
    from tfattn.tasks.registry import task_class
    from tfattn.workers import parse_worker_addresses, set_worker_cluster

    task = task_class(args.task)
    if getattr(args, "workers", None):
        # The launcher: this process is worker --worker-index of --workers (TF_CONFIG says so).
        if args.strategy not in ("default", "multiworker"):
            raise ValueError(f"--workers trains with --strategy multiworker, not {args.strategy}")
        set_worker_cluster(parse_worker_addresses(args.workers), args.worker_index)
        args.strategy = "multiworker"
    elif getattr(args, "worker_index", None) is not None:
        raise ValueError("--worker-index needs --workers HOST:PORT,HOST:PORT,...")
    task(train_config(args)).train(overwrite=args.overwrite)


def train_config(args):
    """The (unresolved) config of a parsed `tfattn train TASK ...` command line: its task's fields."""
    from tfattn.tasks.registry import task_class

    config_class = task_class(args.task).config_class
    return config_class(**{f.name: getattr(args, f.name) for f in fields(config_class) if hasattr(args, f.name)})


def _texts_from(args):
    """The texts of a command: its arguments, then the lines of `--file` (UTF-8, blank lines skipped)."""
    texts = list(args.texts)
    if args.file:
        with open(args.file, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ValueError(
                        f"{args.file}, line {number}: not UTF-8 text (byte {error.start + 1} of the line)"
                    ) from None
                if line.strip():
                    texts.append(line.rstrip("\r\n"))
    if not texts:
        raise ValueError("give texts as arguments or --file")
    return texts


def _open_run(args, serving=False):
    """`(task, model)` of `--run`, refusing options the run's task does not read (and with
    `serving`, a run this serve command does not serve)."""
    from tfattn.tasks.base import open_run

    task, model = open_run(args.run, f"tfattn {args.command}", serving=serving)
    _refuse_foreign_options(args, args.parser_defaults, task)
    return task, model


def _cmd_serve(args):
    """`predict`, `ner`, `translate`: the lines the run's task serves for each text."""
    from tfattn.tasks.registry import task_class

    texts = _texts_from(args)
    if args.run:
        task, model = _open_run(args, serving=True)
    else:  # a source the serving task offers besides a run (translate --model)
        task, model = task_class(args.serving_task)(None), None
    for line in task.serve(model, texts, args):
        print(line)


def _cmd_evaluate(args):
    task, model = _open_run(args)
    text, write = task.evaluate(model, args)
    prefix = args.prefix or ("test" if args.data else "validation")
    with run_lock(args.run, wait_seconds=REPORT_LOCK_SECONDS):  # no other process writes the run meanwhile
        paths = write(args.run, prefix)
        record_outputs(args.run, paths)  # reports tfattn wrote: --overwrite may replace them
    print(text)
    print(f"wrote {', '.join(str(p) for p in paths)}")


def _cmd_attention(args):
    texts = _texts_from(args)
    if args.limit:
        texts = texts[: args.limit]
    elif len(texts) > MAX_ATTENTION_FILES:
        raise ValueError(
            f"{len(texts)} texts would write {len(texts)} files (one per text); pass --limit N to draw the first N "
            f"(up to {MAX_ATTENTION_FILES} are drawn without it)"
        )
    task, model = _open_run(args)
    paths = task.attention(model, texts, args)
    for path in paths:
        print(f"wrote {path}")
    # Files written into the run folder (a plot beside its model) are listed as tfattn's, so that
    # `train --overwrite` may replace them (`tfattn.runs.manifest.record_outputs`).
    run_dir = Path(args.run).resolve()
    if any(Path(path).resolve().parent == run_dir for path in paths):
        with run_lock(run_dir, wait_seconds=REPORT_LOCK_SECONDS):
            record_outputs(run_dir, paths)


def _cmd_export(args):
    task, model = _open_run(args)
    path, outputs = task.export(model, args)
    print(f"exported SavedModel to {path} (signature serving_default: {outputs})")


def _cmd_export_hub(args):
    from tfattn.models.hub import export_hub_bert

    preprocess_dir, encoder_dir = export_hub_bert(
        getattr(args, "from"), args.out, seq_length=args.seq_length, overwrite=args.overwrite
    )
    print(
        f"wrote TF-Hub BERT SavedModels: {preprocess_dir} (strings -> input_word_ids, input_mask, "
        f"input_type_ids) and {encoder_dir} (-> pooled_output, sequence_output, encoder_outputs, attention_probs)"
    )


def _add_texts_arguments(parser):
    parser.add_argument("texts", nargs="*", help="texts (or use --file)")
    parser.add_argument("--file", help="a UTF-8 file with one text per line")


def build_parser():
    # Imported here, once TensorFlow has started quietly (see `main`).
    from tfattn.tasks.registry import task_classes
    from tfattn.training.strategy import STRATEGIES

    tasks = task_classes()
    parser = OneLineErrorParser(prog="tfattn", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's start-up logs and repeated framework warnings"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on a task")
    train_tasks = train.add_subparsers(dest="task", required=True)
    for name, cls in tasks.items():
        sub = train_tasks.add_parser(name, help=cls.summary, description=cls.train_description())
        _add_config_arguments(sub, cls.config_class, skip=("task", "strategy", "run_dir"))
        sub.add_argument("--run-dir", default=f"runs/{name}", help=f"run folder (default runs/{name})")
        if any(field.name == "strategy" for field in fields(cls.config_class)):
            sub.add_argument("--strategy", choices=STRATEGIES, default="default", help="tf.distribute strategy")
            sub.add_argument(
                "--workers",
                metavar="HOST:PORT,HOST:PORT",
                help="train on several workers (multi-worker strategy): every worker's address, the chief first; "
                "run the same command on each with its --worker-index",
            )
            sub.add_argument(
                "--worker-index",
                type=checked_option("worker_index", NON_NEGATIVE_INT),
                help="this worker's place in --workers (0: the chief, which writes the run folder)",
            )
        sub.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    train.set_defaults(func=_cmd_train)

    # The commands that run a task's model on texts: `predict`, and the tasks' own (`ner`, `translate`).
    serving = {}
    for name, cls in tasks.items():
        serving.setdefault(cls.serve_command, {})[name] = cls
    for command, servers in serving.items():
        first_name, first = next(iter(servers.items()))
        helps = dict.fromkeys(cls.serve_help for cls in servers.values() if cls.serve_help)  # each once, in order
        sub = commands.add_parser(command, help="; ".join(helps))
        first.add_run_argument(sub, RUN_HELP)
        _add_texts_arguments(sub)
        _add_task_options(sub, "serve", servers)
        sub.set_defaults(func=_cmd_serve, serving_task=first_name)

    evaluate = commands.add_parser(
        "evaluate", help="score a run: accuracy and F1, entity F1, BLEU and chrF, or bits per character"
    )
    evaluate.add_argument("--run", required=True, help=RUN_HELP)
    evaluate.add_argument("--data", help="evaluate on this whole file (default: the run's validation split)")
    evaluate.add_argument("--prefix", help="file name prefix of the written report")
    _add_task_options(evaluate, "evaluate", tasks)
    evaluate.set_defaults(func=_cmd_evaluate)

    attention = commands.add_parser("attention", help="explore attention: an HTML page (--html) or PNG maps of texts")
    attention.add_argument("--run", required=True, help=RUN_HELP)
    _add_texts_arguments(attention)
    attention.add_argument("--out", help="PNG path (default attention.png when --html is not given; numbered per text)")
    attention.add_argument(
        "--limit",
        type=checked_option("limit", POSITIVE_INT),
        help=f"draw only the first N texts (needed above {MAX_ATTENTION_FILES})",
    )
    _add_task_options(attention, "attention", tasks)
    attention.set_defaults(func=_cmd_attention)

    export = commands.add_parser("export", help="SavedModel that serves raw strings")
    export.add_argument("--run", required=True, help=RUN_HELP)
    export.add_argument("--out", required=True, help="export folder")
    export.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    _add_task_options(export, "export", tasks)
    export.set_defaults(func=_cmd_export)

    for sub in (evaluate, attention, export, *(commands.choices[command] for command in serving)):
        sub.set_defaults(parser_defaults={action.dest: action.default for action in sub._actions})

    export_hub = commands.add_parser(
        "export-hub", help="TF-Hub BERT preprocess + encoder SavedModels from a Hugging Face BERT folder"
    )
    export_hub.add_argument(
        "--from", required=True, metavar="HF_BERT_FOLDER", help="local checkpoint folder with vocab.txt"
    )
    export_hub.add_argument("--out", required=True, help="folder to hold preprocess/ and encoder/")
    export_hub.add_argument(
        "--seq-length",
        type=checked_option("seq_length", POSITIVE_INT),
        default=128,
        help="preprocess output length (default 128)",
    )
    export_hub.add_argument("--overwrite", action="store_true", help="replace existing folders")
    export_hub.set_defaults(func=_cmd_export_hub)
    return parser


# Options that name files or folders: a quoted '~/x' means the home folder, as the shell would read it.
PATH_OPTIONS = (
    "data",
    "validation_data",
    "run_dir",
    "run",
    "compare",
    "out",
    "html",
    "file",
    "from",
    "backbone",
    "hub_preprocess",
    "hub_encoder",
    "embeddings_from",
)


def _expand_home(args):
    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value.startswith("~"):
            setattr(args, name, os.path.expanduser(value))


def _one_line_warnings(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "--verbose" in argv
    from tfattn.quiet import start_tensorflow

    start_tensorflow(verbose)
    if not verbose:
        warnings.formatwarning = _one_line_warnings
    args = build_parser().parse_args(argv)
    _expand_home(args)
    try:
        args.func(args)
    except RunFinished as finished:
        print(finished)
        return 0
    # Bad input (data, paths, checkpoints, options) ends in one line; bugs keep their traceback.
    except (DataError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except WorkerLost as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
