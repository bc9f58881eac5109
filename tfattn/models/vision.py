"""Image classifiers trained from scratch: the Vision Transformer and the small CNN it is measured against.

Both take uint8 pixels `[batch, size, size, 3]` and return float32 logits; the scaling to
[0, 1] and the per-channel normalisation (`ImagePreprocessor`, the training images' mean and
standard deviation) are inside the model, so an export serves pixels as decoded. Saved as every
tfattn model that brings its preprocessing (`model.json` + a weights checkpoint,
`tfattn.models.translation.write_model_folder`) and loaded by kind from a fixed table
(`IMAGE_MODELS`), never from a class named in the files.

Example:
>>> model = build_image_model(VisionTransformer(num_classes=10, embed_dim=16, num_heads=2, ff_dim=32, num_blocks=2))
>>> model(tf.zeros([4, 32, 32, 3], tf.uint8)).shape
TensorShape([4, 10])
>>> [scores.shape for scores in model.forward(tf.zeros([1, 32, 32, 3], tf.uint8))["attention_scores"]]
[TensorShape([1, 2, 65, 65]), TensorShape([1, 2, 65, 65])]
"""

from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.layers import PatchEmbedding, TransformerBlock
from tfattn.models.task_models import WEIGHTS_PREFIX, read_weights
from tfattn.models.translation import CONFIG_FILE, write_model_folder

__all__ = [
    "IMAGE_MODELS",
    "ConvNet",
    "ImagePreprocessor",
    "VisionTransformer",
    "build_image_model",
    "load_image_model",
    "save_image_model",
]


class ImagePreprocessor:
    """uint8 pixels -> the float inputs a model learns on: scaled to [0, 1], then each channel
    shifted by `mean` and divided by `std` (the training images', `from_images`).

    Args:
        image_size: side of the square images the model takes.
        mean, std: per-channel statistics of pixels scaled to [0, 1] (3 values each).
    """

    def __init__(self, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)):
        self.image_size = int(image_size)
        self.mean = [float(value) for value in mean]
        self.std = [float(value) for value in std]
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std positive; got {mean!r} and {std!r}")

    @classmethod
    def from_images(cls, images, image_size):
        """The statistics of uint8 `images` `[N, H, W, 3]` (computed in chunks: 50,000 CIFAR
        images are 150 million values)."""
        total, squares, count = np.zeros(3), np.zeros(3), 0
        for start in range(0, len(images), 4096):
            chunk = np.asarray(images[start : start + 4096], np.float64).reshape(-1, 3) / 255.0
            total += chunk.sum(axis=0)
            squares += np.square(chunk).sum(axis=0)
            count += len(chunk)
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - np.square(mean), 1e-12))
        return cls(image_size, np.round(mean, 6), np.round(std, 6))

    def __call__(self, pixels):
        x = tf.cast(pixels, tf.float32) / 255.0
        return (x - tf.constant(self.mean)) / tf.constant(self.std)

    def get_config(self):
        return {"image_size": self.image_size, "mean": self.mean, "std": self.std}

    def save(self, folder):
        """Nothing to write: the statistics are in `model.json` (`get_config`)."""


