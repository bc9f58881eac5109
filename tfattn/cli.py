"""The `tfattn` command line: train, evaluate, predict, plot attention and export models.

tfattn train agnews --data train.csv --run-dir runs/agnews
tfattn train math --data train.jsonl --backbone path/to/bert [--freeze]
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
"""

import argparse
import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from tfattn.data import DataError
from tfattn.run_manifest import RunFinished, record_outputs, run_lock
from tfattn.tasks.config import FINITE_FLOAT, NON_NEGATIVE_INT, NUMERIC_OPTIONS, POSITIVE_INT, TOKENIZERS
from tfattn.workers import WorkerLost

# `tfattn attention` writes files per text; more than this many texts needs an explicit --limit.
# The attention views a PNG can draw (`tfattn.explorer.explain`).
VIEW_NAMES = ("raw", "mean", "rollout", "gradient")
MAX_ATTENTION_FILES = 20
# How long `evaluate` waits for a run folder another process is writing before it gives up.
REPORT_LOCK_SECONDS = 10


def _field_choices():
    """Config fields that take one of a few words."""
    from tfattn.models import POOLINGS
    from tfattn.tasks.translation import MODELS, SOURCE_COLUMNS, VOCABULARIES

    return {
        "pooling": POOLINGS,
        "positional": ("learned", "sinusoidal"),
        "tokenizer": TOKENIZERS,
        "model": MODELS,
        "source_column": SOURCE_COLUMNS,
        "vocabulary": VOCABULARIES,
    }


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
    "validation_data": "validation file: NER (default: valid.txt beside --data), or with --stream",
    "stream": "stream the training data from --data (files, a folder or a glob; .csv, .jsonl, .tsv, .tfrecord) "
    "instead of reading it into memory; needs --validation-data",
    "pooling": "cls, mean or pooled (the encoder's pooled_output); default mean from scratch, cls pretrained, "
    "pooled for TF-Hub",
    "validation_limit": "score on the first this many validation sentences",
    "max_length": "longest input in tokens (default 256 from scratch, 128 pretrained)",
    "batch_size": "default 64 from scratch, 32 pretrained",
    "epochs": "default 10 from scratch, 3 pretrained (fine-tuning epochs for TF-Hub models), 50 with --freeze",
    "learning_rate": "peak AdamW learning rate (default from scratch 1e-3, math 5e-4; --freeze 1e-2; fine-tuning 3e-5)",
    "dropout": "dropout rate before the head (and inside the from-scratch encoder); default 0.1, 0 with --freeze",
    "patience": "epochs without a better validation score before stopping early; default 2; with --freeze, "
    "the run's epochs (no early stop)",
    "time_budget": "stop training after this many seconds",
    "tokenizer": "from scratch: words, or wordpiece (sub-words learned from the training texts); default: "
    "the task's (math wordpiece, else words)",
    "token_dropout": "from scratch: rate of whole input tokens dropped in training; default: the task's "
    "(math 0.1, else 0)",
    "bigram_buckets": "from scratch: rows of hashed bigram embeddings added to the token embeddings "
    "(fastText-style; 0: none); default: the task's (math 65536, else 0)",
    "word_shape": "ner: add an embedding of each token's casing in the raw text to its vector (default: on)",
    "embeddings_from": "from scratch: initialise the token table from this Hugging Face BERT's word-piece "
    "embeddings (name or folder; PCA to --embed-dim) and read text with its vocabulary",
}


