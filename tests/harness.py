"""One keras-hub-style test harness for every tfattn layer: layers, preprocessors and encoders, in
either Keras: a tf-keras layer (`tfattn.layers`) is tested with tf-keras, a Keras 3 layer
(`tfattn.keras3.layers`, on the TensorFlow backend) with Keras 3.

`run_layer_test` is the standard battery each layer of the model contract must pass (after
keras_hub's `TestCase.run_layer_test`); `run_precision_test` is its mixed-precision part, also
usable alone. A layer test then only adds the checks of what is particular to the layer
(golden numbers, masking, padding).

What `run_layer_test` checks, in order:
1. eager call: output shapes (a nested structure of shapes for dict / list / tuple outputs),
   output dtypes, trainable and non-trainable weight counts;
2. config: every constructor argument is in the config,
   `layer_cls.from_config(layer.get_config())` gives the same config, generic
   `keras.saving.serialize_keras_object` / `deserialize_keras_object` gives the same class and
   config, and a clone given the layer's weights gives the same outputs;
3. symbolic call on `keras.Input`s of the input's shape and dtype (dicts of inputs and ragged
   inputs included): compatible output shapes, and the functional model around the layer gives
   the eager outputs;
4. one jit-compiled `fit` step (`jit_compile=True`, SGD, MSE of all floating outputs, flattened
   and concatenated, to random targets) changes every trainable weight but those named in
   `weights_without_gradient`. Skipped for layers without trainable weights and for string
   inputs: XLA cannot compile string ops (tokenizers, lookup tables), so preprocessors have no
   jit training step;
5. `run_precision_test` under `mixed_float16` and `mixed_bfloat16` (global policy, restored to
   float32 afterwards): variables stay float32, floating outputs take the compute dtype (but
   those documented as float32), integer outputs keep their dtype (int32 ids), and with the
   float32 layer's weights the outputs match the float32 ones within rounding;
6. Keras 3 layers only (tf-keras has no `.keras` format for them): the functional model saved to
   a `.keras` file loads with `keras.saving.load_model` and gives the eager outputs, and
   `model.export()` writes a SavedModel that TensorFlow alone loads and serves with them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras as keras3
import numpy as np
import tensorflow as tf
import tf_keras

__all__ = ["MIXED_POLICIES", "PRECISION_TOLERANCE", "run_layer_test", "run_precision_test"]

# The mixed policies a layer must support, and how far (rtol and atol) its outputs may stray
# from the float32 outputs of the same weights under each.
MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
PRECISION_TOLERANCE = {"mixed_float16": 2e-2, "mixed_bfloat16": 1e-1}

Shape = tuple[int | None, ...]
# A shape, or a dict / list / tuple of them mirroring the layer's output structure.
ShapeSpec = Shape | Mapping[str, Any] | Sequence[Any]
# A dtype for every output, or a structure of dtypes mirroring the outputs.
DTypeSpec = str | tf.dtypes.DType | Mapping[str, Any] | Sequence[Any]


def _as_tensors(data: Any) -> Any:
    """`data` (arrays, lists of strings, tensors; nested in dicts) as tensors of the same structure."""
    if isinstance(data, Mapping):
        return {name: _as_tensors(value) for name, value in data.items()}
    if isinstance(data, (tf.Tensor, tf.RaggedTensor)):
        return data
    return tf.convert_to_tensor(data)


def _keras_of(layer_cls: type) -> Any:
    """The Keras module a layer class belongs to: Keras 3 or tf-keras."""
    return keras3 if issubclass(layer_cls, keras3.layers.Layer) else tf_keras


def _dtype(tensor: Any) -> tf.dtypes.DType:
    """A tensor's or variable's dtype as a `tf.DType` (Keras 3 gives symbolic ones as strings)."""
    return tf.as_dtype(tensor.dtype)


def _weight_name(weight: Any) -> str:
    """ "block/query/kernel": a tf-keras variable's name, a Keras 3 variable's path."""
    return getattr(weight, "path", None) or weight.name


def _symbolic_inputs(keras: Any, data: Any, name: str | None = None) -> Any:
    """`keras.Input`s with the shape (batch left out) and dtype of each tensor of `data`."""
    if isinstance(data, Mapping):
        return {key: _symbolic_inputs(keras, value, key) for key, value in data.items()}
    return keras.Input(
        shape=tuple(data.shape[1:]), dtype=data.dtype, ragged=isinstance(data, tf.RaggedTensor), name=name
    )


def _has_string_input(data: Any) -> bool:
    return any(tensor.dtype == tf.string for tensor in tf.nest.flatten(data))


def _shapes(outputs: Any) -> Any:
    """The shape structure of `outputs`: a tuple per tensor, dicts kept, lists and tuples as lists."""
    if isinstance(outputs, Mapping):
        return {name: _shapes(value) for name, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [_shapes(value) for value in outputs]
    return tuple(tf.TensorShape(outputs.shape).as_list())


def _normalize_spec(spec: Any) -> Any:
    """An expected shape structure written as `_shapes` writes it: a sequence of ints (or None) is
    one shape, any other sequence a list of structures."""
    if isinstance(spec, Mapping):
        return {name: _normalize_spec(value) for name, value in spec.items()}
    if isinstance(spec, (list, tuple, tf.TensorShape)):
        if all(dim is None or isinstance(dim, (int, np.integer)) for dim in spec):
            return tuple(None if dim is None else int(dim) for dim in spec)
        return [_normalize_spec(value) for value in spec]
    raise TypeError(f"not a shape or a structure of shapes: {spec!r}")


def _assert_compatible_shapes(actual: Any, expected: Any, where: str = "output") -> None:
    """Symbolic shapes `actual` (None where unknown) fit the concrete `expected` ones."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and sorted(actual) == sorted(expected), (
            f"{where}: keys {sorted(actual) if isinstance(actual, dict) else actual} != {sorted(expected)}"
        )
        for name in expected:
            _assert_compatible_shapes(actual[name], expected[name], f"{where}[{name!r}]")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual} != {expected}"
        for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
            _assert_compatible_shapes(got, want, f"{where}[{index}]")
    else:
        assert isinstance(actual, tuple) and len(actual) == len(expected), f"{where}: {actual} != {expected}"
        assert all(got is None or got == want for got, want in zip(actual, expected, strict=True)), (
            f"{where}: symbolic shape {actual} does not fit {expected}"
        )


