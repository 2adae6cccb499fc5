"""The aggregate stage: every shard of every model in one table each, and the mean over images."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..atomic import write_parquet
from ..tables import ACCURACY_COLUMNS
from .run_shards import RunShards


def aggregate(
    per_image_paths: list[str],
    prediction_paths: list[str],
    out_per_image: str,
    out_mean: str,
    out_predictions: str,
    out_accuracy: str,
    shards: RunShards,
) -> None:
    """Concatenate the shards of every model, each checked against ``shards`` (`RunShards`),
    average over images, and measure each model's top-1 accuracy on the labelled images."""
    per_image = pd.concat([shards.table(p) for p in per_image_paths], ignore_index=True)
    per_image = per_image.sort_values(["model", "image_id", "block", "head"], kind="stable").reset_index(drop=True)
    grouped = per_image.groupby(["model", "block", "head"], sort=True)["distance_px"]
    mean = grouped.agg(distance_px="mean", std_px=lambda s: float(np.std(s, ddof=0)), n_images="count").reset_index()
    mean["n_images"] = mean["n_images"].astype("int64")
    predictions = pd.concat([shards.table(p) for p in prediction_paths], ignore_index=True)
    predictions = predictions.sort_values(["model", "image_id"], kind="stable").reset_index(drop=True)
    write_parquet(per_image, out_per_image)  # the reduction shards' columns, in order
    write_parquet(mean, out_mean)
    predictions = predictions.astype({"correct": "boolean"})
    write_parquet(predictions, out_predictions)
    write_parquet(accuracy_table(predictions), out_accuracy)


def accuracy_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per model with labelled images: n, correct, accuracy % and a Wilson 95% interval (in order of appearance)."""
    correct = predictions["correct"].astype("boolean")
    rows = []
    for model in pd.unique(predictions["model"]):
        c = correct[predictions["model"] == model].dropna()
        n = len(c)
        if n == 0:
            continue
        k = int(c.sum())
        p, z = k / n, 1.959964
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        low, high = 100 * (centre - half), 100 * (centre + half)
        rows.append(dict(model=model, n=n, correct=k, accuracy=100 * p, low=low, high=high))
    return pd.DataFrame(rows, columns=list(ACCURACY_COLUMNS))