# Where a translation option means something else than the classifier option of the same name.
TRANSLATION_HELP = {
    "data": "sentence pairs: an Anki-format file (English TAB other language TAB attribution) or a two-column TSV",
    "validation_data": "validation pairs, same format (default: --validation-fraction of --data, by target sentence)",
    "limit": "train on the first this many pairs (smoke tests)",
    "validation_limit": "validate (loss and BLEU) on the first this many pairs",
    "embed_dim": "embedding size (default 256)",
    "num_heads": "transformer: attention heads (default 4)",
    "ff_dim": "transformer: feed-forward size (default 1024)",
    "num_blocks": "transformer: blocks in the encoder and in the decoder (default 2)",
    "units": "rnn: GRU and attention size (default 256)",
    "vocab_size": "entries per language learned from the training pairs (default 8000 subword, 20000 words)",
    "learning_rate": "peak AdamW learning rate (default 1e-3 transformer, 3e-3 rnn)",
    "time_budget": "stop training after this many seconds",
}


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage block would bury the message)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_arguments(parser, config_class, skip=(), field_help=None):
    """One `--option` per config field, typed from its default and range-checked as it is
    parsed (`NUMERIC_OPTIONS`), so the CLI and the config dataclass cannot drift apart.
    `field_help` overrides `FIELD_HELP` (the help of fields defaulting to None)."""
    field_help = {**FIELD_HELP, **(field_help or {})}
    defaults = config_class()
    choices = _field_choices()
    optional_types = _optional_field_types(config_class)
    for field in fields(config_class):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if isinstance(default, bool) or optional_types.get(field.name) is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=field_help.get(field.name)
            )
            continue
        value_type = optional_types[field.name] if default is None else type(default)
        if field.name in NUMERIC_OPTIONS:
            value_type = _checked(field.name, NUMERIC_OPTIONS[field.name])
        help_text = field_help.get(field.name) if default is None else f"default: {default}"
        parser.add_argument(flag, type=value_type, default=default, choices=choices.get(field.name), help=help_text)


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
    """The runtime type inside `X | None` (or `Optional[X]`) of each field (for fields defaulting to None)."""
    import types
    import typing

    hints = typing.get_type_hints(config_class)
    return {
        name: next(t for t in typing.get_args(hint) if t is not type(None))
        for name, hint in hints.items()
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
    }


def _config_from_args(config_class, args):
    return config_class(**{f.name: getattr(args, f.name) for f in fields(config_class) if hasattr(args, f.name)})


def _cmd_train(args):
    from tfattn.tasks.config import TrainConfig
    from tfattn.tasks.trainer import train
    from tfattn.workers import parse_worker_addresses, set_worker_cluster

    if args.task == "translate":
        from tfattn.tasks.translation import TranslationConfig, train_translation

        train_translation(_config_from_args(TranslationConfig, args), overwrite=args.overwrite)
        return
    if args.workers:
        # The launcher: this process is worker --worker-index of --workers (TF_CONFIG says so).
        if args.strategy not in ("default", "multiworker"):
            raise ValueError(f"--workers trains with --strategy multiworker, not {args.strategy}")
        set_worker_cluster(parse_worker_addresses(args.workers), args.worker_index)
        args.strategy = "multiworker"
    elif args.worker_index is not None:
        raise ValueError("--worker-index needs --workers HOST:PORT,HOST:PORT,...")
    train(_config_from_args(TrainConfig, args), overwrite=args.overwrite)


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


def _cmd_ner(args):
    import json

    from tfattn.tasks.ner import EntityTagger

    tagger = EntityTagger.from_run(args.run, aggregation_strategy=args.aggregation_strategy)
    texts = _texts_from(args)
    for text, entities in zip(texts, tagger(texts)):
        print(json.dumps({"text": text, "entities": entities}, ensure_ascii=False))


def _is_translation_run(run_dir):
    """Whether `run_dir` holds a `tfattn train translate` run (its config says so)."""
    from tfattn.run_manifest import read_json_file

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return False
    config = read_json_file(path)
    return isinstance(config, dict) and config.get("task") == "translate"