class _ImageModel(keras.Model):
    """What every from-scratch image classifier shares: the preprocessor, the float32 head,
    saving (`kind`, `get_config`, `weight_layers`) and the attributes the explorer and the task
    read (`image_size`, `num_classes`, `has_attention`, `family_name`)."""

    kind = ""
    has_attention = False
    family_name = "from scratch"

    def __init__(self, num_classes, preprocessor=None, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        if not 0 <= float(dropout) < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.num_classes, self.dropout_rate = int(num_classes), float(dropout)
        self.preprocessor = preprocessor or ImagePreprocessor()
        self.image_size = self.preprocessor.image_size
        self.head_dropout = keras.layers.Dropout(self.dropout_rate)
        # float32 logits under mixed precision: the softmax and the loss need the range.
        self.head = keras.layers.Dense(self.num_classes, name="head", dtype="float32")

    def _check_pixels(self, pixels):
        shape = pixels.shape
        if shape.rank != 4 or shape[-1] != 3:
            raise ValueError(f"{self.name} takes pixels [batch, height, width, 3], got shape {shape}")

    def get_config(self):
        return {"num_classes": self.num_classes, "dropout": self.dropout_rate}


class VisionTransformer(_ImageModel):
    """The Vision Transformer (Dosovitskiy et al. 2021) sized for small images: `PatchEmbedding`
    (a class token and one token per patch, learned positions), `num_blocks` of tfattn's
    `TransformerBlock` (GELU), and a linear head on the class token's final vector.

    Args:
        num_classes: classes of the head.
        preprocessor: an `ImagePreprocessor` (its `image_size` is the model's).
        patch_size, tokenizer: see `tfattn.layers.PatchEmbedding`.
        embed_dim, num_heads, ff_dim, num_blocks: the encoder's sizes.
        dropout: inside the blocks and before the head.
        normalize_first: pre-norm blocks (the original ViT's), with a LayerNorm after the last;
            default post-norm (`TransformerBlock`).
        locality: locality self-attention in every block (`TransformerBlock`), the small-data
            fix that goes with `tokenizer="shifted"`.
    """

    kind = "vit"
    has_attention = True

    def __init__(
        self,
        num_classes,
        preprocessor=None,
        patch_size=4,
        embed_dim=128,
        num_heads=4,
        ff_dim=256,
        num_blocks=6,
        dropout=0.1,
        tokenizer="patches",
        normalize_first=False,
        locality=False,
        **kwargs,
    ):
        super().__init__(num_classes, preprocessor, dropout, **kwargs)
        if int(embed_dim) % int(num_heads):
            raise ValueError(f"embed_dim {embed_dim} must be a multiple of num_heads {num_heads}")
        self.patch_size, self.tokenizer = int(patch_size), tokenizer
        self.embed_dim, self.num_heads, self.ff_dim = int(embed_dim), int(num_heads), int(ff_dim)
        self.num_blocks = int(num_blocks)
        self.embedding = PatchEmbedding(self.image_size, self.patch_size, self.embed_dim, tokenizer, name="patches")
        self.embedding_dropout = keras.layers.Dropout(self.dropout_rate)
        self.blocks = [
            TransformerBlock(
                self.embed_dim,
                self.num_heads,
                self.ff_dim,
                self.dropout_rate,
                activation="gelu",
                normalize_first=normalize_first,
                locality=locality,
                name=f"block_{i}",
            )
            for i in range(self.num_blocks)
        ]
        self.normalize_first, self.locality = bool(normalize_first), bool(locality)  # (checked by the blocks)
        # Pre-norm blocks leave their sum unnormalized: the class token's vector is normed once, at the end.
        self.final_norm = (
            keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm", dtype="float32")
            if self.normalize_first
            else None
        )

    @property
    def patch_grid(self):
        """`(rows, cols)` of patches at `image_size`."""
        side = self.image_size // self.patch_size
        return side, side

    def forward(self, pixels, training=False, output_attentions=True):
        """`{"logits", "attention_scores"}`: the logits and, with `output_attentions`, each
        block's attention `[batch, heads, 1 + patches, 1 + patches]` (token 0 the class token)."""
        pixels = tf.convert_to_tensor(pixels)
        self._check_pixels(pixels)
        x = self.embedding_dropout(self.embedding(self.preprocessor(pixels)), training=training)
        scores = []
        for block in self.blocks:
            x, block_scores = block(x, training=training, return_attention_scores=True)
            scores.append(block_scores)
        class_vector = x[:, 0] if self.final_norm is None else self.final_norm(tf.cast(x[:, 0], tf.float32))
        class_vector = self.head_dropout(class_vector, training=training)
        return {"logits": self.head(class_vector), "attention_scores": scores if output_attentions else None}

    def call(self, pixels, training=None):
        return self.forward(pixels, training=training, output_attentions=False)["logits"]

    def weight_layers(self):
        layers = {"patches": self.embedding, "head": self.head}
        layers.update({block.name: block for block in self.blocks})
        if self.final_norm is not None:
            layers["final_norm"] = self.final_norm
        return layers

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "num_blocks": self.num_blocks,
            "tokenizer": self.tokenizer,
            "normalize_first": self.normalize_first,
            "locality": self.locality,
        }


