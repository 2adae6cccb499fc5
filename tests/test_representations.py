"""Linear CKA with the minibatch unbiased-HSIC estimator: against independent float64 numpy on a real
model's block outputs, the U-statistic it estimates, its invariances and closed-form cases."""

import itertools

import numpy as np
import pytest
from PIL import Image
from skimage import data

import vitprobe
from vitprobe.metrics.cka import FEATURES, cka_matrix, cka_standard_error, hsic_matrix
from vitprobe.metrics.representations import RepresentationReducer, group_grams


def reference_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC of Song et al. (2012), Eq. 5, written out with ones vectors (float64)."""
    n = len(k)
    k, l = k * (1 - np.eye(n)), l * (1 - np.eye(n))
    one = np.ones(n)
    return float(
        (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ k @ l @ one)
        / (n * (n - 3))
    )


def reference_cka(features_a: list[np.ndarray], features_b: list[np.ndarray], group_size: int) -> np.ndarray:
    """(blocks_a, blocks_b) minibatch CKA from full (images, F) features per block, in float64,
    uncentred Gram matrices, one pair and one group at a time."""
    groups = len(features_a[0]) // group_size

    def mean_hsic(x, y):
        total = 0.0
        for g in range(groups):
            rows = slice(g * group_size, (g + 1) * group_size)
            xg, yg = x[rows].astype(np.float64), y[rows].astype(np.float64)
            total += reference_hsic(xg @ xg.T, yg @ yg.T)
        return total / groups

    out = np.zeros((len(features_a), len(features_b)))
    for i, x in enumerate(features_a):
        for j, y in enumerate(features_b):
            out[i, j] = mean_hsic(x, y) / np.sqrt(mean_hsic(x, x) * mean_hsic(y, y))
    return out


def numpy_features(block_output: np.ndarray, num_prefix: int, features: str) -> np.ndarray:
    x = block_output.astype(np.float64)
    return {"tokens": x.reshape(len(x), -1), "cls": x[:, 0], "patch_mean": x[:, num_prefix:].mean(1)}[features]


def test_hsic_is_the_u_statistic():
    """HSIC_1 equals the U-statistic over distinct index quadruples that it is defined to compute."""
    rng = np.random.default_rng(0)
    n = 6
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    k, l = x @ x.T, y @ y.T
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    expected = total / count
    assert hsic_matrix(k[None, None], l[None, None])[0, 0, 0] == pytest.approx(expected, rel=1e-12)
    assert reference_hsic(k, l) == pytest.approx(expected, rel=1e-12)


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "hubble_deep_field", "immunohistochemistry")


@pytest.fixture(scope="module")
def photos():
    return [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]


@pytest.mark.parametrize("arch", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_in_graph_grams_give_the_float64_numpy_cka(arch, photos):
    """The Gram matrices computed inside the compiled forward pass, combined in float64, against an
    independent float64 implementation on the same run's full block outputs (8 photos, 2 groups of 4),
    within one model and against a second, differently seeded one."""
    group = 4
    models = [vitprobe.load_model(arch, depth=3, seed=seed) for seed in (0, 1)]
    runs = [m.forward(m.preprocess(photos), block_outputs=True, group_size=group) for m in models]
    prefix = models[0].num_prefix_tokens
    for features in FEATURES:
        grams = [r.representations[f"gram_{features}"] for r in runs]
        assert grams[0].shape == (2, 3, group, group)
        full = [[numpy_features(b, prefix, features) for b in r.block_outputs] for r in runs]
        for a, b in ((0, 0), (0, 1)):
            expected = reference_cka(full[a], full[b], group)
            assert np.all(np.abs(expected) > 1e-3)  # not a degenerate comparison
            np.testing.assert_allclose(cka_matrix(grams[a], grams[b]), expected, rtol=0, atol=1e-6, err_msg=f"{features} {a} {b}")


def test_identical_inputs_give_one():
    rng = np.random.default_rng(1)
    grams = np.stack([group_grams(rng.normal(size=(16, 30)), 8) for _ in range(3)], axis=1)  # (2, 3, 8, 8)
    cka = cka_matrix(np.asarray(grams), np.asarray(grams))
    np.testing.assert_allclose(np.diag(cka), 1, rtol=0, atol=1e-6)
    assert np.all(cka[~np.eye(3, dtype=bool)] < 0.9)  # different random features: not 1


def _grams(features: np.ndarray, group: int) -> np.ndarray:
    """(groups, 1, n, n) float64 Gram matrices, without centring (the estimator must not need it)."""
    f = features.reshape(-1, group, features.shape[-1])
    return np.einsum("gif,gjf->gij", f, f)[:, None]


def test_invariant_to_orthogonal_transforms_isotropic_scaling_and_translation():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(24, 10)), rng.normal(size=(24, 10))
    y[:, :5] += x[:, :5]
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    moved = 3.5 * x @ q + rng.normal(size=10)  # rotated, scaled and shifted: a linear function of x
    base = cka_matrix(_grams(x, 8), _grams(y, 8))[0, 0]
    assert 0.2 < base < 0.9
    assert cka_matrix(_grams(moved, 8), _grams(y, 8))[0, 0] == pytest.approx(base, abs=1e-10)
    assert cka_matrix(_grams(moved, 8), _grams(x, 8))[0, 0] == pytest.approx(1, abs=1e-10)


def test_groups_are_averaged_before_normalising():
    """Closed form: model b equals model a on group 1 and has a's Gram matrix times c on group 2
    (features times 3: c = 9), whose images
    are group 1's permuted (so both groups have the same self-HSIC h). Then
    CKA = (h + c h) / sqrt((h + h)(h + c^2 h)) = (1 + c) / sqrt(2 (1 + c^2)); each group alone gives 1."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 5))
    a = np.concatenate([x, x[rng.permutation(8)]])
    b = np.concatenate([x, 3 * a[8:]])
    assert cka_matrix(_grams(a, 8), _grams(b, 8))[0, 0] == pytest.approx(10 / np.sqrt(2 * 82), abs=1e-12)


