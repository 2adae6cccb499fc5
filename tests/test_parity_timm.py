"""vitprobe against timm (PyTorch, CPU) on the same sharpened random weights and pixels."""

import os
import subprocess
import sys

import numpy as np
import pytest

import vitprobe
from helpers import LOGITS_RTOL, PARITY_CASES, compare


@pytest.mark.parametrize("case", PARITY_CASES, ids=[c["id"] for c in PARITY_CASES])
def test_matches_timm(case, timm_reference):
    weights = timm_reference / f"{case['id']}.safetensors"
    model = vitprobe.load_model(case["arch"], weights=str(weights), **case["overrides"])
    ref = dict(np.load(timm_reference / f"{case['id']}.npz"))
    assert model.num_prefix_tokens == ref["attn_0"].shape[-1] - model.spec.num_patches
    compare(model, ref, case.get("rtol", LOGITS_RTOL))


BACKEND_CHECK = """
import sys, numpy as np, keras, vitprobe
sys.path.insert(0, {tests!r})
from helpers import PARITY_CASES, compare
case = next(c for c in PARITY_CASES if c["id"] == {case_id!r})
assert keras.backend.backend() == {backend!r}
model = vitprobe.load_model(case["arch"], weights={weights!r}, **case["overrides"])
compare(model, dict(np.load({ref!r})))
print("ok")
"""


@pytest.mark.parametrize(
    "backend,case_id",
    [
        ("jax", "deit_t_dist"),
        ("torch", "dinov2_s14_reg4"),
        ("jax", "vit_t16_224_to_384"),
        ("jax", "siglip_b16"),
        ("torch", "eva02_b14"),
        ("torch", "beitv2_b16"),
    ],
)
def test_other_backends_match_timm(backend, case_id, timm_reference):
    """The same model code on the jax and torch backends (one process per backend)."""
    script = BACKEND_CHECK.format(
        tests=os.path.dirname(__file__),
        case_id=case_id,
        backend=backend,
        weights=str(timm_reference / f"{case_id}.safetensors"),
        ref=str(timm_reference / f"{case_id}.npz"),
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": backend}
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-4000:]
