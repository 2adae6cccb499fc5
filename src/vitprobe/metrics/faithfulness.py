"""Whether an attribution map explains the model's output: perturbation tests, in numpy.

- **Perturbation test** (Chefer et al. 2021a, their ``pertubation_eval_from_hdf5.py``): the patch
  map is upsampled to the crop (bilinear, half-pixel centres, as ``torch.nn.functional.interpolate``
  with ``align_corners=False``); in 9 steps the 10%..90% most relevant pixels (``positive``; lower
  is better) or least relevant (``negative``; higher is better) are set to 0 in the uint8 crop, i.e.
  before normalisation; the model's top-1 hit on the target and the target's score are recorded.
  Pixels of equal relevance go in pixel order (a stable sort: ``torch.topk`` leaves ties unordered).
- **Deletion and insertion** (RISE, Petsiuk et al. 2018): in ``steps`` equal steps the pixels are
  moved, most relevant first, from the crop to a black image (deletion; lower is better) or from a
  blurred copy to the crop (insertion; higher is better); the curve has ``steps + 1`` points.

Every AUC is the trapezoid area under its curve divided by the width of its x range, so it is
the mean height of the curve: 1 means unaffected, and the ``random`` map's AUC is the chance level.
The perturbation test's curve starts at the unperturbed crop (fraction 0), then its 9 steps.
"""

from __future__ import annotations

import numpy as np

PERTURBATION_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BLUR_SIZE, BLUR_SIGMA = 11, 5.0  # RISE's insertion substrate: an 11-pixel Gaussian, sigma 5


def upsample_bilinear(maps: np.ndarray, size: int) -> np.ndarray:
    """(B, gh, gw) patch maps -> (B, size, size) float64, bilinear with half-pixel centres and
    edge clamping (``interpolate(..., mode="bilinear", align_corners=False)``)."""
    maps = np.asarray(maps, np.float64)

    def weights(source: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position = np.maximum((np.arange(size) + 0.5) * (source / size) - 0.5, 0.0)
        low = np.minimum(np.floor(position).astype(int), source - 1)
        high = np.minimum(low + 1, source - 1)
        return low, high, position - low

    (y0, y1, fy), (x0, x1, fx) = weights(maps.shape[1]), weights(maps.shape[2])
    rows = maps[:, y0] * (1 - fy)[None, :, None] + maps[:, y1] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]


def removal_order(pixel_map: np.ndarray, negative: bool = False) -> np.ndarray:
    """Flat pixel indices, most relevant first (``negative``: least relevant first); ties in pixel order."""
    flat = np.asarray(pixel_map, np.float64).reshape(-1)
    return np.argsort(flat if negative else -flat, kind="stable")


def perturbation_inputs(crop: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(9, S, S, 3) uint8: ``crop`` with the first 10%..90% of ``order``'s pixels set to 0."""
    size = crop.shape[0] * crop.shape[1]
    out = np.repeat(crop[None], len(PERTURBATION_FRACTIONS), axis=0).reshape(len(PERTURBATION_FRACTIONS), size, 3)
    for step, fraction in enumerate(PERTURBATION_FRACTIONS):
        out[step, order[: int(size * fraction)]] = 0
    return out.reshape(len(PERTURBATION_FRACTIONS), *crop.shape)


def gaussian_blur(crop: np.ndarray, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """uint8 (S, S, 3) blurred with a separable Gaussian, borders mirrored (RISE's insertion start)."""
    offsets = np.arange(size) - size // 2
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    x = np.asarray(crop, np.float64)
    pad = size // 2
    for axis in (0, 1):
        padded = np.pad(x, [(pad, pad) if a == axis else (0, 0) for a in range(3)], mode="reflect")
        x = sum(w * np.take(padded, np.arange(k, k + crop.shape[axis]), axis=axis) for k, w in enumerate(kernel))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def rise_inputs(crop: np.ndarray, order: np.ndarray, steps: int, insertion: bool) -> np.ndarray:
    """(steps + 1, S, S, 3) uint8: deletion (crop -> black) or insertion (blurred -> crop) after
    0, 1, ..., ``steps`` steps of ceil(S*S / steps) pixels each, in ``order``."""
    size = crop.shape[0] * crop.shape[1]
    per_step = -(-size // steps)
    start, finish = (gaussian_blur(crop), crop) if insertion else (crop, np.zeros_like(crop))
    start, finish = start.reshape(size, 3), finish.reshape(size, 3)
    out = np.repeat(start[None], steps + 1, axis=0)
    for step in range(1, steps + 1):
        moved = order[: step * per_step]
        out[step, moved] = finish[moved]
    return out.reshape(steps + 1, *crop.shape)


def curve_auc(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoid area under ``values`` (..., points) at ``x``, divided by the x range: the mean height."""
    values = np.asarray(values, np.float64)
    widths = np.diff(np.asarray(x, np.float64))
    return (((values[..., 1:] + values[..., :-1]) / 2) * widths).sum(-1) / (x[-1] - x[0])


def perturbation_auc(unperturbed: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """AUC of the perturbation test: the curve at fraction 0 (``unperturbed``, (...,)) then its 9
    steps (..., 9)."""
    values = np.concatenate([np.asarray(unperturbed, np.float64)[..., None], steps], axis=-1)
    return curve_auc(values, np.array((0.0, *PERTURBATION_FRACTIONS)))


def rise_auc(values: np.ndarray) -> np.ndarray:
    """AUC of a deletion or insertion curve (..., steps + 1), as RISE computes it."""
    return curve_auc(values, np.linspace(0.0, 1.0, np.shape(values)[-1]))
