"""AugReg .npz -> timm state dict conversion, judged against timm's own .npz loader.

timm runs in a subprocess (tests/reference/timm_augreg_ref.py): torch and tensorflow
crash when imported into one process, and other test modules import tensorflow.
"""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import REFERENCE, load_reference
from vitprobe.weights.augreg import augreg_to_timm, read_npz
from vitprobe.weights.errors import WeightsError

ref = load_reference("timm_augreg_ref.py")  # numpy only at import time

CONFIGS = {
    "tiny-depth2": ("vit_tiny_patch16_224", {"num_classes": 1000, "depth": 2}),
    "tiny": ("vit_tiny_patch16_224", {"num_classes": 1000}),
    "base": ("vit_base_patch16_224", {"num_classes": 1000}),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def timm_reference(request, tmp_path_factory):
    name, kwargs = CONFIGS[request.param]
    out = tmp_path_factory.mktemp(request.param)
    subprocess.run([sys.executable, str(REFERENCE / "timm_augreg_ref.py"), name, json.dumps(kwargs), str(out)], check=True)
    return out / "augreg.npz", load_file(out / "timm.safetensors")


def assert_matches_timm(npz_path, expected):
    state = augreg_to_timm(read_npz(npz_path), str(npz_path))
    assert set(state) == set(expected), (
        f"not produced: {sorted(set(expected) - set(state))}, extra: {sorted(set(state) - set(expected))}"
    )
    for key, value in expected.items():
        assert state[key].dtype == np.float32, key
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_matches_timm(timm_reference):
    assert_matches_timm(*timm_reference)


def test_mlpblock_1_naming_matches_timm(timm_reference, tmp_path):
    # timm reads only MlpBlock_3, so rename the file timm judged and expect the same result.
    npz_path, expected = timm_reference
    renamed = {k.replace("/MlpBlock_3/", "/MlpBlock_1/"): v for k, v in read_npz(npz_path).items()}
    assert any("/MlpBlock_1/" in k for k in renamed)
    np.savez(tmp_path / "old.npz", **renamed)
    assert_matches_timm(tmp_path / "old.npz", expected)


# --- bad files ---------------------------------------------------------------------------

SMALL = dict(depth=2, dim=8, heads=2, mlp=16, patch=4, in_chans=3, tokens=5, classes=3)
Q1 = "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"


def convert_file(path):
    return augreg_to_timm(read_npz(path), str(path))


def raises_naming(path, *words):
    with pytest.raises(WeightsError) as info:
        convert_file(path)
    for word in (path.name, *words):
        assert word in str(info.value)
    return str(info.value)


def save(tmp_path, arrays, name="ckpt.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_small_file_converts(tmp_path):
    state = convert_file(save(tmp_path, ref.flax_arrays(**SMALL)))
    assert state["blocks.1.attn.qkv.weight"].shape == (24, 8)
    assert state["patch_embed.proj.weight"].shape == (8, 3, 4, 4)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    assert "empty" in raises_naming(path)


def test_truncated_npz(tmp_path):
    path = save(tmp_path, ref.flax_arrays(**SMALL))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    raises_naming(path)


def test_truncated_member_data(tmp_path):
    # Zip directory intact but a member's bytes corrupted: the error names the array.
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("cls.npy", b"\x93NUMPY garbage that is not a valid header")
    raises_naming(path, "cls")


def test_text_file_named_npz(tmp_path):
    path = tmp_path / "page.npz"
    path.write_text("<html>404 Not Found</html>")
    assert "<html>" in raises_naming(path, "not an .npz")


def test_zip_with_non_npy_member(tmp_path):
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    raises_naming(path, "readme")


def test_npz_with_object_array(tmp_path):
    arrays = ref.flax_arrays(**SMALL)
    arrays["cls"] = np.array([{"evil": 1}], dtype=object)
    message = raises_naming(save(tmp_path, arrays), "cls")
    assert "pickle" in message


def test_unknown_key(tmp_path):
    arrays = ref.flax_arrays(**SMALL)
    arrays["Transformer/encoderblock_0/Surprise/kernel"] = np.zeros(3, np.float32)
    raises_naming(save(tmp_path, arrays), "Transformer/encoderblock_0/Surprise/kernel")


def test_missing_key(tmp_path):
    arrays = ref.flax_arrays(**SMALL)
    del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias"]
    raises_naming(save(tmp_path, arrays), "missing", "Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias")


def test_missing_block_found_from_depth(tmp_path):
    arrays = ref.flax_arrays(**{**SMALL, "depth": 3})
    arrays = {k: v for k, v in arrays.items() if "encoderblock_1/" not in k}
    raises_naming(save(tmp_path, arrays), "Transformer/encoderblock_1/LayerNorm_0/scale")


def test_wrong_shape(tmp_path):
    arrays = ref.flax_arrays(**SMALL)
    arrays[Q1] = arrays[Q1][:, :, :2]
    raises_naming(save(tmp_path, arrays), Q1, "(8, 2, 2)")


def test_wrong_dtype(tmp_path):
    arrays = ref.flax_arrays(**SMALL)
    arrays["head/bias"] = arrays["head/bias"].astype(np.int32)
    raises_naming(save(tmp_path, arrays), "head/bias", "int32")


def test_both_mlp_names_in_one_block(tmp_path):
    arrays = ref.flax_arrays(**SMALL)
    extra = "Transformer/encoderblock_0/MlpBlock_1/Dense_0/kernel"
    arrays[extra] = arrays["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"]
    raises_naming(save(tmp_path, arrays), extra)


def test_pre_logits_refused(tmp_path):
    arrays = ref.flax_arrays(**SMALL)
    arrays["pre_logits/kernel"] = np.zeros((8, 8), np.float32)
    arrays["pre_logits/bias"] = np.zeros(8, np.float32)
    raises_naming(save(tmp_path, arrays), "pre_logits/kernel", "representation")


def test_not_a_vit(tmp_path):
    raises_naming(save(tmp_path, {"weights": np.zeros(3, np.float32)}), "embedding/kernel")


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="nothere.npz"):
        read_npz(tmp_path / "nothere.npz")


# --- end to end --------------------------------------------------------------------------


@pytest.mark.parametrize("timm_reference", ["tiny-depth2"], indirect=True)
def test_npz_model_equals_timm_safetensors_model(timm_reference):
    """The model loaded from the .npz runs exactly as the one loaded from timm's state of it.

    The safetensors side is held equal to timm's forward pass by test_parity_timm.py.
    """
    import vitprobe

    npz_path, _ = timm_reference
    arch, kwargs = CONFIGS["tiny-depth2"]
    from_npz = vitprobe.load_model(arch, weights=str(npz_path), depth=kwargs["depth"])
    from_timm = vitprobe.load_model(arch, weights=str(npz_path.parent / "timm.safetensors"), depth=kwargs["depth"])
    assert (from_npz.weights_file.suffix, from_timm.weights_file.suffix) == (".npz", ".safetensors")
    x = np.random.default_rng(0).standard_normal((2, 224, 224, 3), dtype=np.float32)
    a, b = from_npz.forward(x), from_timm.forward(x)
    assert len(a.attentions) == len(b.attentions) == kwargs["depth"]
    for i, (got, expected) in enumerate(zip(a.attentions, b.attentions)):
        np.testing.assert_array_equal(got, expected, err_msg=f"block {i}")
    assert np.isfinite(a.logits).all() and a.logits.shape == (2, kwargs["num_classes"])
    np.testing.assert_array_equal(a.logits, b.logits)
