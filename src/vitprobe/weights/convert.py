"""Put a timm-named state dict (PyTorch layout) into a `VisionTransformer`.

Every tensor must be consumed or explicitly ignored and every shape must match; all
problems are collected and reported together, naming the file and the keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..models.pos_embed import resample_grid
from ..models.spec import ViTSpec
from .errors import WeightsError

if TYPE_CHECKING:  # the converters below run without Keras (the parameters stage reads arrays only)
    from ..models.vit import VisionTransformer


def to_keras_layout(name: str, value: np.ndarray) -> np.ndarray:
    """A timm tensor (PyTorch layout) in the layout of the model's variable of that name."""
    if name == "patch_embed.proj.weight":
        # (D, 3, p, p) -> (p, p, 3, D) -> (p*p*3, D), the row order the model flattens patches in.
        return np.transpose(value, (2, 3, 1, 0)).reshape(-1, value.shape[0]) if value.ndim == 4 else value
    if name.endswith(".weight") and value.ndim == 2:  # torch Linear (out, in) -> Keras (in, out)
        return value.T
    return value


def _torch_shape(name: str, keras_shape) -> tuple:
    """A model variable's shape in the checkpoint's (PyTorch) layout, to set beside the file's."""
    if name == "patch_embed.proj.weight":  # (p*p*3, D) -> (D, 3, p, p)
        patch = int(round((keras_shape[0] // 3) ** 0.5))
        return (keras_shape[1], 3, patch, patch)
    if name.endswith(".weight") and len(keras_shape) == 2:
        return tuple(keras_shape)[::-1]
    return tuple(keras_shape)


def fit_pos_embed(value: np.ndarray, spec: ViTSpec, antialias: bool) -> np.ndarray:
    """Resample a (1, prefix + g*g, D) position embedding to the model's patch grid."""
    prefix = spec.num_pos_prefix
    patches = value.shape[1] - prefix
    old = int(round(np.sqrt(patches)))
    if value.ndim != 3 or old * old != patches or old == spec.grid_size:
        return value
    grid = value[0, prefix:].reshape(old, old, -1)
    new = resample_grid(grid, (spec.grid_size, spec.grid_size), antialias=antialias)
    return np.concatenate([value[:, :prefix], new.reshape(1, -1, value.shape[-1])], axis=1)


def assign_state(
    model: VisionTransformer, state: Mapping[str, np.ndarray], source: str, *, pos_embed_antialias: bool = True
) -> None:
    """Load ``state`` into ``model`` or raise `WeightsError` listing every problem.

    Args:
        model: the model whose weights are replaced (all of them, or none when a problem is found).
        state: timm-named tensors in PyTorch layout (what the readers in `vitprobe.weights` return).
        source: the file the state came from, named in the error.
        pos_embed_antialias: whether resampling the position grid to the model's antialiases
            (timm's checkpoint filter does; the DINOv2 ONNX graph does not).
    """
    spec = model.spec
    targets = model.weights_by_name
    missing = sorted(set(targets) - set(state))
    unexpected = sorted(set(state) - set(targets))
    converted, misshapen = {}, []
    for name, var in targets.items():
        if name not in state:
            continue
        value = np.asarray(state[name], dtype=np.float32)
        if name == "pos_embed":
            value = fit_pos_embed(value, spec, pos_embed_antialias)
        value = to_keras_layout(name, value)
        if tuple(value.shape) != tuple(var.shape):
            misshapen.append(
                f"{name}: checkpoint {tuple(np.shape(state[name]))}, the architecture needs {_torch_shape(name, var.shape)}"
            )
        converted[name] = value
    problems = [f"first parameter that differs: {misshapen[0]}"] if misshapen else []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if misshapen:
        problems.append("wrong shapes: " + "; ".join(misshapen))
    if problems:
        raise WeightsError(
            f"{source}: does not fit architecture {spec}:\n  "
            + "\n  ".join(problems)
            + "\nCheck that the weights belong to this architecture (arch name, image size, head)."
        )
    for name, value in converted.items():
        targets[name].assign(value)
