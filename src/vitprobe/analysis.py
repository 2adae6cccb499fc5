"""The analysis stages after the reductions: aggregation over images and the map files."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .atomic import write_npz, write_parquet
from .shards import open_crops


def aggregate(per_image_paths: list[str], prediction_paths: list[str], out_per_image: str, out_mean: str, out_predictions: str) -> None:
    """Concatenate the shards of every model and average over images."""
    per_image = pd.concat([pd.read_parquet(p) for p in per_image_paths], ignore_index=True)
    per_image = per_image.sort_values(["model", "image_id", "block", "head"], kind="stable").reset_index(drop=True)
    grouped = per_image.groupby(["model", "block", "head"], sort=True)["distance_px"]
    mean = grouped.agg(distance_px="mean", std_px=lambda s: float(np.std(s, ddof=0)), n_images="count").reset_index()
    mean["n_images"] = mean["n_images"].astype("int64")
    predictions = pd.concat([pd.read_parquet(p) for p in prediction_paths], ignore_index=True)
    predictions = predictions.sort_values(["model", "image_id"], kind="stable").reset_index(drop=True)
    write_parquet(per_image, out_per_image)  # the reduction shards' columns, in order
    write_parquet(mean, out_mean)
    write_parquet(predictions.astype({"correct": "boolean"}), out_predictions)


def merge_maps(paths: list[str], crop_paths: list[str], count: int, out_path: str) -> None:
    """One file per model with the first ``count`` manifest images' rollout and CLS maps and
    the crops the model saw (the first rows of the concatenated shards, in manifest order)."""
    parts = [np.load(p, allow_pickle=False) for p in paths]
    image_ids = np.concatenate([p["image_ids"] for p in parts])[:count]
    crops = np.concatenate([open_crops(p) for p in crop_paths])[:count]
    write_npz(
        out_path,
        image_ids=image_ids,
        crops=np.ascontiguousarray(crops),
        rollout=np.concatenate([p["rollout"] for p in parts])[:count],
        cls=np.concatenate([p["cls"] for p in parts])[:count],
    )
