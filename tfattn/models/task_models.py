"""Task models: a preprocessor, an encoder and a head, for every model family alike.

- `TextClassifier(preprocessor, encoder, num_classes, pooling)`: one label per text.
- `TokenClassifier(preprocessor, encoder, label_names, word_shape=False)`: one label per token
  (NER), optionally told each token's casing in the raw text.

Both return float32 logits; take raw strings `[batch]` (preprocessed in the graph, so a
SavedModel serves strings) or an already preprocessed feature dict (training pipelines
tokenize once, up front); freeze and unfreeze their encoder; hand back every layer's attention
for given texts (`attention`); and save to / load from one folder format (`save_model`,
`load_model`) whatever the encoder: `model.json` (the Keras config, preprocessor vocabulary
and encoder architecture included) plus a TensorFlow checkpoint of all weights.

Example:
>>> from tfattn.models import TextClassifier, TransformerEncoder, VocabularyPreprocessor
>>> preprocessor = VocabularyPreprocessor(["stocks", "fell", "goal"], max_length=16)
>>> encoder = TransformerEncoder(vocab_size=5, max_length=16, embed_dim=8, num_heads=2, ff_dim=16)
>>> model = TextClassifier(preprocessor, encoder, num_classes=2, pooling="mean")
>>> model(tf.constant(["Stocks fell", "Goal!"])).shape
TensorShape([2, 2])
>>> maps = model.attention(["Stocks fell"])
>>> maps[0].tokens, maps[0].attention.shape
(['stocks', 'fell'], (1, 2, 2, 2))
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.models.encoders import Encoder, masked_mean
from tfattn.models.preprocessors import FEATURE_NAMES, tokens_of
from tfattn.models.safe_config import check_model_config
from tfattn.tagging import SHAPE_FEATURE, WORD_SHAPES, text_shape_ids

__all__ = ["POOLINGS", "TextAttention", "TextClassifier", "TokenClassifier", "load_model", "save_model"]

POOLINGS = ("cls", "mean", "pooled")
MODEL_CONFIG_FILE = "model.json"
WEIGHTS_PREFIX = "weights"


@dataclass
class TextAttention:
    """Attention of one text: `attention[layer]` is `[heads, tokens, tokens]` (query, key)."""

    text: str
    tokens: list
    attention: np.ndarray  # [layers, heads, tokens, tokens]

    @property
    def num_layers(self):
        return self.attention.shape[0]

    @property
    def num_heads(self):
        return self.attention.shape[1]


class TaskModel(keras.Model):
    """What both task models share: strings or features in, encoder freezing, attention."""

    def __init__(self, preprocessor, encoder, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.preprocessor = preprocessor
        self.encoder = encoder
        self.dropout_rate = float(dropout)
        self.dropout = keras.layers.Dropout(self.dropout_rate)
        self.encoder.use_pooler(self.reads_pooler)

    reads_pooler = False  # whether the head reads the encoder's pooled_output

    def features(self, inputs: tf.Tensor | dict) -> dict:
        """The feature dict of `inputs`: strings `[batch]` are preprocessed, a dict passes through."""
        if isinstance(inputs, dict):
            return inputs
        return self.preprocessor(tf.convert_to_tensor(inputs, tf.string))

    def freeze_encoder(self) -> None:
        """Train only the head. Recompile afterwards: Keras fixes the trained weights at compile."""
        self.encoder.trainable = False

    def unfreeze_encoder(self) -> None:
        """Train the encoder too. Recompile afterwards (e.g. with the warmup optimizer)."""
        self.encoder.trainable = True
        self.encoder.use_pooler(self.reads_pooler)

    def call(self, inputs, training=None):
        return self.forward(self.features(inputs), training=training)["logits"]

    def forward(self, features: dict, training=None, output_attentions: bool = False) -> dict:
        """One pass over a feature dict: `logits`, and with `output_attentions` each layer's
        `attention_scores` `[batch, heads, query, key]` from that same pass, so that a
        `tf.GradientTape` can take the logits' gradient with respect to the attention."""
        outputs = self.encoder(features, training=training, output_attentions=output_attentions)
        result = {"logits": tf.cast(self.head_logits(features, outputs, training), tf.float32)}
        if output_attentions:
            result["attention_scores"] = outputs["attention_scores"]
        return result

    def head_logits(self, features: dict, encoder_outputs: dict, training=None) -> tf.Tensor:
        """The task head: from the encoder's outputs to the logits."""
        raise NotImplementedError

    # Whether the head reads one tensor per example that a frozen encoder's outputs determine
    # (`head_inputs`), so that a frozen phase can compute it once and train the head on it alone
    # (`tfattn.tasks.frozen`).
    head_inputs_cacheable = False

    def head_inputs(self, features: dict, encoder_outputs: dict) -> tf.Tensor:
        """What the head reads of the encoder's outputs (e.g. the pooled vector of each text)."""
        raise NotImplementedError(f"{type(self).__name__} has no cacheable head inputs")

    def logits_from_head_inputs(self, head_inputs: tf.Tensor, training=None) -> tf.Tensor:
        """The head alone: from `head_inputs` to the logits."""
        raise NotImplementedError(f"{type(self).__name__} has no cacheable head inputs")

    def head_layers(self) -> list:
        """The layers whose weights the head trains (all of them sit after the encoder)."""
        return [self.head]

    def attention(self, texts: str | Sequence[str], batch_size: int = 32) -> list[TextAttention]:
        """Every layer's attention for each text, padding removed: a list of `TextAttention`."""
        if isinstance(texts, str):
            texts = [texts]
        vocabulary = self.preprocessor.vocabulary
        if vocabulary is not None:
            vocabulary = np.asarray(vocabulary, dtype=object)  # once, not per text
        results = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            features = self.features(batch)
            scores = self.encoder(features, training=False, output_attentions=True)["attention_scores"]
            scores = tf.stack([tf.cast(layer, tf.float32) for layer in scores], axis=1).numpy()
            ids, mask = features["input_word_ids"].numpy(), features["input_mask"].numpy().astype(bool)
            for row, text in enumerate(batch):
                length = int(mask[row].sum())
                results.append(
                    TextAttention(text, tokens_of(vocabulary, ids[row][mask[row]]), scores[row, :, :, :length, :length])
                )
        return results

    def get_config(self):
        return {
            "name": self.name,
            "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "dropout": self.dropout_rate,
        }

    def build_from_config(self, config):
        # Keras would call `build(input_shape)`, feeding a float placeholder to the string
        # preprocessor; a task model is built by calling it on a string, as `load_model` does.
        self(tf.constant(["build"]), training=False)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for part in ("preprocessor", "encoder"):
            config[part] = keras.saving.deserialize_keras_object(config[part])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfattn")
