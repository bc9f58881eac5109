"""Tasks that put a head on a BERT-style encoder (text classification, NER): their shared verbs.

Every encoder task trains with `tfattn.training.loop.train` on any model family (from scratch,
Hugging Face, TF-Hub), saves a `tfattn.models.TaskModel` and its label names, draws attention
with the explorer and exports through `tfattn.serving.classifiers.export_model`. A task adds its data, head,
loss, metrics and reports (`tfattn.tasks.classification`, `tfattn.tasks.ner`).
"""

from pathlib import Path

from tfattn.data import load_label_map
from tfattn.data.pipelines import JIT_LENGTH_MULTIPLE, count_batches, make_dataset
from tfattn.models import save_model
from tfattn.runs.folders import finish_training, load_run_model, mark_trained, write_labels
from tfattn.runs.manifest import MODEL_DIR
from tfattn.tasks.base import Task, numbered_path
from tfattn.tasks.config import NON_NEGATIVE_INT, POSITIVE_INT, TrainConfig, checked_option
from tfattn.tasks.frozen import HEAD_STEPS_PER_EXECUTION, FinishedCachedPhase, HeadModel, cached_phase_data, can_cache
from tfattn.training.callbacks import is_resuming
from tfattn.training.phases import EpochOrder, compile_and_fit, phase_finished

# The attention views a PNG can draw (`tfattn.explorer.explain`).
VIEW_NAMES = ("raw", "mean", "rollout", "gradient")


class EncoderTask(Task):
    """A head on an encoder, trained by `tfattn.training.loop.train`.

    Class attributes (a task sets what it needs):
        preset: the config fields a task fills when left out (its data source, its columns).
        defaults: what differs from the family defaults (`tfattn.families`), every family.
        scratch_defaults: what differs for the from-scratch model only.
        export_outputs: what the export's `serving_default` returns, in words.
    """

    config_class = TrainConfig
    explorable = True
    preset = {}
    defaults = {}
    scratch_defaults = {}
    export_outputs = ""

    @classmethod
    def train_description(cls):
        return (
            f"{cls.description} Without --backbone: the from-scratch transformer; with --backbone NAME_OR_FOLDER: "
            "a pretrained Hugging Face BERT, fine-tuned (or frozen with --freeze); with --hub-preprocess and "
            "--hub-encoder: a TF-Hub BERT pair, frozen for --freeze-epochs, then fine-tuned."
        )

    @classmethod
    def check_config(cls, config):
        """Refuse options that do not apply to this task (ValueError naming the option)."""

    @classmethod
    def default_validation_data(cls, config):
        """The validation file when `--validation-data` is left out (None: split off the data)."""
        return None

    def prepare_training(self):
        """`(train, validation, family)`: the task's data, and the model family with its source
        checked (a hub name fails here, offline, in seconds)."""
        from tfattn.families import family_of

        train_split, validation_split = self.load()
        family = family_of(self.config)
        family.check()
        return train_split, validation_split, family

    def fit(self, run_dir, prepared, strategy, callbacks=()):
        from tfattn.tasks.encoder_task import fit_encoder_task

        train_split, validation_split, family = prepared
        return fit_encoder_task(self, family, train_split, validation_split, strategy, run_dir, callbacks)

    def load_model(self, run_dir):
        from tfattn.runs.folders import LABEL_MAP_FILE, load_run_model
        from tfattn.runs.manifest import DAMAGED_ADVICE, MODEL_DIR, DamagedRun

        self.run_dir = Path(run_dir)
        if not (self.run_dir / MODEL_DIR / "model.json").is_file():
            raise DamagedRun(f"{self.run_dir / MODEL_DIR / 'model.json'} is missing; {DAMAGED_ADVICE}")
        self.label_names = load_label_map(self.run_dir / LABEL_MAP_FILE)
        return load_run_model(self.run_dir)

    @classmethod
    def add_arguments(cls, command, parser):
        if command == "export":
            parser.add_argument(
                "--bucket-rows",
                type=checked_option("bucket_rows", NON_NEGATIVE_INT),
                default=None,
                help="serve a batch in buckets of N rows of similar length, each padded to its own longest row; "
                "0 pads the whole batch to its longest row (default: 16 for text classifiers, 0 for NER, whose "
                "outputs at padding positions are zeros when bucketed)",
            )
            parser.add_argument(
                "--dtype",
                choices=("float32", "bfloat16"),
                default="float32",
                help="compute the served model in bfloat16 (mixed precision: float32 weights; faster on CPUs with "
                "bfloat16 instructions, probabilities within about 1e-2)",
            )
        if command == "attention":
            add_explorer_arguments(parser)

    def export(self, model, args):
        from tfattn.serving.classifiers import export_model

        path = export_model(
            model,
            self.label_names,
            args.out,
            overwrite=args.overwrite,
            bucket_rows=args.bucket_rows,
            dtype=args.dtype,
            protected=(self.run_dir,),
        )
        return path, f"texts -> {self.export_outputs}"

    def explain(self, model, text, name, text_pair=None, max_tokens=64):
        from tfattn.explorer import explain

        return explain(model, text, self.label_names, text_pair, max_tokens=max_tokens, name=name)

    def attention(self, model, texts, args):
        """The explorer page (`--html`) and/or a PNG per text, beside `--compare`'s run if given."""
        from tfattn.explorer import explain, explorer_page
        from tfattn.tasks.base import open_run

        if args.pair is not None and len(texts) != 1:
            raise ValueError(f"--pair makes a sentence pair with one text; got {len(texts)} texts")
        png = args.out or (None if args.html else "attention.png")  # the page alone when only --html is given
        models = [(model, self.label_names, self.run_dir.name)]
        if args.compare:
            other_task, other_model = open_run(args.compare, "tfattn attention")
            if not isinstance(other_task, EncoderTask):
                raise ValueError(f"--compare {args.compare} is a run of task {other_task.name!r}, not an encoder task")
            models.append((other_model, other_task.label_names, Path(args.compare).name))
        written = []
        for index, text in enumerate(texts):
            # One pass per model and text: the page and the PNG draw the same numbers.
            explanations = [
                explain(each, text, labels, text_pair=args.pair, max_tokens=args.max_tokens, name=name)
                for each, labels, name in models
            ]
            if args.html:
                page = explorer_page([e if args.layers is None else e.with_layers(args.layers) for e in explanations])
                written.append(page.save(numbered_path(args.html, index, len(texts))))
            if png:
                written.append(plot_explanations(explanations, numbered_path(png, index, len(texts)), args, text[:80]))
        return written


