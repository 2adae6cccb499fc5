"""The PCA stage: the DINOv2 PCA views of one model's patch features on the map images."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..atomic import write_npz
from ..metrics.pca import pca_feature_maps
from ..shards import open_crops
from .checks import require_finite
from .config import model_entry
from .model import build_model

log = logging.getLogger("vitprobe")
BATCH = 8  # a few map images: one small batch at a time bounds the memory of every block's output


def run_pca_features(
    key: str,
    model_settings: dict,
    crop_paths: list[str],
    manifest_path: str,
    map_images: int,
    threshold: float,
    out_path: str,
) -> None:
    """Run the model on the first ``map_images`` manifest images (the map images) and write their PCA
    views (`vitprobe.metrics.pca.pca_feature_maps`) with the crops and the grid to ``out_path``.

    Args:
        key: the config's model key.
        model_settings: its entry's settings (`ModelEntry.settings`).
        crop_paths: the crop shards holding the map images, in shard order.
        manifest_path: the sample's manifest (the image ids of the first rows).
        map_images: how many (``analysis.map_images``; the rules checked the manifest holds them).
        threshold: ``analysis.pca.threshold``, in standard deviations of the first component.
        out_path: the ``.npz`` to write.
    """
    entry = model_entry(key, model_settings)
    image_ids = pd.read_parquet(manifest_path, columns=["image_id"])["image_id"].astype(str).tolist()[:map_images]
    crops = np.concatenate([open_crops(p) for p in crop_paths])[:map_images]
    model = build_model(entry)
    features = np.concatenate([model.patch_features(crops[start : start + BATCH]) for start in range(0, map_images, BATCH)])
    require_finite(key, "patch features", features, image_ids)
    what = "the last block's patch tokens after the final LayerNorm" if model.has_final_norm else "the last block's patch tokens"
    log.info("%s: PCA of %s, %d images x %d patches x %d dims", entry.label, what, *features.shape)
    maps = pca_feature_maps(features, threshold)
    log.info(
        "%s: explained variance %s; foreground %.1f%% of the patches; foreground PCA %s",
        key,
        np.round(maps.explained, 3).tolist(),
        100 * maps.mask.mean(),
        np.round(maps.foreground_explained, 3).tolist(),
    )
    write_npz(
        out_path,
        image_ids=np.asarray(image_ids),
        crops=np.ascontiguousarray(crops),
        grid=np.int64(model.grid_size),
        final_norm=np.bool_(model.has_final_norm),
        threshold=np.float64(threshold),
        projections=maps.projections.astype(np.float32),
        explained=maps.explained,
        mask=maps.mask,
        foreground=maps.foreground.astype(np.float32),
        foreground_explained=maps.foreground_explained,
    )
