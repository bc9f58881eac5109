"""Tasks that put a head on a BERT-style encoder (text classification, NER): their shared verbs.

Every encoder task trains with `tfattn.tasks.trainer.train` on any model family (from scratch,
Hugging Face, TF-Hub), saves a `tfattn.models.TaskModel` and its label names, draws attention
with the explorer and exports through `tfattn.export.export_model`. A task adds its data, head,
loss, metrics and reports (`tfattn.tasks.classification`, `tfattn.tasks.ner`).
"""

from pathlib import Path

from tfattn.data import load_label_map
from tfattn.tasks.base import Task, numbered_path
from tfattn.tasks.config import NON_NEGATIVE_INT, POSITIVE_INT, TrainConfig, checked_option

# The attention views a PNG can draw (`tfattn.explorer.explain`).
VIEW_NAMES = ("raw", "mean", "rollout", "gradient")


class EncoderTask(Task):
    """A head on an encoder, trained by `tfattn.tasks.trainer.train`.

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
        from tfattn.tasks.trainer import fit_encoder_task

        train_split, validation_split, family = prepared
        return fit_encoder_task(self, family, train_split, validation_split, strategy, run_dir, callbacks)

    def load_model(self, run_dir):
        from tfattn.run_manifest import DAMAGED_ADVICE, MODEL_DIR, DamagedRun
        from tfattn.tasks.runs import LABEL_MAP_FILE, load_run_model

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
        from tfattn.export import export_model

        path = export_model(
            model,
            self.label_names,
            args.out,
            overwrite=args.overwrite,
            bucket_rows=args.bucket_rows,
            dtype=args.dtype,
            protected=(self.run_dir,),
        )
        return path, self.export_outputs

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


def add_explorer_arguments(parser):
    """`tfattn attention`'s options for encoder runs: the page, the PNG and what they draw."""
    parser.add_argument(
        "--html",
        metavar="PATH",
        help="write the attention explorer: one self-contained HTML page per text (opens offline)",
    )
    parser.add_argument(
        "--layers", type=int, nargs="+", help="layer indices (default: layer 0 in the PNG, every layer on the page)"
    )
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
        "--max-tokens",
        type=checked_option("max_tokens", POSITIVE_INT),
        default=64,
        help="show at most this many tokens (default 64); the page says what was cropped",
    )
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
