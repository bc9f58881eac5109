"""The model families an encoder task trains: each owns its defaults, its checks and its loading.

A config names its family by what it sets: `hub_encoder` the TF-Hub pair (`hub.HubFamily`),
`backbone` a Hugging Face BERT (`huggingface.PretrainedFamily`), neither the from-scratch
transformer (`scratch.ScratchFamily`). `TrainConfig.resolve` asks the chosen family for its
defaults and checks (`family_class`, `check_families`); `tfattn.training.loop.train` asks it for
the preprocessor, encoder and phases (`family_of`). Adding a family: a module with a `Family`
subclass (`base.py`), and one entry in `FAMILIES`.

>>> from tfattn.tasks.config import TrainConfig
>>> family_class(TrainConfig(backbone="bert-base-uncased")).name
'huggingface'
"""

from tfattn.families.base import Family, Phase
from tfattn.families.hub import HubFamily
from tfattn.families.huggingface import PretrainedFamily
from tfattn.families.scratch import ScratchFamily

__all__ = [
    "FAMILIES",
    "Family",
    "HubFamily",
    "Phase",
    "PretrainedFamily",
    "ScratchFamily",
    "check_families",
    "family_class",
    "family_of",
]

# Every family by name, in the order their checks run.
FAMILIES = {family.name: family for family in (ScratchFamily, PretrainedFamily, HubFamily)}


def family_class(config) -> type[Family]:
    """The family `config` trains (exactly one is chosen by any config)."""
    (chosen,) = [family for family in FAMILIES.values() if family.chosen_by(config)]
    return chosen


def family_of(config) -> Family:
    """The family of a resolved `config`, holding it, ready to load its model."""
    return family_class(config)(config)


def check_families(config):
    """Refuse, in one line naming the option, a config its family cannot train or that sets
    another family's options."""
    chosen = family_class(config)
    for family in FAMILIES.values():
        if family is chosen:
            family.check_config(config)
        else:
            family.refuse_options(config)
