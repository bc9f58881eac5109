"""What defines a text-classification run (`TrainConfig`), the tasks it can run, and their splits.

One config serves every model family: without `backbone` the from-scratch transformer is
trained; with `backbone` (a Hugging Face name or a local checkpoint folder) a pretrained one
is fine-tuned, or trained frozen with `freeze`; with `hub_preprocess` and `hub_encoder` a
TF-Hub BERT pair is trained frozen for `freeze_epochs`, then fine-tuned. Fields left at None take the family's default
(see `resolve`), and the resolved values are what a run saves as `config.json`.
"""

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
    """`(train, validation)` `TextExamples`, deterministic for the config's seed."""
    examples = load_examples(config)
    if config.limit and config.limit < len(examples):
        rng = np.random.default_rng(config.seed)
        examples = examples.subset(np.sort(rng.choice(len(examples), config.limit, replace=False)))
    return split_examples(examples, config.validation_fraction, config.seed)
