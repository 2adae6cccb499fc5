"""The real ``hf-hub:`` path of vitprobe.weights.fetch, through huggingface_hub, offline.

A Hugging Face cache is built in tmp_path with the layout huggingface_hub itself writes
(``models--timm--<repo>/blobs/<sha256>``, ``snapshots/<commit>/model.safetensors`` a
relative symlink to the blob, ``refs/main`` holding the commit with no newline).
huggingface_hub reads ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` into module constants at
import time, so the loads run in a subprocess started with them set: offline,
``hf_hub_download`` gets ``OfflineModeIsEnabled`` instead of a HEAD response, falls back to
``refs/main`` -> ``snapshots/<commit>/model.safetensors`` and returns that path, or raises
``LocalEntryNotFoundError`` when the cache has no such file. ``HF_ENDPOINT`` points at a
closed local port as well, so nothing here can reach the network.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load, save

REPO = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
SOURCE = f"hf-hub:{REPO}"
MISSING = "hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k"
COMMIT_1 = "1" * 8 + "0123456789abcdef0123456789abcdef"
COMMIT_2 = "2" * 8 + "0123456789abcdef0123456789abcdef"


def timm_vit_tiny_state(seed: int, depth: int = 2) -> dict[str, np.ndarray]:
    """A vit_tiny_patch16_224 state dict with timm's names, shapes and PyTorch layout
    (the key set of timm's own ``state_dict()`` for depth 2)."""
    d, mlp, classes = 192, 768, 1000
    shapes = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 197, d),
        "patch_embed.proj.weight": (d, 3, 16, 16),
        "patch_embed.proj.bias": (d,),
        "norm.weight": (d,),
        "norm.bias": (d,),
        "head.weight": (classes, d),
        "head.bias": (classes,),
    }
    for i in range(depth):
        shapes.update(
            {
                f"blocks.{i}.{k}": v
                for k, v in {
                    "norm1.weight": (d,),
                    "norm1.bias": (d,),
                    "attn.qkv.weight": (3 * d, d),
                    "attn.qkv.bias": (3 * d,),
                    "attn.proj.weight": (d, d),
                    "attn.proj.bias": (d,),
                    "norm2.weight": (d,),
                    "norm2.bias": (d,),
                    "mlp.fc1.weight": (mlp, d),
                    "mlp.fc1.bias": (mlp,),
                    "mlp.fc2.weight": (d, mlp),
                    "mlp.fc2.bias": (d,),
                }.items()
            }
        )
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, 0.02, s).astype(np.float32) for k, s in sorted(shapes.items())}


def add_snapshot(cache: Path, repo: str, commit: str, data: bytes, *, set_main: bool) -> Path:
    """Lay ``data`` out as huggingface_hub's cache does for model.safetensors at ``commit``."""
    storage = cache / ("models--" + repo.replace("/", "--"))
    etag = hashlib.sha256(data).hexdigest()  # an LFS file's etag is its sha256
    blob = storage / "blobs" / etag
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    pointer = storage / "snapshots" / commit / "model.safetensors"
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.symlink_to(Path("..", "..", "blobs", etag))
    if set_main:
        set_ref(cache, repo, commit)
    return pointer


def set_ref(cache: Path, repo: str, commit: str) -> None:
    ref = cache / ("models--" + repo.replace("/", "--")) / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)  # read back verbatim: a trailing newline would break the lookup


# Runs the steps in one process (keras + tensorflow import once); prints one JSON result per load.
DRIVER = r"""
import json, sys
import numpy as np
import huggingface_hub.constants as hf
import vitprobe
from vitprobe.weights.errors import WeightsError
from safetensors.numpy import load_file

steps = json.loads(sys.argv[1])
results = [{"offline": hf.HF_HUB_OFFLINE, "cache": hf.HF_HUB_CACHE}]
for step in steps:
    if "ref" in step:
        open(step["ref"], "w").write(step["commit"])
        continue
    try:
        model = vitprobe.load_model("vit_tiny_patch16_224", weights=step["load"], depth=2)
    except WeightsError as e:
        results.append({"source": step["load"], "error": "WeightsError", "message": str(e)})
        continue
    state = load_file(str(model.weights_file))
    diff = max(float(np.abs(model.state(k) - state[k]).max()) for k in ("cls_token", "pos_embed", "norm.weight", "blocks.1.norm2.bias"))
    results.append({"source": step["load"], "weights_file": str(model.weights_file), "max_diff": diff})
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    cache, lock = root / "hf_home" / "hub", root / "weights.lock.json"
    first, second = save(timm_vit_tiny_state(seed=1)), save(timm_vit_tiny_state(seed=2))
    pointer_1 = add_snapshot(cache, REPO, COMMIT_1, first, set_main=True)
    # Upstream changed: a new commit with different (valid) bytes, not yet on main.
    pointer_2 = add_snapshot(cache, REPO, COMMIT_2, second, set_main=False)
    steps = [
        {"load": SOURCE},
        {"ref": str(cache / ("models--" + REPO.replace("/", "--")) / "refs" / "main"), "commit": COMMIT_2},
        {"load": SOURCE},
        {"load": MISSING},
    ]
    env = {
        **os.environ,
        "HF_HOME": str(root / "hf_home"),
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # closed port: a request, were one made, fails at once
        "VITPROBE_WEIGHTS_LOCK": str(lock),
    }
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(steps)], capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULTS ")]
    assert result.returncode == 0 and lines, f"driver failed:\n{result.stdout}\n{result.stderr}"
    header, *loads = json.loads(lines[-1].removeprefix("RESULTS "))
    return dict(
        header=header, loads=loads, cache=cache, lock=lock, first=first, second=second, pointer_1=pointer_1, pointer_2=pointer_2
    )


def test_offline_settings_reached_huggingface_hub(hub):
    assert hub["header"] == {"offline": True, "cache": str(hub["cache"])}


def test_loads_from_cache_and_records_sha256(hub):
    loaded = hub["loads"][0]
    assert loaded["source"] == SOURCE and "error" not in loaded, loaded
    assert loaded["weights_file"] == str(hub["pointer_1"])  # the snapshot path refs/main names
    assert loaded["max_diff"] == 0.0  # the file's tensors are in the model
    assert load(hub["first"])["cls_token"].shape == (1, 1, 192)
    lock = json.loads(hub["lock"].read_text())
    assert lock == {SOURCE: {"sha256": hashlib.sha256(hub["first"]).hexdigest()}}


def test_changed_snapshot_is_refused_against_the_lock(hub):
    refused = hub["loads"][1]
    assert refused["source"] == SOURCE and refused.get("error") == "WeightsError", refused
    message = refused["message"]
    first, second = (hashlib.sha256(hub[k]).hexdigest() for k in ("first", "second"))
    assert str(hub["pointer_2"]) in message and SOURCE in message
    assert f"sha256 {second} differs from {first}" in message
    assert "lock" in message
    load(hub["second"])  # a valid safetensors file: refused for its checksum alone
    # The pin is kept, not overwritten by the new file.
    assert json.loads(hub["lock"].read_text()) == {SOURCE: {"sha256": first}}


def test_repo_not_in_cache_says_how_to_fix_offline(hub):
    missing = hub["loads"][2]
    assert missing["source"] == MISSING and missing.get("error") == "WeightsError", missing
    message = missing["message"]
    assert message.startswith(f"{MISSING}:")
    assert "LocalEntryNotFoundError" in message  # huggingface_hub's own verdict, kept in the message
    assert "Without network" in message and "local .safetensors path" in message
    assert MISSING not in json.loads(hub["lock"].read_text())
