"""What defines a training run of an encoder task (`TrainConfig`), and the checks of numeric options.

One config serves every encoder task (text classification: classify and its presets agnews and
math; token classification: ner) and every model family: without `backbone` the from-scratch
transformer is trained; with `backbone` (a Hugging Face name or a local checkpoint folder) a
pretrained one is fine-tuned, or trained frozen with `freeze`; with `hub_preprocess` and
`hub_encoder` a TF-Hub BERT pair is trained frozen for `freeze_epochs`, then fine-tuned. Fields
left at None take the task's and family's default (see `resolve`), and the resolved values are
what a run saves as `config.json`.
"""

import math
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Bound:
    """The values a numeric option takes: `kind` (int or float) between `low` and `high`
    (None: unbounded), each end included or not; `what` describes them in messages."""

    kind: type
    what: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, name, value):
        """`value` converted to `kind`; ValueError naming the option `--name` otherwise."""
        flag = "--" + name.replace("_", "-")
        problem = f"{flag} must be {self.what}, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(problem)
        try:
            number = self.kind(value)
        except (TypeError, ValueError):
            raise ValueError(problem) from None
        if self.kind is int and isinstance(value, float) and value != number:
            raise ValueError(problem)
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(problem)
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            raise ValueError(problem)
        if self.high is not None and (number > self.high or (self.high_open and number == self.high)):
            raise ValueError(problem)
        return number


POSITIVE_INT = Bound(int, "a positive integer", low=1)
NON_NEGATIVE_INT = Bound(int, "an integer >= 0", low=0)
FINITE_FLOAT = Bound(float, "a finite number")
POSITIVE_FLOAT = Bound(float, "a positive number", low=0, low_open=True)
NON_NEGATIVE_FLOAT = Bound(float, "a number >= 0", low=0)
FRACTION = Bound(float, "a number in [0, 1)", low=0, high=1, high_open=True)

# Every numeric option of `TrainConfig`, checked when the
# command line is parsed and again when a config is resolved, so the Python API gets the same
# one-line errors.
NUMERIC_OPTIONS = {
    "validation_fraction": Bound(
        float, "a number between 0 and 1 (exclusive)", low=0, high=1, low_open=True, high_open=True
    ),
    "seed": NON_NEGATIVE_INT,
    "limit": Bound(int, "an integer >= 2 (one training and one validation example)", low=2),
    "validation_limit": POSITIVE_INT,
    "freeze_epochs": NON_NEGATIVE_INT,
    "vocab_size": Bound(int, "an integer >= 3 (padding, [UNK] and one word)", low=3),
    "embed_dim": POSITIVE_INT,
    "num_heads": POSITIVE_INT,
    "ff_dim": POSITIVE_INT,
    "num_blocks": POSITIVE_INT,
    "dropout": FRACTION,
    "max_length": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "epochs": POSITIVE_INT,
    "learning_rate": POSITIVE_FLOAT,
    "warmup_fraction": FRACTION,
    "weight_decay": NON_NEGATIVE_FLOAT,
    "patience": POSITIVE_INT,
    "time_budget": POSITIVE_FLOAT,
    "shuffle_buffer": NON_NEGATIVE_INT,
    "label_smoothing": FRACTION,
    "token_dropout": FRACTION,
    "bigram_buckets": NON_NEGATIVE_INT,
    "image_size": Bound(int, "an integer >= 2", low=2),
    "patch_size": POSITIVE_INT,
    "cnn_width": POSITIVE_INT,
}
# How the from-scratch model splits text: whole words, or WordPiece sub-words learned from the
# training texts (`tfattn.models.wordpiece.learn_wordpiece_vocabulary`).
TOKENIZERS = ("words", "wordpiece")


def checked_option(name, bound):
    """An argparse type that parses the option `--name` and checks it against `bound`."""
    import argparse

    def parse(text):
        try:
            return bound.check(name, text)
        except ValueError as error:
            # argparse already prefixes "argument --name:"; keep what follows the flag.
            raise argparse.ArgumentTypeError(str(error).split(" ", 1)[1]) from None

    parse.__name__ = bound.kind.__name__
    return parse


def check_numeric_options(config):
    """Check every numeric field of a config dataclass that is set; ValueError names the option."""
    for field in fields(config):
        value = getattr(config, field.name)
        if field.name in NUMERIC_OPTIONS and value is not None:
            NUMERIC_OPTIONS[field.name].check(field.name, value)


# `--help` of the config fields whose default (None) says nothing by itself; the others show their
# default. Each family adds the help of its own options (`Family.field_help`).
FIELD_HELP = {
    "data": "training data file (agnews also takes tfds:ag_news_subset)",
    "text_column": "text column of a csv/jsonl/xlsx file",
    "label_column": "label column of a csv/jsonl/xlsx file",
    "limit": "train on a subset of this many examples (smoke tests)",
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
    "word_shape": "ner: add an embedding of each token's casing in the raw text to its vector (default: on)",
}


