"""Keeps framework noise off the `tfattn` command's output: TensorFlow's start-up lines (CUDA
probing on a machine without a GPU, CPU-feature notes) and Keras warnings that repeat every
epoch. Real warnings and errors still show; `tfattn --verbose` shows everything."""

import atexit
import logging
import os
import re
import sys
import threading

# C++ log lines TensorFlow prints whatever the command does (CUDA probing, CPU notes).
NATIVE_NOISE = re.compile(
    r"failed call to cuInit|Could not find cuda drivers|oneDNN custom operations are on"
    r"|This TensorFlow binary is optimized|To enable the following instructions|Unable to register cu\w+ factory"
    r"|computation placer already registered|TF-TRT Warning|All log messages before absl::InitializeLog"
    r"|oneDNN supports DT_INT(32|64) only on platforms with AVX-512"  # printed even on AMD EPYCs with AVX-512
    # SentencePiece loading a language model's lossless (identity-normalized) vocabulary.
    r"|precompiled_charsmap is empty\. use identity normalization"
    # Multi-worker start-up, and Keras's epoch-length assertion, which sharding drops (Keras
    # has read the length already).
    r"|grpc_server_lib\.cc.*Started server with target|`assert_cardinality` transformation is currently not handled"
    # libjpeg on a truncated file, before tfattn's own line naming it.
    r"|Improper call to JPEG library in state|Input file read error"
)
# Python-side framework warnings that repeat and say nothing about the user's run.
REPEATED_NOISE = re.compile(
    r"Callback method `on_\w+` is slow|arguments contain non-serializable objects|is unbuilt\. The variables"
)


class _DropNoise(logging.Filter):
    def filter(self, record):
        return not REPEATED_NOISE.search(record.getMessage())


def start_tensorflow(verbose=False):
    """Import TensorFlow for a command; unless `verbose`, with its native noise dropped from
    stderr and the repeated Keras warnings filtered. Native logs bypass Python, so when this
    process imports TensorFlow first, file descriptor 2 is routed through a filter thread;
    Python's own `sys.stderr` keeps writing straight to the terminal."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        import tensorflow  # noqa: F401

        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Hugging Face's load reports and its "TensorFlow classes are deprecated" notice; tfattn says
    # itself what it loads and what it initializes anew.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "tensorflow" not in sys.modules:  # e.g. under pytest, TensorFlow is already there
        _filter_native_stderr()
    import tensorflow as tf

    tf.config.list_physical_devices()  # probes CUDA now, through the filter
    logger = tf.get_logger()
    if not any(isinstance(f, _DropNoise) for f in logger.filters):  # once, however often main() runs
        logger.addFilter(_DropNoise())


def _filter_native_stderr():
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr.flush()
    sys.stderr = open(terminal, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)

    def pump():
        with open(read_end, "rb") as pipe:
            for line in pipe:
                if not NATIVE_NOISE.search(line.decode("utf-8", errors="replace")):
                    os.write(terminal, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def drain():
        os.dup2(terminal, 2)  # closes the pipe's last write end: the pump reads to the end
        thread.join(timeout=2)

    atexit.register(drain)
