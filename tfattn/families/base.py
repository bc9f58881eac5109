"""The contract every model family keeps: its defaults, its checks and its loading (`Family`), and
the training phases a run is made of (`Phase`).

A family answers two kinds of question. About a config, before anything is loaded (classmethods,
called by `tfattn.tasks.config.TrainConfig.resolve`): is it chosen by this config, which
defaults fill the options left out, which options it refuses, what follows from the resolved
values, how a run describes it. About a run (an instance holding the resolved config, called by
`tfattn.training.loop.train`): load and check the checkpoint, build the preprocessor and the
encoder, tokenize the texts, list the phases.
"""

from dataclasses import dataclass

# The defaults shared by the pretrained families (Hugging Face and TF-Hub BERTs): fine-tuning.
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
# whatever --epochs says (`PretrainedEncoderFamily.resolve_values`).
FROZEN_DEFAULTS = {"epochs": 50, "learning_rate": 1e-2, "dropout": 0.0}


@dataclass(frozen=True)
class Phase:
    """Part of a run with one optimizer schedule; `trainable`: whether the encoder trains in it.
    Its name names its backup, best-epoch and final-weights folders."""

    name: str
    epochs: int
    learning_rate: float
    trainable: bool = True


class Family:
    """What every family shares: its config and run folder, and its phases (`--freeze` trains
    the head alone).

    Class attributes:
        name: the family's key in `tfattn.families.FAMILIES`.
        pretrained: whether the encoder arrives trained (the task model then says its head alone is new).
        defaults: the value of each option left out, before the task's own (`EncoderTask.defaults`).
        frozen_defaults: what `--freeze` changes after those.
        field_help: the `--help` line of each option only this family reads.
    """

    name = ""
    pretrained = False
    defaults = {}
    frozen_defaults = {}
    field_help = {}
    # Whether the model must be built inside a replica (`strategy.run`), as `fit` calls it, rather
    # than by a plain call in the strategy's scope. A plain call is preferred: in a replica, the
    # unseeded head initializer draws other values under a multi-worker strategy than alone.
    builds_in_replica_context = False

    # --- a config, before anything is loaded
    @classmethod
    def chosen_by(cls, config) -> bool:
        """Whether `config` trains this family (exactly one family is chosen by any config)."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, config):
        """Refuse, in one line naming the option, a config of this family that cannot be trained."""

    @classmethod
    def refuse_options(cls, config):
        """Refuse, in one line naming the option, this family's own options in a config of another family."""

    @classmethod
    def defaults_for(cls, config, task):
        """The value of every option `config` leaves out, for a run of `task` (an `EncoderTask`):
        the family's defaults, then the task's, then with `--freeze` the family's frozen ones."""
        return {**cls.defaults, **task.defaults, **(cls.frozen_defaults if config.freeze else {})}

    @classmethod
    def resolve_values(cls, config, values):
        """`values` (the resolved options, by name) completed with what follows from them;
        ValueError for a combination this family cannot train."""
        return values

    @classmethod
    def describe(cls, config) -> str:
        """The model of `config` in a few words, for the line a run starts with."""
        raise NotImplementedError

    # --- a run of the resolved config
    def __init__(self, config):
        self.config = config

    def check(self):
        """Fail in one line if the model cannot be loaded; runs before the run folder is touched."""

    def phases(self):
        c = self.config
        return [Phase("train", c.epochs, c.learning_rate, trainable=not c.freeze)]

    def initialize(self, model):
        """Put starting weights into the freshly built `model` beyond what its layers initialise
        (nothing here; pretrained families load theirs when building the encoder)."""

    def encode_tagged(self, sentences, what):
        raise ValueError("token classification (NER) needs a Hugging Face BERT: pass --backbone")


class PretrainedEncoderFamily(Family):
    """What the pretrained families (Hugging Face and TF-Hub BERTs) share about a config: the
    fine-tuning and frozen defaults, and the room a BERT input needs."""

    pretrained = True
    defaults = PRETRAINED_DEFAULTS
    frozen_defaults = FROZEN_DEFAULTS

    @classmethod
    def resolve_values(cls, config, values):
        if config.freeze and config.patience is None:
            values["patience"] = values["epochs"]  # no early stop (see FROZEN_DEFAULTS)
        if values["max_length"] < 3:
            raise ValueError(
                f"--max-length must be at least 3 for a pretrained model ([CLS], a token, [SEP]), "
                f"got {values['max_length']}"
            )
        return values