def _add_decoding_arguments(parser):
    """The `tfattn.decoding.DecodingOptions` flags: greedy by default, --beam N, or sampling."""
    parser.add_argument("--beam", type=_checked("beam", POSITIVE_INT), default=1, help="beam width (default 1: greedy)")
    parser.add_argument(
        "--length-penalty",
        type=_checked("length_penalty", FINITE_FLOAT),
        default=1.0,
        help="beam search: a hypothesis scores log p / length ** this (default 1.0; above 0 favours longer ones)",
    )
    parser.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="beam search: stop once --beam hypotheses have ended (default on)",
    )
    parser.add_argument("--sample", action="store_true", help="draw tokens at random (implied by the next three)")
    parser.add_argument("--temperature", type=float, help="sampling: divide the logits by this (default 1.0)")
    parser.add_argument("--top-k", type=_checked("top_k", POSITIVE_INT), help="sampling: only the k most likely tokens")
    parser.add_argument(
        "--top-p", type=float, help="sampling: only the most likely tokens whose probability reaches p (nucleus)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0: the same draws every run)")
    parser.add_argument(
        "--max-length",
        type=_checked("max_length", POSITIVE_INT),
        help="most tokens generated per sentence (default: the model's longest target)",
    )


def _decoding_options(args):
    """`DecodingOptions` keywords from `_add_decoding_arguments`' flags."""
    sample = args.sample or any(value is not None for value in (args.temperature, args.top_k, args.top_p))
    if sample and args.beam > 1:
        raise ValueError("choose --beam or sampling (--sample, --temperature, --top-k, --top-p), not both")
    options = {
        "beam_width": args.beam,
        "length_penalty": args.length_penalty,
        "early_stopping": args.early_stopping,
        "max_length": args.max_length,
        "sample": sample,
        "seed": args.seed,
    }
    for name in ("temperature", "top_k", "top_p"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    from tfattn.decoding import DecodingOptions

    DecodingOptions(**options)  # checks the values, naming the option
    return options


def _evaluate_translation(args):
    """`tfattn evaluate` of a translation run: sacreBLEU and chrF of its translations of --data
    (default: the run's validation pairs), written beside the run as JSON plus the translations."""
    from tfattn.data.translation import read_translation_pairs
    from tfattn.tasks.translation import evaluate_translations, load_run_translator, read_run_config, validation_pairs
    from tfattn.training import write_json

    model = load_run_translator(args.run, command="tfattn evaluate")
    config = read_run_config(args.run)
    pairs = read_translation_pairs(args.data, config.source_column) if args.data else validation_pairs(config)
    options = _decoding_options(args)
    result = evaluate_translations(model, pairs, **options)
    prefix = args.prefix or ("test" if args.data else "validation")
    strategy = "beam" if options["beam_width"] > 1 else "sample" if options["sample"] else "greedy"
    scores = {key: result[key] for key in ("bleu", "chrf", "sentences", "seconds")}
    with run_lock(args.run, wait_seconds=REPORT_LOCK_SECONDS):  # no other process writes the run meanwhile
        path = write_json(
            Path(args.run) / f"{prefix}_{strategy}_scores.json", {"data": pairs.path, "decoding": options, **scores}
        )
        translations = Path(args.run) / f"{prefix}_{strategy}_translations.txt"
        translations.write_text("".join(line + "\n" for line in result["translations"]), encoding="utf-8")
        record_outputs(args.run, [path, translations])  # reports tfattn wrote: --overwrite may replace them
    print(
        f"BLEU {scores['bleu']:.2f}  chrF {scores['chrf']:.2f}  ({scores['sentences']} pairs, {strategy}, "
        f"{scores['sentences'] / max(result['seconds'], 1e-9):.1f} sentences/s)"
    )
    print(f"wrote {path}, {translations}")


def _cmd_translate(args):
    texts = _texts_from(args)
    options = _decoding_options(args)
    if args.run:
        from tfattn.tasks.translation import load_run_translator

        model = load_run_translator(args.run, command="tfattn translate")
        translations = model.translate(texts, **options)
    else:
        from tfattn.models.hf_seq2seq import HuggingFaceSeq2Seq

        model = HuggingFaceSeq2Seq.from_pretrained(args.model)
        translations = model.translate(texts, prefix=args.prefix, **options)
    for translation in translations:
        print(translation)


def _translation_attention(args, texts):
    """`tfattn attention` of a translation run: the cross-attention of each translation, source
    pieces x generated pieces, as a PNG (one panel per layer)."""
    from tfattn.plotting import plot_alignment
    from tfattn.tasks.translation import alignment, load_run_translator

    if args.html or args.compare or args.pair:
        raise ValueError(
            "a translation run draws its alignment as a PNG (--out); --html, --compare, --pair do not apply"
        )
    model = load_run_translator(args.run, command="tfattn attention")
    out = args.out or "attention.png"
    for index, text in enumerate(texts):
        translation, source_tokens, target_tokens, attention = alignment(model, text)
        title = f"{text}\n-> {translation}"
        path = plot_alignment(attention, source_tokens, target_tokens, _numbered(out, index, len(texts)), title=title)
        print(f"{translation}\nwrote {path}")
        _record_in_run(args.run, [path])


def _cmd_evaluate(args):
    from tfattn.tasks.config import TrainConfig
    from tfattn.tasks.runs import load_run

    if _is_translation_run(args.run):
        _evaluate_translation(args)
        return
    model, label_names, config = load_run(args.run, command="tfattn evaluate")
    config = TrainConfig.from_dict(config)
    prefix = args.prefix or ("test" if args.data else "validation")
    if config.token_task:
        from tfattn.data import load_conll
        from tfattn.tasks.ner import evaluate_sentences, write_entity_report

        # hf:NAME sources are read by split name: --data is a test set, else the run's validation
        # sentences, the first --validation-limit of them, as training scored them.
        sentences = load_conll(
            args.data or config.validation_data, "test" if args.data else "validation", label_names=label_names
        )
        if not args.data and config.validation_limit:
            sentences = sentences.subset(range(min(config.validation_limit, len(sentences))))
        scores = evaluate_sentences(model, sentences)
        with run_lock(args.run, wait_seconds=REPORT_LOCK_SECONDS):  # no other process writes the run meanwhile
            paths = write_entity_report(scores, args.run, prefix)
            record_outputs(args.run, paths)  # reports tfattn wrote: --overwrite may replace them
    else:
        from tfattn.evaluation import write_evaluation
        from tfattn.tasks.classification import evaluate_texts
        from tfattn.tasks.config import load_validation_examples, read_task_file

        if args.data:
            examples = read_task_file(config, args.data, label_names)
        else:
            examples = load_validation_examples(config, label_names)
        report = evaluate_texts(model, examples)
        with run_lock(args.run, wait_seconds=REPORT_LOCK_SECONDS):  # no other process writes the run meanwhile
            paths = write_evaluation(
                report, args.run, prefix=prefix, config={"data": examples.source, "run": str(args.run)}
            ).values()
            record_outputs(args.run, paths)  # reports tfattn wrote: --overwrite may replace them
        print(report.format_text())
    print(f"wrote {', '.join(str(p) for p in paths)}")


def _cmd_predict(args):
    from tfattn.models import TextClassifier
    from tfattn.tasks.runs import load_run

    model, label_names, _ = load_run(args.run, command="tfattn predict")
    if not isinstance(model, TextClassifier):
        raise ValueError(f"{args.run} is an NER run: use 'tfattn ner --run {args.run} TEXT'")
    texts = _texts_from(args)
    for text, probabilities in zip(texts, model.predict_proba(texts)):
        best = int(probabilities.argmax())
        print(f"{label_names[best]}\t{probabilities[best]:.3f}\t{text}")


def _cmd_attention(args):
    from tfattn.explorer import explain, explorer_page
    from tfattn.tasks.runs import load_run

    texts = _texts_from(args)
    if args.pair is not None and len(texts) != 1:
        raise ValueError(f"--pair makes a sentence pair with one text; got {len(texts)} texts")
    if args.limit:
        texts = texts[: args.limit]
    elif len(texts) > MAX_ATTENTION_FILES:
        raise ValueError(
            f"{len(texts)} texts would write {len(texts)} files (one per text); pass --limit N to draw the first N "
            f"(up to {MAX_ATTENTION_FILES} are drawn without it)"
        )
    if _is_translation_run(args.run):
        _translation_attention(args, texts)
        return
    png = args.out or (None if args.html else "attention.png")  # the page alone when only --html is given
    runs = [load_run(run, "tfattn attention") for run in [args.run] + ([args.compare] if args.compare else [])]
    names = [Path(args.run).name] + ([Path(args.compare).name] if args.compare else [])
    for index, text in enumerate(texts):
        # One pass per model and text: the page and the PNG draw the same numbers.
        explanations = [
            explain(model, text, labels, text_pair=args.pair, max_tokens=args.max_tokens, name=name)
            for (model, labels, _), name in zip(runs, names)
        ]
        if args.html:
            page = explorer_page([e if args.layers is None else e.with_layers(args.layers) for e in explanations])
            path = page.save(_numbered(args.html, index, len(texts)))
            print(f"wrote {path}")
            _record_in_run(args.run, [path])
        if png:
            path = _plot_png(explanations, _numbered(png, index, len(texts)), args, text[:80])
            print(f"wrote {path}")
            _record_in_run(args.run, [path])


def _record_in_run(run_dir, paths):
    """List files written into the run folder (a plot beside its model) as tfattn's, so that
    `train --overwrite` may replace them (`tfattn.run_manifest.record_outputs`)."""
    run_dir = Path(run_dir).resolve()
    if any(Path(path).resolve().parent == run_dir for path in paths):
        with run_lock(run_dir, wait_seconds=REPORT_LOCK_SECONDS):
            record_outputs(run_dir, paths)


def _numbered(path, index, count):
    """`path`, or `stem_<index>.suffix` when one command writes several files of the kind."""
    if count == 1:
        return path
    stem, suffix = os.path.splitext(path)
    return f"{stem}_{index}{suffix}"


def _plot_png(explanations, out, args, title):
    from tfattn.plotting import plot_attention, plot_attention_comparison

    view = args.view
    if view not in explanations[0].views:
        raise ValueError(f"--view {view}: {explanations[0].unavailable[view]}")
    layers = args.layers or [0]
    # The absolute scale's top: 1 for attention weights; gradient-weighted attention's largest value.
    colour = {
        "scale": args.scale,
        "absolute_max": max(explanation.absolute_max(view) for explanation in explanations),
        "value_label": "attention x gradient, clipped at 0" if view == "gradient" else "attention weight",
    }
    if len(explanations) == 1:
        (after,) = explanations
        return plot_attention(
            after.views[view], after.tokens, out, layers=layers, heads=args.heads, title=title, **colour
        )
    after, before = explanations
    if before.tokens != after.tokens:
        raise ValueError(f"{args.compare} and {args.run} tokenize differently; --compare needs the same tokenizer")
    return plot_attention_comparison(
        before.views[view],
        after.views[view],
        after.tokens,
        out,
        layer=layers[0],
        heads=args.heads,
        labels=(before.name, after.name),
        title=title,
        **colour,
    )


def _cmd_export(args):
    from tfattn.export import export_model
    from tfattn.models import TokenClassifier
    from tfattn.tasks.runs import load_run

    if _is_translation_run(args.run):
        from tfattn.decoding import DecodingOptions
        from tfattn.tasks.translation import load_run_translator
        from tfattn.translation_export import export_translator

        options = DecodingOptions(**_decoding_options(args))
        model = load_run_translator(args.run, command="tfattn export")
        path = export_translator(model, args.out, options=options, overwrite=args.overwrite, protected=(args.run,))
        print(f"exported SavedModel to {path} (signature serving_default: texts -> translations, cross_attention)")
        return
    model, label_names, _ = load_run(args.run, command="tfattn export")
    path = export_model(
        model,
        label_names,
        args.out,
        overwrite=args.overwrite,
        bucket_rows=args.bucket_rows,
        dtype=args.dtype,
        protected=(args.run,),
    )
    outputs = (
        "label_ids, labels, scores, probabilities, offsets, word_ids, label_names per token"
        if isinstance(model, TokenClassifier)
        else "probabilities, label, label_names"
    )
    print(f"exported SavedModel to {path} (signature serving_default: texts -> {outputs})")


def _cmd_export_hub(args):
    from tfattn.models.hub import export_hub_bert

    preprocess_dir, encoder_dir = export_hub_bert(
        getattr(args, "from"), args.out, seq_length=args.seq_length, overwrite=args.overwrite
    )
    print(
        f"wrote TF-Hub BERT SavedModels: {preprocess_dir} (strings -> input_word_ids, input_mask, "
        f"input_type_ids) and {encoder_dir} (-> pooled_output, sequence_output, encoder_outputs, attention_probs)"
    )


def build_parser():
    # Imported here, once TensorFlow has started quietly (see `main`).
    from tfattn.ner import AGGREGATION_STRATEGIES
    from tfattn.tasks.config import TASKS, TrainConfig
    from tfattn.tasks.translation import TranslationConfig
    from tfattn.training import STRATEGIES

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
        "ner": "CoNLL-2003 named entities. --data: a CoNLL file (2 or 4 columns) or hf:conll2003; "
        "--validation-data defaults to valid.txt beside it. Needs --backbone.",
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
        sub.add_argument(
            "--workers",
            metavar="HOST:PORT,HOST:PORT",
            help="train on several workers (multi-worker strategy): every worker's address, the chief first; run "
            "the same command on each with its --worker-index",
        )
        sub.add_argument(
            "--worker-index",
            type=_checked("worker_index", NON_NEGATIVE_INT),
            help="this worker's place in --workers (0: the chief, which writes the run folder)",
        )
        sub.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    translate_task = tasks.add_parser(
        "translate",
        help="Translation of sentence pairs",
        description="Translation. --data: sentence pairs, an Anki-format file (spa.txt, rus.txt: English, the "
        "translation, attribution) or a two-column TSV; --source-column says which column is translated (default 2: "
        "into English). --model transformer (encoder-decoder) or rnn (bidirectional GRU + GRU with additive "
        "attention). --vocabulary subword (SentencePiece pieces) or words (the most frequent cased words), learned "
        "from the training pairs.",
    )
    _add_config_arguments(translate_task, TranslationConfig, skip=("task", "run_dir"), field_help=TRANSLATION_HELP)
    translate_task.add_argument("--run-dir", default="runs/translate", help="run folder (default runs/translate)")
    translate_task.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    train.set_defaults(func=_cmd_train)

    translate = commands.add_parser(
        "translate", help="translate texts with a translation run or a Hugging Face seq2seq model"
    )
    source = translate.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a run folder written by 'tfattn train translate'")
    source.add_argument(
        "--model", help="a Hugging Face TF encoder-decoder (TFAutoModelForSeq2SeqLM): hub name or local folder"
    )
    translate.add_argument("texts", nargs="*", help="texts (or use --file)")
    translate.add_argument("--file", help="a UTF-8 file with one text per line")
    translate.add_argument(
        "--prefix", default="", help="--model: text put before each input (T5: 'translate English to German: ')"
    )
    _add_decoding_arguments(translate)
    translate.set_defaults(func=_cmd_translate)

    run_help = "a run folder written by 'tfattn train'"
    evaluate = commands.add_parser("evaluate", help="accuracy, macro-F1, report and confusion matrix")
    evaluate.add_argument("--run", required=True, help=run_help)
    evaluate.add_argument("--data", help="evaluate on this whole file (default: the run's validation split)")
    evaluate.add_argument("--prefix", help="file name prefix of the written report")
    _add_decoding_arguments(evaluate.add_argument_group("translation runs: decoding"))
    evaluate.set_defaults(func=_cmd_evaluate)

    for name, func, help_text in (
        ("predict", _cmd_predict, "label and probability of each text"),
        ("ner", _cmd_ner, "named entities of each text, one JSON line per text (NER runs)"),
        ("attention", _cmd_attention, "explore attention: an HTML page (--html) or PNG maps of texts"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--run", required=True, help=run_help)
        sub.add_argument("texts", nargs="*", help="texts (or use --file)")
        sub.add_argument("--file", help="a UTF-8 file with one text per line")
        sub.set_defaults(func=func)
        if name == "ner":
            sub.add_argument(
                "--aggregation-strategy",
                choices=AGGREGATION_STRATEGIES,
                default="first",
                help="how sub-tokens form entities, as Hugging Face names it (default first: a word takes its "
                "first sub-token's label, as tfattn trains)",
            )
        if name == "attention":
            sub.add_argument(
                "--html",
                metavar="PATH",
                help="write the attention explorer: one self-contained HTML page per text (opens offline)",
            )
            sub.add_argument(
                "--out", help="PNG path (default attention.png when --html is not given; numbered per text)"
            )
            sub.add_argument(
                "--layers",
                type=int,
                nargs="+",
                help="layer indices (default: layer 0 in the PNG, every layer on the page)",
            )
            sub.add_argument("--heads", type=int, nargs="+", default=None, help="PNG: head indices (default all)")
            sub.add_argument(
                "--view",
                choices=tuple(VIEW_NAMES),
                default="raw",
                help="PNG: raw (per head), mean (over heads), rollout or gradient (attention x gradient) (default raw)",
            )
            sub.add_argument(
                "--scale",
                choices=("absolute", "stretched"),
                default="absolute",
                help="PNG colour scale: absolute (0 to 1 for attention weights, 0 to the view's largest value for "
                "gradient) or stretched (the drawn maps' min to max: small differences look large) (default absolute)",
            )
            sub.add_argument("--pair", metavar="TEXT", help="second text of a sentence pair (BERT-family runs)")
            sub.add_argument(
                "--max-tokens",
                type=_checked("max_tokens", POSITIVE_INT),
                default=64,
                help="show at most this many tokens (default 64); the page says what was cropped",
            )
            sub.add_argument(
                "--limit",
                type=_checked("limit", POSITIVE_INT),
                help=f"draw only the first N texts (needed above {MAX_ATTENTION_FILES})",
            )
            sub.add_argument(
                "--compare",
                metavar="RUN",
                help="another run on the same texts (e.g. the frozen backbone): side by side and their difference",
            )

    export = commands.add_parser("export", help="SavedModel that serves raw strings")
    export.add_argument("--run", required=True, help=run_help)
    export.add_argument("--out", required=True, help="export folder")
    export.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    export.add_argument(
        "--bucket-rows",
        type=_checked("bucket_rows", NON_NEGATIVE_INT),
        default=None,
        help="serve a batch in buckets of N rows of similar length, each padded to its own longest row; "
        "0 pads the whole batch to its longest row (default: 16 for text classifiers, 0 for NER, whose "
        "outputs at padding positions are zeros when bucketed)",
    )
    export.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute the served model in bfloat16 (mixed precision: float32 weights; faster on CPUs with "
        "bfloat16 instructions, probabilities within about 1e-2)",
    )
    _add_decoding_arguments(export.add_argument_group("translation runs: decoding the export serves"))
    export.set_defaults(func=_cmd_export)

    export_hub = commands.add_parser(
        "export-hub", help="TF-Hub BERT preprocess + encoder SavedModels from a Hugging Face BERT folder"
    )
    export_hub.add_argument(
        "--from", required=True, metavar="HF_BERT_FOLDER", help="local checkpoint folder with vocab.txt"
    )
    export_hub.add_argument("--out", required=True, help="folder to hold preprocess/ and encoder/")
    export_hub.add_argument(
        "--seq-length",
        type=_checked("seq_length", POSITIVE_INT),
        default=128,
        help="preprocess output length (default 128)",
    )
    export_hub.add_argument("--overwrite", action="store_true", help="replace existing folders")
    export_hub.set_defaults(func=_cmd_export_hub)
    return parser


OVERWRITE_HELP = "replace what the run folder holds (another run, or this one finished) and train again"


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
