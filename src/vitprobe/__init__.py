"""vitprobe: probe what pretrained Vision Transformers learn.

``vitprobe.load_model`` and the other public names below are looked up on first use, so importing
the data, metrics and pipeline modules (and the Snakefile) never loads Keras. Stages import the
modules they use directly; a name looked up here is not a stage's code dependency.
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "ForwardOutput": "vitprobe.api",
    "ProbeModel": "vitprobe.api",
    "load_model": "vitprobe.api",
    "FAMILIES": "vitprobe.models.spec",
    "ViTSpec": "vitprobe.models.spec",
    "get_spec": "vitprobe.models.spec",
    "AttentionReducer": "vitprobe.metrics.attention",
    "AttentionShard": "vitprobe.shards",
    "open_attention": "vitprobe.shards",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'vitprobe' has no attribute {name!r}")
