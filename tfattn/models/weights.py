"""A model's weights must be finite to be saved: the check, and the error of a diverged run."""

import numpy as np


class TrainingDiverged(ValueError):
    """The loss or the weights became NaN or infinite; nothing with them was saved."""


def check_finite_weights(model, what="model"):
    """`TrainingDiverged` if any weight of `model` is NaN or infinite (then it must not be saved)."""
    for weight in model.trainable_weights + model.non_trainable_weights:
        dtype = getattr(weight, "dtype", None)  # lookup tables hold handlers, not tensors
        if dtype is not None and dtype.is_floating and not np.all(np.isfinite(weight.numpy())):
            raise TrainingDiverged(f"the {what}'s weight {weight.name} holds NaN or infinite values; not saved")
