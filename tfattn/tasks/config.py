"""What defines a training run (`TrainConfig`), the tasks it can run, and their data splits.

One config serves every task (text classification: agnews, math; token classification: ner)
and every model family: without `backbone` the from-scratch transformer is trained; with
`backbone` (a Hugging Face name or a local checkpoint folder) a pretrained one is fine-tuned,
or trained frozen with `freeze`; with `hub_preprocess` and `hub_encoder` a TF-Hub BERT pair is
trained frozen for `freeze_epochs`, then fine-tuned. Fields left at None take the task's and
family's default (see `resolve`), and the resolved values are what a run saves as `config.json`.
"""

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from tfattn.data import MATH_TOPICS, DataError, load_agnews, read_labelled_texts, split_examples

# task name -> (default data source, default text column, default label column)
TASKS = {
    "agnews": ("tfds:ag_news_subset", None, None),
    "math": (None, MATH_TOPICS["text_column"], MATH_TOPICS["label_column"]),
    "ner": (None, None, None),
}
# Tasks with one label per token (the others have one per text).
TOKEN_TASKS = ("ner",)

SCRATCH_DEFAULTS = {
    "max_length": 256,
    "batch_size": 64,
    "epochs": 10,
    "learning_rate": 1e-3,
    "pooling": "mean",
    "tokenizer": "words",
    "token_dropout": 0.0,
    "bigram_buckets": 0,
    "word_shape": False,
    "dropout": 0.1,
    "patience": 2,
}
PRETRAINED_DEFAULTS = {
    "max_length": 128,
    "batch_size": 32,
    "epochs": 3,
    "learning_rate": 3e-5,
    "pooling": "cls",
    "word_shape": False,
    "dropout": 0.1,
    "patience": 2,
}
# A frozen pretrained encoder (--freeze): its outputs are computed once and the head alone trains
# on them (tfattn.tasks.frozen), a fraction of a second per epoch, so it trains to convergence: a
# high rate, 50 epochs, no dropout before the head, and no early stop (the best epoch is kept).
# On validation this beat a logistic regression on the same vectors, where 3 epochs at 1e-3 fell
# 7 points short on math topics; early stops after 10 flat epochs ended math before it converged
# (bench/frozen_head.py, BENCHMARKS.md). No early stop: patience defaults to the run's epochs,
# whatever --epochs says.
FROZEN_DEFAULTS = {"epochs": 50, "learning_rate": 1e-2, "dropout": 0.0}
# Per task, what differs from the family defaults: NER fine-tunes best a little faster, and
# reads word shapes (+0.5 entity F1 over 3 seeds with the uncased MiniLM; BENCHMARKS.md).
TASK_DEFAULTS = {"ner": {"learning_rate": 5e-5, "word_shape": True}}
# The from-scratch recipe per task, chosen on validation over 3 seeds (bench/scratch_recipes.py;
# BENCHMARKS.md has the table of what was tried). Math problems are LaTeX: word splitting strips
# the symbols (`$\frac{1}{2}$` becomes "frac12"), WordPiece keeps them as tokens, and hashed
# bigrams let the model read "\frac {", "x ^" and word pairs; with them it learns more slowly, at
# a lower peak rate, and dropping whole input tokens keeps it from memorising. For AG News no
# change tried beat the family defaults by more than the spread between seeds.
SCRATCH_TASK_DEFAULTS = {
    "math": {"tokenizer": "wordpiece", "learning_rate": 5e-4, "token_dropout": 0.1, "bigram_buckets": 65536},
}
# TF-Hub encoders are read through their pooled_output unless --pooling says otherwise.
HUB_DEFAULTS = {"pooling": "pooled"}
# The TF-Hub frozen phase before fine-tuning (one epoch by default): a warm start for the head.
FROZEN_LEARNING_RATE = 1e-3


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
}
# How the from-scratch model splits text: whole words, or WordPiece sub-words learned from the
# training texts (`tfattn.models.wordpiece.learn_wordpiece_vocabulary`).
TOKENIZERS = ("words", "wordpiece")