class TextClassifier(TaskModel):
    """One label per text: encoder, pooling, dropout, dense -> logits `[batch, num_classes]`.

    Args:
        preprocessor: strings -> feature dict (`tfattn.models.preprocessors`).
        encoder: feature dict -> `sequence_output`, `pooled_output` (`tfattn.models.encoders`).
        num_classes: number of classes.
        pooling: how a text becomes one vector, for every encoder: `"cls"` (the first token),
            `"mean"` (mean of real tokens) or `"pooled"` (the encoder's `pooled_output`).
        dropout: dropout rate before the dense head.
    """

    def __init__(
        self,
        preprocessor: keras.layers.Layer,
        encoder: Encoder,
        num_classes: int,
        pooling: str = "cls",
        dropout: float = 0.1,
        **kwargs,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        self.pooling = pooling
        self.reads_pooler = pooling == "pooled"
        super().__init__(preprocessor, encoder, dropout=dropout, **kwargs)
        self.num_classes = int(num_classes)
        self.head = keras.layers.Dense(self.num_classes, kernel_initializer=encoder.head_initializer(), name="logits")

    head_inputs_cacheable = True

    def head_logits(self, features, encoder_outputs, training=None):
        return self.logits_from_head_inputs(self.head_inputs(features, encoder_outputs), training)

    def head_inputs(self, features, encoder_outputs):
        """The pooled vector of each text, `[batch, hidden]`."""
        if self.pooling == "pooled":
            return encoder_outputs["pooled_output"]
        if self.pooling == "cls":
            return encoder_outputs["sequence_output"][:, 0]
        return masked_mean(encoder_outputs["sequence_output"], features["input_mask"])

    def logits_from_head_inputs(self, head_inputs, training=None):
        return self.head(self.dropout(head_inputs, training=training))

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities `[len(texts), num_classes]` of raw strings, in input order."""
        texts = list(texts)
        batches = [
            tf.nn.softmax(self(tf.constant(texts[start : start + batch_size]), training=False)).numpy()
            for start in range(0, len(texts), batch_size)
        ]
        return np.concatenate(batches) if batches else np.zeros((0, self.num_classes), np.float32)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "pooling": self.pooling}


@keras.saving.register_keras_serializable(package="tfattn")
class TokenClassifier(TaskModel):
    """One label per token: encoder, (word shapes,) dropout, dense -> logits `[batch, seq, labels]`.

    Args:
        preprocessor: strings -> feature dict. Tagging raw text with character offsets
            (`tag_tokens`) and `word_shape` need one that `locates_tokens` (`BertPreprocessor`).
        encoder: feature dict -> `sequence_output`.
        label_names: the tags, e.g. `tfattn.data.NER_LABELS`.
        dropout: dropout rate before the dense head.
        word_shape: add to each token's vector a learned embedding of its casing in the raw text
            (`tfattn.tagging.WORD_SHAPES`), which an uncased encoder never sees. Feature dicts must
            then hold `input_shape_ids` (`tfattn.tagging.tokenize_and_align(..., word_shapes=True)`);
            raw strings get them in the graph. The embedding starts at zero, so an untrained
            one leaves the model's outputs as they are without it; its output is scaled by
            sqrt(width), so that it can grow at a fine-tuning learning rate.
    """

    def __init__(
        self,
        preprocessor: keras.layers.Layer,
        encoder: Encoder,
        label_names: Sequence[str],
        dropout: float = 0.1,
        word_shape: bool = False,
        **kwargs,
    ):
        super().__init__(preprocessor, encoder, dropout=dropout, **kwargs)
        label_names = [str(name) for name in label_names]
        if len(label_names) < 2:
            raise ValueError(f"label_names needs at least 2 labels, got {label_names}")
        self.word_shape = bool(word_shape)
        if self.word_shape and not preprocessor.locates_tokens:
            raise ValueError(
                f"word_shape=True reads each token's characters in the raw text, which "
                f"{type(preprocessor).__name__} cannot locate (no encode_with_offsets); use a WordPiece (BERT) model"
            )
        self.label_names = label_names
        self.head = keras.layers.Dense(
            len(self.label_names), kernel_initializer=encoder.head_initializer(), name="logits"
        )
        # Made on the first call, when the width of the encoder's vectors is known.
        self.word_shape_embedding = None

    def features(self, inputs: tf.Tensor | dict) -> dict:
        if self.word_shape and not isinstance(inputs, dict):
            return self._encode_with_offsets(inputs)[0]
        return super().features(inputs)

    def _encode_with_offsets(self, texts):
        """(features, `encode_with_offsets` output) of raw strings; the features hold the word
        shape ids when the model reads them."""
        texts = tf.convert_to_tensor(texts, tf.string)
        encoded = self.preprocessor.encode_with_offsets(texts)
        features = {name: encoded[name] for name in FEATURE_NAMES}
        if self.word_shape:
            features[SHAPE_FEATURE] = text_shape_ids(texts, encoded["offsets"])
        return features, encoded

    def head_logits(self, features, encoder_outputs, training=None):
        sequence = encoder_outputs["sequence_output"]
        if self.word_shape:
            sequence = sequence + self._shape_vectors(features, sequence)
        return self.head(self.dropout(sequence, training=training))

    def _shape_vectors(self, features, sequence):
        """The word shape embedding of each token, in the dtype of `sequence`."""
        if SHAPE_FEATURE not in features:
            raise ValueError(
                f"word_shape=True needs the feature {SHAPE_FEATURE!r} "
                "(tfattn.tagging.tokenize_and_align(..., word_shapes=True)) or raw strings"
            )
        if self.word_shape_embedding is None:
            self.word_shape_embedding = keras.layers.Embedding(
                len(WORD_SHAPES), sequence.shape[-1], embeddings_initializer="zeros", name="word_shape"
            )
        # Scaled by sqrt(width): the table starts at zero and, fine-tuned at a pretrained model's
        # small learning rate, moves about that rate per step; unscaled it stayed under 1% of the
        # token vectors' norm after a whole run and changed no prediction (BENCHMARKS.md).
        scale = float(sequence.shape[-1]) ** 0.5
        # Under mixed precision the encoder's vectors may be float16 or bfloat16.
        return tf.cast(self.word_shape_embedding(features[SHAPE_FEATURE]) * scale, sequence.dtype)

    def tag_tokens(self, texts: tf.Tensor | Sequence[str]) -> dict[str, tf.Tensor]:
        """Per-token predictions of raw strings, all computed in the graph (what the NER export
        serves): `probabilities` `[batch, seq, labels]`, `label_ids` and `scores` `[batch, seq]`,
        `offsets` `[batch, seq, 2]` (character start, end in each text; (0, 0) for special tokens
        and padding) and `word_ids` `[batch, seq]` (-1 outside words)."""
        features, encoded = self.encode_for_tagging(texts)
        return self.tagged(tf.nn.softmax(self(features, training=False)), encoded)

    def encode_for_tagging(self, texts: tf.Tensor | Sequence[str]) -> tuple[dict, dict]:
        """`(features, encoded)` of raw strings, tokenized once: the model's features and the
        preprocessor's `encode_with_offsets` output (offsets, word ids)."""
        if not self.preprocessor.locates_tokens:
            raise ValueError(
                f"tagging raw text needs character offsets, which {type(self.preprocessor).__name__} does not give; "
                "use a WordPiece (BERT-family) model"
            )
        return self._encode_with_offsets(texts)

    @staticmethod
    def tagged(probabilities: tf.Tensor, encoded: dict) -> dict[str, tf.Tensor]:
        """`tag_tokens`' outputs from per-token `probabilities` and `encode_for_tagging`'s `encoded`."""
        return {
            "probabilities": probabilities,
            "label_ids": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
            "scores": tf.reduce_max(probabilities, axis=-1),
            "offsets": encoded["offsets"],
            "word_ids": encoded["word_ids"],
        }

    def get_config(self):
        return {**super().get_config(), "label_names": self.label_names, "word_shape": self.word_shape}


def save_model(model: TaskModel, folder: str | Path) -> Path:
    """Write a task model to `folder` (created; its files replaced): `model.json` and the weights.

    Refuses (`tfattn.models.weights.TrainingDiverged`) a model with non-finite weights.
    """
    from tfattn.files import write_json
    from tfattn.models.weights import check_finite_weights

    check_finite_weights(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = keras.saving.serialize_keras_object(model)
    # A saved model is for inference and export: no optimizer or loss to rebuild.
    config.pop("compile_config", None)
    config.pop("build_config", None)
    write_json(folder / MODEL_CONFIG_FILE, config)
    _weights_checkpoint(model).write(str(folder / WEIGHTS_PREFIX))
    return folder


def _weights_checkpoint(model):
    # The encoder and head (and a token classifier's word shape embedding) only: the
    # preprocessor's state is its config, and an optimizer (which `model.save_weights` would
    # add) has no place in a saved model.
    parts = {"encoder": model.encoder, "head": model.head}
    if getattr(model, "word_shape", False):
        parts["word_shape"] = model.word_shape_embedding
    return tf.train.Checkpoint(**parts)


def load_model(folder: str | Path) -> TaskModel:
    """A task model written by `save_model`: rebuilt from `model.json` (no download; TF-Hub
    handles must still resolve), then its weights loaded.

    The description is checked against tfattn's allow-list first (`tfattn.models.safe_config`):
    loading a folder never imports or runs code named in it.

    Raises:
        FileNotFoundError: no model.json in `folder`.
        tfattn.runs.manifest.DamagedRun: model.json is not valid JSON, or the weights are
            missing or damaged.
        tfattn.models.safe_config.UnsafeModelConfig: model.json names a class off the allow-list.
    """
    from tfattn.runs.manifest import read_json_file

    folder = Path(folder)
    config_file = folder / MODEL_CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: no {MODEL_CONFIG_FILE}; not a model saved by tfattn")
    config = read_json_file(config_file)
    check_model_config(config, config_file)
    model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    model(tf.constant(["build"]), training=False)  # creates the variables the checkpoint fills
    read_weights(_weights_checkpoint(model), folder / WEIGHTS_PREFIX)
    return model


def read_weights(checkpoint: tf.train.Checkpoint, prefix: Path, expect_partial: bool = False) -> None:
    """Fill `checkpoint`'s objects from the checkpoint at `prefix`, every object matched; a
    missing, empty or foreign checkpoint is `tfattn.runs.manifest.DamagedRun` naming it."""
    from tfattn.runs.manifest import DamagedRun

    try:
        status = checkpoint.read(str(prefix)).assert_existing_objects_matched()
        if expect_partial:
            status.expect_partial()
    except Exception as error:  # noqa: BLE001 - a damaged file surfaces as OpError, IndexError, ValueError, ...
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise DamagedRun(
            f"{prefix}: the weights checkpoint is missing or damaged ({reason}); train the run again with --overwrite"
        ) from None
