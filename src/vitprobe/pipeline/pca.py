"""The PCA stage: the DINOv2 PCA views of one model's patch features on the map images (kept by
the extract job of the shard that holds them: no model runs here)."""

from __future__ import annotations

import logging

import numpy as np

from ..atomic import write_npz
from ..metrics.pca import pca_feature_maps
from .config import model_entry

log = logging.getLogger("vitprobe")


def run_pca_features(key: str, model_settings: dict, maps_path: str, threshold: float, out_path: str) -> None:
    """The PCA views (`vitprobe.metrics.pca.pca_feature_maps`) of the map images' patch features
    (the maps file's ``features``: `ProbeModel.patch_features` computed in the extract program),
    written with the crops and the grid to ``out_path``.

    Args:
        key: the config's model key.
        model_settings: its entry's settings (`ModelEntry.settings`).
        maps_path: the model's maps file (`maps.merge_maps`).
        threshold: ``analysis.pca.threshold``, in standard deviations of the first component.
        out_path: the ``.npz`` to write.
    """
    entry = model_entry(key, model_settings)
    final_norm = entry.spec.final_norm
    with np.load(maps_path, allow_pickle=False) as maps:
        image_ids, crops, features = maps["image_ids"], maps["crops"], maps["features"]
    what = "the last block's patch tokens after the final LayerNorm" if final_norm else "the last block's patch tokens"
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
        grid=np.int64(entry.spec.grid_size),
        final_norm=np.bool_(final_norm),
        threshold=np.float64(threshold),
        projections=maps.projections.astype(np.float32),
        explained=maps.explained,
        mask=maps.mask,
        foreground=maps.foreground.astype(np.float32),
        foreground_explained=maps.foreground_explained,
    )
