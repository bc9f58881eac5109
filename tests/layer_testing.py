"""One shared check per layer, keras-hub style: output shape, a training step, config round trip."""

import numpy as np
import tf_keras as keras


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights,
    weights_without_gradient=(),
):
    """Asserts the layer's output shape, that one training step changes every trainable
    weight (but those whose names contain an entry of `weights_without_gradient`), and that
    `from_config(get_config())` rebuilds a layer with the same outputs."""
    layer = layer_cls(**init_kwargs)
    outputs = layer(input_data)
    assert tuple(outputs.shape) == tuple(expected_output_shape)
    assert len(layer.trainable_weights) == expected_num_trainable_weights

    # Training step: a model around the layer, one SGD step, every weight must move.
    inputs = keras.Input(shape=input_data.shape[1:], dtype=input_data.dtype)
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [w.numpy().copy() for w in layer.trainable_weights]
    target = np.random.default_rng(0).normal(size=outputs.shape).astype("float32")
    model.fit(input_data, target, epochs=1, batch_size=len(input_data), verbose=0)
    for weight, old in zip(layer.trainable_weights, before):
        if any(name in weight.name for name in weights_without_gradient):
            continue
        assert not np.allclose(weight.numpy(), old), f"{weight.name} did not change in a training step"

    # Config round trip, then the same weights give the same outputs.
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    clone(input_data)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(input_data), layer(input_data), atol=1e-6)

    # Generic Keras (de)serialization finds the registered class.
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is layer_cls
    assert revived.get_config() == config
    return layer
