"""The reduce stage: `metrics.attention.AttentionReducer` over a kept attention shard (with
``extract.keep_attention``), so that an analysis setting reruns without the model. By default
the same reducer runs inside the compiled forward pass instead (see `pipeline.extract`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..compiled import ReducingProgram
from ..metrics.attention import AttentionReducer
from ..shards import AttentionShard, ShardError, open_attention
from .config import model_entry, model_identity, shard_slice
from .shard_reductions import ShardReductions


def check_belongs(shard: AttentionShard, key: str, identity: str, image_ids: list[str]) -> None:
    """Refuse (and delete, so that the next run rebuilds it) a shard that is not this run's: another
    model's, one written with other weights or settings, or one of other images than the manifest's
    rows of this shard."""
    wrong = []
    if shard.model != key:
        wrong.append(f"it holds model {shard.model!r}, not {key!r}")
    if shard.identity != identity:
        wrong.append("it was written with other weights or model settings than this config's")
    if shard.image_ids != image_ids:
        wrong.append(f"its {len(shard.image_ids)} image ids are not the manifest's {len(image_ids)} of this shard")
    if wrong:
        shard.path.unlink(missing_ok=True)
        raise ShardError(f"{shard.path} is not this run's shard: {'; '.join(wrong)}. Deleted it, rerun to rebuild it")


def reduce(
    attention_path: str,
    manifest_path: str,
    key: str,
    model_settings: dict,
    shard: int,
    shard_size: int,
    per_image_path: str,
    maps_path: str,
    chunk: int = 8,
    **settings,
) -> None:
    """Reduce a stored attention shard (see `ShardReductions`); ``settings`` are the
    `AttentionReducer`'s (renormalize, head_fusion, discard_ratio). The shard must be this run's
    (``key``, ``model_settings`` and the manifest's rows of shard ``shard``; `check_belongs`), and
    its CRC-32 holds over the bytes read. A damaged or foreign shard is deleted and reported, so
    the next run rebuilds it."""
    stored = open_attention(attention_path, delete_if_damaged=True)
    image_ids = pd.read_parquet(manifest_path, columns=["image_id"])["image_id"].iloc[shard_slice(shard, shard_size)]
    check_belongs(stored, key, model_identity(model_entry(key, model_settings)), image_ids.astype(str).tolist())
    program = ReducingProgram(
        AttentionReducer(stored.num_prefix_tokens, stored.grid_size, stored.patch_size, **settings), name="reduce"
    )
    collected = ShardReductions(stored.model)
    chunk = min(chunk, len(stored.image_ids))  # one compiled shape, never padded beyond the shard's images
    for start, part in stored.checked_chunks(chunk, delete_if_damaged=True):
        n = len(part)
        if n < chunk:  # pad the last chunk with uniform rows: one compiled shape for every chunk
            part = np.concatenate([part, np.full((chunk - n, *part.shape[1:]), 1 / part.shape[-1], part.dtype)])
        out = program.predict_on_batch(part)["reductions"]
        collected.add(stored.image_ids[start : start + n], {name: np.asarray(v)[:n] for name, v in out.items()})
    collected.write(per_image_path, maps_path)
