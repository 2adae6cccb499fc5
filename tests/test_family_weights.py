"""The later families' presets and hub weight layouts (CLIP, SigLIP and SigLIP 2, MAE, DeiT III, BEiT v2, EVA-02).

No hub here, so the real files cannot be loaded; but a timm hub file holds exactly timm's
``state_dict()`` for its model name, so its key names and shapes are read from timm
(tests/reference/timm_state_keys.py, its own process) and:

- at full depth, a state of those names and shapes (zero-copy zeros) fits the vitprobe model
  exactly: every key consumed, every shape right (`assign_state`, as a file would be loaded);
- at depth 1, a synthetic safetensors file of those names and shapes loads through
  `vitprobe.load_model`, and one family-specific key missing, or misspelt, is refused with the
  file and the key named.
"""

import json
import re

import numpy as np
import pytest
from safetensors.numpy import save_file

import vitprobe
from conftest import PARITY_CASES, run_reference
from helpers import PARITY_EQUIVALENTS, TESTS
from vitprobe.data.preprocess import Preprocess
from vitprobe.models.presets import LATER_FAMILIES
from vitprobe.models.presets import PRESETS as ALL_PRESETS
from vitprobe.models.spec import get_spec
from vitprobe.models.vit import VisionTransformer
from vitprobe.weights import WeightsError
from vitprobe.weights.convert import assign_state
from vitprobe.weights.source import parse_weights

# One key per preset that only its family has: removing it must be named.
FAMILY_KEY = {
    "vit_base_patch16_clip_224.openai": "norm_pre.weight",
    "vit_base_patch16_clip_224.laion2b": "head.bias",
    "vit_base_patch16_siglip_224.webli": "attn_pool.latent",
    "vit_base_patch16_siglip_224.v2_webli": "attn_pool.kv.bias",
    "vit_base_patch16_224.mae": "norm.bias",
    "deit3_base_patch16_224.fb_in1k": "blocks.0.ls2.gamma",
    "beitv2_base_patch16_224.in1k_ft_in22k_in1k": "blocks.0.attn.relative_position_bias_table",
    "eva02_base_patch14_224.mim_in22k": "blocks.0.mlp.fc1_g.weight",
}
PRESETS = list(LATER_FAMILIES)


@pytest.fixture(scope="module")
def hub_layouts(tmp_path_factory):
    """{(preset, depth): {key: shape}} from timm, at full depth and at depth 1."""
    out = tmp_path_factory.mktemp("timm_keys")
    job = [
        dict(id=f"{name}@{depth}", model=name, kwargs=dict(depth=depth) if depth else {}) for name in PRESETS for depth in (0, 1)
    ]
    (out / "job.json").write_text(json.dumps(job))
    run_reference("timm_state_keys.py", out / "job.json", out / "keys.json")
    return {
        tuple(k.split("@")): {key: tuple(shape) for key, shape in v["state"].items()}
        for k, v in json.loads((out / "keys.json").read_text()).items()
    }


def test_every_preset_has_a_parity_case():
    """Every preset of the whole table: a known arch, valid preprocessing, and a timm parity case of its
    arch (`PARITY_CASES` generates the missing ones from the table), or a named test that judges it
    against another independent reference."""
    covered = {case["arch"] for case in PARITY_CASES}
    assert not covered & set(PARITY_EQUIVALENTS)
    for name, preset in ALL_PRESETS.items():
        get_spec(preset.arch)  # a known architecture
        Preprocess(**preset.preprocess)
        if preset.arch in PARITY_EQUIVALENTS:
            assert (TESTS / PARITY_EQUIVALENTS[preset.arch]).is_file(), name
        else:
            assert preset.arch in covered, f"{name}: no parity case for {preset.arch}"


def test_later_family_presets_are_complete():
    """A later family's preset names its checkpoint and what is special, comes from timm's hub repo of
    the same name, and states a published top-1 exactly when it has a classifier."""
    assert set(FAMILY_KEY) == set(LATER_FAMILIES)
    for name in LATER_FAMILIES:
        preset = ALL_PRESETS[name]
        assert preset.checkpoint and preset.notes, name
        source = parse_weights(preset.weights)
        assert source.kind == "hf-hub" and source.value == f"timm/{name}", name
        assert (preset.published_top1 is not None) == get_spec(preset.arch).has_classifier, name


@pytest.mark.parametrize("name", PRESETS)
def test_full_depth_hub_layout_fits(name, hub_layouts):
    layout = hub_layouts[(name, "0")]
    model = VisionTransformer(get_spec(ALL_PRESETS[name].arch))
    state = {key: np.broadcast_to(np.float32(0), shape) for key, shape in layout.items()}
    assign_state(model, state, f"hub:{name}")  # raises WeightsError naming every key that does not fit
    assert set(model.weights_by_name) == set(layout)


@pytest.mark.parametrize("name", PRESETS)
def test_missing_or_misspelt_key_is_named(name, hub_layouts, tmp_path):
    arch, key = ALL_PRESETS[name].arch, FAMILY_KEY[name]
    rng = np.random.default_rng(0)
    state = {k: rng.normal(0, 0.02, shape).astype(np.float32) for k, shape in hub_layouts[(name, "1")].items()}
    good = tmp_path / "good.safetensors"
    save_file(state, str(good))
    assert vitprobe.load_model(arch, weights=str(good), depth=1).weights_file == good
    value = state.pop(key)
    missing = tmp_path / "missing.safetensors"
    save_file(state, str(missing))
    with pytest.raises(WeightsError, match=rf"(?s)missing\.safetensors.*missing keys \(1\): {re.escape(key)}\n"):
        vitprobe.load_model(arch, weights=str(missing), depth=1)
    state[key + "_typo"] = value
    misspelt = tmp_path / "misspelt.safetensors"
    save_file(state, str(misspelt))
    with pytest.raises(
        WeightsError,
        match=rf"(?s)misspelt\.safetensors.*missing keys \(1\): {re.escape(key)}\n.*unexpected keys \(1\): {re.escape(key)}_typo",
    ):
        vitprobe.load_model(arch, weights=str(misspelt), depth=1)
