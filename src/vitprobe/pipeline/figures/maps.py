"""Attention-map figures over the crops the models saw: rollout and per-head CLS maps."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ...plots.maps import plot_cls_heads, plot_rollout


def rollout(maps_files: Mapping[str, str], labels: Mapping[str, str], out: str) -> None:
    """Image | rollout per model, each model's map over the crop that model saw."""
    maps = {model: np.load(path, allow_pickle=False) for model, path in maps_files.items()}
    first = next(iter(maps.values()))
    plot_rollout(
        {m: d["crops"] for m, d in maps.items()},
        {m: d["rollout"] for m, d in maps.items()},
        dict(labels),
        out,
        image_ids=first["image_ids"].tolist(),
    )


def cls_heads(maps_file: str, label: str, outs: list[str]) -> None:
    """One figure per map image (``outs[i]`` for image i)."""
    data = np.load(maps_file, allow_pickle=False)
    for index, out in enumerate(outs):
        title = f"Last-block CLS attention per head, image {data['image_ids'][index]}"
        plot_cls_heads(data["crops"][index], data["cls"][index], label, out, title=title)
