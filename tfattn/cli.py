"""The `tfattn` command line: train, evaluate, predict, plot attention and export models.

    tfattn train agnews --data train.csv --run-dir runs/agnews
    tfattn train math --data train.jsonl --backbone path/to/bert [--freeze]
    tfattn evaluate --run runs/agnews [--data test.csv]
    tfattn predict --run runs/agnews "Stocks fell sharply on Monday"
    tfattn attention --run runs/agnews "Stocks fell sharply" --out attention.png
    tfattn export --run runs/agnews --out exported/agnews
    tfattn export-hub --from path/to/hf_bert --out hub/bert
    tfattn train agnews --hub-preprocess hub/bert/preprocess --hub-encoder hub/bert/encoder [--freeze-epochs 1]
    tfattn train ner --data conll2003/train.txt --backbone path/to/bert --run-dir runs/ner
    tfattn ner --run runs/ner "Dmitry flew from Moscow to Berlin."
"""

import argparse
import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from tfattn.data import DataError
from tfattn.run_manifest import RunFinished
from tfattn.tasks.config import NUMERIC_OPTIONS, POSITIVE_INT

STRATEGIES = ("default", "mirrored", "multiworker")  # tfattn.training.get_strategy's names
# `tfattn attention` writes one PNG per text; more than this many needs an explicit --limit.
MAX_ATTENTION_FILES = 20


# Config fields that take one of a few words.
FIELD_CHOICES = {"pooling": ("cls", "mean"), "head": ("dense", "auto"), "positional": ("learned", "sinusoidal")}

# Help for the config fields whose default (None) says nothing by itself.
FIELD_HELP = {
    "data": "training data file (agnews also takes tfds:ag_news_subset)",
    "text_column": "text column of a csv/jsonl/xlsx file",
    "label_column": "label column of a csv/jsonl/xlsx file",
    "limit": "train on a subset of this many examples (smoke tests)",
    "backbone": "a pretrained Hugging Face BERT: hub name or local checkpoint folder",
    "hub_preprocess": "a TF-Hub BERT preprocess model: URL or SavedModel folder (see export-hub)",
    "hub_encoder": "the matching TF-Hub BERT encoder: URL or SavedModel folder",
    "freeze_epochs": "TF-Hub models: epochs on a frozen encoder before fine-tuning (default 1)",
    "validation_data": "NER validation file (default: valid.txt beside --data)",
    "validation_limit": "score on the first this many validation sentences",
    "max_length": "longest input in tokens (default 256 from scratch, 128 pretrained)",
    "batch_size": "default 64 from scratch, 32 pretrained",
    "epochs": "default 10 from scratch, 3 pretrained (fine-tuning epochs for TF-Hub models)",
    "learning_rate": "peak AdamW learning rate (default 1e-3 from scratch and frozen, 3e-5 fine-tuning)",
    "time_budget": "stop training after this many seconds",
}


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage block would bury the message)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_arguments(parser, config_class, skip=()):
    """One `--option` per config field, typed from its default and range-checked as it is
    parsed (`NUMERIC_OPTIONS`), so the CLI and the config dataclass cannot drift apart."""
    defaults = config_class()
    for field in fields(config_class):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
            continue
        value_type = _optional_field_types(config_class)[field.name] if default is None else type(default)
        if field.name in NUMERIC_OPTIONS:
            value_type = _checked(field.name, NUMERIC_OPTIONS[field.name])
        help_text = FIELD_HELP.get(field.name) if default is None else f"default: {default}"
        parser.add_argument(flag, type=value_type, default=default, choices=FIELD_CHOICES.get(field.name), help=help_text)


def _checked(name, bound):
    """An argparse type that parses the option `name` and checks it against `bound`."""
    def parse(text):
        try:
            return bound.check(name, text)
        except ValueError as error:
            # argparse already prefixes "argument --name:"; keep what follows the flag.
            raise argparse.ArgumentTypeError(str(error).split(" ", 1)[1]) from None

    parse.__name__ = bound.kind.__name__
    return parse


def _optional_field_types(config_class):
    """The runtime type inside `Optional[...]` of each field (for fields defaulting to None)."""
    import typing

    hints = typing.get_type_hints(config_class)
    return {name: next(t for t in typing.get_args(hint) if t is not type(None)) for name, hint in hints.items()
            if typing.get_origin(hint) is typing.Union}


def _config_from_args(config_class, args):
    return config_class(**{f.name: getattr(args, f.name) for f in fields(config_class) if hasattr(args, f.name)})


def _cmd_train(args):
    from tfattn.tasks.config import TrainConfig
    from tfattn.tasks.trainer import train

    train(_config_from_args(TrainConfig, args), overwrite=args.overwrite)


def _cmd_train_ner(args):
    from tfattn.tasks.ner import NerConfig, train_ner

    train_ner(_config_from_args(NerConfig, args), overwrite=args.overwrite)


