"""Hugging Face ``transformers`` checkpoints of ViT, DeiT, DINOv2 (with registers) and CLIP vision:
their architecture from ``config.json`` and their tensors renamed to timm's names.

The names are facts of the ``transformers`` modeling code:

- ViT and DeiT (``vit.`` / ``deit.`` prefix): ``embeddings.{cls_token, distillation_token,
  position_embeddings, patch_embeddings.projection}``, per layer ``layernorm_before``/``_after``
  (norm1/norm2), ``attention.attention.{query, key, value}``, ``attention.output.dense`` (proj),
  ``intermediate.dense`` (fc1), ``output.dense`` (fc2); ``layernorm``; heads ``classifier``
  (DeiT with teacher: ``cls_classifier`` and ``distillation_classifier``).
- DINOv2 (no prefix, or ``dinov2.`` in a classifier): ``norm1``/``norm2``, ``layer_scale{1,2}.lambda1``,
  ``mlp.fc1``/``fc2`` (ViT-g: ``mlp.weights_in``/``weights_out``, the packed SwiGLU), ``embeddings.register_tokens``.
  Its position embedding always has a class-token row; timm's register variant keeps positions
  for the patches only, so that row is added to the class token (as timm's own conversion does).
- CLIP vision (``vision_model.``): ``embeddings.{class_embedding, patch_embedding, position_embedding}``,
  ``pre_layrnorm`` (sic), per layer ``layer_norm1``/``2``, ``self_attn.{q,k,v,out}_proj``, ``mlp.fc1``/``fc2``;
  ``post_layernorm``; ``visual_projection`` (no bias: timm's head has a zero one).

Query, key and value are concatenated into timm's fused ``qkv``. `vitprobe.weights.onnx_dinov2`
reads the same DINOv2 names out of an ONNX graph and takes its tables from here.
"""

from __future__ import annotations

import re

import numpy as np

from ..models.spec import FAMILIES, Size
from .errors import WeightsError

# DINOv2 (HF) per-layer name -> timm name in the block, for the tensors that keep a name in an ONNX export too.
DINOV2_BLOCK = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "attention.output.dense.bias": "attn.proj.bias",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
DINOV2_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# Tensors no probe uses: the masked-image-modelling token, CLIP's position ids, ViT's pooler.
_IGNORED = re.compile(r"(^|\.)(mask_token|position_ids)$|(^|\.)pooler\.")

# Per-layer names of each naming scheme (besides DINOv2's above): HF -> timm, with q/k/v handled apart.
_VIT_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "norm1": "norm1",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.weights_in": "mlp.fc1",
    "mlp.weights_out": "mlp.fc2",
}
_VIT_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
_CLIP_BLOCK = {
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "self_attn.out_proj": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_CLIP_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.distillation_token": "dist_token",
    "embeddings.register_tokens": "reg_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
    "cls_classifier.weight": "head.weight",
    "cls_classifier.bias": "head.bias",
    "distillation_classifier.weight": "head_dist.weight",
    "distillation_classifier.bias": "head_dist.bias",
    "vision_model.embeddings.class_embedding": "cls_token",
    "vision_model.embeddings.patch_embedding.weight": "patch_embed.proj.weight",
    "vision_model.embeddings.position_embedding.weight": "pos_embed",
    "vision_model.pre_layrnorm.weight": "norm_pre.weight",
    "vision_model.pre_layrnorm.bias": "norm_pre.bias",
    "vision_model.post_layernorm.weight": "norm.weight",
    "vision_model.post_layernorm.bias": "norm.bias",
    "visual_projection.weight": "head.weight",
}
_MODEL_PREFIX = re.compile(r"^(vit|deit|dinov2|dinov2_with_registers)\.")
_LAYER = re.compile(r"^(?:vision_model\.)?encoder\.(?:layer|layers)\.(\d+)\.(.+)\.(weight|bias|lambda1)$")


def is_hf_state(state: dict) -> bool:
    """Whether a state dict uses the ``transformers`` names (it has an HF patch embedding)."""
    return any(
        key.endswith(("embeddings.patch_embeddings.projection.weight", "embeddings.patch_embedding.weight")) for key in state
    )


