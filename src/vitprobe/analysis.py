"""The analysis stages: reduce (per shard) and aggregate (per experiment)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import metrics
from .atomic import write_npz, write_parquet
from .shards import open_crops, open_shard

PER_IMAGE_COLUMNS = ["model", "image_id", "block", "head", "distance_px", "prefix_mass", "entropy"]


def reduce(
    attention_path: str,
    per_image_path: str,
    maps_path: str,
    map_image_ids: list[str],
    renormalize: bool = False,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    chunk: int = 8,
) -> None:
    """Per image and head: mean attention distance, prefix mass, entropy; rollout and CLS maps for the map images."""
    attention, info = open_shard(attention_path)
    grid, prefix = info.grid_size, info.num_prefix_tokens
    blocks, heads = attention.shape[1:3]
    frames = []
    wanted = set(map_image_ids)
    map_ids, rollouts, cls_maps = [], [], []
    for start in range(0, len(info.image_ids), chunk):
        ids = info.image_ids[start : start + chunk]
        part = np.asarray(attention[start : start + chunk], dtype=np.float32)  # (n, L, H, N, N)
        for block in range(blocks):
            metrics.check_attention(part[:, block], model=info.model, block=block, image_ids=ids)
            distance, mass = metrics.mean_attention_distance(part[:, block], prefix, grid, info.patch_size, renormalize)
            entropy = metrics.attention_entropy(part[:, block], prefix)
            frames.append(
                pd.DataFrame(
                    {
                        "image_id": np.repeat(ids, heads),
                        "block": block,
                        "head": np.tile(np.arange(heads), len(ids)),
                        "distance_px": distance.reshape(-1).astype(np.float64),
                        "prefix_mass": mass.reshape(-1).astype(np.float64),
                        "entropy": entropy.reshape(-1).astype(np.float64),
                    }
                )
            )
        chosen = [i for i, image_id in enumerate(ids) if image_id in wanted]
        if chosen:
            sel = part[chosen]
            rollout = metrics.attention_rollout([sel[:, b] for b in range(blocks)], head_fusion, discard_ratio, prefix)
            rollouts.append(metrics.rollout_cls_map(rollout, prefix, grid))
            cls_maps.append(metrics.cls_attention_maps(sel[:, -1], prefix, grid))
            map_ids.extend(ids[i] for i in chosen)
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "model", info.model)
    table = table.sort_values(["image_id", "block", "head"], kind="stable").reset_index(drop=True)
    write_parquet(table[PER_IMAGE_COLUMNS].astype({"block": "int64", "head": "int64"}), per_image_path)
    write_npz(
        maps_path,
        image_ids=np.array(map_ids, dtype=str),
        rollout=np.concatenate(rollouts) if rollouts else np.zeros((0, grid, grid), np.float32),
        cls=np.concatenate(cls_maps) if cls_maps else np.zeros((0, heads, grid, grid), np.float32),
    )


def aggregate(per_image_paths: list[str], prediction_paths: list[str], out_per_image: str, out_mean: str, out_predictions: str) -> None:
    """Concatenate the shards of every model and average over images."""
    per_image = pd.concat([pd.read_parquet(p) for p in per_image_paths], ignore_index=True)
    per_image = per_image.sort_values(["model", "image_id", "block", "head"], kind="stable").reset_index(drop=True)
    grouped = per_image.groupby(["model", "block", "head"], sort=True)["distance_px"]
    mean = grouped.agg(distance_px="mean", std_px=lambda s: float(np.std(s, ddof=0)), n_images="count").reset_index()
    mean["n_images"] = mean["n_images"].astype("int64")
    predictions = pd.concat([pd.read_parquet(p) for p in prediction_paths], ignore_index=True)
    predictions = predictions.sort_values(["model", "image_id"], kind="stable").reset_index(drop=True)
    write_parquet(per_image[PER_IMAGE_COLUMNS], out_per_image)
    write_parquet(mean, out_mean)
    write_parquet(predictions.astype({"correct": "boolean"}), out_predictions)


def merge_maps(paths: list[str], crop_paths: list[str], out_path: str) -> None:
    """One file per model with every map image's rollout and CLS maps and the crop the
    model saw. The map images are the first manifest rows, so they are the first rows of
    the concatenated crop shards."""
    parts = [np.load(p, allow_pickle=False) for p in paths]
    image_ids = np.concatenate([p["image_ids"] for p in parts])
    crops = np.concatenate([open_crops(p) for p in crop_paths])[: len(image_ids)]
    write_npz(
        out_path,
        image_ids=image_ids,
        crops=np.ascontiguousarray(crops),
        rollout=np.concatenate([p["rollout"] for p in parts]),
        cls=np.concatenate([p["cls"] for p in parts]),
    )
