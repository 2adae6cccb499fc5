"""Token-norm figures: a model's norm histograms per block and its high-norm patches over the map images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ...metrics.token_norms import token_kinds
from ...plots.token_norms import plot_high_norm_maps, plot_norm_histograms
from ..token_norms import load_token_norms


def _thresholds(table_path: str, blocks: int) -> np.ndarray:
    """(blocks,) each block's patch threshold from the model's token-norm table."""
    table = pd.read_parquet(table_path, columns=["block", "threshold"])
    return table.groupby("block")["threshold"].first().reindex(range(blocks)).to_numpy()


def norm_histograms(shard_paths: Sequence[str], table_path: str, prefix_kinds: Sequence[str], label: str, out: str) -> None:
    """Every block's norm histograms by token kind, with the thresholds of the model's table."""
    _, norms = load_token_norms(shard_paths)
    kinds = token_kinds(prefix_kinds, norms.shape[2])
    plot_norm_histograms(
        {kind: norms[:, :, index] for kind, index in kinds.items()}, _thresholds(table_path, norms.shape[1]), label, out
    )


def high_norm_maps(
    maps_path: str, shard_paths: Sequence[str], table_path: str, prefix_kinds: Sequence[str], label: str, out: str
) -> None:
    """The map images' crop, rollout, mean CLS map and last-block patch norms (high-norm patches boxed)."""
    maps = np.load(maps_path, allow_pickle=False)
    image_ids, norms = load_token_norms(shard_paths)
    wanted = maps["image_ids"]
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    missing = [i for i in wanted if i not in position]
    if missing:
        raise ValueError(f"map images {missing} are not in the representation shards; rerun their extract jobs")
    last = norms[[position[i] for i in wanted], -1]  # (n, tokens)
    kinds = token_kinds(prefix_kinds, last.shape[1])
    grid = maps["rollout"].shape[1:]
    registers = last[:, kinds["register"]] if "register" in kinds else None
    plot_high_norm_maps(
        maps["crops"],
        maps["rollout"],
        maps["cls"],
        last[:, kinds["patch"]].reshape(len(wanted), *grid),
        _thresholds(table_path, norms.shape[1])[-1],
        label,
        out,
        image_ids=wanted.tolist(),
        register_norms=registers,
    )
