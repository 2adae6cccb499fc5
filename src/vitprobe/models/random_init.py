"""The seeded random initialisation (the untrained baseline) of one weight, by its timm name and
shape, in numpy: `vit.init_random` fills a model with it, and the parameters stage draws the few
weights it exports without building the model (each weight has its own generator)."""

from __future__ import annotations

import zlib

import numpy as np


def random_weight(name: str, shape: tuple[int, ...], seed: int, layer_scale_keys: tuple[str, ...] = ()) -> np.ndarray:
    """The float32 initial value of weight ``name``, the same on every backend and machine.

    Follows timm's scheme: truncated normal (std 0.02) for projections and position embeddings,
    unit LayerNorm, zero biases, tiny class tokens, layer-scale 1e-5. The generator is seeded
    with ``seed`` and the CRC-32 of the name, so a weight's value depends on nothing else.

    Args:
        name: the timm state-dict name (``blocks.3.attn.qkv.weight``).
        shape: the weight's shape in Keras layout.
        seed: the model's seed (a config entry's ``seed``).
        layer_scale_keys: the spec's layer-scale names (`ViTSpec.layer_scale_keys`).
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name.endswith(".weight") and "norm" in name.split(".")[-2]:  # every LayerNorm's scale
        value = np.ones(shape)
    elif name.endswith(("bias", "_bias")):  # also BEiT's q_bias, v_bias
        value = np.zeros(shape)
    elif name.endswith(tuple(f".{key}" for key in layer_scale_keys)):
        value = np.full(shape, 1e-5)
    elif name in ("cls_token", "dist_token", "reg_token"):
        value = rng.normal(0.0, 1e-6, shape)
    else:
        value = np.clip(rng.normal(0.0, 0.02, shape), -0.04, 0.04)
    return value.astype(np.float32)
