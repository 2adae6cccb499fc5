"""Checkpoints that say what they are: the config.json beside a local file names the architecture
(timm's, or a transformers one), and a checkpoint of another shape is refused naming the first
parameter that differs and both shapes."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import vitprobe
from vitprobe.pipeline.config import ConfigError, validated_entries
from vitprobe.weights import WeightsError
from vitprobe.weights.hf import hf_config_arch

SMALL = dict(depth=1)


def _timm_file(folder, arch, **overrides):
    """A depth-1 random checkpoint of ``arch`` in timm's names, written as vitprobe reads it back."""
    model = vitprobe.load_model(arch, weights=None, **overrides)
    state = {}
    for name, var in model.keras_model.weights_by_name.items():
        value = np.asarray(var)
        if name == "patch_embed.proj.weight":
            p = model.patch_size
            value = value.reshape(p, p, 3, -1).transpose(3, 2, 0, 1)
        elif name.endswith(".weight") and value.ndim == 2:
            value = value.T
        state[name] = np.ascontiguousarray(value)
    folder.mkdir(exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    return folder / "model.safetensors", model


def test_timm_config_json_names_the_architecture(tmp_path):
    weights, original = _timm_file(tmp_path / "ckpt", "vit_small_patch16_224", num_classes=7, **SMALL)
    (weights.parent / "config.json").write_text(json.dumps({"architecture": "vit_small_patch16_224", "num_classes": 7}))
    model = vitprobe.load_model(None, weights=str(weights), **SMALL)
    assert model.arch == "vit_small_patch16_224" and model.spec.num_classes == 7
    x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x).logits, original.forward(x).logits)
    entry = validated_entries({"m": {"weights": str(weights), "spec": SMALL}})["m"]
    assert entry.arch == "vit_small_patch16_224" and entry.spec.num_classes == 7 and entry.spec.depth == 1


def test_without_config_json_the_arch_is_asked_for(tmp_path):
    weights, _ = _timm_file(tmp_path / "bare", "vit_tiny_patch16_224", **SMALL)
    with pytest.raises(ConfigError, match=r"models\.m\.arch: .*model\.safetensors: no architecture given and no config\.json"):
        validated_entries({"m": {"weights": str(weights)}})
    with pytest.raises(WeightsError, match="no config.json beside the file"):
        vitprobe.load_model(None, weights=str(weights))


def test_shape_mismatch_names_the_first_parameter_and_both_shapes(tmp_path):
    weights, _ = _timm_file(tmp_path / "small", "vit_small_patch16_224", **SMALL)
    with pytest.raises(
        WeightsError,
        match=r"first parameter that differs: patch_embed\.proj\.weight: checkpoint \(384, 3, 16, 16\), "
        r"the architecture needs \(768, 3, 16, 16\)\n",
    ):
        vitprobe.load_model("vit_base_patch16_224", weights=str(weights), **SMALL)


@pytest.mark.parametrize(
    "config,arch,overrides",
    [
        (
            dict(
                model_type="vit",
                architectures=["ViTForImageClassification"],
                hidden_size=768,
                num_hidden_layers=12,
                num_attention_heads=12,
                patch_size=16,
                image_size=224,
                layer_norm_eps=1e-12,
                id2label={str(i): str(i) for i in range(1000)},
            ),
            "vit_base_patch16_224",
            dict(norm_eps=1e-12, num_classes=1000),
        ),
        (
            dict(
                model_type="deit",
                architectures=["DeiTForImageClassificationWithTeacher"],
                hidden_size=192,
                num_hidden_layers=12,
                num_attention_heads=3,
                patch_size=16,
                image_size=224,
                layer_norm_eps=1e-12,
                id2label={"0": "a", "1": "b"},
            ),
            "deit_tiny_distilled_patch16_224",
            dict(norm_eps=1e-12, num_classes=2),
        ),
        (
            dict(
                model_type="dinov2_with_registers",
                architectures=["Dinov2WithRegistersModel"],
                hidden_size=1024,
                num_hidden_layers=24,
                num_attention_heads=16,
                patch_size=14,
                image_size=518,
                layer_norm_eps=1e-6,
            ),
            "vit_large_patch14_reg4_dinov2",
            dict(norm_eps=1e-6, image_size=518),
        ),
        (
            dict(
                model_type="clip",
                projection_dim=768,
                vision_config=dict(
                    hidden_size=1024,
                    num_hidden_layers=24,
                    num_attention_heads=16,
                    patch_size=14,
                    image_size=336,
                    hidden_act="quick_gelu",
                    layer_norm_eps=1e-5,
                ),
            ),
            "vit_large_patch14_clip_quickgelu_336",
            dict(norm_eps=1e-5, num_classes=768),
        ),
    ],
)
def test_transformers_config_names_the_architecture(config, arch, overrides):
    assert hf_config_arch(config, "config.json") == (arch, overrides)


def test_transformers_config_of_another_family_is_refused():
    config = dict(model_type="swin", hidden_size=96, num_hidden_layers=4, num_attention_heads=3, patch_size=4, image_size=224)
    with pytest.raises(WeightsError, match="model_type 'swin' is not a transformers family"):
        hf_config_arch(config, "config.json")