def check_numeric_options(config):
    """Check every numeric field of a config dataclass that is set; ValueError names the option."""
    for field in fields(config):
        value = getattr(config, field.name)
        if field.name in NUMERIC_OPTIONS and value is not None:
            NUMERIC_OPTIONS[field.name].check(field.name, value)


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as the run's `config.json`."""

    task: str = "agnews"
    run_dir: str = "runs/agnews"
    data: str | None = None  # a file; agnews also takes tfds:ag_news_subset, ner hf:conll2003
    text_column: str | None = None  # for csv / jsonl / xlsx task files
    label_column: str | None = None
    validation_fraction: float = 0.1
    validation_data: str | None = None  # ner: default valid.txt beside `data`
    validation_limit: int | None = None  # ner: score on the first this many sentences
    seed: int = 0
    limit: int | None = None  # train on a subset of this many examples (smoke tests)
    # Stream the training data from `data` (files, a folder, a glob) instead of reading it into
    # memory; validation then reads `validation_data`, a file.
    stream: bool = False
    shuffle_buffer: int = 10_000  # examples in the streaming shuffle buffer
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
    # (SCRATCH_TASK_DEFAULTS), and with embeddings_from that checkpoint's own WordPiece vocabulary
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
    dropout: float | None = None  # before the head (and inside the from-scratch encoder); default 0.1, frozen 0
    token_dropout: float | None = None  # rate of whole tokens dropped from the input in training
    bigram_buckets: int | None = None  # rows of hashed bigram embeddings added to the tokens' (0: none)
    # optimization (None: the family's default)
    max_length: int | None = None
    batch_size: int | None = None
    epochs: int | None = None
    learning_rate: float | None = None
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    label_smoothing: float = 0.0  # text classification: the share of target mass spread over all classes
    patience: int | None = None  # epochs without improvement before early stopping; default 2, frozen: --epochs (none)
    time_budget: float | None = None  # seconds of training wall time, then stop
    # devices
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool = False

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def pretrained(self):
        """True for a pretrained model (Hugging Face backbone or TF-Hub pair)."""
        return bool(self.backbone or self.hub_encoder)

    @property
    def model_description(self):
        if self.hub_encoder:
            return f"TF-Hub {self.hub_encoder}"
        return (self.backbone or "from-scratch transformer") + (" (frozen)" if self.backbone and self.freeze else "")

    @property
    def token_task(self):
        """True for tasks with one label per token (NER)."""
        return self.task in TOKEN_TASKS

    def resolve(self):
        """A copy with every None default filled in for this task and model family."""
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        check_numeric_options(self)
        from tfattn.models.task_models import POOLINGS  # here: the CLI reads this module before TensorFlow starts

        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"--pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.tokenizer is not None and self.tokenizer not in TOKENIZERS:
            raise ValueError(f"--tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}")
        if self.pretrained:
            for option in ("tokenizer", "embeddings_from", "token_dropout", "bigram_buckets"):
                if getattr(self, option) is not None:
                    raise ValueError(
                        f"--{option.replace('_', '-')} applies to the from-scratch model, not to a pretrained one"
                    )
        if self.embeddings_from and self.tokenizer == "words":
            raise ValueError(
                "--embeddings-from reads text with the checkpoint's WordPiece vocabulary; drop --tokenizer words"
            )
        if self.word_shape and not self.token_task:
            raise ValueError("--word-shape applies to token classification (ner), not to text classification")
        if self.label_smoothing and self.token_task:
            raise ValueError("--label-smoothing applies to text classification (agnews, math), not to ner")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"--embed-dim ({self.embed_dim}) must be a multiple of --num-heads ({self.num_heads})")
        data, text_column, label_column = TASKS[self.task]
        if bool(self.hub_preprocess) != bool(self.hub_encoder):
            raise ValueError(
                "a TF-Hub model needs both hub_preprocess and hub_encoder (--hub-preprocess, --hub-encoder)"
            )
        if self.hub_encoder and self.backbone:
            raise ValueError("choose one pretrained model: a backbone or a TF-Hub pair, not both")
        if self.freeze_epochs and not self.hub_encoder:
            raise ValueError("freeze_epochs (--freeze-epochs) applies to TF-Hub models; use --freeze for a backbone")
        if self.token_task:
            if not self.data:
                raise ValueError("NER training needs --data: a CoNLL file (e.g. ../shared/data/conll2003/train.txt)")
            if not self.backbone:
                raise ValueError("NER training needs --backbone: a Hugging Face BERT name or local checkpoint folder")
        if self.stream:
            self._check_streaming()
        defaults = {
            **(PRETRAINED_DEFAULTS if self.pretrained else SCRATCH_DEFAULTS),
            **(HUB_DEFAULTS if self.hub_encoder else {}),
            **TASK_DEFAULTS.get(self.task, {}),
            **({} if self.pretrained else SCRATCH_TASK_DEFAULTS.get(self.task, {})),
            **(FROZEN_DEFAULTS if self.pretrained and self.freeze else {}),
        }
        if self.embeddings_from:
            defaults["tokenizer"] = "wordpiece"  # the checkpoint's own vocabulary
        values = {
            name: getattr(self, name) if getattr(self, name) is not None else default
            for name, default in defaults.items()
        }
        if self.pretrained and self.freeze and self.patience is None:
            values["patience"] = values["epochs"]
        if self.hub_encoder:
            values["freeze_epochs"] = 1 if self.freeze_epochs is None else self.freeze_epochs
        if self.pretrained and values["max_length"] < 3:
            raise ValueError(
                f"--max-length must be at least 3 for a pretrained model ([CLS], a token, [SEP]), "
                f"got {values['max_length']}"
            )
        validation_data = self.validation_data
        if self.token_task and validation_data is None:
            validation_data = self.data if self.data.startswith("hf:") else str(Path(self.data).with_name("valid.txt"))
        # A TF-Hub folder given relative to the working directory is saved absolute, so the run
        # loads from anywhere (URLs stay as they are).
        for option in ("hub_preprocess", "hub_encoder"):
            handle = getattr(self, option)
            if handle and "://" not in handle and Path(handle).expanduser().exists():
                values[option] = str(Path(handle).expanduser().resolve())
        return replace(
            self,
            validation_data=validation_data,
            data=self.data or data,
            text_column=self.text_column or text_column,
            label_column=self.label_column or label_column,
            **values,
        )

    def _check_streaming(self):
        if self.token_task:
            raise ValueError(f"--stream reads text classification data; {self.task} reads its files into memory")
        if not self.data or self.data.startswith("tfds:"):
            raise ValueError("--stream needs --data: files, a folder or a glob pattern (not a TFDS name)")
        if not self.validation_data:
            raise ValueError(
                "--stream needs --validation-data: a labelled file, read into memory (streamed data is not split)"
            )
        if self.limit:
            raise ValueError("--limit subsets data read into memory; with --stream, give a smaller file instead")


