"""The cka stages: linear CKA between every block of two models from the Gram matrices their
extract jobs stored (no model runs), and all pairs in one table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..atomic import write_parquet
from ..metrics.cka import FEATURES, cka_matrix, cka_standard_error
from ..tables import CKA_COLUMNS
from .run_shards import RunShards


def _load_groups(paths: Sequence[str], shards: RunShards) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    parts = [shards.arrays(p) for p in paths]
    group_ids = np.concatenate([p["group_image_ids"] for p in parts])
    return group_ids, {f: np.concatenate([p[f"gram_{f}"] for p in parts]) for f in FEATURES}


def cka_pair(
    model_a: str,
    paths_a: Sequence[str],
    model_b: str,
    paths_b: Sequence[str],
    features: Sequence[str],
    out: str,
    shards: RunShards,
) -> None:
    """Every block of ``model_a`` against every block of ``model_b`` (the same model for a
    within-model table), one row per (block_a, block_b, features), from their representation
    shards (``paths_*``, in shard order), with its jackknife standard error (``cka_se``: over the
    groups, or over the images of the one group; `cka_standard_error`). Each shard is checked
    against ``shards`` (`RunShards`). Raises ValueError when the two models' groups hold
    different images (their manifests differ)."""
    ids_a, grams_a = _load_groups(paths_a, shards)
    ids_b, grams_b = _load_groups(paths_b, shards)
    if ids_a.shape != ids_b.shape or not np.array_equal(ids_a, ids_b):
        raise ValueError(f"cka: {model_a} and {model_b} were extracted on different image groups; rerun their extract jobs")
    n_groups, group_size = ids_a.shape
    if n_groups == 0:
        raise ValueError(f"cka: no complete group of {group_size} images for {model_a} and {model_b}; use more images")
    frames = []
    for f in features:
        matrix, error = cka_matrix(grams_a[f], grams_b[f]), cka_standard_error(grams_a[f], grams_b[f])
        blocks_a, blocks_b = np.meshgrid(np.arange(matrix.shape[0]), np.arange(matrix.shape[1]), indexing="ij")
        frames.append(
            pd.DataFrame(
                {
                    "model_a": model_a,
                    "block_a": blocks_a.reshape(-1).astype(np.int64),
                    "model_b": model_b,
                    "block_b": blocks_b.reshape(-1).astype(np.int64),
                    "features": f,
                    "cka": matrix.reshape(-1),
                    "cka_se": error.reshape(-1),
                    "n_images": np.int64(n_groups * group_size),
                    "n_groups": np.int64(n_groups),
                }
            )
        )
    write_parquet(pd.concat(frames, ignore_index=True)[list(CKA_COLUMNS)], out)


def combine_cka(paths: Sequence[str], out: str) -> None:
    """The pair tables in one (``cka.parquet``), in the order given."""
    write_parquet(pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True), out)
