"""Prediction figures: accuracy next to the published figure, top-1 galleries of the map images."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from ...plots.predictions import plot_predictions, plot_top1_gallery


def accuracy_figure(
    accuracy_path: str,
    predictions_path: str,
    maps_file: str | None,
    published: Mapping[str, float],
    labels: Mapping[str, str],
    out: str,
) -> None:
    """Accuracy per model next to the published figure, and every model's top-1 on the map images."""
    acc, table = pd.read_parquet(accuracy_path), pd.read_parquet(predictions_path)
    if maps_file is None:
        plot_predictions(acc, table, None, dict(published), dict(labels), out)
        return
    data = np.load(maps_file, allow_pickle=False)
    plot_predictions(acc, table, data["crops"], dict(published), dict(labels), out, image_ids=data["image_ids"].tolist())


def top1_gallery(predictions_path: str, maps_file: str, model: str, label: str, out: str) -> None:
    data = np.load(maps_file, allow_pickle=False)
    plot_top1_gallery(data["crops"], data["image_ids"].tolist(), pd.read_parquet(predictions_path), model, label, out)
