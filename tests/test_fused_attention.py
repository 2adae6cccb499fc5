"""The fused attention kernel (Pallas, jax backend) in Pallas' interpreter on the CPU: its
attention output and row statistics against float64 numpy, and the reductions of a whole model
against the unfused reducer (the GPU speed is a benchmark, not a test)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from vitprobe.kernels.fused_attention import attention_with_statistics  # jax: the test extra installs it


def reference(q, k, v, num_prefix, grid_w, patch):
    """float64: the probabilities, then every statistic from them."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    n = p.shape[-1]
    idx = np.arange(n) - num_prefix
    r, c = np.divmod(np.maximum(idx, 0), grid_w)
    d = patch * np.hypot(r[:, None] - r[None, :], c[:, None] - c[None, :])
    d[idx < 0, :] = 0
    d[:, idx < 0] = 0
    stats = np.stack([(p * d).sum(-1), p[..., :num_prefix].sum(-1), -(p * np.log(p)).sum(-1)], axis=-1)
    return p @ v, stats


@pytest.mark.parametrize("num_prefix,grid_w,block", [(1, 4, 8), (2, 5, 16), (5, 3, 4)])  # CLS; +distillation; +4 registers
def test_kernel_matches_float64(num_prefix, grid_w, block):
    rng = np.random.default_rng(num_prefix)
    n = num_prefix + grid_w * grid_w  # never a multiple of the tile: the padded keys must be masked
    q = rng.normal(size=(2, 3, n, 8)).astype(np.float32) * 2  # peaked rows
    k = rng.normal(size=(2, 3, n, 8)).astype(np.float32)
    v = rng.normal(size=(2, 3, n, 8 + n)).astype(np.float32)  # extra value columns pass through
    out, stats = attention_with_statistics(
        q, k, v, num_prefix=num_prefix, grid_w=grid_w, patch_size=14, block=block, interpret=True
    )
    want_out, want_stats = reference(q, k, v, num_prefix, grid_w, 14)
    np.testing.assert_allclose(np.asarray(out), want_out, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats)[..., 0], want_stats[..., 0], rtol=1e-5, atol=1e-4)  # px
    np.testing.assert_allclose(np.asarray(stats)[..., 1:], want_stats[..., 1:], rtol=0, atol=1e-5)


def test_kernel_entropy_on_hard_rows():
    """The kernel's entropy (log-sum-exp less the expected logit, over tiles of 8 keys) against
    float64 on the rows of `helpers.hard_entropy_logits`: with keys = the identity, q k^T is q."""
    from helpers import entropy_float64, hard_entropy_logits

    logits = hard_entropy_logits()
    n = logits.shape[1]  # 4 prefix tokens + a 6 x 6 grid
    q = np.zeros((1, 1, n, n), np.float32)
    q[0, 0, : len(logits)] = logits
    k = np.eye(n, dtype=np.float32)[None, None]
    _, stats = attention_with_statistics(q, k, k, num_prefix=4, grid_w=6, patch_size=16, block=8, interpret=True)
    got = np.asarray(stats)[0, 0, : len(logits), 2]
    np.testing.assert_allclose(got, entropy_float64(logits), rtol=0, atol=2e-6)


MODEL_CHECK = """
import numpy as np, keras, vitprobe
from vitprobe.compiled import ReducingProgram
assert keras.backend.backend() == "jax"
model = vitprobe.load_model({arch!r}, seed=1, depth=2, image_size={size})
for name, var in model.keras_model.weights_by_name.items():  # sharpen: peaked attention
    if name.endswith("attn.qkv.weight"):
        w = np.array(var)
        w[:, : 2 * w.shape[0]] *= 8
        var.assign(w)
x = np.random.default_rng(0).normal(size=(2, {size}, {size}, 3)).astype(np.float32)
for renormalize in (False, True):
    reducer = model.reducer(renormalize=renormalize)
    want = ReducingProgram(reducer, model.keras_model, map_images=1).predict_on_batch(x)
    got = ReducingProgram(reducer, model.keras_model, fused=True, interpret=True, map_images=1).predict_on_batch(x)
    for name in ("map_features", "map_attention"):  # the first image's, from the fused program's q and k
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]), rtol=0, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=0, atol=1e-5) if "logits" in want else None
    n = model.spec.num_tokens  # the comparison is on peaked attention: far below uniform entropy
    assert np.asarray(want["reductions"]["entropy"]).mean() < 0.7 * np.log(n)
    for name, value in want["reductions"].items():
        value = np.asarray(value)
        np.testing.assert_allclose(np.asarray(got["reductions"][name]), value, rtol=0, atol=1e-4 * max(1.0, np.abs(value).max()), err_msg=name)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch,size", [("vit_tiny_patch16_224", 64), ("vit_small_patch14_reg4_dinov2", 56), ("deit_tiny_distilled_patch16_224", 64)]
)
def test_fused_reductions_equal_the_unfused_reducer(arch, size):
    """The whole model on the jax backend: every reduction within 1e-4 (relative to its scale)."""
    result = subprocess.run(
        [sys.executable, "-c", MODEL_CHECK.format(arch=arch, size=size)],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-4000:]


def test_fused_kernel_is_refused_where_it_cannot_apply():
    import vitprobe
    from vitprobe.compiled import attention_kernel_is_fused

    model = vitprobe.load_model("vit_tiny_patch16_224", depth=1, image_size=64)
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):  # this process runs tensorflow
        attention_kernel_is_fused("fused", model.reducer())
    assert not attention_kernel_is_fused("auto", model.reducer())
    with pytest.raises(ValueError, match="must be one of"):
        attention_kernel_is_fused("flash", model.reducer())


@pytest.mark.parametrize("arch", ["vit_base_patch16_siglip_224", "beitv2_base_patch16_224"])
def test_fused_kernel_is_refused_for_models_it_cannot_compute(arch):
    """No class token with a pooling query (SigLIP), or an additive attention bias (BEiT): 'fused'
    names why, 'auto' runs them unfused (the choice that matters on a GPU with jax)."""
    import vitprobe

    model = vitprobe.load_model(arch, depth=1, num_heads=2, embed_dim=32, image_size=64)
    with pytest.raises(ValueError, match=r"fused' needs a class token, no relative position bias and no attention-pooling head"):
        model.uses_fused_kernel("fused", model.reducer())
    assert not model.uses_fused_kernel("auto", model.reducer())
    out = model.forward_reduced(np.zeros((1, 64, 64, 3), np.float32), attention_kernel="auto")
    assert out.reductions["distance"].shape == (1, 1, 2)
