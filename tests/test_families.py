"""The model families: each is chosen by its own config, and resolving a config fills in the
defaults the families and tasks gave before they moved into `tfattn.families` (golden values)."""

import pytest

from tfattn.families import FAMILIES, family_class, family_of
from tfattn.tasks.config import TrainConfig

HUB_PAIR = {"hub_preprocess": "https://example.com/preprocess", "hub_encoder": "https://example.com/encoder"}
CONFIG_OF_FAMILY = {"scratch": {}, "huggingface": {"backbone": "bert-base-uncased"}, "hub": HUB_PAIR}
# The options whose defaults come from the families and tasks.
DEFAULTED = (
    "max_length",
    "batch_size",
    "epochs",
    "learning_rate",
    "pooling",
    "tokenizer",
    "token_dropout",
    "bigram_buckets",
    "word_shape",
    "dropout",
    "patience",
    "freeze_epochs",
)


def test_every_family_is_chosen_by_its_config_alone():
    assert list(FAMILIES) == list(CONFIG_OF_FAMILY)
    for name, options in CONFIG_OF_FAMILY.items():
        config = TrainConfig(**options)
        assert family_class(config) is FAMILIES[name]
        assert [family.name for family in FAMILIES.values() if family.chosen_by(config)] == [name]
        assert isinstance(family_of(config), FAMILIES[name]) and family_of(config).config is config
    # Both pretrained models named: the TF-Hub family is chosen, and refuses the backbone.
    both = TrainConfig(backbone="bert-base-uncased", **HUB_PAIR)
    assert family_class(both) is FAMILIES["hub"]
    with pytest.raises(ValueError, match="choose one pretrained model"):
        both.resolve()


@pytest.mark.parametrize(
    "options, expected, description",
    [
        (
            {"task": "agnews"},
            (256, 64, 10, 1e-3, "mean", "words", 0.0, 0, False, 0.1, 2, None),
            "from-scratch transformer",
        ),
        (
            {"task": "math", "data": "topics.csv"},
            (256, 64, 10, 5e-4, "mean", "wordpiece", 0.1, 65536, False, 0.1, 2, None),
            "from-scratch transformer",
        ),
        (
            {"task": "agnews", "embeddings_from": "bert-base-uncased"},
            (256, 64, 10, 1e-3, "mean", "wordpiece", 0.0, 0, False, 0.1, 2, None),
            "from-scratch transformer",
        ),
        (
            {"task": "agnews", "backbone": "bert-base-uncased", "freeze": True},
            (128, 32, 50, 1e-2, "cls", None, None, None, False, 0.0, 50, None),
            "bert-base-uncased (frozen)",
        ),
        (
            {"task": "ner", "data": "conll/train.txt", "backbone": "bert-base-cased"},
            (128, 32, 3, 5e-5, "cls", None, None, None, True, 0.1, 2, None),
            "bert-base-cased",
        ),
        (
            {"task": "agnews", **HUB_PAIR},
            (128, 32, 3, 3e-5, "pooled", None, None, None, False, 0.1, 2, 1),
            "TF-Hub https://example.com/encoder",
        ),
        (
            {"task": "classify", "data": "texts.csv", "freeze": True, "epochs": 7, **HUB_PAIR},
            (128, 32, 7, 1e-2, "pooled", None, None, None, False, 0.0, 7, 1),
            "TF-Hub https://example.com/encoder",
        ),
    ],
)
def test_resolve_fills_the_same_defaults_as_before_families_moved(options, expected, description):
    config = TrainConfig(**options)
    resolved = config.resolve()
    assert tuple(getattr(resolved, name) for name in DEFAULTED) == expected
    assert config.model_description == description
    assert config.pretrained == (description != "from-scratch transformer")
