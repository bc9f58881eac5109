"""Hugging Face TF image classifiers (ViT, DeiT) fine-tuned behind tfattn's image-classifier interface.

`HuggingFaceImageClassifier` wraps a `transformers` TF image classifier
(`TFViTForImageClassification`, `TFDeiTForImageClassification`) as a Keras model that takes
uint8 pixels `[batch, height, width, 3]` of any size, as `tfattn.models.vision`'s from-scratch
models do, and returns float32 logits; `model.compile` and `model.fit` train it (tf-keras), and
`forward` gives every layer's attention for the explorer.

Inside the model the pixels go the way the checkpoint's own image processor sends them: resized
to the checkpoint's `config.image_size` (bilinear, antialiased when shrinking, as PIL does),
scaled to [0, 1], normalised by the checkpoint's `image_mean` / `image_std`, and made
channels-first (Hugging Face's TF vision models take `[batch, 3, height, width]`).

Loading never runs code named in a file: `config.json` is read as plain JSON and must be of a
type in `tfattn.models.safe_config.HF_IMAGE_MODEL_TYPES` with no `auto_map` before any weights
load; `preprocessor_config.json` is read as plain JSON too (no image-processor class is built).

Example:
>>> model = HuggingFaceImageClassifier.from_pretrained("google/vit-base-patch16-224", ["cat", "dog"])  # doctest: +SKIP
>>> model(tf.zeros([4, 32, 32, 3], tf.uint8)).shape  # doctest: +SKIP
TensorShape([4, 2])
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.models.safe_config import check_hf_image_config
from tfattn.pretrained import PretrainedLoadError, check_checkpoint_folder, looks_local

__all__ = [
    "DEFAULT_IMAGE_MEAN",
    "DEFAULT_IMAGE_STD",
    "IMAGE_CLASSIFIER_CLASSES",
    "PREPROCESSOR_FILE",
    "HuggingFaceImageClassifier",
    "check_backbone",
]

PREPROCESSOR_FILE = "preprocessor_config.json"
# What Hugging Face's ViT image processor normalises by when a checkpoint names nothing.
DEFAULT_IMAGE_MEAN = (0.5, 0.5, 0.5)
DEFAULT_IMAGE_STD = (0.5, 0.5, 0.5)
# Tokens before the patches: the class token (index 0); DeiT's distillation token after it.
LEADING_TOKENS = {"vit": 1, "deit": 2}
# The class each model type loads as. `TFAutoModelForImageClassification` would pick the class
# a config's `architectures` names, and a distilled DeiT checkpoint names the inference-only
# `...WithTeacher` (two heads, logits their mean); fine-tuning wants the one class-token head.
IMAGE_CLASSIFIER_CLASSES = {"vit": "TFViTForImageClassification", "deit": "TFDeiTForImageClassification"}
# Where a folder's `save_pretrained` files may need fixing: said after a damaged file's name.
FOLDER_ADVICE = "pass a folder that save_pretrained wrote"


class HuggingFaceImageClassifier(keras.Model):
    """A Hugging Face TF ViT or DeiT image classifier as a tfattn image classifier.

    Args:
        hf_model: a `transformers` `TFViTForImageClassification` or `TFDeiTForImageClassification`
            (`from_pretrained`, or one built from a config).
        image_mean, image_std: per-channel statistics of pixels scaled to [0, 1] that the model
            normalises by (the checkpoint's `preprocessor_config.json`; Hugging Face's ViT
            defaults, 0.5 and 0.5, when a checkpoint has none).
        source: where the model came from (a hub name or folder), for messages.

    Build one with `from_pretrained` (a new head for your classes) or `load` (a folder `save`
    wrote). Attributes, as every tfattn image classifier has them: `image_size` (the
    checkpoint's; pixels of other sizes are resized to it), `patch_size`, `patch_grid`,
    `num_classes`, `has_attention` (True), `family_name` ("Hugging Face"); and `label_names`
    (the head's classes, from the config's `id2label`), `new_head` (whether `from_pretrained`
    initialised the head anew) and `leading_tokens`: the tokens before the patches, 1 for ViT
    (the class token) and 2 for DeiT (the class token, then the distillation token), so a DeiT's
    attention is over T = 2 + patches tokens where a ViT's is over 1 + patches. Token 0 is
    always the class token, the patches always come last in row-major order.

    The checkpoint's image processor may resize to a larger size and crop the centre (DeiT's:
    256 then 224); this model resizes straight to `image_size`, the size its position
    embeddings are for (small images such as CIFAR's are whole objects, nothing to crop).

    Under a mixed precision policy set before loading, the model computes in the policy's
    16-bit type; its logits and attention scores are cast to float32.
    """

    family_name = "Hugging Face"
    has_attention = True

    def __init__(self, hf_model, image_mean=DEFAULT_IMAGE_MEAN, image_std=DEFAULT_IMAGE_STD, source=None, **kwargs):
        super().__init__(**kwargs)
        config = hf_model.config
        source = source or getattr(config, "name_or_path", "") or "the model"
        if type(hf_model).__name__ != IMAGE_CLASSIFIER_CLASSES.get(config.model_type):
            raise ValueError(
                f"{source}: a {type(hf_model).__name__} is not an image classifier tfattn fine-tunes "
                f"({', '.join(IMAGE_CLASSIFIER_CLASSES.values())})"
            )
        if int(getattr(config, "num_channels", 3)) != 3:
            raise ValueError(f"{source}: the model takes {config.num_channels} channels; tfattn images are RGB (3)")
        # Tuples: Keras would track a list attribute as a wrapped list.
        self.image_mean = tuple(_channel_values(image_mean, "image_mean", source))
        self.image_std = tuple(_channel_values(image_std, "image_std", source))
        if min(self.image_std) <= 0:
            raise ValueError(f"{source}: image_std must be positive, got {list(self.image_std)!r}")
        self.backbone = hf_model  # tracked: its weights are this model's
        self.source = str(source)
        self.image_size = _square_size(config.image_size, "image_size", source)
        self.patch_size = _square_size(config.patch_size, "patch_size", source)
        self.leading_tokens = LEADING_TOKENS[config.model_type]
        self.num_classes = int(config.num_labels)
        self.new_head = False

    @property
    def patch_grid(self):
        """`(rows, cols)` of patches at `image_size`."""
        side = self.image_size // self.patch_size
        return side, side

    @property
    def label_names(self):
        """The head's classes in output order (the config's `id2label`)."""
        id2label = self.backbone.config.id2label
        return [str(id2label[index]) for index in range(self.num_classes)]

    # --- loading and saving

    @classmethod
    def from_pretrained(cls, name_or_folder, label_names):
        """A checkpoint (hub name, e.g. `google/vit-base-patch16-224`, or a local folder
        `save_pretrained` wrote) with a head for `label_names` (at least 2 distinct names).

        The head is newly initialised unless the checkpoint's already has exactly these labels,
        in this order; the rest of the weights are the checkpoint's. A folder is checked first
        (config.json and weights, the model type, no `auto_map`); a hub name offline and not in
        the local cache fails at once (`PretrainedLoadError`, one line), not after the hub
        client's minute of retries."""
        labels = [str(name) for name in label_names]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"label_names must be at least 2 distinct names, got {labels!r}")
        location = _Checkpoint(name_or_folder)
        preprocessing = location.preprocessing()
        hf_model = location.load(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: index for index, name in enumerate(labels)},
            ignore_mismatched_sizes=True,  # a head of another size is left out and drawn anew
        )
        model = cls(hf_model, source=location.source, **preprocessing)
        model.new_head = location.label_names() != labels
        if model.new_head:
            # Hugging Face keeps a head of the same size, though its classes mean something else.
            _initialise_head(hf_model)
        model.build_for_pixels()
        return model

    @classmethod
    def load(cls, folder):
        """The classifier `save` wrote to `folder` (its head and labels as saved)."""
        folder = Path(folder).expanduser()
        location = _Checkpoint(folder, local_only=True)
        preprocessing = location.preprocessing()
        model = cls(location.load(), source=location.source, **preprocessing)
        model.build_for_pixels()
        return model

    def save(self, folder):
        """`save_pretrained` of the Hugging Face model into `folder` (created), with a
        `preprocessor_config.json` of the normalisation (one Hugging Face's `ViTImageProcessor`
        reads too). Returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(folder))
        processor = {
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": {"height": self.image_size, "width": self.image_size},
            "resample": 2,  # bilinear
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }
        (folder / PREPROCESSOR_FILE).write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")
        return folder

    def build_for_pixels(self):
        """Run the model once on a blank image, creating every variable; returns it."""
        self(tf.zeros([1, self.image_size, self.image_size, 3], tf.uint8), training=False)
        return self

    # --- the image-classifier interface

    def __call__(self, pixels, *args, **kwargs):
        # Checked before Keras runs `call`: Keras rewrites an error raised there over several lines.
        if not hasattr(pixels, "shape"):  # nested lists
            pixels = np.asarray(pixels)
        self._check_pixels(pixels)
        return super().__call__(pixels, *args, **kwargs)

    def _check_pixels(self, pixels):
        shape = tf.TensorShape(getattr(pixels, "shape", None))
        if shape.rank != 4 or shape[-1] != 3:
            raise ValueError(f"{self.name} takes pixels [batch, height, width, 3], got shape {shape}")

    def pixel_values(self, pixels):
        """uint8 (or float 0..255) pixels `[batch, H, W, 3]` -> the model's float32 input
        `[batch, 3, image_size, image_size]`: resized, scaled to [0, 1], normalised."""
        pixels = tf.convert_to_tensor(pixels)
        self._check_pixels(pixels)
        x = tf.cast(pixels, tf.float32)
        if tuple(pixels.shape[1:3]) != (self.image_size, self.image_size):
            x = tf.image.resize(x, [self.image_size, self.image_size], method="bilinear", antialias=True)
        x = (x / 255.0 - tf.constant(self.image_mean)) / tf.constant(self.image_std)
        return tf.transpose(x, [0, 3, 1, 2])

    def forward(self, pixels, training=False, output_attentions=True):
        """`{"logits", "attention_scores"}`: float32 logits `[batch, classes]` and, with
        `output_attentions`, each layer's attention `[batch, heads, T, T]` float32 with
        T = `leading_tokens` + patches (token 0 the class token; None without)."""
        outputs = self.backbone(
            pixel_values=self.pixel_values(pixels),
            output_attentions=bool(output_attentions),
            return_dict=True,
            training=bool(training),
        )
        scores = [tf.cast(layer, tf.float32) for layer in outputs.attentions] if output_attentions else None
        return {"logits": tf.cast(outputs.logits, tf.float32), "attention_scores": scores}

    def call(self, pixels, training=None):
        return self.forward(pixels, training=training, output_attentions=False)["logits"]

    def get_config(self):
        """What the model is (Keras asks when tracing and exporting); it is saved and loaded
        with `save` / `load`, not rebuilt from this."""
        return {
            "model_type": self.backbone.config.model_type,
            "source": self.source,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }

    @classmethod
    def from_config(cls, config):
        raise ValueError("a HuggingFaceImageClassifier is rebuilt by HuggingFaceImageClassifier.load(folder)")


def check_backbone(name_or_folder):
    """Check a checkpoint before a run starts (a folder's files, its model type, no `auto_map`;
    a hub name's config.json, offline the local cache only): one line naming what is wrong,
    before any weights load."""
    _Checkpoint(name_or_folder)


class _Checkpoint:
    """Where a checkpoint comes from, checked before any weights load: a local folder (files,
    model type, no `auto_map`) or a hub name (its config.json fetched alone and checked the same
    way; offline, the local cache only)."""

    def __init__(self, name_or_folder, local_only=False):
        text = str(name_or_folder)
        folder = Path(text).expanduser()
        self.options = {}
        if local_only or folder.exists() or looks_local(text):
            check_checkpoint_folder(folder, "model")
            self.source, self.folder = str(folder), folder
            self.config = _read_json(folder / "config.json")
        else:
            self.source, self.folder = text, None
            self.online = _hub_reachable()
            self.options["local_files_only"] = not self.online
            self.config = _read_json(self._hub_file("config.json"))
        check_hf_image_config(self.config, self.source)

    def label_names(self):
        """The checkpoint's head's classes in order (None when its config's are not readable)."""
        id2label = self.config.get("id2label")
        if id2label is None:  # `save_pretrained` leaves out a default: LABEL_0, LABEL_1...
            count = self.config.get("num_labels", 2)
            return [f"LABEL_{index}" for index in range(count)] if isinstance(count, int) else None
        try:
            return [str(id2label[str(index)]) for index in range(len(id2label))]
        except (KeyError, TypeError):
            return None

    def preprocessing(self):
        """`image_mean` and `image_std` of the checkpoint's preprocessor_config.json (Hugging
        Face's ViT defaults when it has none)."""
        path = self.folder / PREPROCESSOR_FILE if self.folder else self._hub_file(PREPROCESSOR_FILE, optional=True)
        if path is None or not Path(path).is_file():
            return {"image_mean": DEFAULT_IMAGE_MEAN, "image_std": DEFAULT_IMAGE_STD}
        processor = _read_json(path)
        if not isinstance(processor, dict):
            raise ValueError(f"{path}: not a JSON object; {FOLDER_ADVICE}")
        if processor.get("do_normalize", True) is False:
            return {"image_mean": (0.0, 0.0, 0.0), "image_std": (1.0, 1.0, 1.0)}
        return {
            "image_mean": _channel_values(processor.get("image_mean", DEFAULT_IMAGE_MEAN), "image_mean", path),
            "image_std": _channel_values(processor.get("image_std", DEFAULT_IMAGE_STD), "image_std", path),
        }

    def load(self, **overrides):
        """`from_pretrained` of the checkpoint by its type's class (`IMAGE_CLASSIFIER_CLASSES`;
        PyTorch safetensors weights are converted), `overrides` changing its config."""
        import transformers

        model_class = getattr(transformers, IMAGE_CLASSIFIER_CLASSES[self.config["model_type"]])
        try:
            return model_class.from_pretrained(self.source, **self.options, **overrides)
        except (OSError, ValueError, ImportError) as error:
            raise PretrainedLoadError(
                f"{self.source}: could not load the image classifier: {_first_line(error)}"
            ) from None

    def _hub_file(self, filename, optional=False):
        """The local path of a hub checkpoint's file (downloaded or cached); for an `optional`
        file, None when the checkpoint has none."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return hf_hub_download(self.source, filename, local_files_only=not self.online)
        except LocalEntryNotFoundError:  # (a kind of EntryNotFoundError) not in the cache, and offline
            if optional:
                return None
            raise PretrainedLoadError(
                f"could not load the image classifier '{self.source}': the Hugging Face Hub cannot be reached "
                f"({'HF_HUB_OFFLINE is set' if _hub_offline_set() else 'offline?'}) and it is not in the local cache; "
                "pass a local checkpoint folder instead"
            ) from None
        except EntryNotFoundError:
            if optional:
                return None
            raise PretrainedLoadError(f"{self.source}: the hub repository has no {filename}") from None
        except (OSError, ValueError) as error:  # an unknown or private repository, a bad name
            raise PretrainedLoadError(
                f"could not load the image classifier '{self.source}': {_first_line(error)}"
            ) from None


def _hub_offline_set():
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable():
    """Whether the hub may be asked: not switched off (HF_HUB_OFFLINE) and its host resolves
    (offline, the hub client would retry for about a minute)."""
    from tfattn.hosts import host_resolves

    if _hub_offline_set():
        return False
    return host_resolves(os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0])


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _read_json(path):
    from tfattn.runs.manifest import read_json_file

    return read_json_file(path, advice=FOLDER_ADVICE)


def _channel_values(values, what, source):
    """3 finite floats of a per-channel statistic (a single number stands for all 3)."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values] * 3
    try:
        floats = [float(value) for value in values]
    except (TypeError, ValueError):
        floats = []
    if len(floats) != 3 or not all(math.isfinite(value) for value in floats):
        raise ValueError(f"{source}: {what} must be 3 numbers (one per RGB channel), got {values!r}")
    return floats


def _square_size(value, what, source):
    """An int side of a config's `image_size` / `patch_size` (an int or a square pair)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{source}: {what} {list(value)!r} is not square; tfattn takes square images")
        value = value[0]
    return int(value)


def _initialise_head(hf_model):
    """Draw the classifier's weights anew, as Hugging Face initialises a head it adds."""
    head = hf_model.classifier
    # A fresh copy of the head's initializer: an unseeded Keras initializer called again gives
    # the values of its first call.
    initializer = type(head.kernel_initializer).from_config(head.kernel_initializer.get_config())
    head.kernel.assign(initializer(head.kernel.shape, head.kernel.dtype))
    head.bias.assign(tf.zeros_like(head.bias))
