"""The Keras 3 ViT family and its named specs."""

from .spec import SPECS, ViTSpec, get_spec
from .vit import VisionTransformer, init_random

__all__ = ["SPECS", "ViTSpec", "VisionTransformer", "get_spec", "init_random"]
