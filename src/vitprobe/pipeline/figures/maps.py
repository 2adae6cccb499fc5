"""Attention-map figures over the crops the models saw: rollout and per-head CLS (or MAP-head probe) maps."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ...plots.maps import plot_cls_heads, plot_rollout


def rollout(maps_files: Mapping[str, str], labels: Mapping[str, str], out: str, queries: Mapping[str, str]) -> None:
    """Image | rollout per model, each model's map over the crop that model saw.

    Args:
        maps_files: model -> its maps file (the maps stage's).
        labels: model -> its label for the column heads.
        out: the figure file.
        queries: model -> whose row the rollout map is (`ModelEntry.map_query`: "CLS", or "MAP-head probe"
            for a model without a class token); a model whose query is not the class token is named so in
            its column head and the title says so.
    """
    maps = {model: np.load(path, allow_pickle=False) for model, path in maps_files.items()}
    first = next(iter(maps.values()))
    kinds = set(queries[m] for m in maps)
    heads = {m: labels[m] if queries[m] == "CLS" else f"{labels[m]} [{queries[m]}]" for m in maps}
    if kinds == {"CLS"}:
        title = "Attention rollout (CLS row over the patches)"
    elif "CLS" in kinds:
        marked = " / ".join(f"[{kind}]" for kind in sorted(kinds - {"CLS"}))
        title = f"Attention rollout over the patches: the CLS row, or the {marked} attention row where marked"
    else:
        title = f"Attention rollout ({' / '.join(sorted(kinds))} attention row over the patches)"
    plot_rollout(
        {m: d["crops"] for m, d in maps.items()},
        {m: d["rollout"] for m, d in maps.items()},
        heads,
        out,
        image_ids=first["image_ids"].tolist(),
        title=title,
    )


def cls_heads(maps_file: str, label: str, outs: list[str], query: str) -> None:
    """One figure per map image (``outs[i]`` for image i).

    Args:
        maps_file: the model's maps file (the maps stage's).
        label: the model's label for the title.
        outs: one figure file per map image.
        query: whose attention the maps are (`ModelEntry.map_query`): "CLS" (the last block's class-token
            row) or "MAP-head probe" (the attention-pooling head's query after the blocks, SigLIP).
    """
    data = np.load(maps_file, allow_pickle=False)
    what = "Last-block CLS attention per head" if query == "CLS" else f"{query} attention per head"
    for index, out in enumerate(outs):
        plot_cls_heads(data["crops"][index], data["cls"][index], label, out, title=f"{what}, image {data['image_ids'][index]}")