def load_examples(config):
    """All labelled examples of the config's task, before splitting."""
    if not config.data:
        raise DataError(f"task {config.task!r} needs --data (a .jsonl, .csv or .xlsx file)")
    return read_task_file(config, config.data)


def read_task_file(config, path, label_names=None):
    """The labelled examples of one file (or TFDS name, for agnews) in the config's task format;
    `label_names` fixes the classes (an unknown label is an error)."""
    if config.task == "agnews":
        return load_agnews(path)
    return read_labelled_texts(path, config.text_column, config.label_column, label_names=label_names)


def load_validation_examples(config, label_names=None):
    """The examples a run validates on: its `validation_data` file when training streamed, else
    the validation part of `load_splits`."""
    if config.stream:
        return read_task_file(config, config.validation_data, label_names)
    return load_splits(config)[1]


def load_splits(config):
    """`(train, validation)` `TextExamples`, deterministic for the config's seed.

    Refuses (`DataError`) data with fewer than two classes, or with a class of fewer than two
    examples: every class needs one for training and one for validation.
    """
    examples = load_examples(config)
    subset = ""
    if config.limit and config.limit < len(examples):
        rng = np.random.default_rng(config.seed)
        examples = examples.subset(np.sort(rng.choice(len(examples), config.limit, replace=False)))
        subset = f" (the --limit {config.limit} subset)"
    check_class_counts(examples, subset)
    return split_examples(examples, config.validation_fraction, config.seed)


def check_class_counts(examples, subset=""):
    """`DataError` unless `examples` hold at least two classes of at least two examples each."""
    counts = examples.class_counts()
    present = [name for name, count in counts.items() if count]
    if len(present) < 2:
        found = f"only class {present[0]!r}" if present else "no examples"
        raise DataError(f"{examples.source}{subset}: {found}; classification needs at least two classes")
    scarce = {name: count for name, count in counts.items() if count < 2}
    if scarce:
        listed = ", ".join(f"{name!r} has {count}" for name, count in scarce.items())
        raise DataError(
            f"{examples.source}{subset}: too few examples per class ({listed}); every class needs at least 2, "
            "one for training and one for validation"
        )
