"""The parameters stage reads the exported weights from the checkpoint file (or draws them as the
random initialisation does) without building the model: the same arrays as the model it replaced
holds after loading (`ProbeModel.state`), and its process never imports Keras or TensorFlow."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from helpers import run_reference
from vitprobe.pipeline.config import validated_entries
from vitprobe.pipeline.model import build_model
from vitprobe.pipeline.parameters import export_parameters, exported_shapes

# timm's key names and shapes at the arch's own size; "spec" shrinks the model (and the ViT's image
# size, so that its 14 x 14 position grid is resampled to 4 x 4 as loading does).
CASES = {
    "vit": ("vit_tiny_patch16_224", {"depth": 2}, {"depth": 2, "image_size": 64}),
    "deit": ("deit_tiny_distilled_patch16_224", {"depth": 1}, {"depth": 1}),
    "beit": (
        "beitv2_base_patch16_224",
        {"depth": 2, "embed_dim": 192, "num_heads": 3},
        {"depth": 2, "embed_dim": 192, "num_heads": 3},
    ),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A safetensors file per case with timm's names and shapes and random values."""
    out = tmp_path_factory.mktemp("checkpoints")
    jobs = [dict(id=key, model=arch, kwargs=kwargs) for key, (arch, kwargs, _) in CASES.items()]
    (out / "job.json").write_text(json.dumps(jobs))
    run_reference("timm_state_keys.py", out / "job.json", out / "keys.json")
    rng = np.random.default_rng(0)
    paths = {}
    for key, layout in json.loads((out / "keys.json").read_text()).items():
        paths[key] = out / f"{key}.safetensors"
        save_file(
            {name: rng.normal(0, 0.5, shape).astype(np.float32) for name, shape in layout["state"].items()}, str(paths[key])
        )
    return paths


def model_based_export(entry) -> dict[str, np.ndarray]:
    """What the stage exported when it built the model: its variables after loading."""
    model = build_model(entry)
    assert {name: tuple(model.keras_model.weights_by_name[name].shape) for name in exported_shapes(model.spec)} == (
        exported_shapes(model.spec)
    )
    return {name: model.state(name) for name in exported_shapes(model.spec)}


def assert_export_matches(entry, path) -> None:
    spec = entry.spec
    want = model_based_export(entry)
    export_parameters(entry, str(path))
    data = np.load(path, allow_pickle=False)
    np.testing.assert_array_equal(data["patch_kernel"].reshape(-1, spec.embed_dim), want["patch_embed.proj.weight"])
    assert int(data["grid_size"]) == spec.grid_size
    if spec.abs_pos_embed:
        np.testing.assert_array_equal(data["pos_embed"], want["pos_embed"][0, spec.num_pos_prefix :])
    else:
        assert data["rel_pos_bias"].shape == (spec.depth, spec.num_heads, 2 * spec.grid_size - 1, 2 * spec.grid_size - 1)


@pytest.mark.parametrize("case", list(CASES))
def test_export_from_the_file_equals_the_loaded_model(case, checkpoints, tmp_path):
    arch, _, spec = CASES[case]
    entry = validated_entries({case: {"arch": arch, "weights": str(checkpoints[case]), "spec": spec}})[case]
    assert_export_matches(entry, tmp_path / f"{case}.npz")


def test_export_of_random_weights_equals_the_initialised_model(tmp_path):
    entry = validated_entries(
        {"baseline": {"arch": "vit_small_patch14_reg4_dinov2", "weights": "random", "seed": 3, "spec": {"depth": 1}}}
    )["baseline"]
    assert_export_matches(entry, tmp_path / "random.npz")


def test_a_checkpoint_of_another_architecture_is_named(checkpoints, tmp_path):
    from vitprobe.weights.errors import WeightsError

    entry = validated_entries(
        {"wrong": {"arch": "vit_small_patch16_224", "weights": str(checkpoints["vit"]), "spec": {"depth": 2}}}
    )["wrong"]
    with pytest.raises(WeightsError, match=r"vit\.safetensors: patch_embed\.proj\.weight has shape"):
        export_parameters(entry, str(tmp_path / "wrong.npz"))
    entry = validated_entries(
        {"beit": {"arch": "vit_tiny_patch16_224", "weights": str(checkpoints["beit"]), "spec": {"depth": 2}}}
    )["beit"]
    with pytest.raises(WeightsError, match=r"beit\.safetensors: missing keys \(1\): pos_embed"):
        export_parameters(entry, str(tmp_path / "wrong.npz"))


STAGE = """
import sys
from vitprobe.pipeline.runlog import start
start([], 1)
from vitprobe.pipeline.config import model_entry
from vitprobe.pipeline.parameters import export_parameters
export_parameters(model_entry("vit", {settings!r}), {out!r})
loaded = sorted(m for m in ("keras", "tensorflow", "jax", "torch") if m in sys.modules)
assert not loaded, loaded
"""


def test_the_stage_imports_no_framework(checkpoints, tmp_path):
    """The parameters script's imports and call, in a process of their own."""
    # What the rule passes: the validated entry's settings.
    settings = validated_entries({"vit": {"arch": CASES["vit"][0], "weights": str(checkpoints["vit"]), "spec": CASES["vit"][2]}})[
        "vit"
    ].settings
    out = tmp_path / "vit.npz"
    result = subprocess.run([sys.executable, "-c", STAGE.format(settings=settings, out=str(out))], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(np.load(out, allow_pickle=False)) == ["grid_size", "patch_kernel", "pos_embed"]
