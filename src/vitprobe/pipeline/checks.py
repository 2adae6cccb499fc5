"""Checks on what a job is about to write."""

from __future__ import annotations

import numpy as np


class NonFiniteError(ValueError):
    """A model produced NaN or infinite values; nothing is written."""


def require_finite(model: str, tensor: str, values: np.ndarray, image_ids: list[str]) -> None:
    """Raise `NonFiniteError` naming the model, the tensor and the images whose ``values``
    (one leading row per image) hold NaN or Inf."""
    values = np.asarray(values)
    if values.size == 0:  # e.g. no complete CKA group in this batch
        return
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        images = [image_ids[i] for i in np.flatnonzero(bad)]
        raise NonFiniteError(
            f"{model}: {tensor} not finite (NaN or Inf) for {len(images)} of {len(values)} images, e.g. {images[:5]}. "
            "The weights or the input hold non-finite values; check the weights file."
        )
