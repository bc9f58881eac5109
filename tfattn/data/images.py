"""Labelled images for image classifiers: a tar or a folder of `<class>/<image>` files (or
`tfds:cifar10`) decoded by TensorFlow into uint8 RGB arrays of one size, and a seeded stratified split.

Every image comes out `[image_size, image_size, 3]` uint8: grayscale is repeated into the three
channels, an alpha channel is dropped, other sizes are resized (antialiased, rounded back to
uint8); one warning line per kind of change counts the images it touched. A file that does not
decode stops the read with a `DataError` naming it.

Example:
>>> data = ImageSet(np.zeros([4, 2, 2, 3], np.uint8), [0, 0, 1, 1], ["cat", "dog"], list("abcd"), "mem")
>>> train, validation = split_images(data, 0.5, seed=0)
>>> len(train), validation.class_counts()
(2, {'cat': 1, 'dog': 1})
"""

import time
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from tfattn.data.examples import DataError, first_line
from tfattn.data.examples import stratified_split as stratified_indices
from tfattn.hosts import host_resolves

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageSet",
    "fit_image",
    "read_image_files",
    "read_images",
    "resize_pixels",
    "split_images",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
TFDS_CIFAR10 = "tfds:cifar10"
# Where TFDS downloads CIFAR-10 from. Offline, its download retries take minutes before failing,
# so an unprepared dataset with this host unresolvable fails at once instead.
CIFAR10_DOWNLOAD_HOST = "www.cs.toronto.edu"

# Images decoded per tf.data batch; a batch that fails is decoded again one file at a time, from
# its first image, to name the bad file.
_DECODE_BATCH = 1000
_PROGRESS_SECONDS = 10.0
_WHAT_TO_PASS = "a .tar/.tar.gz/.tgz of <class>/<image> files, a folder of <class>/<image> files, or tfds:cifar10"


