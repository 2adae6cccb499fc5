"""Weight loading: timm safetensors, AugReg .npz and ONNX initialisers, cached and checksummed.

`loader.load_weights` is the entry point; it imports Keras, so it is not imported here.
"""

from .errors import WeightsError

__all__ = ["WeightsError"]
