"""Weight loading: timm safetensors, AugReg .npz and ONNX initialisers, cached and checksummed."""

from .errors import WeightsError
from .loader import load_weights

__all__ = ["WeightsError", "load_weights"]
