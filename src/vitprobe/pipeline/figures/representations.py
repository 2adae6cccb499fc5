"""Representation figures: linear CKA between blocks, within a model and across models."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from ...plots.representations import plot_cka


def _uncertainty(tables: Sequence[pd.DataFrame], groups: int) -> str:
    """The cells' standard errors (the tables' ``cka_se``) in words, for the subtitle."""
    errors = pd.concat([t["cka_se"] for t in tables]).dropna()
    how = "over the groups" if groups > 1 else "over the images of the one group"
    if errors.empty:
        return f"standard error ({how}): too few images to tell"
    return f"standard error of a cell ({how}, jackknife): median {errors.median():.3f}, max {errors.max():.3f}"


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
    groups = int(first["n_groups"].iloc[0])
    subtitle = f"minibatch estimator: {first['n_images'].iloc[0]} images in {groups} groups; " + _uncertainty(tables, groups)
    plot_cka(pairs, what, "; ".join(labels[m] for m in models), out, subtitle)
