"""The SavedModel of an image-classification run: encoded images (or uint8 pixels) in, probabilities and labels out.

Two signatures, both returning `probabilities` `[batch, classes]`, `labels` (the class names)
and `label_ids`:

- `serving_default(images)`: `images` a string tensor `[batch]` of encoded JPEG or PNG files, as
  read from disk; each is decoded, made RGB and resized to the model's input size as training
  images were (`tfattn.data.images.fit_image`);
- `pixels(pixels)`: uint8 `[batch, height, width, 3]`, resized the same way when not at the
  model's size.

The export needs TensorFlow alone to serve (no tfattn, no transformers):
>>> served = tf.saved_model.load("exported/cifar10")  # doctest: +SKIP
>>> served.signatures["serving_default"](images=tf.constant([open("cat.jpg", "rb").read()]))  # doctest: +SKIP
"""

from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from tfattn.data.images import fit_image, resize_pixels

__all__ = ["export_image_classifier"]


class _ImageClassifierModule(tf.Module):
    def __init__(self, model, label_names, input_size):
        super().__init__()
        self.model = model
        self.input_size = int(input_size)
        self.label_names = tf.constant(list(label_names))

    def _classify(self, pixels):
        pixels = resize_pixels(pixels, self.input_size)
        probabilities = tf.nn.softmax(tf.cast(self.model(pixels, training=False), tf.float32), axis=-1)
        label_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probabilities,
            "labels": tf.gather(self.label_names, label_ids),
            "label_ids": label_ids,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_encoded(self, images):
        def decode(data):
            return fit_image(tf.io.decode_image(data, channels=0, expand_animations=False), self.input_size)

        size = self.input_size
        pixels = tf.map_fn(decode, images, fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        return self._classify(pixels)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="pixels")])
    def serve_pixels(self, pixels):
        return self._classify(pixels)


def export_image_classifier(
    model,
    label_names: Sequence[str],
    export_dir: str | Path,
    input_size: int,
    overwrite: bool = False,
    protected: Sequence[str | Path] = (),
) -> Path:
    """Write an image classifier (`tfattn.models.vision`, `tfattn.models.hf_vision`) as a
    SavedModel serving encoded images and pixels (see the module docstring).

    Args:
        model: the classifier: uint8 pixels in, logits out.
        label_names: class names in output order.
        export_dir: destination folder; an existing one is replaced only with `overwrite` and
            only if tfattn exported it (`tfattn.files.write_export`).
        input_size: the side images are resized to before the model (the run's image size).
        protected: folders `export_dir` must not be or hold, e.g. the run being exported.

    Returns:
        The export folder as a `Path`.
    """
    from tfattn.files import check_export_target, write_export
    from tfattn.models.weights import check_finite_weights

    check_export_target(export_dir, overwrite, protected)  # before the slow work
    check_finite_weights(model)
    module = _ImageClassifierModule(model, label_names, input_size)
    signatures = {"serving_default": module.serve_encoded, "pixels": module.serve_pixels}
    return write_export(
        export_dir,
        lambda staging: tf.saved_model.save(module, str(staging), signatures=signatures),
        overwrite,
        protected,
        info={"kind": "image classifier", "input_size": int(input_size), "labels": list(label_names)},
    )