def add_page_arguments(parser):
    """`tfattn attention`'s options of every run the explorer page draws: the page, its layers and
    how many tokens it shows."""
    parser.add_argument(
        "--html",
        metavar="PATH",
        help="write the attention explorer: one self-contained HTML page per text (opens offline)",
    )
    parser.add_argument(
        "--layers", type=int, nargs="+", help="layer indices (default: layer 0 in the PNG, every layer on the page)"
    )
    parser.add_argument(
        "--max-tokens",
        type=checked_option("max_tokens", POSITIVE_INT),
        default=64,
        help="show at most this many tokens (default 64); the page says what was cropped",
    )


def add_explorer_arguments(parser):
    """`tfattn attention`'s options for encoder runs: the page, the PNG and what they draw."""
    add_page_arguments(parser)
    parser.add_argument("--heads", type=int, nargs="+", default=None, help="PNG: head indices (default all)")
    parser.add_argument(
        "--view",
        choices=VIEW_NAMES,
        default="raw",
        help="PNG: raw (per head), mean (over heads), rollout or gradient (attention x gradient) (default raw)",
    )
    parser.add_argument(
        "--scale",
        choices=("absolute", "stretched"),
        default="absolute",
        help="PNG colour scale: absolute (0 to 1 for attention weights, 0 to the view's largest value for "
        "gradient) or stretched (the drawn maps' min to max: small differences look large) (default absolute)",
    )
    parser.add_argument("--pair", metavar="TEXT", help="second text of a sentence pair (BERT-family runs)")
    parser.add_argument(
        "--compare",
        metavar="RUN",
        help="another run on the same texts (e.g. the frozen backbone): side by side and their difference",
    )


def plot_explanations(explanations, out, args, title):
    """A PNG of one run's explanation, or of two side by side (`--compare`); returns its path."""
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


def load_run(run_dir: str | Path, command: str = ""):
    """`(model, label_names, config)` of a finished encoder-task run: a `TextClassifier` or
    `TokenClassifier` (raw strings in), its label names and its config dict. `command` names the
    caller in the message for a run of another kind (a translation run)."""
    from dataclasses import asdict

    from tfattn.tasks.base import open_run

    task, model = open_run(run_dir, command, expect=EncoderTask)
    return model, task.label_names, asdict(task.config)


