"""Tests for vitprobe.metrics (the attention metrics in keras.ops, on the configured
backend) against hand-computed values and slow reference loops."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from keras import ops

from vitprobe.metrics import attention as am
from vitprobe.metrics.arrays import upsample_map
from vitprobe.metrics.grid import patch_distance_matrix
from vitprobe.metrics.parameters import (
    patch_embedding_components,
    patch_embedding_filters,
    position_embedding_similarity,
)


def mean_attention_distance(attn, num_prefix, grid, patch, renormalize=False):
    return tuple(ops.convert_to_numpy(t) for t in am.mean_attention_distance(attn, num_prefix, grid, patch, renormalize))


def attention_entropy(attn, num_prefix):
    return ops.convert_to_numpy(am.attention_entropy(attn, num_prefix))


def rollout_row(blocks, head_fusion="mean", discard_ratio=0.0, num_prefix=1):
    return ops.convert_to_numpy(am.rollout_cls_row(blocks, head_fusion, discard_ratio, num_prefix))


def random_softmax(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 3.0) -> np.ndarray:
    """Random float32 softmax rows."""
    logits = rng.standard_normal(shape) * scale
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def slow_mad(attn: np.ndarray, num_prefix: int, grid: int, patch: int, renormalize: bool) -> tuple[list, list]:
    """Pure-Python mean attention distance and prefix mass."""
    b_n, h_n, n, _ = attn.shape
    dists, masses = [], []
    for b in range(b_n):
        drow, mrow = [], []
        for h in range(h_n):
            dsum = msum = 0.0
            for q in range(num_prefix, n):
                qr, qc = divmod(q - num_prefix, grid)
                w_total = sum(float(attn[b, h, q, k]) for k in range(num_prefix, n))
                acc = 0.0
                for k in range(num_prefix, n):
                    kr, kc = divmod(k - num_prefix, grid)
                    acc += float(attn[b, h, q, k]) * patch * math.hypot(qr - kr, qc - kc)
                if renormalize:
                    acc /= w_total
                dsum += acc
                msum += sum(float(attn[b, h, q, k]) for k in range(num_prefix))
            p = n - num_prefix
            drow.append(dsum / p)
            mrow.append(msum / p)
        dists.append(drow)
        masses.append(mrow)
    return dists, masses


def test_distance_matrix_values_and_cache() -> None:
    d = patch_distance_matrix(2, 3, 10)
    assert d.shape == (6, 6)
    assert d[0, 5] == pytest.approx(10 * math.sqrt(1 + 4))
    assert d[1, 4] == pytest.approx(10.0)
    assert np.all(np.diag(d) == 0)
    assert patch_distance_matrix(2, 3, 10) is d
    assert not d.flags.writeable


def test_uniform_attention_distance_14x14() -> None:
    grid, patch, p = 14, 16, 196
    expected = 0.0
    for q in range(p):
        for k in range(p):
            expected += patch * math.hypot(q // grid - k // grid, q % grid - k % grid)
    expected /= p * p
    assert expected == pytest.approx(116.5, abs=0.01)
    attn = np.zeros((1, 2, p + 1, p + 1), np.float32)
    attn[:, :, :, 1:] = 1.0 / p
    dist, mass = mean_attention_distance(attn, 1, grid, patch)
    np.testing.assert_allclose(dist, expected, atol=1e-4)
    np.testing.assert_allclose(mass, 0.0, atol=0)


def test_self_attention_distance_zero() -> None:
    attn = np.broadcast_to(np.eye(2 + 36, dtype=np.float32), (2, 3, 38, 38)).copy()
    dist, mass = mean_attention_distance(attn, 2, 6, 16)
    np.testing.assert_array_equal(dist, 0.0)
    np.testing.assert_array_equal(mass, 0.0)


def test_cls_half_mass_halves_distance() -> None:
    grid, patch, p = 14, 16, 196
    uniform = np.zeros((1, 1, p + 1, p + 1), np.float32)
    uniform[..., 1:] = 1.0 / p
    half = uniform * 0.5
    half[..., 0] = 0.5
    full_d, _ = mean_attention_distance(uniform, 1, grid, patch)
    d, mass = mean_attention_distance(half, 1, grid, patch)
    np.testing.assert_allclose(mass, 0.5, atol=1e-6)
    np.testing.assert_allclose(d, full_d / 2, atol=1e-4)
    d_re, mass_re = mean_attention_distance(half, 1, grid, patch, renormalize=True)
    np.testing.assert_allclose(d_re, full_d, atol=1e-4)
    np.testing.assert_allclose(mass_re, 0.5, atol=1e-6)


@pytest.mark.parametrize("num_prefix", [0, 1, 2, 5])
@pytest.mark.parametrize("renormalize", [False, True])
def test_mad_matches_slow_loop(num_prefix: int, renormalize: bool) -> None:
    grid, patch = 4, 14
    rng = np.random.default_rng(num_prefix)
    n = num_prefix + grid * grid
    attn = random_softmax(rng, (2, 3, n, n))
    dist, mass = mean_attention_distance(attn, num_prefix, grid, patch, renormalize=renormalize)
    ref_d, ref_m = slow_mad(attn, num_prefix, grid, patch, renormalize)
    assert dist.shape == mass.shape == (2, 3)
    np.testing.assert_allclose(dist, ref_d, atol=1e-3)
    np.testing.assert_allclose(mass, ref_m, atol=1e-5)


def test_mad_float32_error() -> None:
    rng = np.random.default_rng(0)
    attn = random_softmax(rng, (8, 12, 197, 197))
    d32, _ = mean_attention_distance(attn, 1, 14, 16)
    d64, _ = mean_attention_distance(attn.astype(np.float64), 1, 14, 16)
    assert np.abs(d32 - d64).max() < 1e-3


def test_mad_rejects_wrong_token_count() -> None:
    with pytest.raises(ValueError, match="num_prefix"):
        mean_attention_distance(np.zeros((1, 1, 10, 10), np.float32), 1, 4, 16)


def test_entropy_hand_values() -> None:
    n, num_prefix = 17, 1
    attn = np.full((2, 3, n, n), 1.0 / n, np.float32)
    np.testing.assert_allclose(attention_entropy(attn, num_prefix), math.log(n), rtol=1e-6)
    one_hot = np.broadcast_to(np.eye(n, dtype=np.float32), (1, 2, n, n))
    np.testing.assert_array_equal(attention_entropy(one_hot, num_prefix), 0.0)
    # Prefix row is excluded: patch rows put 0.5/0.5 on two keys -> log 2.
    mixed = np.zeros((1, 1, 3, 3), np.float32)
    mixed[0, 0, 0] = [1 / 3, 1 / 3, 1 / 3]
    mixed[0, 0, 1:, :2] = 0.5
    np.testing.assert_allclose(attention_entropy(mixed, 1), [[math.log(2)]], rtol=1e-6)


def test_entropy_from_logits_matches_float64() -> None:
    """The entropy as log-sum-exp less the expected logit (from the logits, as the extract program
    computes it) against -sum p log p in float64, on rows with near-zero and zero weights,
    masked keys and logits of 1e4; and from the probabilities alone (stored attention)."""
    from helpers import entropy_float64, hard_entropy_logits

    logits = hard_entropy_logits()
    want = entropy_float64(logits)
    assert want.min() < 1e-20 and abs(want[-1] - math.log(2)) < 1e-12  # the cases are the hard ones
    as_rows = logits[None, :, None, :]  # one query row per "head": the entropy of each row
    attn = ops.softmax(ops.convert_to_tensor(as_rows), axis=-1)
    got = ops.convert_to_numpy(am.attention_entropy(attn, 0, ops.convert_to_tensor(as_rows)))[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    from_probabilities = ops.convert_to_numpy(am.attention_entropy(attn, 0))[0]
    np.testing.assert_allclose(from_probabilities, want, rtol=0, atol=2e-6)


def two_block_case() -> list[np.ndarray]:
    """Block 1: heads identity and 'everyone to token 1 except token 2'; block 2: one head swapping 0 and 2."""
    h1 = np.eye(3)
    h2 = np.array([[0, 1, 0], [0, 1, 0], [0, 0, 1]], float)
    block1 = np.stack([h1, h2])[None]
    block2 = np.array([[[[0, 0, 1], [0, 1, 0], [1, 0, 0]]]], float)
    return [block1, block2]


def test_rollout_hand_computed_mean() -> None:
    # Block 1 mean = [[.5,.5,0],[0,1,0],[0,0,1]]; + I and row-normalise -> [[.75,.25,0],[0,1,0],[0,0,1]].
    # Block 2 + I, normalised -> [[.5,0,.5],[0,1,0],[.5,0,.5]]; product A2 @ A1:
    expected = np.array([[0.375, 0.125, 0.5], [0.0, 1.0, 0.0], [0.375, 0.125, 0.5]])
    np.testing.assert_allclose(rollout_row(two_block_case(), "mean")[0], expected[0], atol=1e-12)
    cls_map = ops.convert_to_numpy(am.rollout_cls_map(two_block_case(), 1, (1, 2)))
    np.testing.assert_allclose(cls_map[0], [[0.125, 0.5]], atol=1e-12)


def test_rollout_hand_computed_max_min() -> None:
    # max: block 1 -> [[2/3,1/3,0],[0,1,0],[0,0,1]]; min: block 1 -> identity, so rollout = block 2 alone.
    expected_max = np.array([[1 / 3, 1 / 6, 1 / 2], [0, 1, 0], [1 / 3, 1 / 6, 1 / 2]])
    expected_min = np.array([[0.5, 0, 0.5], [0, 1, 0], [0.5, 0, 0.5]])
    np.testing.assert_allclose(rollout_row(two_block_case(), "max")[0], expected_max[0], atol=1e-12)
    np.testing.assert_allclose(rollout_row(two_block_case(), "min")[0], expected_min[0], atol=1e-12)


def test_pool_query_reductions_hand_computed() -> None:
    """A model without prefix tokens (num_prefix 0, a 1x2 grid) whose pooling query's attention
    (B, heads, 1, N) follows the blocks: per-block tables cover the two square blocks only, the
    rollout row is P @ A2 @ A1 (P the query's head-fused row, no identity added), the CLS maps are
    the query's rows, and row_error gets one more column for the query."""
    block1 = np.array([[[[1.0, 0.0], [0.5, 0.5]]]])  # (1, 1 head, 2, 2)
    block2 = np.array([[[[0.0, 1.0], [0.0, 1.0]]]])
    pool = np.array([[[[0.25, 0.75]], [[0.75, 0.25]]]])  # (1, 2 heads, 1, 2): head mean [.5, .5]
    reducer = am.AttentionReducer(0, (1, 2), 16)
    out = {k: ops.convert_to_numpy(v) for k, v in reducer([block1, block2, pool]).items()}
    # Distances over all patch queries: block 1 rows give 0 and .5 * 16 px; block 2: 16 and 0.
    np.testing.assert_allclose(out["distance"], [[[4.0], [8.0]]], atol=1e-12)
    np.testing.assert_allclose(out["prefix_mass"], np.zeros((1, 2, 1)), atol=0)
    assert out["entropy"].shape == (1, 2, 1) and out["row_error"].shape == (1, 3)
    # A1 + I normalised: [[1, 0], [.25, .75]]; A2 + I: [[.5, .5], [0, 1]]; A2 @ A1 = [[.625, .375], [.25, .75]];
    # P @ (A2 @ A1) = [.4375, .5625].
    np.testing.assert_allclose(out["rollout"], [[[0.4375, 0.5625]]], atol=1e-12)
    np.testing.assert_allclose(out["cls"], [[[[0.25, 0.75]], [[0.75, 0.25]]]], atol=1e-12)
    # Without the pooling query the same blocks give the first token's rollout row.
    plain = {k: ops.convert_to_numpy(v) for k, v in reducer([block1, block2]).items()}
    np.testing.assert_allclose(plain["rollout"], [[[0.625, 0.375]]], atol=1e-12)
    assert plain["row_error"].shape == (1, 2)


def test_pool_query_rollout_renormalises_fused_row() -> None:
    """With max fusion the query's fused row does not sum to 1; it is renormalised."""
    block = np.broadcast_to(np.eye(2), (1, 1, 2, 2))
    pool = np.array([[[[0.2, 0.8]], [[0.6, 0.4]]]])  # max over heads: [.6, .8] -> [3/7, 4/7]
    np.testing.assert_allclose(rollout_row([block, pool], "max", num_prefix=0)[0], [3 / 7, 4 / 7], atol=1e-12)


def test_rollout_order_is_last_times_first() -> None:
    rng = np.random.default_rng(1)
    blocks = [random_softmax(rng, (2, 4, 6, 6)).astype(np.float64) for _ in range(3)]
    mats = []
    for blk in blocks:
        a = blk.mean(1) + np.eye(6)
        mats.append(a / a.sum(-1, keepdims=True))
    np.testing.assert_allclose(rollout_row(blocks), (mats[2] @ mats[1] @ mats[0])[:, 0], atol=1e-12)


def test_identity_attention_gives_identity_rollout() -> None:
    eye = np.broadcast_to(np.eye(5, dtype=np.float32), (2, 3, 5, 5))
    out = rollout_row([eye, eye, eye], head_fusion="max", discard_ratio=0.5)
    np.testing.assert_allclose(out, np.broadcast_to(np.eye(5)[0], (2, 5)), atol=1e-7)


def test_discard_keeps_cls_entries() -> None:
    fused = np.array([[0.1, 0.2, 0.7], [0.05, 0.9, 0.05], [0.01, 0.09, 0.9]])
    # Discardable (non-CLS row/column): .9, .05, .09, .9 -> ratio .5 zeroes (1,2)=.05 and (2,1)=.09,
    # though the CLS-column entries .05 and .01 are lower.
    expected = np.array([[1.1 / 2, 0.2 / 2, 0.7 / 2], [0.05 / 1.95, 1.9 / 1.95, 0.0], [0.01 / 1.91, 0.0, 1.9 / 1.91]])
    other = np.eye(3)[None, None]  # second image: discarding its off-diagonal zeros changes nothing
    attn = np.concatenate([fused[None, None], other])
    out = rollout_row([attn], discard_ratio=0.5)
    np.testing.assert_allclose(out[0], expected[0], atol=1e-12)
    np.testing.assert_allclose(out[1], np.eye(3)[0], atol=1e-12)
    np.testing.assert_allclose(rollout_row([fused[None, None]], discard_ratio=0.0)[0], [0.55, 0.1, 0.35])
    # The discarded entries themselves: the rows other than CLS see them.
    kept = ops.convert_to_numpy(am.discard_lowest(fused[None], 0.5, 1))[0]
    np.testing.assert_array_equal(kept, [[0.1, 0.2, 0.7], [0.05, 0.9, 0.0], [0.01, 0.0, 0.9]])


def test_rollout_rejects_bad_args() -> None:
    eye = np.eye(3)[None, None]
    with pytest.raises(ValueError):
        am.rollout_cls_row([eye], head_fusion="median")
    with pytest.raises(ValueError):
        am.rollout_cls_row([eye], discard_ratio=1.0)
    with pytest.raises(ValueError):
        am.AttentionReducer(1, 2, 16, discard_ratio=-0.1)


def test_cls_attention_maps_and_upsample() -> None:
    num_prefix, grid = 2, 3
    n = num_prefix + grid * grid
    attn = np.zeros((1, 2, n, n), np.float32)
    attn[0, 1, 0, num_prefix:] = np.arange(9)
    maps = ops.convert_to_numpy(am.cls_attention_maps(attn, num_prefix, grid))
    assert maps.shape == (1, 2, 3, 3)
    np.testing.assert_array_equal(maps[0, 1], np.arange(9).reshape(3, 3))
    up = upsample_map(maps[0, 1], 6)
    assert up.shape == (6, 6)
    np.testing.assert_array_equal(up[:2, :2], 0)
    np.testing.assert_array_equal(up[4:, 2:4], 7)
    with pytest.raises(ValueError):
        upsample_map(maps[0, 1], 7)


def test_position_embedding_similarity() -> None:
    rng = np.random.default_rng(2)
    pos = rng.standard_normal((6, 5))
    cos, dot = position_embedding_similarity(pos, (2, 3))
    assert cos.shape == (2, 3, 2, 3) and dot.shape == (6, 6)
    np.testing.assert_allclose(dot[1, 4], pos[1] @ pos[4])
    ref = pos[1] @ pos[4] / np.linalg.norm(pos[1]) / np.linalg.norm(pos[4])
    np.testing.assert_allclose(cos[0, 1, 1, 1], ref)
    np.testing.assert_allclose(np.einsum("ijij->ij", cos), 1.0)


def test_patch_embedding_filters_minmax() -> None:
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((4, 4, 3, 10))
    kernel[..., 2] = 5.0  # constant filter
    out = patch_embedding_filters(kernel, count=6)
    assert out.shape == (6, 4, 4, 3)
    np.testing.assert_array_equal(out[2], 0.0)
    for i in (0, 1, 3):
        assert out[i].min() == 0.0 and out[i].max() == 1.0
        ref = kernel[..., i]
        np.testing.assert_allclose(out[i], (ref - ref.min()) / (ref.max() - ref.min()))
    with pytest.raises(ValueError):
        patch_embedding_filters(kernel, count=11)


def test_patch_embedding_components() -> None:
    rng = np.random.default_rng(4)
    p, d = 2, 40
    # Filters vary mostly along one direction -> first component is that direction (up to scale).
    direction = rng.standard_normal(p * p * 3)
    coeffs = rng.standard_normal(d) * 10
    flat = coeffs[:, None] * direction[None] + rng.standard_normal((d, p * p * 3)) * 0.01
    kernel = flat.T.reshape(p, p, 3, d)
    comps = patch_embedding_components(kernel, count=5)
    assert comps.shape == (5, p, p, 3)
    assert comps.min() >= 0 and comps.max() <= 1
    unit = direction / np.linalg.norm(direction)
    unit = unit * np.sign(unit[np.abs(unit).argmax()])
    expected = (unit - unit.min()) / (unit.max() - unit.min())
    np.testing.assert_allclose(comps[0].ravel(), expected, atol=1e-3)
    np.testing.assert_allclose(patch_embedding_components(-kernel, count=5), comps, atol=1e-9)


def test_row_sum_error() -> None:
    rng = np.random.default_rng(5)
    attn = random_softmax(rng, (3, 2, 5, 5))
    attn[1, 0, 2, 1] += 0.1
    attn[2, 1, 0, 0] = np.nan
    error = ops.convert_to_numpy(am.row_sum_error(attn))
    assert error[0] < 1e-6
    assert error[1] == pytest.approx(0.1, abs=1e-6)
    assert error[2] == np.inf


def test_shard_reductions_check_and_table(tmp_path) -> None:
    from vitprobe.pipeline.shard_reductions import ShardReductions
    from vitprobe.shards import ShardIdentity, images_digest
    from vitprobe.tables import PER_IMAGE_COLUMNS

    rng = np.random.default_rng(6)
    blocks, heads, grid = 2, 3, 2

    def batch(n, error=0.0):
        return {
            "distance": rng.random((n, blocks, heads)),
            "prefix_mass": rng.random((n, blocks, heads)),
            "entropy": rng.random((n, blocks, heads)),
            "row_error": np.full((n, blocks), error),
            "rollout": rng.random((n, grid, grid)),
            "cls": rng.random((n, heads, grid, grid)),
        }

    collected = ShardReductions("vit_b16")
    first, second = batch(2), batch(1)
    collected.add(["b", "a"], first)
    collected.add(["c"], second)
    bad = batch(2)
    bad["row_error"][1, 1] = np.nan
    with pytest.raises(ValueError, match=r"vit_b16 block 1: .*\['e'\]"):
        collected.add(["d", "e"], bad)
    identity = ShardIdentity("vit_b16", "settings digest", images_digest(["b", "a", "c"]))
    collected.write(str(tmp_path / "t.parquet"), str(tmp_path / "m.npz"), identity)
    import pandas as pd

    table = pd.read_parquet(tmp_path / "t.parquet")
    assert list(table.columns) == list(PER_IMAGE_COLUMNS) and len(table) == 3 * blocks * heads
    row = table[(table["image_id"] == "b") & (table["block"] == 1) & (table["head"] == 2)]
    assert row["distance_px"].item() == first["distance"][0, 1, 2] and row["entropy"].item() == first["entropy"][0, 1, 2]
    maps = np.load(tmp_path / "m.npz")
    assert list(maps["image_ids"]) == ["b", "a", "c"]  # shard order: the first rows are the map images
    np.testing.assert_array_equal(maps["cls"][2], second["cls"][0].astype(np.float32))


def test_numpy_attention_on_every_backend():
    """The reductions take numpy arrays on each backend (torch cannot multiply an array by a tensor)."""
    script = (
        "import numpy as np; from keras import ops; from vitprobe.metrics import attention as am\n"
        "a = np.full((1, 1, 5, 5), 0.2, np.float32)\n"
        "d, m = am.mean_attention_distance(a, 1, 2, 16)\n"
        "print(float(ops.convert_to_numpy(d)[0, 0]), float(ops.convert_to_numpy(m)[0, 0]))\n"
    )
    for backend in ("tensorflow", "jax", "torch"):
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": backend}
        )
        assert out.returncode == 0, out.stderr[-2000:]
        distance, mass = map(float, out.stdout.split())
        # Uniform 0.2 over a CLS key and a 2x2 grid at 16 px: per query 0.2 * (0 + 16 + 16 + 16 sqrt 2).
        assert distance == pytest.approx(0.2 * (32 + 16 * 2**0.5), abs=1e-5) and mass == pytest.approx(0.2, abs=1e-7)