class ConvNet(_ImageModel):
    """The classic bar a ViT is measured against on small data: a small VGG-style CNN, three
    stages of two 3x3 convolutions (batch norm, ReLU) and a 2x2 max pooling, with `width`,
    2 x `width` and 4 x `width` channels, then global average pooling and a linear head.

    Args:
        num_classes, preprocessor, dropout: as `VisionTransformer`'s.
        width: the channels of the first stage.
    """

    kind = "cnn"

    def __init__(self, num_classes, preprocessor=None, width=32, dropout=0.1, **kwargs):
        super().__init__(num_classes, preprocessor, dropout, **kwargs)
        if int(width) < 1:
            raise ValueError(f"width must be at least 1, got {width!r}")
        self.width = int(width)
        self.stages = []
        for stage in range(3):
            channels = self.width * 2**stage
            layers = []
            for index in range(2):
                name = f"stage_{stage}_conv_{index}"
                layers += [
                    keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=name),
                    keras.layers.BatchNormalization(name=f"{name}_norm"),
                    keras.layers.ReLU(),
                ]
            layers.append(keras.layers.MaxPooling2D(2))
            self.stages.append(keras.Sequential(layers, name=f"stage_{stage}"))
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, pixels, training=None):
        pixels = tf.convert_to_tensor(pixels)
        self._check_pixels(pixels)
        x = self.preprocessor(pixels)
        for stage in self.stages:
            x = stage(x, training=training)
        return self.head(self.head_dropout(self.pool(x), training=training))

    def forward(self, pixels, training=False, output_attentions=True):
        raise ValueError("the CNN baseline has no attention to explore; train a ViT (--model vit)")

    def weight_layers(self):
        return {**{stage.name: stage for stage in self.stages}, "head": self.head}

    def get_config(self):
        return {**super().get_config(), "width": self.width}


# Every from-scratch image model by the `kind` its model.json records: the only classes a saved
# folder can make (`load_image_model`).
IMAGE_MODELS = {VisionTransformer.kind: VisionTransformer, ConvNet.kind: ConvNet}


def build_image_model(model):
    """Run `model` once on a blank image, creating every variable."""
    model(tf.zeros([1, model.image_size, model.image_size, 3], tf.uint8), training=False)
    return model


def save_image_model(model, folder) -> Path:
    """Write a from-scratch image model to `folder`: `model.json` and a weights checkpoint;
    refuses non-finite weights."""
    return write_model_folder(model, folder)


def load_image_model(folder):
    """An image model written by `save_image_model`; its class comes from `IMAGE_MODELS` by the
    kind `model.json` records, and a damaged or foreign file is named in one line
    (`tfattn.runs.manifest.DamagedRun`)."""
    from tfattn.runs.manifest import DamagedRun, read_json_file

    folder = Path(folder)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_FILE}; not an image model saved by tfattn")
    saved = read_json_file(config_file)
    advice = "train the run again with --overwrite"
    kind = saved.get("model") if isinstance(saved, dict) else None
    if kind not in IMAGE_MODELS:
        raise DamagedRun(f"{config_file}: unknown image model {kind!r} (known: {', '.join(IMAGE_MODELS)}); {advice}")
    try:
        preprocessor = ImagePreprocessor(**saved["preprocessor"])
        model = build_image_model(IMAGE_MODELS[kind](preprocessor=preprocessor, **saved["config"]))
    except (KeyError, TypeError, ValueError) as error:
        what = f"{type(error).__name__}: {error}"
        raise DamagedRun(f"{config_file}: not an image model tfattn saved ({what}); {advice}") from None
    read_weights(tf.train.Checkpoint(**model.weight_layers()), folder / WEIGHTS_PREFIX, expect_partial=True)
    return model
