"""The reduce stage: `metrics.attention.AttentionReducer` over a kept attention shard (with
``extract.keep_attention``), so that an analysis setting reruns without the model. By default
the same reducer runs inside the compiled forward pass instead (see `pipeline.extract`)."""

from __future__ import annotations

import numpy as np

from ..compiled import ReducingProgram
from ..metrics.attention import AttentionReducer
from ..shards import open_attention
from .shard_reductions import ShardReductions


def reduce(attention_path: str, per_image_path: str, maps_path: str, chunk: int = 8, **settings) -> None:
    """Reduce a stored attention shard (see `ShardReductions`); ``settings`` are the
    `AttentionReducer`'s (renormalize, head_fusion, discard_ratio). A damaged shard is deleted
    and reported, so the next run rebuilds it."""
    shard = open_attention(attention_path, delete_if_damaged=True)
    program = ReducingProgram(
        AttentionReducer(shard.num_prefix_tokens, shard.grid_size, shard.patch_size, **settings), name="reduce"
    )
    collected = ShardReductions(shard.model)
    for start in range(0, len(shard.image_ids), chunk):
        part = np.asarray(shard.attention[start : start + chunk])
        n = len(part)
        if n < chunk:  # pad with uniform rows: one compiled shape for every chunk
            part = np.concatenate([part, np.full((chunk - n, *part.shape[1:]), 1 / part.shape[-1], part.dtype)])
        out = program.predict_on_batch(part)["reductions"]
        collected.add(shard.image_ids[start : start + n], {name: np.asarray(v)[:n] for name, v in out.items()})
    collected.write(per_image_path, maps_path)
