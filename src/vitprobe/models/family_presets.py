"""Presets of the later families (CLIP, SigLIP, MAE, DeiT III, BEiT v2, EVA-02), as one table of data.

Each row names a published checkpoint by its timm name and gives what a run needs: the vitprobe
architecture (`vitprobe.models.spec.SPECS`), where the weights live, the preprocessing they were
evaluated with (timm's pretrained cfg: `Preprocess` fields), the checkpoint label for figures,
the published ImageNet-1k top-1 of that exact checkpoint where it has a classifier (None where
it has none: image-text towers and self-supervised encoders), and what is special about it.

This table is meant to be folded into the project's presets table (``vitprobe.models.presets``)
as its rows; until then the tests read it from here.
"""

from __future__ import annotations

from ..data.preprocess import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD

_CLIP = dict(mean=CLIP_MEAN, std=CLIP_STD)
_IMAGENET = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)
_INCEPTION = dict(mean=INCEPTION_MEAN, std=INCEPTION_STD)

FAMILY_PRESETS: dict[str, dict] = {
    "vit_base_patch16_clip_224.openai": dict(
        arch="vit_base_patch16_clip_quickgelu_224",
        weights="hf-hub:timm/vit_base_patch16_clip_224.openai",
        preprocess=dict(resize="shorter", crop_fraction=0.9, interpolation="bicubic", **_CLIP),
        checkpoint="OpenAI CLIP ViT-B/16 image tower",
        published_top1=None,
        special="pre-norm before the blocks, no patch bias, QuickGELU (timm: vit_base_patch16_clip_quickgelu_224), "
        "512-d projection head (an embedding, no classes)",
    ),
    "vit_base_patch16_clip_224.laion2b": dict(
        arch="vit_base_patch16_clip_224",
        weights="hf-hub:timm/vit_base_patch16_clip_224.laion2b",
        preprocess=dict(resize="shorter", crop_fraction=1.0, interpolation="bicubic", **_CLIP),
        checkpoint="OpenCLIP ViT-B/16 LAION-2B image tower",
        published_top1=None,
        special="as OpenAI CLIP with exact GELU",
    ),
    "vit_base_patch16_siglip_224.webli": dict(
        arch="vit_base_patch16_siglip_224",
        weights="hf-hub:timm/vit_base_patch16_siglip_224.webli",
        preprocess=dict(resize="shorter", crop_fraction=0.9, interpolation="bicubic", **_INCEPTION),
        checkpoint="SigLIP ViT-B/16 WebLI image tower",
        published_top1=None,
        special="no class token; attention-pooling (MAP) head whose query's attention is the CLS-like map",
    ),
    "vit_base_patch16_224.mae": dict(
        arch="vit_base_patch16_224.mae",
        weights="hf-hub:timm/vit_base_patch16_224.mae",
        preprocess=dict(resize="shorter", crop_fraction=0.9, interpolation="bicubic", **_IMAGENET),
        checkpoint="MAE ViT-B/16 pre-trained encoder",
        published_top1=None,
        special="the plain ViT encoder after masked-autoencoder pre-training, no head",
    ),
    "deit3_base_patch16_224.fb_in1k": dict(
        arch="deit3_base_patch16_224",
        weights="hf-hub:timm/deit3_base_patch16_224.fb_in1k",
        preprocess=dict(resize="shorter", crop_fraction=0.9, interpolation="bicubic", **_IMAGENET),
        checkpoint="DeiT III ViT-B/16 ImageNet-1k",
        published_top1=83.8,
        special="layer scale; position embeddings for the patches only (not the class token)",
    ),
    "beitv2_base_patch16_224.in1k_ft_in22k_in1k": dict(
        arch="beitv2_base_patch16_224",
        weights="hf-hub:timm/beitv2_base_patch16_224.in1k_ft_in22k_in1k",
        preprocess=dict(resize="shorter", crop_fraction=0.9, interpolation="bicubic", **_IMAGENET),
        checkpoint="BEiT v2 ViT-B/16, ImageNet-21k then 1k fine-tune",
        published_top1=86.5,
        special="relative position bias per block, added to the attention logits (the probed attention includes it); "
        "q/v biases; layer scale gamma_1/gamma_2; mean of the patch tokens + fc_norm",
    ),
    "eva02_base_patch14_224.mim_in22k": dict(
        arch="eva02_base_patch14_224",
        weights="hf-hub:timm/eva02_base_patch14_224.mim_in22k",
        preprocess=dict(resize="shorter", crop_fraction=0.9, interpolation="bicubic", **_CLIP),
        checkpoint="EVA-02 ViT-B/14 MIM ImageNet-22k",
        published_top1=None,
        special="rotary position embedding of the patch queries and keys; SwiGLU MLP with an inner LayerNorm; "
        "separate q/k/v projections; mean pooling + fc_norm; no head",
    ),
}
