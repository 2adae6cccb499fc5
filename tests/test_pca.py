"""PCA feature maps: hand cases, and the library against float64 numpy on timm's features of the same pixels."""

import numpy as np
import pytest

import vitprobe
from helpers import assert_pca_matches
from vitprobe.metrics.pca import border_patches, pca_feature_maps, principal_components, to_rgb

# A final norm and registers; no final norm (BEiT: fc_norm after pooling); two prefix tokens.
CASES = {
    "dinov2_s14_reg4": ("vit_small_patch14_reg4_dinov2", dict(depth=2, image_size=224)),
    "beitv2_b16": ("beitv2_base_patch16_224", dict(depth=2)),
    "deit_t_dist": ("deit_tiny_distilled_patch16_224", dict(depth=2)),
}


def test_recovers_a_known_principal_axis():
    rng = np.random.default_rng(0)
    axes = np.linalg.qr(rng.normal(size=(16, 16)))[0][:, :4]  # orthonormal directions in 16 dims
    # Zero-mean, mutually orthogonal scores with variances 100, 25, 4, 1: the principal axes are
    # exactly ``axes`` in that order, and the ratios 100/130, 25/130, 4/130.
    random = rng.normal(size=(128, 4))
    scores = np.linalg.qr(random - random.mean(axis=0))[0] * np.sqrt(128) * [10.0, 5.0, 2.0, 1.0]
    rows = scores @ axes.T + 3.0  # an offset the centring removes
    projections, found, ratios = principal_components(rows)
    np.testing.assert_allclose(np.abs(found @ axes), np.eye(4)[:3], atol=1e-9)
    np.testing.assert_allclose(np.abs(projections), np.abs(scores[:, :3]), atol=1e-9)
    np.testing.assert_allclose(ratios, [100 / 130, 25 / 130, 4 / 130])


def synthetic_scene(images: int = 3, grid: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features of a central square object on a background: two clusters in 32 dims, the object
    a few patches off centre in each image. Returns the features and the true object mask."""
    rng = np.random.default_rng(seed)
    background, foreground = rng.normal(size=32), rng.normal(size=32) + 4.0
    objects = []
    for i in range(images):
        obj = np.zeros((grid, grid), dtype=bool)
        obj[2 + i % 2 : 6, 2 : 6 - i % 2] = True
        objects.append(obj.ravel())
    objects = np.array(objects)
    features = np.where(objects[..., None], foreground, background) + 0.1 * rng.normal(size=(images, grid * grid, 32))
    return features.astype(np.float32), objects


def test_mask_is_the_object_and_the_border_is_background():
    features, objects = synthetic_scene()
    maps = pca_feature_maps(features)
    np.testing.assert_array_equal(maps.mask, objects)
    assert maps.explained[0] > 0.9  # the object/background split dominates
    # A negated set of features gives the same mask: the sign rule reads the border, not the SVD.
    np.testing.assert_array_equal(pca_feature_maps(-features).mask, objects)
    # The foreground PCA sees only object patches: background rows are zero, and the object's
    # within-cluster noise is all it explains.
    assert not maps.foreground[~objects].any() and maps.foreground[objects].any()
    # A threshold above every patch leaves no foreground, and no foreground PCA.
    empty = pca_feature_maps(features, threshold=3.0)
    assert not empty.mask.any() and np.isnan(empty.foreground_explained).all() and not empty.foreground.any()


def test_sign_conventions():
    rng = np.random.default_rng(1)
    features = rng.gamma(2.0, size=(2, 36, 8)) @ rng.normal(size=(8, 8))  # skewed components
    maps = pca_feature_maps(features)
    border = np.tile(border_patches(6), 2)
    first = maps.projections.reshape(-1, 3)[:, 0]
    assert first[border].mean() <= 0
    assert ((maps.projections.reshape(-1, 3)[:, 1:] ** 3).sum(axis=0) >= 0).all()
    assert ((maps.foreground[maps.mask] ** 3).sum(axis=0) >= 0).all()
    flipped = pca_feature_maps(-features)  # every component flips in the SVD; the conventions undo it
    np.testing.assert_allclose(flipped.projections, maps.projections, atol=1e-9)
    np.testing.assert_array_equal(flipped.mask, maps.mask)


def test_border_ring_and_rgb_scaling():
    assert border_patches(3).tolist() == [True] * 4 + [False] + [True] * 4
    projections = np.array([[[0.0, 1.0, 5.0], [2.0, 3.0, 5.0]], [[4.0, -1.0, 5.0], [1.0, 0.0, 5.0]]])
    rgb = to_rgb(projections)
    # Scaled over both images at once; a constant component is 0.
    np.testing.assert_allclose(rgb[..., 0], [[0.0, 0.5], [1.0, 0.25]])
    np.testing.assert_allclose(rgb[..., 1], [[0.5, 1.0], [0.0, 0.25]])
    assert not rgb[..., 2].any()
    mask = np.array([[True, True], [False, True]])
    masked = to_rgb(projections, mask)
    assert not masked[1, 0].any()  # background black
    np.testing.assert_allclose(masked[..., 0][mask], [0.0, 1.0, 0.5])


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="images, patches, dim"):
        pca_feature_maps(np.zeros((4, 16)))
    with pytest.raises(ValueError, match="square grid"):
        pca_feature_maps(np.zeros((1, 15, 4)))


@pytest.mark.parametrize("case", list(CASES))
def test_matches_numpy_on_timm_features(case, timm_reference):
    """The model's patch features equal timm's ``forward_features`` patch tokens (after the final
    norm where the model has one), and the library's PCA views of them equal an eigendecomposition
    of the covariance of timm's tokens in float64 (`helpers.assert_pca_matches`)."""
    arch, overrides = CASES[case]
    model = vitprobe.load_model(arch, weights=str(timm_reference / f"{case}.safetensors"), **overrides)
    ref = dict(np.load(timm_reference / f"{case}.npz"))
    timm_patches = ref["tokens"][:, model.num_prefix_tokens :].astype(np.float64)
    ours = model.patch_features(ref["input"])
    assert model.has_final_norm == (case != "beitv2_b16")
    np.testing.assert_allclose(ours, timm_patches, rtol=0, atol=1e-4 * np.abs(timm_patches).max())

    assert_pca_matches(pca_feature_maps(ours), timm_patches)
