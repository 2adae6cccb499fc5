"""Read any supported weight file into a timm-named state dict and load it into a model.
Reading needs no Keras (the parameters stage reads arrays without building a model)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .augreg import augreg_to_timm, read_npz
from .convert import assign_state
from .errors import WeightsError
from .fetch import resolve
from .hf import hf_to_timm, is_hf_state
from .onnx_dinov2 import onnx_to_timm

if TYPE_CHECKING:
    from ..models.vit import VisionTransformer


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file as numpy arrays; the header's shapes and offsets are checked."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise WeightsError(
            f"{path}: not a valid safetensors file ({e}). The file is truncated or corrupt: delete it and download again."
        ) from e


def read_state(path: Path) -> tuple[dict[str, np.ndarray], bool]:
    """(timm-named state, whether resampling its position grid antialiases). A safetensors file with
    ``transformers`` names is renamed (`vitprobe.weights.hf`)."""
    if path.suffix == ".safetensors":
        state = read_safetensors(path)
        return (hf_to_timm(state, str(path)) if is_hf_state(state) else state), True
    if path.suffix == ".npz":
        return augreg_to_timm(read_npz(path), str(path)), True
    if path.suffix == ".onnx":
        # The Hugging Face DINOv2 graph resizes its position grid without antialiasing.
        return onnx_to_timm(path), False
    raise WeightsError(f"{path}: unknown weight format")


def read_tensors(path: Path, names: list[str]) -> tuple[dict[str, np.ndarray], bool]:
    """(the tensors of ``names`` that the file has, timm-named in PyTorch layout; whether resampling
    its position grid antialiases), as `read_state` reads them: a safetensors file reads only
    those, the other formats are converted whole."""
    if path.suffix != ".safetensors":
        state, antialias = read_state(path)
        return {name: state[name] for name in names if name in state}, antialias
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            present = set(f.keys())
            return {name: f.get_tensor(name) for name in names if name in present}, True
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise WeightsError(
            f"{path}: not a valid safetensors file ({e}). The file is truncated or corrupt: delete it and download again."
        ) from e


def load_weights(model: VisionTransformer, source: str) -> Path:
    """Load ``source`` (``hf-hub:...``, ``https://...`` or a local path) into ``model``; returns the file used."""
    path = resolve(source)
    state, antialias = read_state(path)
    assign_state(model, state, str(path), pos_embed_antialias=antialias)
    return path
