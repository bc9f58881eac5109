"""Tests for the image loaders (tar, folder, tfds:cifar10), their bad-input errors and warnings,
`ImageSet` and the stratified split."""

import io
import re
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfattn.data import images as images_module
from tfattn.data.examples import DataError
from tfattn.data.images import IMAGE_SUFFIXES, ImageSet, read_image_files, read_images, split_images

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def solid(color, height=32, width=32) -> np.ndarray:
    """A uint8 image `[height, width, len(color)]` of one colour."""
    return np.tile(np.asarray(color, np.uint8), (height, width, 1))


def png(pixels) -> bytes:
    return tf.io.encode_png(tf.constant(pixels, tf.uint8)).numpy()


def jpeg(pixels) -> bytes:
    return tf.io.encode_jpeg(tf.constant(pixels, tf.uint8)).numpy()


def pattern(seed) -> np.ndarray:
    """A 32x32 RGB image of random pixels (exact through PNG)."""
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def write_folder(root: Path, files: dict) -> Path:
    """`files`: relative path -> bytes; a path ending in "/" makes an (empty) folder."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        path = root / relative
        if relative.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_tar(path: Path, files: dict) -> Path:
    """`files`: member name -> bytes, written in this order; a name ending in "/" is a directory."""
    with tarfile.open(path, "w:gz" if path.name.endswith((".tar.gz", ".tgz")) else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def caught_messages(caught) -> list[str]:
    return [str(warning.message) for warning in caught]


# Three classes, exact pixels (PNG), plus files a loader must skip.
PIXELS = {"cat/0001.png": pattern(1), "cat/0002.png": pattern(2), "dog/0001.png": pattern(3), "owl/a.png": pattern(4)}
EXTRAS = {
    "cat/README.txt": b"about cats",
    "cat/.DS_Store": b"\0\1",
    "dog/._0001.png": b"resource fork",
    "notes.md": b"x",
}


def expected_order():
    return sorted(PIXELS)


@pytest.fixture()
def folder(tmp_path) -> Path:
    return write_folder(tmp_path / "pets", {**{name: png(p) for name, p in PIXELS.items()}, **EXTRAS})


# --- reading a folder and a tar ------------------------------------------------------------------


def test_folder_round_trip_exact_pixels_labels_and_files(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 32x32 RGB images: nothing to warn about
        data = read_images(str(folder))
    assert data.label_names == ["cat", "dog", "owl"]
    assert data.labels.dtype == np.int32 and data.labels.tolist() == [0, 0, 1, 2]
    assert data.files == [str(folder / name) for name in expected_order()]
    assert data.source == str(folder)
    assert data.images.dtype == np.uint8 and data.images.shape == (4, 32, 32, 3)
    for image, name in zip(data.images, expected_order()):
        np.testing.assert_array_equal(image, PIXELS[name])
    assert len(data) == 4
    assert data.class_counts() == {"cat": 2, "dog": 1, "owl": 1}


@pytest.mark.parametrize("tar_name", ["pets.tar", "pets.tar.gz", "pets.tgz"])
def test_tar_round_trip_matches_the_folder(tmp_path, tar_name):
    # Members out of order, under a "./train/" prefix, with directory entries and skipped files.
    members = {"./train/": b"", "./train/owl/": b"", "./train/owl/a.png": png(PIXELS["owl/a.png"])}
    members.update({f"./train/{name}": png(PIXELS[name]) for name in ["dog/0001.png", "cat/0002.png", "cat/0001.png"]})
    members.update({f"./train/{name}": data for name, data in EXTRAS.items() if name != "notes.md"})
    members["__MACOSX/train/cat/._0001.png"] = b"resource fork"
    tar_path = write_tar(tmp_path / tar_name, members)

    data = read_images(str(tar_path))
    assert data.label_names == ["cat", "dog", "owl"]
    assert data.labels.tolist() == [0, 0, 1, 2]
    assert data.files == [f"{tar_path}:./train/{name}" for name in expected_order()]
    assert data.source == str(tar_path)
    for image, name in zip(data.images, expected_order()):
        np.testing.assert_array_equal(image, PIXELS[name])


def test_jpeg_pixels_are_tensorflows_decoding(tmp_path):
    pixels = pattern(7)
    data = read_images(str(write_folder(tmp_path / "d", {"x/1.JPG": jpeg(pixels), "y/2.jpeg": jpeg(pixels[::-1])})))
    assert data.files[0].endswith("x/1.JPG")  # suffixes match in any case
    np.testing.assert_array_equal(data.images[0], tf.io.decode_jpeg(jpeg(pixels)).numpy())
    np.testing.assert_array_equal(data.images[1], tf.io.decode_jpeg(jpeg(pixels[::-1])).numpy())


def test_given_label_names_are_what_labels_index(folder):
    data = read_images(folder, label_names=["owl", "zebra", "dog", "cat"])
    assert data.label_names == ["owl", "zebra", "dog", "cat"]
    assert data.labels.tolist() == [3, 3, 2, 0]
    assert data.class_counts() == {"owl": 1, "zebra": 0, "dog": 1, "cat": 2}


def test_a_class_not_among_given_label_names_is_named(folder, tmp_path):
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(folder / 'owl'))}: class 'owl' is not among the given classes \(cat, dog\)$"
    ):
        read_images(folder, label_names=["cat", "dog"])
    tar_path = write_tar(tmp_path / "t.tar", {"train/cat/1.png": png(pattern(0)), "train/emu/1.png": png(pattern(1))})
    with pytest.raises(DataError, match=rf"^{re.escape(str(tar_path))}:train/emu/: class 'emu' is not among"):
        read_images(tar_path, label_names=["cat"])


# --- conversions: one counting warning line per kind ---------------------------------------------


def test_grayscale_resized_and_alpha_images_are_converted_with_counting_warnings(tmp_path):
    half_and_half = np.concatenate([solid([0, 0, 0], 64, 32), solid([200, 100, 50], 64, 32)], axis=1)
    files = {
        "cat/big.png": png(half_and_half),  # 64x64: resized
        "cat/gray.png": png(solid([90], 32, 32)),  # grayscale
        "dog/gray_tall.png": png(solid([30], 40, 32)),  # grayscale and 40x32
        "dog/rgba.png": png(solid([10, 20, 30, 128])),  # alpha
        "dog/rgb.png": png(pattern(5)),
    }
    with pytest.warns(UserWarning) as caught:
        data = read_images(str(write_folder(tmp_path / "d", files)))
    assert caught_messages(caught) == [
        "2 of 5 images were not 32x32: resized to 32x32 (e.g. cat/big.png)",
        "2 of 5 images were grayscale: converted to RGB (e.g. cat/gray.png)",
        "1 of 5 images had an alpha channel: dropped (e.g. dog/rgba.png)",
    ]
    big, gray, gray_tall, rgb, rgba = data.images  # in path order
    assert data.images.shape == (5, 32, 32, 3)
    # Antialiased halving: the left columns stay black, the right ones keep their colour.
    np.testing.assert_array_equal(big[:, :15], 0)
    np.testing.assert_array_equal(big[:, 17:], solid([200, 100, 50], 32, 15))
    np.testing.assert_array_equal(gray, solid([90, 90, 90]))
    np.testing.assert_array_equal(gray_tall, solid([30, 30, 30]))
    np.testing.assert_array_equal(rgba, solid([10, 20, 30]))
    np.testing.assert_array_equal(rgb, pattern(5))


def test_other_image_size_resizes_every_image(folder):
    with pytest.warns(UserWarning) as caught:
        data = read_images(folder, image_size=16)
    assert caught_messages(caught) == ["4 of 4 images were not 16x16: resized to 16x16 (e.g. cat/0001.png)"]
    assert data.images.shape == (4, 16, 16, 3)


def test_grayscale_jpeg_in_a_tar_is_made_rgb(tmp_path):
    gray = jpeg(solid([120], 32, 32))
    tar_path = write_tar(tmp_path / "g.tar", {"a/1.jpg": gray, "b/1.jpg": jpeg(solid([1, 2, 3]))})
    with pytest.warns(UserWarning, match=r"^1 of 2 images was grayscale: converted to RGB \(e\.g\. a/1\.jpg\)$"):
        data = read_images(tar_path)
    decoded = tf.io.decode_jpeg(gray).numpy()
    np.testing.assert_array_equal(data.images[0], np.repeat(decoded, 3, axis=-1))


# --- bad inputs: one line naming the thing -------------------------------------------------------


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises((DataError, ValueError)) as caught:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_corrupt_jpeg_in_a_folder_is_named(folder):
    (folder / "dog" / "0002.jpg").write_bytes(jpeg(pattern(0))[:300])  # cut short
    assert one_line_error(read_images, folder) == f"{folder / 'dog' / '0002.jpg'}: not a readable image (JPEG or PNG)"


def test_a_corrupt_jpeg_deep_in_a_tar_is_named(tmp_path):
    # 2,500 images: the bad one is in the third decoding batch, after two good ones.
    good = png(pattern(0))
    members = {f"train/cat/{i:04d}.png": good for i in range(2500)}
    members["train/cat/2100.png"] = b"\xff\xd8\xff\xe0 this is no JPEG"
    tar_path = write_tar(tmp_path / "bad.tar", members)
    assert one_line_error(read_images, tar_path) == f"{tar_path}:train/cat/2100.png: not a readable image (JPEG or PNG)"


def test_an_empty_class_folder_is_named(folder, tmp_path):
    (folder / "emu").mkdir()
    (folder / "emu" / "notes.txt").write_text("no images here")
    assert one_line_error(read_images, folder) == (
        f"{folder / 'emu'}: an empty class folder (no .jpg, .jpeg, .png files in it)"
    )
    tar_path = write_tar(tmp_path / "t.tar", {"train/": b"", "train/cat/1.png": png(pattern(0)), "train/emu/": b""})
    assert one_line_error(read_images, tar_path) == (
        f"{tar_path}:train/emu/: an empty class folder (no .jpg, .jpeg, .png files in it)"
    )


def test_a_tar_with_no_images_is_named(tmp_path):
    tar_path = write_tar(tmp_path / "empty.tar", {"train/": b"", "train/cat/": b"", "train/cat/README": b"x"})
    assert one_line_error(read_images, tar_path) == f"{tar_path}: no images (.jpg, .jpeg, .png files) in this tar"


def test_a_folder_with_no_class_folders_is_named(tmp_path):
    flat = write_folder(tmp_path / "flat", {"1.png": png(pattern(0)), ".hidden/2.png": png(pattern(1))})
    assert one_line_error(read_images, flat) == f"{flat}: no class folders (expected {flat}/<class>/<image> files)"


def test_an_image_outside_the_class_folders_is_named(folder, tmp_path):
    (folder / "stray.png").write_bytes(png(pattern(0)))
    assert one_line_error(read_images, folder) == (
        f"{folder / 'stray.png'}: an image outside the class folders (expected {folder}/<class>/<image> files)"
    )
    tar_path = write_tar(tmp_path / "t.tar", {"cat/1.png": png(pattern(0)), "top.png": png(pattern(1))})
    assert one_line_error(read_images, tar_path) == (
        f"{tar_path}:top.png: an image outside the class folders (expected <class>/<image>)"
    )


def test_a_tar_mixing_two_folders_is_refused(tmp_path):
    tar_path = write_tar(tmp_path / "t.tar", {"train/cat/1.png": png(pattern(0)), "test/cat/1.png": png(pattern(1))})
    assert one_line_error(read_images, tar_path) == (
        f"{tar_path}: images in class folders of two different folders (test/cat/1.png and train/cat/1.png); "
        "expected <folder>/<class>/<image> under one folder"
    )


def test_missing_paths_unreadable_tars_and_other_files_are_named(tmp_path):
    expected = "a .tar/.tar.gz/.tgz of <class>/<image> files, a folder of <class>/<image> files, or tfds:cifar10"
    missing_path = tmp_path / "nowhere"
    assert (
        one_line_error(read_images, str(missing_path))
        == f"{missing_path}: no such file or folder (expected {expected})"
    )
    not_tar = tmp_path / "broken.tar"
    not_tar.write_bytes(b"this is not a tar archive at all" * 40)
    assert one_line_error(read_images, not_tar).startswith(f"{not_tar}: not a readable tar file (")
    image = tmp_path / "one.png"
    image.write_bytes(png(pattern(0)))
    assert one_line_error(read_images, image) == f"{image}: not a tar file or a folder (expected {expected})"


def test_bad_image_sizes_are_refused(folder):
    for size in (0, -3, 2.5, True):
        assert one_line_error(read_images, folder, image_size=size).startswith(
            f"image size must be a positive whole number of pixels, got {size!r}"
        )


def test_progress_lines_when_decoding_takes_long(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(images_module, "_PROGRESS_SECONDS", 0.0)  # every batch counts as long
    tar_path = write_tar(tmp_path / "t.tar", {f"cat/{i:04d}.png": png(pattern(0)) for i in range(1500)})
    read_images(tar_path)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["decoding images: 1,000 of 1,500", "decoding images: 1,500 of 1,500"]
    assert re.fullmatch(r"decoded 1,500 images in \d+ s", lines[2])


def test_no_progress_lines_when_decoding_is_quick(folder, capsys):
    read_images(folder)
    assert capsys.readouterr().out == ""


# --- tfds:cifar10 --------------------------------------------------------------------------------


def test_tfds_offline_fails_fast_in_one_line(monkeypatch, tmp_path):
    # Keep any download attempt out of the user's ~/tensorflow_datasets, and the host unreachable.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(images_module, "host_resolves", lambda host: False)
    start = time.perf_counter()
    try:
        data = read_images("tfds:cifar10")
    except DataError as error:
        message = str(error)
        assert message.startswith("could not load TFDS dataset 'cifar10' (split 'train'): ")
        assert message.endswith("offline? pass the CIFAR-10 tar or a folder of <class>/<image> files instead")
        assert "\n" not in message
        assert time.perf_counter() - start < 30
    else:  # only with a prepared TFDS cache
        assert len(data) == 50_000 and data.label_names == CIFAR10_CLASSES


def test_other_tfds_names_are_refused():
    assert one_line_error(read_images, "tfds:mnist").startswith(
        "tfds:mnist: the TFDS image dataset read here is tfds:cifar10; or pass a .tar"
    )


# --- read_image_files ----------------------------------------------------------------------------


def test_read_image_files_keeps_order_and_resizes(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.jpg"
    first.write_bytes(png(pattern(9)))
    second.write_bytes(jpeg(solid([40, 80, 120], 64, 64)))
    with pytest.warns(UserWarning) as caught:
        pixels = read_image_files([str(first), str(second)], image_size=32)
    assert caught_messages(caught) == [f"1 of 2 images was not 32x32: resized to 32x32 (e.g. {second})"]
    assert pixels.dtype == np.uint8 and pixels.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(pixels[0], pattern(9))
    resized_jpeg = tf.image.resize(tf.io.decode_jpeg(second.read_bytes()), [32, 32], antialias=True)
    np.testing.assert_allclose(pixels[1], resized_jpeg.numpy(), atol=0.5)


def test_read_image_files_names_the_bad_file(tmp_path):
    good, corrupt = tmp_path / "good.png", tmp_path / "corrupt.jpg"
    good.write_bytes(png(pattern(0)))
    corrupt.write_bytes(b"GIF89a but not really")
    assert one_line_error(read_image_files, [good, corrupt], 32) == f"{corrupt}: not a readable image (JPEG or PNG)"
    assert (
        one_line_error(read_image_files, [good, tmp_path / "gone.png"], 32) == f"{tmp_path / 'gone.png'}: no such file"
    )
    assert one_line_error(read_image_files, [], 32) == "no image files given"


# --- ImageSet and the stratified split -----------------------------------------------------------


def synthetic_set(counts=(50, 31, 7, 1, 2)) -> ImageSet:
    labels = np.random.default_rng(42).permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int32)
    images = np.zeros([len(labels), 2, 2, 3], np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256  # so each image can be traced back
    return ImageSet(images, labels, [f"c{i}" for i in range(len(counts))], [f"f{i}" for i in range(len(labels))], "mem")


def test_stratified_split_keeps_class_proportions_and_covers_everything():
    data = synthetic_set()
    train, validation = split_images(data, 0.2, seed=0)
    # round(0.2 * n), at least 1 and at most n - 1 for a class of 2 or more; a class of 1 stays in training.
    assert validation.class_counts() == {"c0": 10, "c1": 6, "c2": 1, "c3": 0, "c4": 1}
    assert train.class_counts() == {"c0": 40, "c1": 25, "c2": 6, "c3": 1, "c4": 1}
    assert set(train.files).isdisjoint(validation.files)
    assert sorted(train.files + validation.files, key=lambda name: int(name[1:])) == data.files
    for part in (train, validation):
        positions = [int(name[1:]) for name in part.files]
        np.testing.assert_array_equal(part.labels, data.labels[positions])
        np.testing.assert_array_equal(part.images, data.images[positions])
        assert part.label_names == data.label_names and part.source == "mem"


def test_stratified_split_is_deterministic_per_seed():
    data = synthetic_set()
    first = split_images(data, 0.2, seed=3)[1].files
    assert split_images(data, 0.2, seed=3)[1].files == first
    assert split_images(data, 0.2, seed=4)[1].files != first


def test_stratified_split_refuses_a_bad_fraction():
    for fraction in (0, 1, 1.5, -0.1):
        assert one_line_error(split_images, synthetic_set(), fraction, 0) == (
            f"validation fraction must be between 0 and 1, got {fraction!r}"
        )


def test_image_set_subset_and_checks():
    data = synthetic_set((2, 2))
    part = data.subset([3, 0])
    assert part.files == ["f3", "f0"] and part.labels.tolist() == [data.labels[3], data.labels[0]]
    with pytest.raises(DataError, match=r"^mem: images must be uint8 \[N, H, W, 3\], got float32 \(1, 2, 2, 3\)$"):
        ImageSet(np.zeros([1, 2, 2, 3], np.float32), [0], ["a"], ["f"], "mem")
    with pytest.raises(DataError, match=r"^mem: 1 images, 2 labels and 1 files$"):
        ImageSet(np.zeros([1, 2, 2, 3], np.uint8), [0, 0], ["a"], ["f"], "mem")
    with pytest.raises(DataError, match=r"^f: label 1 is outside 0\.\.0$"):
        ImageSet(np.zeros([1, 2, 2, 3], np.uint8), [1], ["a"], ["f"], "mem")


def test_image_suffixes():
    assert IMAGE_SUFFIXES == (".jpg", ".jpeg", ".png")


# --- the real CIFAR-10 tar -----------------------------------------------------------------------


@pytest.mark.slow
def test_real_cifar10_tar(cifar10_tar):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all 32x32 RGB JPEGs
        data = read_images(str(cifar10_tar))
    assert data.images.dtype == np.uint8 and data.images.shape == (50_000, 32, 32, 3)
    assert data.label_names == CIFAR10_CLASSES
    assert data.class_counts() == {name: 5_000 for name in CIFAR10_CLASSES}
    assert data.files[0] == f"{cifar10_tar}:train/airplane/0000.jpg"
    assert data.files[-1] == f"{cifar10_tar}:train/truck/4999.jpg"
    assert 100 < data.images.mean() < 140  # real photographs, not blank decodes
    train, validation = split_images(data, 0.1, seed=0)
    assert validation.class_counts() == {name: 500 for name in CIFAR10_CLASSES}
    assert len(train) == 45_000