@dataclass
class RunConfig:
    """The fields every run has, whatever its task: data, run folder, seed, the optimization and
    the devices. A task's config (`TrainConfig`, `TranslationConfig`) adds its own section and
    may change a default; the whole config is saved as the run's `config.json`. None means the
    task's or family's default, filled in by `resolve`."""

    task: str = "agnews"
    run_dir: str = "runs/agnews"
    data: str | None = None  # a file (or files, a folder, a glob with --stream)
    validation_data: str | None = None  # default: split off `data` (validation_fraction), or the task's
    validation_fraction: float = 0.1
    validation_limit: int | None = None  # score on the first this many validation examples
    seed: int = 0
    limit: int | None = None  # train on a subset of this many examples (smoke tests)
    # Stream the training data from `data` (files, a folder, a glob) instead of reading it into
    # memory; validation then reads `validation_data`, a file.
    stream: bool = False
    shuffle_buffer: int = 10_000  # examples in the streaming shuffle buffer
    # optimization
    max_length: int | None = None  # longest input in tokens
    batch_size: int | None = None
    epochs: int | None = None
    learning_rate: float | None = None
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    dropout: float | None = None
    label_smoothing: float = 0.0  # the share of target mass spread over all classes (or vocabulary entries)
    patience: int | None = None  # epochs without improvement before early stopping
    time_budget: float | None = None  # seconds of training wall time, then stop
    # devices
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool = False

    @classmethod
    def field_help(cls) -> dict:
        """The `--help` line of each option whose default (None) says nothing by itself."""
        return FIELD_HELP

    @classmethod
    def from_dict(cls, values):
        """The config of a saved `config.json` (keys it does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class TrainConfig(RunConfig):
    """A run of an encoder task (classification, NER) on any model family. Fields left at None
    (`dropout`, `max_length`, `batch_size`, `epochs`, `learning_rate`, `patience`: see
    FIELD_HELP) take the family's and task's defaults."""

    text_column: str | None = None  # for csv / tsv / jsonl / xlsx task files
    label_column: str | None = None
    # pretrained backbone (None: the from-scratch transformer)
    backbone: str | None = None
    freeze: bool = False
    # ner: add an embedding of each token's casing in the raw text (lower, Title, UPPER, mixed,
    # digits, other) to its vector before the head; an uncased backbone cannot see capitals.
    # Default: on for ner.
    word_shape: bool | None = None
    pooling: str | None = None  # cls, mean or pooled; default mean from scratch, cls pretrained, pooled TF-Hub
    # TF-Hub BERT pair (URL or SavedModel folder), instead of backbone; trained frozen for
    # freeze_epochs (default 1) at the frozen learning rate, then fine-tuned for `epochs`
    hub_preprocess: str | None = None
    hub_encoder: str | None = None
    freeze_epochs: int | None = None
    # from-scratch model
    # words, or wordpiece (sub-words learned from the training texts); the default is the task's
    # (`Task.scratch_defaults`), and with embeddings_from that checkpoint's own WordPiece vocabulary
    tokenizer: str | None = None
    # initialise the token table from this pretrained checkpoint's word-piece embeddings (a
    # Hugging Face name or folder; reduced to embed_dim by PCA), reading text with its vocabulary
    embeddings_from: str | None = None
    vocab_size: int = 20000
    embed_dim: int = 64
    num_heads: int = 2
    ff_dim: int = 128
    num_blocks: int = 1
    positional: str = "learned"
    token_dropout: float | None = None  # rate of whole tokens dropped from the input in training
    bigram_buckets: int | None = None  # rows of hashed bigram embeddings added to the tokens' (0: none)

    @classmethod
    def field_help(cls):
        from tfattn.families import FAMILIES  # here: the CLI reads this module before TensorFlow starts

        owned = {name: text for family in FAMILIES.values() for name, text in family.field_help.items()}
        return {**FIELD_HELP, **owned}

    @staticmethod
    def field_choices():
        """Fields that take one of a few words."""
        from tfattn.models.task_models import POOLINGS  # here: the CLI reads this module before TensorFlow starts

        return {"pooling": POOLINGS, "positional": ("learned", "sinusoidal"), "tokenizer": TOKENIZERS}

    @property
    def pretrained(self):
        """True for a pretrained model (Hugging Face backbone or TF-Hub pair)."""
        return self.family.pretrained

    @property
    def model_description(self):
        """The model in a few words, for the line a run starts with."""
        return self.family.describe(self)

    @property
    def family(self):
        """The model family this config trains (`tfattn.families`)."""
        from tfattn.families import family_class  # here: the CLI reads this module before TensorFlow starts

        return family_class(self)

    def resolve(self):
        """A copy with every None default filled in for this task and model family; the task
        (`tfattn.tasks.registry`) and the family (`tfattn.families`) add their own checks and
        defaults, and the task its data preset."""
        from tfattn.families import check_families
        from tfattn.models.task_models import POOLINGS  # here: the CLI reads this module before TensorFlow starts
        from tfattn.tasks.registry import task_class

        task = task_class(self.task)
        family = self.family
        check_numeric_options(self)
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"--pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.tokenizer is not None and self.tokenizer not in TOKENIZERS:
            raise ValueError(f"--tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}")
        check_families(self)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"--embed-dim ({self.embed_dim}) must be a multiple of --num-heads ({self.num_heads})")
        task.check_config(self)
        if self.stream:
            self._check_streaming()
        values = {
            name: getattr(self, name) if getattr(self, name) is not None else default
            for name, default in family.defaults_for(self, task).items()
        }
        values = family.resolve_values(self, values)
        # The task's preset fills what was left out: its data source and columns.
        for name, default in task.preset.items():
            if getattr(self, name) is None:
                values[name] = default
        if self.validation_data is None:
            values["validation_data"] = task.default_validation_data(self)
        return replace(self, **values)

    def _check_streaming(self):
        if not self.data or self.data.startswith("tfds:"):
            raise ValueError("--stream needs --data: files, a folder or a glob pattern (not a TFDS name)")
        if not self.validation_data:
            raise ValueError(
                "--stream needs --validation-data: a labelled file, read into memory (streamed data is not split)"
            )
        if self.limit:
            raise ValueError("--limit subsets data read into memory; with --stream, give a smaller file instead")
