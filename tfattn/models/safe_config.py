"""Reading a saved model description (`model.json`) without running code named in it.

tf-keras rebuilds a model from its config by importing whatever `module` the config names and
calling whatever class or function it finds there (its safe mode only refuses bytecode
lambdas), so a crafted run folder could run any command as the user who loads it. tfattn
therefore checks the whole description against an allow-list first, as Hugging Face reads
configs through a table of known model types:

- tfattn's own registered classes (`@keras.saving.register_keras_serializable(package="tfattn")`),
  looked up in the Keras registry by their registered name, never imported from a module;
- the few Keras built-ins such a description may hold, by module and class name
  (`KERAS_BUILTINS`);
- Hugging Face architectures only of the BERT family (`HF_MODEL_TYPES`), with no `auto_map`
  (remote code); Hugging Face image classifiers (`tfattn.models.hf_vision`) only of the ViT and
  DeiT types (`HF_IMAGE_MODEL_TYPES`, `check_hf_image_config`), with no `auto_map` either.

Anything else is refused with one line naming the file and the class (`UnsafeModelConfig`), and
nothing in the description is turned into an object.

Example:
>>> check_model_config({"module": "builtins", "class_name": "function", "config": "repr"}, "model.json")
Traceback (most recent call last):
...
tfattn.models.safe_config.UnsafeModelConfig: model.json: refusing to load 'function' (module 'builtins'): \
tfattn loads only its own model classes; nothing in the file was run
"""

from collections.abc import Iterator
from pathlib import Path

import tf_keras as keras

__all__ = [
    "HF_IMAGE_MODEL_TYPES",
    "HF_MODEL_TYPES",
    "KERAS_BUILTINS",
    "UnsafeModelConfig",
    "check_hf_config",
    "check_hf_image_config",
    "check_model_config",
]

# Keras built-ins by module, as tf-keras writes them into a config (a layer's dtype policy under
# mixed precision, initializers and regularizers of layers): data, no code of their own.
KERAS_BUILTINS = {
    "keras.mixed_precision": frozenset({"Policy"}),
    "keras.initializers": frozenset(
        {"Constant", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "Ones", "RandomNormal"}
        | {"RandomUniform", "TruncatedNormal", "Zeros"}
    ),
    "keras.regularizers": frozenset({"L1", "L1L2", "L2"}),
}
# Hugging Face model types `HuggingFaceEncoder` may rebuild from a saved config: BERT-family
# encoders with TensorFlow classes (what tfattn's WordPiece preprocessor and encoder support).
HF_MODEL_TYPES = frozenset(
    {"albert", "bert", "camembert", "convbert", "distilbert", "electra", "layoutlm", "mobilebert", "mpnet"}
    | {"rembert", "roberta", "roberta-prelayernorm", "tapas", "xlm-roberta"}
)
# Hugging Face model types `HuggingFaceImageClassifier` loads: image classifiers with TensorFlow
# classes whose tokens are a class token (DeiT: and a distillation token) then the patches.
HF_IMAGE_MODEL_TYPES = frozenset({"deit", "vit"})
TFATTN_PACKAGE = "tfattn"


class UnsafeModelConfig(ValueError):
    """A model description names something outside the allow-list; nothing was built."""


def _class_dicts(value) -> Iterator[dict]:
    """Every dict in a JSON value that names something to build (has a `class_name`)."""
    if isinstance(value, dict):
        if "class_name" in value:
            yield value
        for item in value.values():
            yield from _class_dicts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _class_dicts(item)


def _is_tfattn_class(entry: dict) -> bool:
    registered = entry.get("registered_name")
    if registered != f"{TFATTN_PACKAGE}>{entry.get('class_name')}":
        return False
    found = keras.saving.get_registered_object(registered)
    return isinstance(found, type) and found.__module__.split(".")[0] == TFATTN_PACKAGE


def _is_keras_builtin(entry: dict) -> bool:
    name = entry.get("class_name")
    return name in KERAS_BUILTINS.get(entry.get("module"), ()) and entry.get("registered_name") in (None, name)


def check_model_config(config, source: str | Path) -> None:
    """Raise `UnsafeModelConfig` unless everything `config` (a `model.json` value) names is on
    the allow-list; `source` is the file named in the message."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise UnsafeModelConfig(f"{source}: not a model description (no class_name at the top)")
    for entry in _class_dicts(config):
        if not (_is_tfattn_class(entry) or _is_keras_builtin(entry)):
            raise UnsafeModelConfig(
                f"{source}: refusing to load {entry.get('class_name')!r} (module {entry.get('module')!r}): "
                "tfattn loads only its own model classes; nothing in the file was run"
            )
        if "hf_config" in entry.get("config", {}):
            check_hf_config(entry["config"]["hf_config"], source)


def check_hf_config(hf_config, source: str | Path) -> None:
    """Raise `UnsafeModelConfig` unless `hf_config` describes a BERT-family architecture with no
    remote code (`auto_map`)."""
    _check_hf_model_type(hf_config, source, HF_MODEL_TYPES, "hf_config", "tfattn rebuilds only")


def check_hf_image_config(hf_config, source: str | Path) -> None:
    """Raise `UnsafeModelConfig` unless `hf_config` (a Hugging Face `config.json` value) describes
    a ViT or DeiT model with no remote code (`auto_map`); `source` (the folder or hub name) is
    named in the message."""
    allowed = "tfattn fine-tunes only image classifiers of type"
    _check_hf_model_type(hf_config, source, HF_IMAGE_MODEL_TYPES, "config.json", allowed)


def _check_hf_model_type(hf_config, source, model_types, what, allowed):
    """`UnsafeModelConfig` unless `hf_config` (named `what`) is a JSON object of one of
    `model_types` without `auto_map`."""
    if not isinstance(hf_config, dict):
        raise UnsafeModelConfig(f"{source}: {what} is not a JSON object")
    model_type = hf_config.get("model_type")
    if model_type not in model_types:
        raise UnsafeModelConfig(
            f"{source}: refusing Hugging Face model type {model_type!r}: {allowed} {', '.join(sorted(model_types))}"
        )
    if hf_config.get("auto_map"):
        raise UnsafeModelConfig(f"{source}: refusing a Hugging Face config with auto_map (code from a hub repository)")
