"""vitprobe: probe what pretrained Vision Transformers learn."""

from .api import ForwardOutput, ProbeModel, load_model
from .models.spec import SPECS, ViTSpec, get_spec

__all__ = ["ForwardOutput", "ProbeModel", "SPECS", "ViTSpec", "get_spec", "load_model"]
__version__ = "0.1.0"
