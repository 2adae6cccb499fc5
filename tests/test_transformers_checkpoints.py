"""Hugging Face transformers checkpoints of ViT, DeiT, DINOv2 (with registers, and ViT-g's packed SwiGLU)
and CLIP vision: saved by transformers itself (``save_pretrained``: its key names, its config.json),
loaded by vitprobe with no architecture given (read from the config.json), against transformers'
own forward pass (tests/reference/hf_reference.py, its own process): every layer's attention within
1e-5, the logits, CLIP image embedding or DINOv2 class token within 1e-5 of their largest magnitude."""

import json

import numpy as np
import pytest

import vitprobe
from helpers import run_reference

CASES = [
    dict(
        id="vit",
        **{"class": "ViTForImageClassification"},
        config_class="ViTConfig",
        config=dict(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768, num_labels=10),
        arch="vit_tiny_patch16_224",
    ),
    dict(
        id="deit_distilled",
        **{"class": "DeiTForImageClassificationWithTeacher"},
        config_class="DeiTConfig",
        config=dict(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768, num_labels=10),
        arch="deit_tiny_distilled_patch16_224",
    ),
    dict(
        id="dinov2_reg",
        **{"class": "Dinov2WithRegistersModel"},
        config_class="Dinov2WithRegistersConfig",
        config=dict(hidden_size=384, num_hidden_layers=2, num_attention_heads=6, image_size=224, patch_size=14),
        arch="vit_small_patch14_reg4_dinov2",
    ),
    dict(
        id="dinov2_g",
        **{"class": "Dinov2Model"},
        config_class="Dinov2Config",
        config=dict(
            hidden_size=1536, num_hidden_layers=1, num_attention_heads=24, image_size=224, patch_size=14, use_swiglu_ffn=True
        ),
        arch="vit_giant_patch14_dinov2",
    ),
    dict(
        id="clip_b32",
        **{"class": "CLIPVisionModelWithProjection"},
        config_class="CLIPVisionConfig",
        config=dict(
            hidden_size=768,
            num_hidden_layers=2,
            num_attention_heads=12,
            intermediate_size=3072,
            patch_size=32,
            image_size=224,
            projection_dim=512,
            hidden_act="quick_gelu",
        ),
        arch="vit_base_patch32_clip_quickgelu_224",
    ),
]


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf_ref")
    cases = [{k: c[k] for k in ("id", "class", "config_class", "config")} for c in CASES]
    (out / "cases.json").write_text(json.dumps(cases))
    run_reference("hf_reference.py", out / "cases.json", out)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_transformers_checkpoint_matches_transformers(case, hf_reference):
    model = vitprobe.load_model(None, weights=str(hf_reference / case["id"] / "model.safetensors"))
    assert model.arch == case["arch"] and model.spec.depth == case["config"]["num_hidden_layers"]
    ref = dict(np.load(hf_reference / f"{case['id']}.npz"))
    out = model.forward(ref["input"])
    assert len(out.attentions) == model.spec.depth
    for i, attn in enumerate(out.attentions):
        assert ref[f"attn_{i}"].max(-1).mean() >= 0.2  # peaked: the comparison means something
        np.testing.assert_allclose(attn, ref[f"attn_{i}"], rtol=0, atol=1e-5, err_msg=f"layer {i}")
    got = out.embedding if model.spec.head_is_projection else out.logits if model.spec.has_classifier else out.features
    want = ref["output"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