def _jackknife(estimates: list[float]) -> float:
    m = len(estimates)
    return float(np.sqrt((m - 1) / m * np.sum((np.array(estimates) - np.mean(estimates)) ** 2)))


def test_standard_error_is_the_jackknife_of_the_reference_cka():
    """Over groups (each left out in turn) with several, over images with one: the float64
    reference CKA of the features without the left-out part."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 6))
    y = x @ rng.normal(size=(6, 6)) + rng.normal(size=(32, 6))
    by_groups = [reference_cka([np.delete(x, rows, 0)], [np.delete(y, rows, 0)], 8)[0, 0] for rows in np.split(np.arange(32), 4)]
    assert cka_standard_error(_grams(x, 8), _grams(y, 8))[0, 0] == pytest.approx(_jackknife(by_groups), rel=1e-9)
    one_x, one_y = x[:8], y[:8]
    by_images = [reference_cka([np.delete(one_x, i, 0)], [np.delete(one_y, i, 0)], 7)[0, 0] for i in range(8)]
    assert cka_standard_error(_grams(one_x, 8), _grams(one_y, 8))[0, 0] == pytest.approx(_jackknife(by_images), rel=1e-9)
    assert np.isnan(cka_standard_error(_grams(x[:4], 4), _grams(y[:4], 4))[0, 0])  # 3 images left: no HSIC


def test_standard_error_predicts_the_spread_over_other_images():
    """Features of one population (y a noisy linear function of x): over 300 independent samples
    of 8 groups of 8 images, the standard deviation of the CKA and the mean jackknife standard
    error agree within 25%."""
    rng = np.random.default_rng(5)
    mixing = rng.normal(size=(10, 10))
    values, errors = [], []
    for _ in range(300):
        x = rng.normal(size=(64, 10))
        y = x @ mixing + 2.0 * rng.normal(size=(64, 10))
        values.append(cka_matrix(_grams(x, 8), _grams(y, 8))[0, 0])
        errors.append(cka_standard_error(_grams(x, 8), _grams(y, 8))[0, 0])
    assert np.mean(errors) == pytest.approx(np.std(values), rel=0.25), (np.mean(errors), np.std(values))


def test_reducer_refuses_groups_smaller_than_four_and_partial_groups():
    with pytest.raises(ValueError, match="at least 4"):
        RepresentationReducer(1, 3)
    with pytest.raises(ValueError, match="whole number of groups"):
        RepresentationReducer(1, 4)([np.zeros((6, 5, 2), np.float32)])
