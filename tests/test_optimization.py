"""Tests of the AdamW + warmup/decay factory shared by every task."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfattn.training.optimizer import WarmupLinearDecay, create_optimizer


def test_schedule_warms_up_then_decays_linearly():
    schedule = WarmupLinearDecay(1e-3, total_steps=100, warmup_steps=10, end_learning_rate=1e-5)
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100, 1000)]
    np.testing.assert_allclose(rates, [0.0, 5e-4, 1e-3, 5.05e-4, 1e-5, 1e-5], rtol=1e-5)


def test_schedule_round_trips_through_config():
    schedule = WarmupLinearDecay(3e-5, total_steps=500, warmup_steps=50)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(clone, WarmupLinearDecay) and clone.get_config() == schedule.get_config()


def test_schedule_rejects_bad_steps():
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupLinearDecay(1e-3, total_steps=10, warmup_steps=11)
    with pytest.raises(ValueError, match="total_steps"):
        WarmupLinearDecay(1e-3, total_steps=0)


def test_no_weight_decay_on_bias_and_layer_norm():
    # With zero gradients only weight decay moves a variable.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.LayerNormalization()])
    for weight in model.weights:
        weight.assign(tf.ones_like(weight))
    optimizer = create_optimizer(0.1, total_steps=10, warmup_fraction=0.0, weight_decay=0.5)
    optimizer.apply_gradients([(tf.zeros_like(w), w) for w in model.trainable_weights])
    moved = {w.name.split("/")[-1]: not np.allclose(w.numpy(), 1.0) for w in model.trainable_weights}
    assert moved == {"kernel:0": True, "bias:0": False, "gamma:0": False, "beta:0": False}
