"""The token-norm stages: every image's token norms per block and token kind, with each block's
high-norm threshold (`vitprobe.metrics.token_norms.high_norm_threshold`), from the norms that the extract
jobs stored in the representation shards (no model runs); all models in one table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..atomic import write_parquet
from ..metrics.token_norms import high_norm_threshold, token_kinds
from ..tables import TOKEN_NORM_COLUMNS
from .run_shards import RunShards


def load_token_norms(paths: Sequence[str], shards: RunShards | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``image_ids`` (images,) and ``token_norms`` (images, blocks, tokens) of a model's
    representation shards (``paths``, in shard order), each checked against ``shards`` when given
    (the token_norms stage checks them; the figures that read them again run after it)."""
    parts = [shards.arrays(p) if shards else np.load(p, allow_pickle=False) for p in paths]
    missing = [p for p, part in zip(paths, parts) if "token_norms" not in part]
    if missing:
        raise ValueError(f"{missing[0]} holds no token norms (written by an older vitprobe); delete it to rerun its extract job")
    return np.concatenate([p["image_ids"] for p in parts]), np.concatenate([p["token_norms"] for p in parts])


def block_thresholds(norms: np.ndarray, num_prefix: int, **rule) -> np.ndarray:
    """(blocks,) each block's high-norm threshold over every image's patch tokens (NaN: none).

    Args:
        norms: (images, blocks, tokens) token norms, prefix tokens first.
        num_prefix: the prefix tokens before the patches.
        rule: ``token_norms`` (rule, min_gap, cutoff): see `high_norm_threshold`.
    """
    return np.array([high_norm_threshold(norms[:, b, num_prefix:], **rule) for b in range(norms.shape[1])])


def token_norm_table(model: str, image_ids: np.ndarray, norms: np.ndarray, prefix_kinds: Sequence[str], **rule) -> pd.DataFrame:
    """One row per (image, block, token kind): the kind's token count, mean and max norm, how many
    of its tokens lie above the block's patch threshold (0 where the block has none) and the
    threshold (NaN where none). Rows in image, block, kind order; kinds as `token_kinds`."""
    images, blocks, tokens = norms.shape
    thresholds = block_thresholds(norms, len(prefix_kinds), **rule)
    kinds = token_kinds(prefix_kinds, tokens)
    # (images, blocks, kinds) per statistic, flattened in that order.
    chosen = [norms[:, :, index].astype(np.float64) for index in kinds.values()]
    mean = np.stack([c.mean(-1) for c in chosen], axis=-1)
    peak = np.stack([c.max(-1) for c in chosen], axis=-1)
    above = np.stack([(c > thresholds[None, :, None]).sum(-1) for c in chosen], axis=-1)  # NaN compares False
    cells = images * blocks * len(kinds)
    return pd.DataFrame(
        {
            "model": model,
            "image_id": np.repeat(np.asarray(image_ids, dtype=str), blocks * len(kinds)),
            "block": np.tile(np.repeat(np.arange(blocks, dtype=np.int64), len(kinds)), images),
            "tokens": np.tile(list(kinds), images * blocks),
            "n_tokens": np.tile([len(index) for index in kinds.values()], images * blocks).astype(np.int64),
            "norm_mean": mean.reshape(cells),
            "norm_max": peak.reshape(cells),
            "n_high_norm": above.reshape(cells).astype(np.int64),
            "threshold": np.tile(np.repeat(thresholds, len(kinds)), images),
        }
    )[list(TOKEN_NORM_COLUMNS)]


def model_token_norms(
    model: str, paths: Sequence[str], prefix_kinds: Sequence[str], rule: dict, out: str, shards: RunShards
) -> None:
    """The token_norms rule's stage: `token_norm_table` of one model's representation shards
    (``rule``: the ``token_norms`` settings)."""
    image_ids, norms = load_token_norms(paths, shards)
    write_parquet(token_norm_table(model, image_ids, norms, prefix_kinds, **rule), out)


def combine_token_norms(paths: Sequence[str], out: str) -> None:
    """The models' tables in one (``token_norms.parquet``), in the order given."""
    write_parquet(pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True), out)