def training_order(config, task, family, train_split):
    """The training data, as an `EpochOrder` (read into memory, tokenized once) or a
    `StreamOrder` (`--stream`: read and tokenized as training goes)."""
    if config.stream:
        return task.stream_order(family, train_split)
    features, labels = task.encode(family, train_split, "training")
    # XLA compiles a program per batch shape: under --jit-compile, batches are padded to
    # multiples of JIT_LENGTH_MULTIPLE tokens, a handful of shapes instead of one per length.
    pad_to_multiple = JIT_LENGTH_MULTIPLE if config.jit_compile else None
    data = make_dataset(
        features, labels, config.batch_size, shuffle=True, seed=config.seed, pad_to_multiple=pad_to_multiple
    )
    return EpochOrder(data, count_batches(data), examples=(features, labels))


def fit_encoder_task(task, family, train_split, validation_split, strategy, run_dir, callbacks):
    """`Task.fit` of an encoder task: the family's preprocessor and encoder under the task's
    head, trained phase by phase in the folder this worker writes."""
    config = task.config
    label_names = train_split.label_names
    print(f"{task.describe(train_split, validation_split)}; model: {config.model_description}")

    family.prepare(task.texts_for_vocabulary(train_split), run_dir)
    order = training_order(config, task, family, train_split)
    validation = task.validation(family, validation_split)

    with strategy.scope():
        model = task.build_model(family.preprocessor, family.build_encoder(), label_names)
        # Built before fit: BackupAndRestore can only restore into existing variables. Built in the
        # scope: the task models create their variables on first call, and a variable created
        # outside the strategy's scope cannot be trained under it.
        features = order.sample_batch()[0]
        if family.builds_in_replica_context:
            strategy.run(model, args=(features,))
        else:
            model(features)
        family.initialize(model)
    if config.pretrained:
        print(
            f"newly initialized (trained from scratch): the head, {len(label_names)} outputs on the "
            f"{task.head_input} vectors; every other weight is pretrained"
        )
    phases = family.phases()
    first_epoch = 0
    for index, phase in enumerate(phases):
        last_epoch = first_epoch + phase.epochs
        if len(phases) > 1:
            print(f"phase {phase.name!r}: epochs {first_epoch + 1}-{last_epoch}, learning rate {phase.learning_rate:g}")
        if phase.trainable:
            model.unfreeze_encoder()
        else:
            model.freeze_encoder()
        fit_model, fit_order, validation_data = model, order, validation.data
        if not phase.trainable and can_cache(config, model):
            # The head trains alone on the frozen encoder's outputs, computed once (tfattn.tasks.frozen).
            fit_model = HeadModel(model)
            if phase_finished(run_dir, phase.name):
                fit_order, validation_data = FinishedCachedPhase(), None  # its weights are only loaded
            else:
                fit_order, validation_data = cached_phase_data(model, config, run_dir, order, validation)
        trained = compile_and_fit(
            fit_model,
            fit_order,
            run_dir,
            config,
            loss=task.loss(),
            make_metrics=lambda: task.metrics(len(label_names)),
            monitor=task.monitor,
            examples_per_epoch=len(train_split),
            phase=phase.name,
            first_epoch=first_epoch,
            last_epoch=last_epoch,
            learning_rate=phase.learning_rate,
            strategy=strategy,
            append_history=index > 0 or is_resuming(run_dir),
            validation_data=validation_data,
            validation_callback=validation.callback,
            callbacks=callbacks,
            jit_compile=config.jit_compile,
            # A head step on cached vectors takes about a millisecond, less than the per-batch
            # callbacks: run many per call (callbacks then see every 50th batch).
            steps_per_execution=HEAD_STEPS_PER_EXECUTION if fit_model is not model else 1,
        )
        if not trained:
            print(f"phase {phase.name!r} already finished; loaded its weights")
        first_epoch = last_epoch
    mark_trained(run_dir)  # fit_phase checked the weights are finite

    save_model(model, run_dir / MODEL_DIR)
    write_labels(run_dir, label_names)
    # The report is of the saved model, loaded back: what evaluate, predict and export will use.
    report, summary = task.report(load_run_model(run_dir), model, validation_split, validation, run_dir)
    finish_training(run_dir, summary)
    return report
