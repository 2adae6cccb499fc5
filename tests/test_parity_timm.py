"""vitprobe against timm (PyTorch, CPU) on the same sharpened random weights and pixels."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import vitprobe
from conftest import PARITY_CASES

ATTN_ATOL = 1e-5
LOGITS_RTOL = 1e-4


def reference_reductions(attentions: list[np.ndarray], num_prefix: int, grid: int, patch: int, pool: np.ndarray | None = None) -> dict:
    """The per-image reductions in float64 from first principles (full rollout matrix products).
    ``pool``: an attention-pooling head's (B, heads, 1, N) attention, which takes the CLS row's place."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    pixel = patch * np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])
    a = [x.astype(np.float64) for x in attentions]
    patch_rows = [x[:, :, num_prefix:] for x in a]
    n = a[0].shape[-1]
    rollout = np.eye(n)
    for x in a:
        joint = x.mean(1) + np.eye(n)
        rollout = (joint / joint.sum(-1, keepdims=True)) @ rollout
    if pool is None:
        row, cls = rollout[:, 0], a[-1][:, :, 0]
    else:
        pooled = pool.astype(np.float64).mean(1)[:, 0]
        row, cls = np.einsum("bn,bnm->bm", pooled / pooled.sum(-1, keepdims=True), rollout), pool.astype(np.float64)[:, :, 0]
    return {
        "distance": np.stack([(r[..., num_prefix:] * pixel).sum(-1).mean(-1) for r in patch_rows], 1),
        "prefix_mass": np.stack([r[..., :num_prefix].sum(-1).mean(-1) for r in patch_rows], 1),
        "entropy": np.stack([-(r * np.log(np.where(r > 0, r, 1))).sum(-1).mean(-1) for r in patch_rows], 1),
        "rollout": row[:, num_prefix:].reshape(-1, grid, grid),
        "cls": cls[:, :, num_prefix:].reshape(*cls.shape[:2], grid, grid),
    }


REDUCTION_ATOL = {"distance": 1e-3, "prefix_mass": 1e-5, "entropy": 1e-4, "rollout": 1e-5, "cls": 1e-5}


def assert_close_relative(got, want, name: str) -> None:
    """Within LOGITS_RTOL of the reference's largest magnitude."""
    assert got is not None and got.shape == want.shape, name
    np.testing.assert_allclose(got, want, rtol=0, atol=LOGITS_RTOL * np.abs(want).max(), err_msg=name)


def compare(model, ref) -> None:
    """Attention, logits, and the reductions computed inside the compiled forward pass."""
    reduced = model.forward_reduced(ref["input"])
    depth = model.spec.depth
    pool = ref[f"attn_{depth}"] if model.spec.has_pool_query else None
    expected = reference_reductions([ref[f"attn_{i}"] for i in range(depth)], model.num_prefix_tokens,
                                    model.grid_size, model.patch_size, pool)
    for name, atol in REDUCTION_ATOL.items():
        np.testing.assert_allclose(reduced.reductions[name], expected[name], rtol=0, atol=atol, err_msg=name)
    assert reduced.reductions["row_error"].shape[1] == depth + model.spec.has_pool_query
    assert reduced.reductions["row_error"].max() < 1e-4
    out = model.forward(ref["input"])
    assert len(out.attentions) == depth + model.spec.has_pool_query
    assert f"attn_{len(out.attentions)}" not in ref
    if "features" in ref:
        assert_close_relative(out.features, ref["features"], "features")
    for i, attn in enumerate(out.attentions):
        expected = ref[f"attn_{i}"]
        assert attn.shape == expected.shape
        # Sharpened weights: the test means something only if attention is far from uniform.
        assert expected.max(-1).mean() >= 0.2
        np.testing.assert_allclose(attn, expected, rtol=0, atol=ATTN_ATOL, err_msg=f"block {i}")
    if model.spec.head_is_projection:  # CLIP: timm's "logits" are the image embedding
        assert_close_relative(out.embedding, ref["logits"], "embedding")
        assert out.logits is None and reduced.logits is None
    elif "logits" in ref:
        scale = np.abs(ref["logits"]).max()
        np.testing.assert_allclose(out.logits, ref["logits"], rtol=0, atol=LOGITS_RTOL * scale)
        heads = sorted(k for k in ref if k.startswith("head_"))
        assert len(out.head_logits) == len(heads)
        for got, key in zip(out.head_logits, heads):
            np.testing.assert_allclose(got, ref[key], rtol=0, atol=LOGITS_RTOL * scale)
        np.testing.assert_allclose(reduced.logits, ref["logits"], rtol=0, atol=LOGITS_RTOL * scale)
    else:
        assert out.logits is None and reduced.logits is None


@pytest.mark.parametrize("case", PARITY_CASES, ids=[c["id"] for c in PARITY_CASES])
def test_matches_timm(case, timm_reference):
    weights = timm_reference / f"{case['id']}.safetensors"
    model = vitprobe.load_model(case["arch"], weights=str(weights), **case["overrides"])
    ref = dict(np.load(timm_reference / f"{case['id']}.npz"))
    assert model.num_prefix_tokens == ref["attn_0"].shape[-1] - model.spec.num_patches
    compare(model, ref)


BACKEND_CHECK = """
import sys, numpy as np, keras, vitprobe
sys.path.insert(0, {tests!r})
from conftest import PARITY_CASES
from test_parity_timm import compare
case = next(c for c in PARITY_CASES if c["id"] == {case_id!r})
assert keras.backend.backend() == {backend!r}
model = vitprobe.load_model(case["arch"], weights={weights!r}, **case["overrides"])
compare(model, dict(np.load({ref!r})))
print("ok")
"""


@pytest.mark.parametrize(
    "backend,case_id",
    [("jax", "deit_t_dist"), ("torch", "dinov2_s14_reg4"), ("jax", "vit_t16_224_to_384"), ("jax", "siglip_b16"),
     ("torch", "eva02_b14"), ("torch", "beitv2_b16")],
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