def _flat_with_paths(outputs: Any) -> list[tuple[str, Any]]:
    """(path, tensor) pairs: `"sequence_output"`, `"attention_scores/0"`, `"1"`, or `""` for one tensor."""
    if isinstance(outputs, Mapping):
        items = [(str(name), outputs[name]) for name in sorted(outputs)]
    elif isinstance(outputs, (list, tuple)):
        items = [(str(index), value) for index, value in enumerate(outputs)]
    else:
        return [("", outputs)]
    return [
        (f"{name}/{path}" if path else name, tensor)
        for name, value in items
        for path, tensor in _flat_with_paths(value)
    ]


def _assert_same_outputs(actual: Any, expected: Any, atol: float, what: str) -> None:
    actual_items, expected_items = _flat_with_paths(actual), _flat_with_paths(expected)
    assert [path for path, _ in actual_items] == [path for path, _ in expected_items], what
    for (path, got), (_, want) in zip(actual_items, expected_items, strict=True):
        message = f"{what}: output {path or '(single)'} differs"
        if _dtype(want).is_floating:
            np.testing.assert_allclose(
                np.asarray(got, np.float32), np.asarray(want, np.float32), atol=atol, rtol=atol, err_msg=message
            )
        else:
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=message)


def _check_dtypes(outputs: Any, expected: DTypeSpec) -> None:
    items = _flat_with_paths(outputs)
    if isinstance(expected, (str, tf.dtypes.DType)):
        expected_items = [(path, expected) for path, _ in items]
    else:
        expected_items = _flat_with_paths(expected)
    assert [path for path, _ in items] == [path for path, _ in expected_items], "output dtype structure"
    for (path, tensor), (_, dtype) in zip(items, expected_items, strict=True):
        assert _dtype(tensor) == tf.as_dtype(dtype), f"output {path or '(single)'}: {_dtype(tensor).name} != {dtype}"


