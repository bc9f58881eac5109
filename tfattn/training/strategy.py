"""Where and in what precision training runs: the `tf.distribute` strategy and mixed precision."""

import tensorflow as tf
import tf_keras as keras

STRATEGIES = ("default", "mirrored", "multiworker")


def get_strategy(name="default"):
    """The `tf.distribute` strategy to build, compile and fit models under.

    Args:
        name: `"default"` (one device), `"mirrored"` (every local GPU; without GPUs every
            logical CPU device, which is how tests exercise it) or `"multiworker"` (several
            workers, configured by the `TF_CONFIG` environment variable: `tfattn.workers`).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if devices:
            return tf.distribute.MirroredStrategy(devices)
        # CPU devices reduce on one device: with the default collective ops, the all-reduce of a
        # second MirroredStrategy training in the same process failed with "Shape mismatch in the
        # collective instance" (seen in the test suite: a from-scratch, then a TF-Hub model).
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multiworker":
        from tfattn.workers import check_worker_cluster

        check_worker_cluster()
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            if "program startup" not in str(error):
                raise
            # Collective ops are configured when TensorFlow's runtime starts, i.e. by the first op.
            raise ValueError(
                "the multi-worker strategy must be created before any other TensorFlow work in the process: "
                "call tfattn.tasks.train first (the tfattn command does)"
            ) from None
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def set_mixed_precision(enabled):
    """float16 compute with float32 weights on GPU (bfloat16 on CPU), or plain float32."""
    if not enabled:
        policy = "float32"
    elif tf.config.list_physical_devices("GPU"):
        policy = "mixed_float16"
    else:
        policy = "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy
