"""What defines a text-classification run (`TrainConfig`), the tasks it can run, and their splits.

One config serves every model family: without `backbone` the from-scratch transformer is
trained; with `backbone` (a Hugging Face name or a local checkpoint folder) a pretrained one
is fine-tuned, or trained frozen with `freeze`; with `hub_preprocess` and `hub_encoder` a
TF-Hub BERT pair is trained frozen for `freeze_epochs`, then fine-tuned. Fields left at None take the family's default
(see `resolve`), and the resolved values are what a run saves as `config.json`.
"""

import math
from dataclasses import dataclass, fields, replace
from typing import Optional

import numpy as np

from tfattn.data import MATH_TOPICS, DataError, load_agnews, read_labelled_texts, split_examples

# task name -> (default data source, default text column, default label column)
TASKS = {
    "agnews": ("tfds:ag_news_subset", None, None),
    "math": (None, MATH_TOPICS["text_column"], MATH_TOPICS["label_column"]),
}

SCRATCH_DEFAULTS = {"max_length": 256, "batch_size": 64, "epochs": 10, "learning_rate": 1e-3}
PRETRAINED_DEFAULTS = {"max_length": 128, "batch_size": 32, "epochs": 3, "learning_rate": 3e-5}
FROZEN_LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class Bound:
    """The values a numeric option takes: `kind` (int or float) between `low` and `high`
    (None: unbounded), each end included or not; `what` describes them in messages."""

    kind: type
    what: str
    low: Optional[float] = None
    high: Optional[float] = None
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
POSITIVE_FLOAT = Bound(float, "a positive number", low=0, low_open=True)
NON_NEGATIVE_FLOAT = Bound(float, "a number >= 0", low=0)
FRACTION = Bound(float, "a number in [0, 1)", low=0, high=1, high_open=True)

# Every numeric option of the training configs (TrainConfig and NerConfig), checked when the
# command line is parsed and again when a config is resolved, so the Python API gets the same
# one-line errors.
NUMERIC_OPTIONS = {
    "validation_fraction": Bound(float, "a number between 0 and 1 (exclusive)", low=0, high=1, low_open=True, high_open=True),
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
}


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
    data: Optional[str] = None  # a file; agnews also takes tfds:ag_news_subset
    text_column: Optional[str] = None  # for csv / jsonl / xlsx task files
    label_column: Optional[str] = None
    validation_fraction: float = 0.1
    seed: int = 0
    limit: Optional[int] = None  # train on a random subset of this many examples (smoke tests)
    # pretrained backbone (None: the from-scratch transformer)
    backbone: Optional[str] = None
    freeze: bool = False
    pooling: str = "cls"
    head: str = "dense"
    # TF-Hub BERT pair (URL or SavedModel folder), instead of backbone; trained frozen for
    # freeze_epochs (default 1) at the frozen learning rate, then fine-tuned for `epochs`
    hub_preprocess: Optional[str] = None
    hub_encoder: Optional[str] = None
    freeze_epochs: Optional[int] = None
    # from-scratch model
    vocab_size: int = 20000
    embed_dim: int = 64
    num_heads: int = 2
    ff_dim: int = 128
    num_blocks: int = 1
    positional: str = "learned"
    dropout: float = 0.1
    # optimization (None: the family's default)
    max_length: Optional[int] = None
    batch_size: Optional[int] = None
    epochs: Optional[int] = None
    learning_rate: Optional[float] = None
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    patience: int = 2
    time_budget: Optional[float] = None  # seconds of training wall time, then stop
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

    def resolve(self):
        """A copy with every None default filled in for this task and model family."""
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        check_numeric_options(self)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"--embed-dim ({self.embed_dim}) must be a multiple of --num-heads ({self.num_heads})")
        data, text_column, label_column = TASKS[self.task]
        if bool(self.hub_preprocess) != bool(self.hub_encoder):
            raise ValueError("a TF-Hub model needs both hub_preprocess and hub_encoder (--hub-preprocess, --hub-encoder)")
        if self.hub_encoder and self.backbone:
            raise ValueError("choose one pretrained model: a backbone or a TF-Hub pair, not both")
        if self.freeze_epochs and not self.hub_encoder:
            raise ValueError("freeze_epochs (--freeze-epochs) applies to TF-Hub models; use --freeze for a backbone")
        family = PRETRAINED_DEFAULTS if self.pretrained else SCRATCH_DEFAULTS
        values = {name: getattr(self, name) if getattr(self, name) is not None else default
                  for name, default in family.items()}
        if self.pretrained and self.freeze and self.learning_rate is None:
            values["learning_rate"] = FROZEN_LEARNING_RATE
        if self.hub_encoder:
            values["freeze_epochs"] = 1 if self.freeze_epochs is None else self.freeze_epochs
        if self.pretrained and values["max_length"] < 3:
            raise ValueError(f"--max-length must be at least 3 for a pretrained model ([CLS], a token, [SEP]), "
                             f"got {values['max_length']}")
        return replace(
            self,
            data=self.data or data,
            text_column=self.text_column or text_column,
            label_column=self.label_column or label_column,
            **values,
        )


def load_examples(config):
    """All labelled examples of the config's task, before splitting."""
    if config.task == "agnews":
        return load_agnews(config.data)
    if not config.data:
        raise DataError(f"task {config.task!r} needs --data (a .jsonl, .csv or .xlsx file)")
    return read_labelled_texts(config.data, config.text_column, config.label_column)


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
