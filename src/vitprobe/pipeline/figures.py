"""The figure stages: read the pipeline's tables and arrays, call one `plots` function each."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..metrics.parameters import patch_embedding_components, patch_embedding_filters, position_embedding_similarity
from ..plots.distance import plot_distance_by_block, plot_distance_comparison
from ..plots.maps import plot_cls_heads, plot_rollout
from ..plots.parameters import plot_patch_filters, plot_position_similarity
from ..plots.predictions import plot_predictions, plot_top1_gallery
from ..plots.representations import plot_cka


def distance_by_block(mean_table: str, model: str, label: str, out: str) -> None:
    plot_distance_by_block(pd.read_parquet(mean_table), model, label, out)


def distance_comparison(mean_table: str, models: Sequence[str], labels: Mapping[str, str], out: str) -> None:
    title = "Mean attention distance: " + " vs ".join(models)
    plot_distance_comparison(pd.read_parquet(mean_table), list(models), dict(labels), out, title)


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


def patch_filters(parameters: str, label: str, out_filters: str, out_components: str, count: int, components: int) -> None:
    kernel = np.load(parameters, allow_pickle=False)["patch_kernel"]
    count = min(count, kernel.shape[-1])
    components = min(components, kernel.shape[-1], int(np.prod(kernel.shape[:3])))
    plot_patch_filters(
        patch_embedding_filters(kernel, count), label, out_filters, f"Patch-embedding filters (first {count})"
    )
    plot_patch_filters(
        patch_embedding_components(kernel, components),
        label,
        out_components,
        f"Principal components of the patch-embedding filters (first {components})",
    )


def position_similarity(parameters: str, label: str, out_cosine: str, out_dot: str) -> None:
    data = np.load(parameters, allow_pickle=False)
    cosine, dot = position_embedding_similarity(data["pos_embed"], int(data["grid_size"]))
    plot_position_similarity(cosine, dot, label, out_cosine, out_dot)


def predictions(
    accuracy: str, predictions: str, maps_file: str | None, published: Mapping[str, float], labels: Mapping[str, str], out: str
) -> None:
    """Accuracy per model next to the published figure, and every model's top-1 on the map images."""
    acc, table = pd.read_parquet(accuracy), pd.read_parquet(predictions)
    if maps_file is None:
        plot_predictions(acc, table, None, dict(published), dict(labels), out)
        return
    data = np.load(maps_file, allow_pickle=False)
    plot_predictions(acc, table, data["crops"], dict(published), dict(labels), out, image_ids=data["image_ids"].tolist())


def top1_gallery(predictions: str, maps_file: str, model: str, label: str, out: str) -> None:
    data = np.load(maps_file, allow_pickle=False)
    plot_top1_gallery(data["crops"], data["image_ids"].tolist(), pd.read_parquet(predictions), model, label, out)


def cka(pair_tables: Sequence[str], labels: Mapping[str, str], features: Sequence[str], out: str) -> None:
    """Block x block CKA heatmaps of the pairs in ``pair_tables`` (one ``cka_pair`` table each):
    one model's own blocks (one table whose two models are the same) or a comparison."""
    tables = [pd.read_parquet(p) for p in pair_tables]
    pairs = []
    for table in tables:
        a, b = table["model_a"].iloc[0], table["model_b"].iloc[0]
        matrices = {
            f: table[table["features"] == f].pivot(index="block_a", columns="block_b", values="cka").to_numpy() for f in features
        }
        pairs.append((labels[a], labels[b], matrices))
    models = list(dict.fromkeys(m for t in tables for m in (t["model_a"].iloc[0], t["model_b"].iloc[0])))
    within = len(models) == 1
    what = f"Linear CKA between the blocks of {models[0]}" if within else "Linear CKA between blocks: " + " vs ".join(models)
    first = tables[0]
    subtitle = f"minibatch estimator: {first['n_images'].iloc[0]} images in {first['n_groups'].iloc[0]} groups"
    plot_cka(pairs, what, "; ".join(labels[m] for m in models), out, subtitle)