# eq=False: the generated __eq__ would compare numpy arrays element-wise and fail on `bool()`.
@dataclass(eq=False)
class ImageSet:
    """Images (uint8 `[N, H, W, 3]`, RGB) with class ids into `label_names`, where each came from
    (`files`), and the `source` they were read from (the --data value)."""

    images: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    files: list[str]
    source: str

    def __post_init__(self):
        images = np.asarray(self.images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DataError(f"{self.source}: images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise DataError(
                f"{self.source}: labels must be one-dimensional integers, got {labels.dtype} {labels.shape}"
            )
        self.images, self.labels = images, labels.astype(np.int32)
        self.label_names, self.files = list(self.label_names), list(self.files)
        if not len(images) == len(labels) == len(self.files):
            raise DataError(f"{self.source}: {len(images)} images, {len(labels)} labels and {len(self.files)} files")
        out_of_range = np.flatnonzero((self.labels < 0) | (self.labels >= len(self.label_names)))
        if out_of_range.size:
            first = int(out_of_range[0])
            raise DataError(
                f"{self.files[first]}: label {int(self.labels[first])} is outside 0..{len(self.label_names) - 1}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "ImageSet":
        """The images at `indices`, in that order, with the same label names and source."""
        indices = np.asarray(indices, dtype=np.int64)
        return ImageSet(
            images=self.images[indices],
            labels=self.labels[indices],
            label_names=self.label_names,
            files=[self.files[i] for i in indices],
            source=self.source,
        )

    def class_counts(self) -> dict[str, int]:
        """Number of images per class name, in label order, including classes with none."""
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return {name: int(count) for name, count in zip(self.label_names, counts)}


def read_images(spec: str, image_size: int = 32, label_names: list[str] | None = None) -> ImageSet:
    """The labelled images of `spec`, each `[image_size, image_size, 3]` uint8.

    `spec`: a .tar/.tar.gz/.tgz file of `<...>/<class>/<image>` members (read as a stream, not
    extracted), a folder of `<class>/<image>` files (class folders directly under it), or
    "tfds:cifar10" (TFDS, split "train"). Images are the files ending in `IMAGE_SUFFIXES`; other
    files and hidden ones (".DS_Store", "._x.jpg", "__MACOSX/") are skipped. Images are in path order.

    `label_names`: when given (a trained model's classes), every class folder must be one of them
    and labels index this list; otherwise the classes are the sorted class-folder names.
    `DataError` names a file that does not decode, an empty class folder, a tar or folder with no
    images, an image outside the class folders, and a class not among `label_names`."""
    _check_size(image_size)
    spec = str(spec)
    if spec.startswith("tfds:"):
        return _read_tfds(spec, image_size, label_names)
    path = Path(spec)
    if path.is_dir():
        found = _folder_images(path)
    elif path.is_file() and path.name.lower().endswith(TAR_SUFFIXES):
        found = _tar_images(path)
    elif path.is_file():
        raise DataError(f"{path}: not a tar file or a folder (expected {_WHAT_TO_PASS})")
    else:
        raise DataError(f"{path}: no such file or folder (expected {_WHAT_TO_PASS})")

    classes = sorted({image.class_name for image in found})
    names = classes if label_names is None else list(label_names)
    index = {name: i for i, name in enumerate(names)}
    for name in classes:
        if name not in index:
            folder = next(image.class_folder for image in found if image.class_name == name)
            raise DataError(f"{folder}: class {name!r} is not among the given classes ({_name_list(names)})")
    images, shapes = _decode([image.data for image in found], [image.location for image in found], image_size)
    _warn_about_changes(shapes, [image.short_name for image in found], image_size)
    return ImageSet(
        images=images,
        labels=np.asarray([index[image.class_name] for image in found], dtype=np.int32),
        label_names=names,
        files=[image.location for image in found],
        source=spec,
    )


def split_images(images: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """`(train, validation)`: per class, a permutation seeded by `seed` sends round(fraction *
    count) images (at least 1 and at most all but one when the class has 2 or more) to
    validation; the rest, in their original order, are for training. The same images and seed
    always give the same split."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, got {fraction!r}")
    train, validation = stratified_indices(images.labels, fraction, seed)
    return images.subset(train), images.subset(validation)


def read_image_files(paths: list[str], image_size: int) -> np.ndarray:
    """The image files at `paths`, decoded and sized as `read_images` does: uint8
    `[len(paths), image_size, image_size, 3]`. `DataError` names a missing or unreadable file."""
    _check_size(image_size)
    paths = [str(path) for path in paths]
    if not paths:
        raise ValueError("no image files given")
    encoded = [_read_bytes(Path(path)) for path in paths]
    images, shapes = _decode(encoded, paths, image_size)
    _warn_about_changes(shapes, paths, image_size)
    return images


# --- finding the images --------------------------------------------------------------------------


@dataclass
class _FoundImage:
    location: str  # what errors name: a path, or "TAR:MEMBER"
    short_name: str  # "<class>/<file>", for warnings
    class_name: str
    class_folder: str  # what an error about the class names
    data: bytes


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not _is_hidden(name)


def _is_hidden(name: str) -> bool:
    # Finder and archivers leave ".DS_Store", "._x.jpg" (resource forks, not JPEGs) and "__MACOSX/".
    return name.startswith(".") or name == "__MACOSX"


def _folder_images(folder: Path) -> list[_FoundImage]:
    entries = sorted(folder.iterdir())
    class_folders = [entry for entry in entries if entry.is_dir() and not _is_hidden(entry.name)]
    if not class_folders:
        raise DataError(f"{folder}: no class folders (expected {folder}/<class>/<image> files)")
    stray = next((entry for entry in entries if entry.is_file() and _is_image_name(entry.name)), None)
    if stray is not None:
        raise DataError(f"{stray}: an image outside the class folders (expected {folder}/<class>/<image> files)")
    found = []
    for class_folder in class_folders:
        files = sorted(entry for entry in class_folder.iterdir() if entry.is_file() and _is_image_name(entry.name))
        if not files:
            raise DataError(f"{class_folder}: an empty class folder (no {', '.join(IMAGE_SUFFIXES)} files in it)")
        name = class_folder.name
        found.extend(
            _FoundImage(str(file), f"{name}/{file.name}", name, str(class_folder), _read_bytes(file)) for file in files
        )
    return found


def _tar_images(tar_path: Path) -> list[_FoundImage]:
    import tarfile
    import zlib

    images, folders = [], set()
    try:
        # "r|*": one pass over the stream, as it is read (compressed or not), nothing extracted.
        with tarfile.open(tar_path, "r|*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name.lstrip("/")).parts
                if not parts or any(_is_hidden(part) for part in parts):
                    continue
                if member.isdir():
                    folders.add(parts)
                elif member.isfile() and _is_image_name(parts[-1]):
                    images.append((parts, member.name, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{tar_path}: not a readable tar file ({first_line(error)})") from None
    if not images:
        raise DataError(f"{tar_path}: no images ({', '.join(IMAGE_SUFFIXES)} files) in this tar")

    images.sort(key=lambda image: image[0])
    # All images sit in class folders of one folder: <root>/<class>/<image>.
    first_parts, first_name, _ = images[0]
    root = first_parts[:-2]
    for parts, name, _ in images:
        if len(parts) < 2:
            raise DataError(f"{tar_path}:{name}: an image outside the class folders (expected <class>/<image>)")
        if parts[:-2] != root:
            raise DataError(
                f"{tar_path}: images in class folders of two different folders ({first_name} and {name}); "
                "expected <folder>/<class>/<image> under one folder"
            )
    # Directory members beside the class folders with no image in them are empty classes.
    class_names = {parts[-2] for parts, _, _ in images}
    for folder in sorted(folders):
        if folder[:-1] == root and folder[-1] not in class_names:
            raise DataError(
                f"{tar_path}:{'/'.join(folder)}/: an empty class folder (no {', '.join(IMAGE_SUFFIXES)} files in it)"
            )
    return [
        _FoundImage(f"{tar_path}:{name}", "/".join(parts[-2:]), parts[-2], f"{tar_path}:{'/'.join(parts[:-1])}/", data)
        for parts, name, data in images
    ]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None


# --- decoding ------------------------------------------------------------------------------------


def _check_size(image_size):
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image size must be a positive whole number of pixels, got {image_size!r}")


def resize_pixels(pixels, image_size: int):
    """uint8 images `[batch, H, W, 3]` at `image_size` x `image_size`: resized (bilinear,
    antialiased) and rounded back to uint8 when at another size, as they are otherwise. The one
    resizing of training images, files to predict and an export's inputs
    (`tfattn.serving.images`)."""
    import tensorflow as tf

    pixels = tf.convert_to_tensor(pixels)
    shape = tf.shape(pixels)

    def resized():
        values = tf.image.resize(tf.cast(pixels, tf.float32), [image_size, image_size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(values), 0, 255), tf.uint8)

    same_size = tf.logical_and(shape[1] == image_size, shape[2] == image_size)
    # tf.cond forgets the static height and width a model's patch grid is built from.
    fitted = tf.cond(same_size, lambda: tf.cast(pixels, tf.uint8), resized)
    return tf.ensure_shape(fitted, [None, image_size, image_size, 3])


def fit_image(image, image_size: int):
    """A decoded image `[H, W, C]` (C = 1..4, uint8) as `[image_size, image_size, 3]` uint8:
    grayscale (with or without alpha) repeated into R, G and B, an alpha channel dropped, then
    `resize_pixels`."""
    import tensorflow as tf

    rgb = tf.cond(tf.shape(image)[2] < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])
    return resize_pixels(rgb[None], image_size)[0]


def _decode(encoded: list[bytes], locations: list[str], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`(images uint8 [N, size, size, 3], original shapes int32 [N, 3] (height, width, channels))`
    of the encoded files, decoded in parallel by tf.data in batches."""
    import tensorflow as tf

    def decode(data):
        image = tf.io.decode_image(data, channels=0, expand_animations=False)
        return fit_image(image, image_size), tf.shape(image)

    def chunks():  # fed in slices: a dataset of every file at once would copy them all into one tensor
        for start in range(0, len(encoded), _DECODE_BATCH):
            yield encoded[start : start + _DECODE_BATCH]

    dataset = (
        tf.data.Dataset.from_generator(chunks, output_signature=tf.TensorSpec([None], tf.string))
        .unbatch()
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(_DECODE_BATCH)
        .prefetch(2)
    )
    images, shapes = [], []
    start = last_report = time.perf_counter()
    try:
        for batch_images, batch_shapes in dataset:
            images.append(batch_images.numpy())
            shapes.append(batch_shapes.numpy())
            if time.perf_counter() - last_report >= _PROGRESS_SECONDS:
                last_report = time.perf_counter()
                print(f"decoding images: {sum(map(len, images)):,} of {len(encoded):,}", flush=True)
    except tf.errors.OpError as error:
        _name_the_bad_file(encoded, locations, sum(map(len, images)), decode, error)
    if last_report > start:
        print(f"decoded {len(encoded):,} images in {time.perf_counter() - start:.0f} s", flush=True)
    return np.concatenate(images), np.concatenate(shapes)


def _name_the_bad_file(encoded, locations, first, decode, error):
    """Decode the files from `first` on one at a time and raise `DataError` naming the first that fails."""
    import tensorflow as tf

    for index in range(first, len(encoded)):
        try:
            decode(tf.constant(encoded[index]))
        except tf.errors.OpError:
            raise DataError(f"{locations[index]}: not a readable image (JPEG or PNG)") from None
    raise DataError(f"decoding images failed: {first_line(error)}") from None


def _warn_about_changes(shapes: np.ndarray, short_names: list[str], image_size: int):
    """One warning line per kind of change made to images (resized, grayscale, alpha dropped)."""
    total = len(shapes)
    size = f"{image_size}x{image_size}"
    changes = [
        ((shapes[:, 0] != image_size) | (shapes[:, 1] != image_size), "{be} not " + f"{size}: resized to {size}"),
        (shapes[:, 2] < 3, "{be} grayscale: converted to RGB"),
        (shapes[:, 2] % 2 == 0, "had an alpha channel: dropped"),  # 2: gray + alpha, 4: RGBA
    ]
    for changed, what in changes:
        count = int(changed.sum())
        if count:
            example = short_names[int(np.flatnonzero(changed)[0])]
            what = what.format(be="was" if count == 1 else "were")
            warnings.warn(f"{count:,} of {total:,} images {what} (e.g. {example})", stacklevel=3)


def _name_list(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


# --- TFDS ----------------------------------------------------------------------------------------


def _read_tfds(spec: str, image_size: int, label_names: list[str] | None) -> ImageSet:
    if spec != TFDS_CIFAR10:
        raise DataError(f"{spec}: the TFDS image dataset read here is {TFDS_CIFAR10}; or pass {_WHAT_TO_PASS}")
    # Imported here: tensorflow_datasets is slow to import and only this path needs it.
    import tensorflow_datasets as tfds

    where = "could not load TFDS dataset 'cifar10' (split 'train')"
    advice = "offline? pass the CIFAR-10 tar or a folder of <class>/<image> files instead"
    builder = tfds.builder("cifar10")
    if not builder.is_prepared() and not host_resolves(CIFAR10_DOWNLOAD_HOST):
        raise DataError(
            f"{where}: not prepared in {builder.data_dir} and {CIFAR10_DOWNLOAD_HOST} cannot be reached; {advice}"
        )
    try:
        dataset, info = tfds.load("cifar10", split="train", as_supervised=True, with_info=True)
        batches = list(tfds.as_numpy(dataset.batch(5000)))
    except Exception as error:
        raise DataError(f"{where}: {first_line(error)}; {advice}") from error
    images = np.concatenate([batch_images for batch_images, _ in batches])
    tfds_labels = np.concatenate([batch_labels for _, batch_labels in batches])
    tfds_names = list(info.features["label"].names)

    names = tfds_names if label_names is None else list(label_names)
    index = {name: i for i, name in enumerate(names)}
    for name in tfds_names:
        if name not in index:
            raise DataError(f"{spec}: class {name!r} is not among the given classes ({_name_list(names)})")
    to_given = np.asarray([index[name] for name in tfds_names], dtype=np.int32)
    if images.shape[1:3] != (image_size, image_size):
        shapes = np.tile(np.asarray([images.shape[1:]], np.int32), (len(images), 1))
        images = _resize_all(images, image_size)
        _warn_about_changes(shapes, [f"{tfds_names[label]}/{i}" for i, label in enumerate(tfds_labels)], image_size)
    return ImageSet(
        images=images,
        labels=to_given[tfds_labels],
        label_names=names,
        files=[f"{spec}:train/{i}" for i in range(len(images))],
        source=spec,
    )


def _resize_all(images: np.ndarray, image_size: int) -> np.ndarray:
    """Same-size RGB images `[N, H, W, 3]` uint8 resized by `resize_pixels`, in batches."""
    batches = [
        resize_pixels(images[start : start + _DECODE_BATCH], image_size).numpy()
        for start in range(0, len(images), _DECODE_BATCH)
    ]
    return np.concatenate(batches)
