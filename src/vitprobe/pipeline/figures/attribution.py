"""Attribution figures from the attribution stage's tables and maps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ...plots.attribution import plot_attribution_auc, plot_attribution_curves, plot_attribution_maps


def attribution_curves(curves_path: str, model: str, label: str, classifier: bool, out: str) -> None:
    """The mean faithfulness curves of ``model`` (see `plot_attribution_curves`)."""
    curves = pd.read_parquet(curves_path)
    plot_attribution_curves(curves[curves["model"] == model], label, out, classifier=classifier)


def attribution_auc(table_path: str, model: str, label: str, out: str) -> None:
    """The AUC table of ``model`` with the random map's chance level."""
    table = pd.read_parquet(table_path)
    plot_attribution_auc(table[table["model"] == model], label, out)


def attribution_maps(maps_files: Mapping[str, str], labels: Mapping[str, str], outs: list[str]) -> None:
    """One figure per image (``outs[i]`` for the i-th attribution image): every method's map of
    every model over the crop that model saw."""
    files = {model: np.load(path, allow_pickle=False) for model, path in maps_files.items()}
    for i, out in enumerate(outs):
        crops, maps, targets = {}, {}, {}
        for model, data in files.items():
            methods = [name for name in data.files if name not in ("image_id", "crops", "target")]
            crops[model] = data["crops"][i]
            maps[model] = {method: data[method][i] for method in methods}
            target = int(data["target"][i])
            targets[model] = "embedding target" if target < 0 else f"class {target}"
        image_id = str(next(iter(files.values()))["image_id"][i])
        plot_attribution_maps(crops, maps, labels, targets, image_id, out)
