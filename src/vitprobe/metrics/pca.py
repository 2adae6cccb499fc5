"""PCA feature maps (Oquab et al. 2023, DINOv2, Fig. 1 and Sec. 7), in float64 numpy.

The patch features of a few images, (images, patches, dim), are pooled into one set of
images x patches rows and centred over it; the principal components are fitted jointly, so one
component means the same direction in every image. Three views:

- ``projections``: every patch projected on the first three components (shown as RGB);
- ``mask``: the foreground, where the first component, in units of its standard deviation over
  all patches, exceeds ``threshold`` (default 0: above the mean, the paper's "positive value");
- ``foreground``: a second PCA fitted on the foreground patches only (centred over them), their
  projections on its first three components (background rows are zero, drawn black).

A component's sign is arbitrary; it is fixed here so that a rerun, another backend or another
CPU gives the same picture:

- the first component points away from the border: its mean over the border patches (the
  outer ring of every image's grid) is not positive, since object-centred photos have
  background at the border. The mask is then the side the object is on;
- every other component (the joint ones and the foreground ones) is signed so that its
  projections have a non-negative third moment: the long tail, the few distinctive patches,
  gets the bright end of its colour channel.

Explained variance ratios are each component's variance over the total variance of the rows
the PCA was fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import minmax_scale

COMPONENTS = 3


@dataclass(frozen=True)
class PCAMaps:
    """`pca_feature_maps`' result; every per-patch array is (images, patches, ...) in row-major patch order."""

    projections: np.ndarray  # (images, patches, 3) on the joint components
    explained: np.ndarray  # (3,) their explained variance ratios
    mask: np.ndarray  # (images, patches) bool, the first component's threshold
    foreground: np.ndarray  # (images, patches, 3) on the foreground PCA's components; 0 off the mask
    foreground_explained: np.ndarray  # (3,) their ratios; NaN where the foreground has too few patches


def principal_components(rows: np.ndarray, count: int = COMPONENTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``count`` principal axes of ``rows`` (n, dim), float64.

    Returns the centred rows' projections (n, count), the axes (count, dim) and the explained
    variance ratios (count,). Signs are as the SVD returns them (see `pca_feature_maps`). Fewer
    rows or dimensions than ``count`` leave the missing components zero (ratio 0).

    Args:
        rows: one observation per row.
        count: how many components.
    """
    rows = np.asarray(rows, dtype=np.float64)
    centred = rows - rows.mean(axis=0)
    # The SVD of the centred rows: its right singular vectors are the covariance's eigenvectors
    # without forming the (dim, dim) covariance.
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    total = variance.sum()
    kept = min(count, len(singular))
    out_axes = np.zeros((count, rows.shape[1]))
    out_axes[:kept] = axes[:kept]
    ratios = np.zeros(count)
    if total > 0:
        ratios[:kept] = variance[:kept] / total
    return centred @ out_axes.T, out_axes, ratios


def border_patches(grid: int) -> np.ndarray:
    """(grid * grid,) bool: the patches of the outer ring of a row-major grid."""
    ring = np.ones((grid, grid), dtype=bool)
    ring[1:-1, 1:-1] = False
    return ring.ravel()


def _positive_skew(projections: np.ndarray) -> np.ndarray:
    """Flip each column whose third moment is negative (see the module docstring)."""
    signs = np.where((projections**3).sum(axis=0) < 0, -1.0, 1.0)
    return projections * signs


def pca_feature_maps(patch_features: np.ndarray, threshold: float = 0.0) -> PCAMaps:
    """The DINOv2 PCA views of ``patch_features`` (images, patches, dim), see the module docstring.

    Args:
        patch_features: the patch tokens of each image (no prefix tokens), row-major over a
            square grid; any float dtype (computed in float64).
        threshold: the foreground is where the first component exceeds ``threshold`` standard
            deviations (of that component over every patch) above its mean.
    """
    features = np.asarray(patch_features, dtype=np.float64)
    if features.ndim != 3:
        raise ValueError(f"patch_features must be (images, patches, dim), got shape {features.shape}")
    images, patches, dim = features.shape
    grid = int(round(np.sqrt(patches)))
    if grid * grid != patches:
        raise ValueError(f"{patches} patches do not form a square grid")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    rows = features.reshape(images * patches, dim)
    projections, _, explained = principal_components(rows)
    projections[:, 1:] = _positive_skew(projections[:, 1:])
    border = np.tile(border_patches(grid), images)
    if projections[border, 0].mean() > 0:
        projections[:, 0] *= -1
    first = projections[:, 0]
    spread = first.std()
    mask = first > threshold * spread if spread > 0 else np.zeros(len(first), dtype=bool)

    foreground = np.zeros_like(projections)
    foreground_explained = np.full(COMPONENTS, np.nan)
    if mask.sum() > COMPONENTS:  # enough patches for three components of a centred set
        inside, _, foreground_explained = principal_components(rows[mask])
        foreground[mask] = _positive_skew(inside)
    shape = (images, patches)
    return PCAMaps(
        projections=projections.reshape(*shape, COMPONENTS),
        explained=explained,
        mask=mask.reshape(shape),
        foreground=foreground.reshape(*shape, COMPONENTS),
        foreground_explained=foreground_explained,
    )


def to_rgb(projections: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(images, patches, 3) projections -> RGB in [0, 1]: each component min-max scaled over
    every image at once (so a colour means the same in every image), over the ``mask``ed patches
    only when given (the rest black). A constant component is 0.

    Args:
        projections: (images, patches, 3) as in `PCAMaps`.
        mask: (images, patches) bool, or None for every patch.
    """
    projections = np.asarray(projections, dtype=np.float64)
    keep = np.ones(projections.shape[:2], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    rgb = np.zeros_like(projections)
    if not keep.any():
        return rgb
    rgb[keep] = minmax_scale(projections[keep].T).T
    return rgb