def _is_listed(path: str, names: Sequence[str]) -> bool:
    return any(path == name or path.startswith(name + "/") for name in names)


def run_layer_test(
    layer_cls: type,
    init_kwargs: Mapping[str, Any],
    input_data: Any,
    expected_output_shape: ShapeSpec,
    expected_num_trainable_weights: int,
    expected_num_non_trainable_weights: int = 0,
    *,
    call_kwargs: Mapping[str, Any] | None = None,
    expected_output_dtype: DTypeSpec | None = None,
    weights_without_gradient: Sequence[str] = (),
    float32_outputs: Sequence[str] = (),
    init_kwargs_not_in_config: Sequence[str] = (),
    run_training_check: bool = True,
    run_precision_check: bool = True,
    atol: float = 1e-6,
    seed: int = 0,
) -> Any:
    """Runs the standard checks of a tfattn layer (see the module docstring); returns the layer
    (after its training step, if any).

    Args:
        layer_cls: the layer class (tf-keras or Keras 3); it must be registered for its Keras's
            deserialization.
        init_kwargs: constructor arguments (the precision check builds new layers from them).
        input_data: the call's input: an array or tensor (ragged allowed), strings `[batch]`
            for preprocessors, or a dict of them (the encoders' feature dict).
        expected_output_shape: the eager output shape: a tuple, or the output's structure of
            them (e.g. `{"sequence_output": (2, 5, 8), "attention_scores": [(2, 2, 5, 5)]}`).
        expected_num_trainable_weights: `len(layer.trainable_weights)` once built.
        expected_num_non_trainable_weights: `len(layer.non_trainable_weights)` once built.
        call_kwargs: extra call arguments (e.g. `{"output_attentions": True}`).
        expected_output_dtype: dtype of every output, or their structure, under float32
            (default: floating outputs float32, others unchecked).
        weights_without_gradient: substrings of names of trainable weights that a training
            step may leave unchanged (e.g. `"key/bias"`: softmax ignores a key bias).
        float32_outputs: output paths (dict keys, `"1"` for a tuple's second item) that stay
            float32 under mixed precision, as the layer documents.
        init_kwargs_not_in_config: constructor arguments that the config stores in another
            form (e.g. `vocab_file`, stored as the vocabulary); every other one must be a
            config key, or a clone would silently take its default.
        run_training_check: run the jit-compiled `fit` step (skipped anyway without trainable
            weights or with string inputs, which XLA cannot compile).
        run_precision_check: run `run_precision_test`.
        atol: tolerance of float comparisons between clones (and the functional model).
        seed: `keras.utils.set_random_seed` seed, so initial weights and targets are reproducible.
    """
    keras = _keras_of(layer_cls)
    keras.utils.set_random_seed(seed)
    call_kwargs = dict(call_kwargs or {})
    inputs = _as_tensors(input_data)

    # 1. Eager call, shapes, dtypes, weight counts.
    layer = layer_cls(**init_kwargs)
    outputs = layer(inputs, training=False, **call_kwargs)
    assert _shapes(outputs) == _normalize_spec(expected_output_shape), (
        f"{layer_cls.__name__}: output shapes {_shapes(outputs)} != {_normalize_spec(expected_output_shape)}"
    )
    if expected_output_dtype is not None:
        _check_dtypes(outputs, expected_output_dtype)
    for path, tensor in _flat_with_paths(outputs):
        if tensor.dtype.is_floating:
            assert tensor.dtype == tf.float32, f"output {path or '(single)'} is {tensor.dtype.name} under float32"
    trainable = [_weight_name(weight) for weight in layer.trainable_weights]
    non_trainable = [_weight_name(weight) for weight in layer.non_trainable_weights]
    assert len(trainable) == expected_num_trainable_weights, f"trainable weights: {trainable}"
    assert len(non_trainable) == expected_num_non_trainable_weights, f"non-trainable weights: {non_trainable}"

    # 2. Config round trip, generic serialization, a clone with the same weights.
    config = layer.get_config()
    missing = sorted(set(init_kwargs) - set(config) - set(init_kwargs_not_in_config))
    assert not missing, f"{layer_cls.__name__}.get_config() lacks the constructor arguments {missing}"
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config, f"{layer_cls.__name__}: from_config(get_config()) changes the config"
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is layer_cls, f"deserialize_keras_object gave {type(revived).__name__}"
    assert revived.get_config() == config
    clone_outputs = clone(inputs, training=False, **call_kwargs)
    if trainable or non_trainable:  # (listing weights walks every attribute: skip it when there are none)
        clone.set_weights(layer.get_weights())
        clone_outputs = clone(inputs, training=False, **call_kwargs)
    _assert_same_outputs(clone_outputs, outputs, atol, "clone with the same weights")

    # 3. Symbolic call: the functional model around the layer computes the eager outputs.
    symbolic_inputs = _symbolic_inputs(keras, inputs)
    symbolic_outputs = layer(symbolic_inputs, **call_kwargs)
    _assert_compatible_shapes(_shapes(symbolic_outputs), _normalize_spec(expected_output_shape))
    model = keras.Model(symbolic_inputs, symbolic_outputs)
    _assert_same_outputs(model(inputs, training=False), outputs, atol, "functional model")

    # 4. One jit-compiled training step moves every trainable weight.
    if run_training_check and trainable and not _has_string_input(inputs):
        _check_training_step(keras, layer, inputs, symbolic_inputs, symbolic_outputs, weights_without_gradient)

    # 5. Mixed precision.
    if run_precision_check:
        run_precision_test(
            layer_cls,
            init_kwargs,
            inputs,
            call_kwargs=call_kwargs,
            float32_outputs=float32_outputs,
            reference_layer=layer,
        )

    # 6. Keras 3: the .keras file and the exported SavedModel give the same outputs.
    if keras is keras3:
        _check_keras3_files(model, inputs, atol)
    return layer


