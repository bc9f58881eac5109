"""Images as token sequences for a Vision Transformer: `PatchEmbedding` (patches, a class token, learned positions)."""

import math

import tensorflow as tf
import tf_keras as keras

from tfattn.layer_arguments import config_of, keep_arguments

__all__ = ["PATCH_TOKENIZERS", "PatchEmbedding"]

# How `PatchEmbedding` turns pixels into patch vectors:
# - "patches": the ViT's: each patch_size x patch_size patch flattened and projected (one strided
#   convolution does both);
# - "shifted": shifted patch tokenization (Lee et al. 2021, "ViT for small-size datasets"): the image
#   and its four diagonal shifts by half a patch stacked as channels before the patches are cut, so
#   each patch vector also sees its neighbours' edges;
# - "conv": a convolutional tokenizer (Hassani et al. 2021, CCT): 3x3 convolutions and stride-2 max
#   pooling, log2(patch_size) times, instead of cutting patches: overlapping, translation-equivariant
#   features.
PATCH_TOKENIZERS = ("patches", "shifted", "conv")


@keras.saving.register_keras_serializable(package="tfattn")
class PatchEmbedding(keras.layers.Layer):
    """Images -> a class token followed by one vector per patch, each plus a learned position.

    The patches are read in row-major order (the top row left to right, then the next), so token
    `1 + r * cols + c` is the patch in row `r`, column `c`; token 0 is the class token, whose
    final vector a ViT classifies. Given images of another size than `image_size`, the position
    table of the patch grid is resized (bicubic) to the new grid, as ViT and DeiT fine-tune at a
    higher resolution; the class token keeps its position.

    Args:
        image_size: side in pixels of the (square) images the position table is learned for.
        patch_size: side in pixels of a patch; must divide `image_size` (with `tokenizer="conv"`
            a power of 2: each halving is one convolution and pooling stage).
        embed_dim: size of each token vector.
        tokenizer: "patches", "shifted" or "conv" (see `PATCH_TOKENIZERS`).
        conv_channels: with `tokenizer="conv"`, the channels of the stages before the last
            (the last has `embed_dim`).
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call args:
        images: float `[batch, height, width, channels]`, already scaled as the model wants.

    Returns:
        `[batch, 1 + patches, embed_dim]`.

    Example:
    >>> embedding = PatchEmbedding(image_size=32, patch_size=4, embed_dim=16)
    >>> embedding(tf.zeros([2, 32, 32, 3])).shape
    TensorShape([2, 65, 16])
    >>> embedding(tf.zeros([2, 48, 48, 3])).shape  # a 12 x 12 grid: positions interpolated
    TensorShape([2, 145, 16])
    """

    def __init__(self, image_size, patch_size, embed_dim, tokenizer="patches", conv_channels=64, **kwargs):
        super().__init__(**kwargs)
        keep_arguments(self, patch_arguments(image_size, patch_size, embed_dim, tokenizer, conv_channels))

    @property
    def grid_size(self):
        """Patches per side at `image_size`."""
        return self.image_size // self.patch_size

    def build(self, input_shape):
        if self.tokenizer == "conv":
            stages = int(math.log2(self.patch_size))
            self.stages = []
            for stage in range(stages):
                channels = self.embed_dim if stage == stages - 1 else self.conv_channels
                self.stages.append(
                    keras.layers.Conv2D(
                        channels, 3, padding="same", activation="relu", name=f"conv_{stage}", dtype=self.dtype_policy
                    )
                )
                self.stages.append(
                    keras.layers.MaxPooling2D(
                        3, strides=2, padding="same", name=f"pool_{stage}", dtype=self.dtype_policy
                    )
                )
        else:
            self.stages = [
                keras.layers.Conv2D(
                    self.embed_dim,
                    self.patch_size,
                    strides=self.patch_size,
                    name="projection",
                    dtype=self.dtype_policy,
                )
            ]
        # Shifted patches are layer-normed before they mix with the positions (as in the paper).
        self.patch_norm = (
            keras.layers.LayerNormalization(epsilon=1e-6, name="patch_norm", dtype="float32")
            if self.tokenizer == "shifted"
            else None
        )
        self.class_token = self.add_weight(
            name="class_token", shape=[1, 1, self.embed_dim], initializer=_small_normal(), trainable=True
        )
        self.positions = self.add_weight(
            name="positions",
            shape=[1, 1 + self.grid_size**2, self.embed_dim],
            initializer=_small_normal(),
            trainable=True,
        )
        channels = input_shape[-1] * (5 if self.tokenizer == "shifted" else 1)
        shape = tf.TensorShape([None, self.image_size, self.image_size, channels])
        for stage in self.stages:
            with tf.name_scope(stage.name):
                stage.build(shape)
            shape = stage.compute_output_shape(shape)
        if self.patch_norm is not None:
            with tf.name_scope(self.patch_norm.name):
                self.patch_norm.build([None, None, self.embed_dim])
        super().build(input_shape)

    def _shifted(self, images):
        """The images and their four diagonal shifts by half a patch, stacked as channels (the
        pixels shifted in from outside are zeros)."""
        half = self.patch_size // 2
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        padded = tf.pad(images, [[0, 0], [half, half], [half, half], [0, 0]])
        shifts = [
            padded[:, half + dy : half + dy + height, half + dx : half + dx + width]
            for dy, dx in ((-half, -half), (-half, half), (half, -half), (half, half))
        ]
        return tf.concat([images, *shifts], axis=-1)

    def position_table(self, rows, cols):
        """The positions `[1, 1 + rows * cols, embed_dim]` of a `rows` x `cols` patch grid: the
        learned table, or its patch part resized (bicubic) to another grid."""
        if (rows, cols) == (self.grid_size, self.grid_size):
            return self.positions
        side = self.grid_size
        grid = tf.reshape(self.positions[:, 1:], [1, side, side, self.embed_dim])
        resized = tf.image.resize(grid, [rows, cols], method="bicubic")
        return tf.concat([self.positions[:, :1], tf.reshape(resized, [1, rows * cols, self.embed_dim])], axis=1)

    def call(self, images):
        x = tf.cast(images, self.compute_dtype)
        if self.tokenizer == "shifted":
            x = self._shifted(x)
        for stage in self.stages:
            x = stage(x)
        rows, cols = x.shape[1], x.shape[2]
        if rows is None or cols is None:
            raise ValueError(f"{self.name}: images need a known height and width, got shape {images.shape}")
        patches = tf.reshape(x, [-1, rows * cols, self.embed_dim])
        if self.patch_norm is not None:
            patches = self.patch_norm(patches)
        patches = tf.cast(patches, self.compute_dtype)
        batch = tf.shape(patches)[0]
        class_tokens = tf.cast(tf.tile(self.class_token, [batch, 1, 1]), self.compute_dtype)
        tokens = tf.concat([class_tokens, patches], axis=1)
        return tokens + tf.cast(self.position_table(rows, cols), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        rows, cols = shape[1] // self.patch_size, shape[2] // self.patch_size
        return tf.TensorShape([shape[0], 1 + rows * cols, self.embed_dim])

    def get_config(self):
        return {**super().get_config(), **config_of(self)}


def _small_normal():
    """ViT's initializer of the class token and positions, a new instance per weight (Keras warns
    when one unseeded instance initializes two weights: they would come out the same)."""
    return keras.initializers.TruncatedNormal(stddev=0.02)


def patch_arguments(image_size, patch_size, embed_dim, tokenizer, conv_channels):
    """`PatchEmbedding`'s arguments, checked (ValueError naming the argument)."""
    values = {"image_size": image_size, "patch_size": patch_size, "embed_dim": embed_dim}
    values["conv_channels"] = conv_channels
    for name, value in values.items():
        if isinstance(value, bool) or int(value) != value or int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    values = {name: int(value) for name, value in values.items()}
    if tokenizer not in PATCH_TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(PATCH_TOKENIZERS)}, got {tokenizer!r}")
    if values["image_size"] % values["patch_size"]:
        raise ValueError(f"patch_size {patch_size} must divide image_size {image_size}")
    size = values["patch_size"]
    if tokenizer == "conv" and (size < 2 or size & (size - 1)):
        raise ValueError("tokenizer 'conv' halves the image log2(patch_size) times: patch_size must be 2, 4, 8, ...")
    if tokenizer == "shifted" and size < 2:
        raise ValueError("tokenizer 'shifted' shifts by half a patch: patch_size must be at least 2")
    return {**values, "tokenizer": tokenizer}
