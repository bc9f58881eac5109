"""AdamW with a linear warmup then linear decay: the one optimizer factory every tfattn task uses."""

import math

import tensorflow as tf
import tf_keras as keras

# Variables whose names match these patterns get no weight decay: biases and layer-norm
# scales/offsets (our layers name them "*layer_norm*"; Hugging Face BERT uses "LayerNorm").
NO_DECAY_PATTERNS = ("bias", "layer_norm", "LayerNorm", "gamma", "beta")


@keras.saving.register_keras_serializable(package="tfattn")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate that rises linearly from 0 to `peak_learning_rate` over `warmup_steps`,
    then falls linearly to `end_learning_rate` at `total_steps` and stays there.

    Args:
        peak_learning_rate: rate reached at the end of warmup.
        total_steps: step at which the decay ends.
        warmup_steps: number of warmup steps (0 disables warmup).
        end_learning_rate: final rate.

    Example:
    >>> schedule = WarmupLinearDecay(1e-3, total_steps=100, warmup_steps=10)
    >>> [round(float(schedule(s)), 6) for s in (0, 5, 10, 55, 100, 200)]
    [0.0, 0.0005, 0.001, 0.0005, 0.0, 0.0]
    """

    def __init__(self, peak_learning_rate, total_steps, warmup_steps=0, end_learning_rate=0.0):
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.end_learning_rate = float(end_learning_rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak, end = self.peak_learning_rate, self.end_learning_rate
        warmup = peak * step / max(self.warmup_steps, 1)
        decay_span = max(self.total_steps - self.warmup_steps, 1)
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_span, 0.0, 1.0)
        decay = peak + (end - peak) * progress
        return tf.where(step < self.warmup_steps, warmup, decay)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "end_learning_rate": self.end_learning_rate,
        }


def create_optimizer(
    learning_rate,
    total_steps,
    warmup_fraction=0.1,
    weight_decay=0.01,
    end_learning_rate=0.0,
    clipnorm=1.0,
):
    """AdamW on a `WarmupLinearDecay` schedule, with no decay on biases and layer norms.

    Args:
        learning_rate: peak learning rate (2e-5..5e-5 to fine-tune a BERT, ~1e-3 from scratch).
        total_steps: number of optimizer steps of the whole training run.
        warmup_fraction: share of `total_steps` spent warming up.
        weight_decay: decoupled weight decay of the other variables.
        end_learning_rate: rate at the end of the decay.
        clipnorm: clip each gradient to this norm (None to disable).

    Returns:
        A `tf_keras.optimizers.AdamW`.

    Example:
    >>> optimizer = create_optimizer(3e-5, total_steps=1000)  # the first 100 steps warm up
    >>> model = keras.Sequential([keras.layers.Dense(2)])
    >>> model.compile(optimizer=optimizer, loss="mse")
    >>> history = model.fit(tf.zeros([4, 3]), tf.zeros([4, 2]), verbose=0)
    >>> int(optimizer.iterations), type(optimizer).__name__
    (1, 'AdamW')
    """
    schedule = WarmupLinearDecay(
        peak_learning_rate=learning_rate,
        total_steps=total_steps,
        warmup_steps=int(math.ceil(warmup_fraction * total_steps)),
        end_learning_rate=end_learning_rate,
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6, clipnorm=clipnorm
    )
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_PATTERNS))
    return optimizer