def _check_keras3_files(model: Any, inputs: Any, atol: float) -> None:
    outputs = model(inputs, training=False)  # (the training step has moved the weights)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        _assert_same_outputs(keras3.saving.load_model(path)(inputs, training=False), outputs, atol, ".keras reload")
        model.export(Path(folder) / "export", verbose=False)
        exported = tf.saved_model.load(str(Path(folder) / "export"))  # (kept: its variables live with it)
        served = exported.serve(inputs)
        _assert_same_outputs(served, outputs, atol, "exported SavedModel")


def _flat_float_outputs(keras: Any, tensors: list[Any]) -> Any:
    """Every floating output as one float32 `[batch, n]` tensor (masks dropped), so one MSE loss
    reaches all of them (one loss instead of one per output also compiles faster)."""

    class FlatFloatOutputs(keras.layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.supports_masking = True

        def call(self, tensors: list[tf.Tensor]) -> tf.Tensor:
            return tf.concat([tf.reshape(tf.cast(t, tf.float32), [tf.shape(t)[0], -1]) for t in tensors], axis=1)

        def compute_mask(self, inputs: Any, mask: Any = None) -> None:
            return None

        def compute_output_spec(self, tensors: list[Any]) -> Any:  # (Keras 3 only)
            width = sum(int(np.prod(t.shape[1:])) for t in tensors)
            return keras.KerasTensor((tensors[0].shape[0], width), dtype="float32")

    return FlatFloatOutputs()(tensors)


def _check_training_step(
    keras: Any,
    layer: Any,
    inputs: Any,
    symbolic_inputs: Any,
    symbolic_outputs: Any,
    weights_without_gradient: Sequence[str],
) -> None:
    """One SGD `fit` step, jit-compiled, on MSE to random targets of every floating output."""
    trained_outputs = [tensor for tensor in tf.nest.flatten(symbolic_outputs) if _dtype(tensor).is_floating]
    assert trained_outputs, "a layer with trainable weights but no floating output cannot be trained"
    model = keras.Model(symbolic_inputs, _flat_float_outputs(keras, trained_outputs))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse", jit_compile=True)
    assert model.jit_compile
    batch = int(tf.nest.flatten(inputs)[0].shape[0])
    width = int(model(inputs, training=False).shape[1])
    targets = np.random.default_rng(0).normal(size=(batch, width)).astype("float32")
    before = [np.array(weight.numpy()) for weight in layer.trainable_weights]
    history = model.fit(inputs, targets, batch_size=batch, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]), "non-finite loss in the training step"
    unchanged = [
        _weight_name(weight)
        for weight, old in zip(layer.trainable_weights, before, strict=True)
        if not any(name in _weight_name(weight) for name in weights_without_gradient)
        and np.allclose(weight.numpy(), old)
    ]
    assert not unchanged, f"trainable weights unchanged by a training step: {unchanged}"