def hf_to_timm(state: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """A ``transformers`` ViT, DeiT, DINOv2 or CLIP vision state dict under timm's names.

    Raises:
        WeightsError: a tensor of the encoder that has no timm name, named with the file.
    """
    state = {_MODEL_PREFIX.sub("", key): value for key, value in state.items() if not key.startswith("text_model.")}
    out, qkv, unknown = {}, {}, []
    for key, value in state.items():
        if _IGNORED.search(key) or key in ("logit_scale", "text_projection.weight"):
            continue
        if key in _TOP:
            out[_TOP[key]] = value
            continue
        match = _LAYER.match(key)
        if not match:
            unknown.append(key)
            continue
        index, module, kind = match.groups()
        if module in _VIT_QKV or module in _CLIP_QKV:
            order = _VIT_QKV if module in _VIT_QKV else _CLIP_QKV
            qkv.setdefault((index, kind), [None] * 3)[order.index(module)] = value
        elif kind == "lambda1" and module in ("layer_scale1", "layer_scale2"):
            out[f"blocks.{index}.{DINOV2_BLOCK[f'{module}.lambda1']}"] = value
        elif module in _VIT_BLOCK or module in _CLIP_BLOCK:
            out[f"blocks.{index}.{_VIT_BLOCK.get(module) or _CLIP_BLOCK[module]}.{kind}"] = value
        else:
            unknown.append(key)
    for (index, kind), parts in qkv.items():
        if any(part is None for part in parts):
            raise WeightsError(f"{source}: block {index} lacks one of its query, key and value {kind}s")
        out[f"blocks.{index}.attn.qkv.{kind}"] = np.concatenate(parts, axis=0)
    if unknown:
        raise WeightsError(f"{source}: tensors with no timm name ({len(unknown)}): {', '.join(sorted(unknown)[:10])}")
    return _timm_conventions(out)


def _timm_conventions(out: dict) -> dict:
    """CLIP's token and positions as timm shapes them, its projection's zero bias; a register model's
    class-token position folded into the class token."""
    if out.get("cls_token") is not None and out["cls_token"].ndim == 1:
        out["cls_token"] = out["cls_token"].reshape(1, 1, -1)
    if out.get("pos_embed") is not None and out["pos_embed"].ndim == 2:
        out["pos_embed"] = out["pos_embed"][None]
    if "head.weight" in out and "head.bias" not in out:
        out["head.bias"] = np.zeros(out["head.weight"].shape[0], out["head.weight"].dtype)
    if "reg_token" in out:
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return out


_FAMILY_OF_MODEL_TYPE = {
    "vit": "vit",
    "deit": "deit",
    "dinov2": "dinov2",
    "dinov2_with_registers": "dinov2",
    "clip": "clip",
    "clip_vision_model": "clip",
}


def _size(family: str, dim: int, depth: int, heads: int, source: str) -> tuple[str, dict]:
    """The family's size of this width and head count (the one of this depth where two share them),
    and a ``depth`` override where the checkpoint's depth is not the size's."""
    sizes: dict[str, Size] = next(f.sizes for f in FAMILIES if f.name == family)
    matches = [name for name, size in sizes.items() if (size.embed_dim, size.num_heads) == (dim, heads)]
    if not matches:
        raise WeightsError(f"{source}: width {dim} with {heads} heads is no size of the {family} family ({', '.join(sizes)})")
    name = next((m for m in matches if sizes[m].depth == depth), matches[0])
    return name, ({} if sizes[name].depth == depth else {"depth": depth})


def hf_config_arch(config: dict, source: str) -> tuple[str, dict]:
    """(timm architecture name, `ViTSpec` overrides) of a ``transformers`` ``config.json``: ViT, DeiT,
    DINOv2 (with registers), CLIP or CLIP vision. The overrides carry what the name cannot: the
    LayerNorm eps (HF's ViT uses 1e-12) and the head (classes of a classifier, CLIP's projection width)."""
    model_type = config.get("model_type")
    if model_type not in _FAMILY_OF_MODEL_TYPE:
        raise WeightsError(
            f"{source}: model_type {model_type!r} is not a transformers family vitprobe reads "
            f"({', '.join(_FAMILY_OF_MODEL_TYPE)}); give models.<key>.arch"
        )
    architectures = config.get("architectures") or []
    vision = config.get("vision_config", config) if model_type == "clip" else config
    patch, image = vision["patch_size"], vision["image_size"]
    size, overrides = _size(
        _FAMILY_OF_MODEL_TYPE[model_type],
        vision["hidden_size"],
        vision["num_hidden_layers"],
        vision["num_attention_heads"],
        source,
    )
    overrides["norm_eps"] = vision.get("layer_norm_eps", 1e-12 if model_type in ("vit", "deit") else 1e-6)
    if model_type in ("vit", "deit"):
        distilled = "_distilled" if any("WithTeacher" in a for a in architectures) else ""
        arch = f"{model_type}_{size}{distilled}_patch{patch}_{image}"
        classifier = any("ForImageClassification" in a for a in architectures)
        overrides["num_classes"] = len(config.get("id2label") or {}) if classifier else 0
    elif model_type in ("dinov2", "dinov2_with_registers"):
        arch = f"vit_{size}_patch{patch}{'_reg4' if model_type == 'dinov2_with_registers' else ''}_dinov2"
        overrides["image_size"] = image
    else:
        quick = "_quickgelu" if vision.get("hidden_act") == "quick_gelu" else ""
        arch = f"vit_{size}_patch{patch}_clip{quick}_{image}"
        projection = model_type == "clip" or any("Projection" in a for a in architectures)
        overrides["num_classes"] = config.get("projection_dim", 0) if projection else 0
    return arch, overrides
