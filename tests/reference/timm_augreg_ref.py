"""Reference for the AugReg .npz conversion, judged by timm.

    python timm_augreg_ref.py MODEL_NAME '{"depth": 2}' OUT_DIR

writes OUT_DIR/augreg.npz (synthetic AugReg checkpoint with the Flax names and shapes of
that architecture, seeded random float32 values) and OUT_DIR/timm.safetensors (timm's
``state_dict()`` after ``model.load_pretrained(augreg.npz)``, timm's own .npz loader).

Runs in its own process: timm (torch) and tensorflow must not be imported together.
`flax_arrays` needs only numpy, so tests may import it to make small files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def flax_arrays(*, depth, dim, heads, mlp, patch, in_chans, tokens, classes, seed=0, mlp_name="MlpBlock_3"):
    """AugReg Flax names and shapes, written from the format (not from the converter)."""
    head_dim = dim // heads
    shapes = {
        "embedding/kernel": (patch, patch, in_chans, dim),
        "embedding/bias": (dim,),
        "cls": (1, 1, dim),
        "Transformer/posembed_input/pos_embedding": (1, tokens, dim),
        "Transformer/encoder_norm/scale": (dim,),
        "Transformer/encoder_norm/bias": (dim,),
        "head/kernel": (dim, classes),
        "head/bias": (classes,),
    }
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            shapes[f"{b}{ln}/scale"] = shapes[f"{b}{ln}/bias"] = (dim,)
        for n in ("query", "key", "value"):
            shapes[f"{b}MultiHeadDotProductAttention_1/{n}/kernel"] = (dim, heads, head_dim)
            shapes[f"{b}MultiHeadDotProductAttention_1/{n}/bias"] = (heads, head_dim)
        shapes[f"{b}MultiHeadDotProductAttention_1/out/kernel"] = (heads, head_dim, dim)
        shapes[f"{b}MultiHeadDotProductAttention_1/out/bias"] = (dim,)
        shapes[f"{b}{mlp_name}/Dense_0/kernel"] = (dim, mlp)
        shapes[f"{b}{mlp_name}/Dense_0/bias"] = (mlp,)
        shapes[f"{b}{mlp_name}/Dense_1/kernel"] = (mlp, dim)
        shapes[f"{b}{mlp_name}/Dense_1/bias"] = (dim,)
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}


def main(model_name: str, kwargs: dict, out: Path) -> None:
    import timm
    from safetensors.torch import save_file

    model = timm.create_model(model_name, pretrained=False, **kwargs)
    block = model.blocks[0]
    arrays = flax_arrays(
        depth=len(model.blocks),
        dim=model.embed_dim,
        heads=block.attn.num_heads,
        mlp=block.mlp.fc1.out_features,
        patch=model.patch_embed.patch_size[0],
        in_chans=model.patch_embed.proj.in_channels,
        tokens=model.pos_embed.shape[1],
        classes=model.num_classes,
    )
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "augreg.npz", **arrays)
    model.load_pretrained(str(out / "augreg.npz"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "timm.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]))