def _cmd_ner(args):
    import json

    from tfattn.tasks.runs import load_run

    tagger = load_run(args.run)[0]
    if not hasattr(tagger, "attention_maps") or not hasattr(tagger, "tokenizer"):
        raise ValueError(f"{args.run} is not an NER run (train one with 'tfattn train ner')")
    texts = _texts_from(args)
    for text, entities in zip(texts, tagger(texts)):
        print(json.dumps({"text": text, "entities": entities}, ensure_ascii=False))


def _texts_from(args):
    texts = list(args.texts)
    if args.file:
        with open(args.file, encoding="utf-8") as handle:
            texts += [line.rstrip("\n") for line in handle if line.strip()]
    if not texts:
        raise SystemExit("error: give texts as arguments or --file")
    return texts


def _cmd_evaluate(args):
    from tfattn.data import read_labelled_texts
    from tfattn.evaluation import write_evaluation
    from tfattn.tasks.config import TrainConfig, load_examples, load_splits
    from tfattn.tasks.runs import evaluate_texts, load_run

    model, label_names, config = load_run(args.run)
    config = TrainConfig.from_dict(config)
    if args.data:
        prefix = args.prefix or "test"
        if config.task == "agnews":
            examples = load_examples(TrainConfig(task="agnews", data=args.data))
        else:
            examples = read_labelled_texts(args.data, config.text_column, config.label_column, label_names=label_names)
    else:
        _, examples = load_splits(config)
        prefix = args.prefix or "validation"
    report = evaluate_texts(model, examples)
    paths = write_evaluation(report, args.run, prefix=prefix, config={"data": examples.source, "run": str(args.run)})
    print(report.format_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


def _cmd_predict(args):
    from tfattn.tasks.runs import load_run, predict_proba

    model, label_names, _ = load_run(args.run)
    texts = _texts_from(args)
    for text, probabilities in zip(texts, predict_proba(model, texts)):
        best = int(probabilities.argmax())
        print(f"{label_names[best]}\t{probabilities[best]:.3f}\t{text}")


def _cmd_attention(args):
    from tfattn.attention import extract_attention
    from tfattn.plotting import plot_attention, plot_attention_comparison
    from tfattn.tasks.runs import load_run

    texts = _texts_from(args)
    if args.limit:
        texts = texts[: args.limit]
    elif len(texts) > MAX_ATTENTION_FILES:
        raise ValueError(
            f"{len(texts)} texts would write {len(texts)} PNG files; pass --limit N to plot the first N "
            f"(up to {MAX_ATTENTION_FILES} are plotted without it)"
        )
    maps = extract_attention(load_run(args.run)[0], texts)
    baseline = extract_attention(load_run(args.compare)[0], texts) if args.compare else [None] * len(maps)
    for index, (after, before) in enumerate(zip(maps, baseline)):
        out = args.out if len(maps) == 1 else f"{os.path.splitext(args.out)[0]}_{index}.png"
        title = after.text[:80]
        if before is None:
            plot_attention(after.attention, after.tokens, out, layers=args.layers, heads=args.heads, title=title)
        elif before.tokens != after.tokens:
            raise ValueError(f"{args.compare} and {args.run} tokenize differently; --compare needs the same tokenizer")
        else:
            plot_attention_comparison(
                before.attention, after.attention, after.tokens, out, layer=args.layers[0], heads=args.heads,
                labels=(Path(args.compare).name, Path(args.run).name), title=title,
            )
        print(f"wrote {out}")


def _cmd_export(args):
    from tfattn.export import export_text_classifier
    from tfattn.tasks.runs import load_run

    model, label_names, config = load_run(args.run)
    if config.get("task") == "ner":
        from tfattn.tasks.ner import export_entity_tagger

        path = export_entity_tagger(model, args.out, overwrite=args.overwrite)
        print(f"exported SavedModel to {path} (signature serving_default: input_ids, attention_mask, token_type_ids "
              "-> probabilities, label_ids, scores; tokenizer/ and tagger.json beside it)")
        return
    path = export_text_classifier(model, label_names, args.out, overwrite=args.overwrite)
    print(f"exported SavedModel to {path} (signature serving_default: texts -> probabilities, label, label_names)")


def _cmd_export_hub(args):
    from tfattn.hub import export_hub_bert

    preprocess_dir, encoder_dir = export_hub_bert(
        getattr(args, "from"), args.out, seq_length=args.seq_length, overwrite=args.overwrite
    )
    print(f"wrote TF-Hub BERT SavedModels: {preprocess_dir} (strings -> input_word_ids, input_mask, "
          f"input_type_ids) and {encoder_dir} (-> pooled_output, sequence_output, encoder_outputs, attention_probs)")


def build_parser():
    from tfattn.tasks.config import TASKS, TrainConfig

    parser = OneLineErrorParser(prog="tfattn", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's start-up logs and repeated framework warnings"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on a task")
    tasks = train.add_subparsers(dest="task", required=True)
    descriptions = {
        "agnews": "AG News topics. --data: an AG News CSV (official format) or tfds:ag_news_subset.",
        "math": "Math-problem topics. --data: a .jsonl/.csv/.xlsx file; columns via --text-column/--label-column "
        "(default problem/subject; the course's xlsx uses 'Задача'/'Тема').",
    }
    for task in TASKS:
        sub = tasks.add_parser(
            task,
            help=descriptions[task].split(".")[0],
            description=descriptions[task] + " Without --backbone: the from-scratch transformer; with "
            "--backbone NAME_OR_FOLDER: a pretrained Hugging Face BERT, fine-tuned (or frozen with --freeze); "
            "with --hub-preprocess and --hub-encoder: a TF-Hub BERT pair, frozen for --freeze-epochs, then fine-tuned.",
        )
        _add_config_arguments(sub, TrainConfig, skip=("task", "strategy", "run_dir"))
        sub.add_argument("--run-dir", default=f"runs/{task}", help=f"run folder (default runs/{task})")
        sub.add_argument("--strategy", choices=STRATEGIES, default="default", help="tf.distribute strategy")
        sub.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    from tfattn.tasks.ner import NerConfig

    ner_train = tasks.add_parser(
        "ner",
        help="CoNLL-2003 named entities",
        description="Named entities (CoNLL-2003). --data: a CoNLL file (2 or 4 columns) or hf:conll2003; "
        "--validation-data defaults to valid.txt beside it. --backbone: a Hugging Face BERT name or folder.",
    )
    _add_config_arguments(ner_train, NerConfig, skip=("task", "strategy", "run_dir"))
    ner_train.add_argument("--run-dir", default="runs/ner", help="run folder (default runs/ner)")
    ner_train.add_argument("--strategy", choices=STRATEGIES, default="default", help="tf.distribute strategy")
    ner_train.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    ner_train.set_defaults(func=_cmd_train_ner)
    train.set_defaults(func=_cmd_train)

    run_help = "a run folder written by 'tfattn train'"
    evaluate = commands.add_parser("evaluate", help="accuracy, macro-F1, report and confusion matrix")
    evaluate.add_argument("--run", required=True, help=run_help)
    evaluate.add_argument("--data", help="evaluate on this whole file (default: the run's validation split)")
    evaluate.add_argument("--prefix", help="file name prefix of the written report")
    evaluate.set_defaults(func=_cmd_evaluate)

    for name, func, help_text in (
        ("predict", _cmd_predict, "label and probability of each text"),
        ("ner", _cmd_ner, "named entities of each text, one JSON line per text (NER runs)"),
        ("attention", _cmd_attention, "plot attention maps of texts to PNG"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--run", required=True, help=run_help)
        sub.add_argument("texts", nargs="*", help="texts (or use --file)")
        sub.add_argument("--file", help="a UTF-8 file with one text per line")
        sub.set_defaults(func=func)
        if name == "attention":
            sub.add_argument("--out", default="attention.png", help="PNG path")
            sub.add_argument("--layers", type=int, nargs="+", default=[0], help="layer indices")
            sub.add_argument("--heads", type=int, nargs="+", default=None, help="head indices (default all)")
            sub.add_argument("--limit", type=_checked("limit", POSITIVE_INT), help=f"plot only the first N texts (needed above {MAX_ATTENTION_FILES})")
            sub.add_argument(
                "--compare", metavar="RUN", help="another run (e.g. the frozen backbone) drawn above, same layer"
            )

    export = commands.add_parser("export", help="SavedModel that serves raw strings")
    export.add_argument("--run", required=True, help=run_help)
    export.add_argument("--out", required=True, help="export folder")
    export.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    export.set_defaults(func=_cmd_export)

    export_hub = commands.add_parser(
        "export-hub", help="TF-Hub BERT preprocess + encoder SavedModels from a Hugging Face BERT folder"
    )
    export_hub.add_argument("--from", required=True, metavar="HF_BERT_FOLDER", help="local checkpoint folder with vocab.txt")
    export_hub.add_argument("--out", required=True, help="folder to hold preprocess/ and encoder/")
    export_hub.add_argument("--seq-length", type=_checked("seq_length", POSITIVE_INT), default=128, help="preprocess output length (default 128)")
    export_hub.add_argument("--overwrite", action="store_true", help="replace existing folders")
    export_hub.set_defaults(func=_cmd_export_hub)
    return parser


OVERWRITE_HELP = "replace what the run folder holds (another run, or this one finished) and train again"


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
    try:
        args.func(args)
    except RunFinished as finished:
        print(finished)
        return 0
    # Bad input (data, paths, checkpoints, options) ends in one line; bugs keep their traceback.
    except (DataError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
