"""The reduce stage: `metrics.attention.AttentionReducer` over a kept attention shard (with
``extract.keep_attention``), so that an analysis setting reruns without the model. By default
the same reducer runs inside the compiled forward pass instead (see `pipeline.extract`)."""

from __future__ import annotations

import numpy as np

from ..compiled import ReducingProgram
from ..metrics.attention import AttentionReducer
from ..shards import ShardIdentity, images_digest, open_attention
from .run_shards import RunShards
from .shard_reductions import ShardReductions


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
    (``key``, ``model_settings`` and the manifest's rows of shard ``shard``; `ShardIdentity`), and
    its CRC-32 holds over the bytes read. A damaged or foreign shard is deleted and reported, so
    the next run rebuilds it."""
    stored = open_attention(attention_path, delete_if_damaged=True)
    expected = RunShards(manifest_path, shard_size, {key: model_settings}).expected(key, shard)
    expected.refuse_other(
        ShardIdentity(stored.model, stored.identity, images_digest(stored.image_ids)), stored.path, "attention shard"
    )
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
    collected.write(per_image_path, maps_path, expected)
