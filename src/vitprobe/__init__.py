"""vitprobe: probe what pretrained Vision Transformers learn.

The model API (`load_model`) imports Keras on first use only, so the data, metrics and
plotting modules (and the Snakefile) stay light.
"""

__version__ = "0.1.0"
__all__ = ["ForwardOutput", "ProbeModel", "SPECS", "ViTSpec", "get_spec", "load_model"]


def __getattr__(name):
    if name in ("ForwardOutput", "ProbeModel", "load_model"):
        from . import api

        return getattr(api, name)
    if name in ("SPECS", "ViTSpec", "get_spec"):
        from .models import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'vitprobe' has no attribute {name!r}")
