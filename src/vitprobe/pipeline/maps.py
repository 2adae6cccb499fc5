"""The maps stage: the map images' rollout and CLS maps of one model, with the crops it saw, and
what the extract jobs kept of them for the PCA views and the explorer (`map_images`)."""

from __future__ import annotations

import numpy as np

from ..atomic import write_npz
from ..shards import open_crops
from .run_shards import RunShards


def merge_maps(
    paths: list[str], map_image_paths: list[str], crop_paths: list[str], map_images: int, out_path: str, shards: RunShards
) -> None:
    """One file per model with the first ``map_images`` manifest images' rollout and CLS maps, the
    crops the model saw (the first rows of the concatenated shards, in manifest order; the rules
    checked that the manifest holds that many), and their patch ``features`` and explorer rows
    (``codes``, ``scales``; see `map_images.ShardMapImages`). Each shard file is checked against
    ``shards`` (`RunShards`)."""
    parts = [shards.arrays(p) for p in paths]
    extras = [shards.arrays(p) for p in map_image_paths]
    image_ids = np.concatenate([p["image_ids"] for p in parts])[:map_images]
    kept = np.concatenate([p["image_ids"] for p in extras])
    if kept.tolist() != image_ids.tolist():  # shards extracted with another analysis.map_images
        raise ValueError(f"the extract jobs kept map images {kept.tolist()}, not the first {map_images}; rerun them")
    crops = np.concatenate([open_crops(p) for p in crop_paths])[:map_images]
    write_npz(
        out_path,
        image_ids=image_ids,
        crops=np.ascontiguousarray(crops),
        rollout=np.concatenate([p["rollout"] for p in parts])[:map_images],
        cls=np.concatenate([p["cls"] for p in parts])[:map_images],
        **{name: np.concatenate([p[name] for p in extras]) for name in ("features", "codes", "scales")},
    )
