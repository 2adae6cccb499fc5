"""The maps stage: the map images' rollout and CLS maps of one model, with the crops it saw."""

from __future__ import annotations

import numpy as np

from ..atomic import write_npz
from ..shards import open_crops


def merge_maps(paths: list[str], crop_paths: list[str], map_images: int, out_path: str) -> None:
    """One file per model with the first ``map_images`` manifest images' rollout and CLS maps and
    the crops the model saw (the first rows of the concatenated shards, in manifest order; the
    rules checked that the manifest holds that many)."""
    parts = [np.load(p, allow_pickle=False) for p in paths]
    image_ids = np.concatenate([p["image_ids"] for p in parts])[:map_images]
    crops = np.concatenate([open_crops(p) for p in crop_paths])[:map_images]
    write_npz(
        out_path,
        image_ids=image_ids,
        crops=np.ascontiguousarray(crops),
        rollout=np.concatenate([p["rollout"] for p in parts])[:map_images],
        cls=np.concatenate([p["cls"] for p in parts])[:map_images],
    )