def run_precision_test(
    layer_cls: type,
    init_kwargs: Mapping[str, Any],
    input_data: Any,
    *,
    call_kwargs: Mapping[str, Any] | None = None,
    float32_outputs: Sequence[str] = (),
    reference_layer: Any = None,
    policies: Sequence[str] = MIXED_POLICIES,
    tolerance: Mapping[str, float] | None = None,
) -> None:
    """Builds and calls the layer under each mixed global policy (restored to float32 after).

    Checks that floating variables stay float32 (the policy's variable dtype), that floating
    outputs have the compute dtype (float32 for those in `float32_outputs`), that other outputs
    keep their float32-policy dtype (int32 ids stay int32), and that the outputs are finite.
    The mixed layer gets the weights of `reference_layer` (a built float32 layer; by default
    a new one) and its outputs must match the reference's within `tolerance[policy]` (rtol
    and atol): mixed precision may round, not change what the layer computes.
    """
    keras = _keras_of(layer_cls)
    call_kwargs = dict(call_kwargs or {})
    tolerance = {**PRECISION_TOLERANCE, **(tolerance or {})}
    inputs = _as_tensors(input_data)
    current_policy = keras.mixed_precision.global_policy().name
    if current_policy != "float32":
        raise RuntimeError(f"run_precision_test needs the float32 global policy, not {current_policy}")
    if reference_layer is None:
        reference_layer = layer_cls(**init_kwargs)
    reference = _flat_with_paths(reference_layer(inputs, training=False, **call_kwargs))
    reference_weights = reference_layer.get_weights()
    for policy_name in policies:
        policy = keras.mixed_precision.Policy(policy_name)
        keras.mixed_precision.set_global_policy(policy)
        try:
            layer = layer_cls(**init_kwargs)
            outputs = layer(inputs, training=False, **call_kwargs)
            if reference_weights:
                layer.set_weights(reference_weights)
                outputs = layer(inputs, training=False, **call_kwargs)
            for weight in layer.weights:
                if _dtype(weight).is_floating:
                    assert _dtype(weight) == tf.as_dtype(policy.variable_dtype), (
                        f"{policy_name}: variable {_weight_name(weight)} is {_dtype(weight).name}"
                    )
            items = _flat_with_paths(outputs)
            assert [path for path, _ in items] == [path for path, _ in reference], f"{policy_name}: output structure"
            for (path, tensor), (_, expected) in zip(items, reference, strict=True):
                name = path or "(single)"
                if not expected.dtype.is_floating:
                    assert tensor.dtype == expected.dtype, (
                        f"{policy_name}: output {name} is {tensor.dtype.name}, not {expected.dtype.name}"
                    )
                    np.testing.assert_array_equal(np.asarray(tensor), np.asarray(expected))
                    continue
                want = tf.float32 if _is_listed(path, float32_outputs) else tf.as_dtype(policy.compute_dtype)
                assert tensor.dtype == want, f"{policy_name}: output {name} is {tensor.dtype.name}, not {want.name}"
                values = tf.cast(tensor, tf.float32).numpy()
                assert np.all(np.isfinite(values)), f"{policy_name}: output {name} is not finite"
                np.testing.assert_allclose(
                    values,
                    expected.numpy(),
                    rtol=tolerance[policy_name],
                    atol=tolerance[policy_name],
                    err_msg=f"{policy_name}: output {name}",
                )
        finally:
            keras.mixed_precision.set_global_policy("float32")
