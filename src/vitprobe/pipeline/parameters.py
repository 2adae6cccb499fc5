"""The parameters stage: the weights the static figures show, exported small."""

from __future__ import annotations

import numpy as np

from ..atomic import write_npz
from ..metrics.parameters import relative_position_bias_maps
from .checks import NonFiniteError
from .config import ModelEntry
from .model import build_model


def export_parameters(entry: ModelEntry, out_path: str) -> None:
    """The patch-embedding kernel (p, p, 3, D) and the model's position information at its grid:
    the patch position embeddings (P, D) (``pos_embed``), or for a model without them (BEiT) every
    block's relative position bias as (blocks, heads, 2g-1, 2g-1) maps over the patch offset
    (``rel_pos_bias``), which the position figures then show instead.

    Args:
        entry: the config's model entry.
        out_path: the ``.npz`` to write.
    """
    model = build_model(entry)
    spec = model.spec
    kernel = model.state("patch_embed.proj.weight").reshape(spec.patch_size, spec.patch_size, 3, spec.embed_dim)
    # npz name: (the checkpoint tensors it comes from, values)
    arrays = {"patch_kernel": ("patch_embed.proj.weight", kernel)}
    if spec.abs_pos_embed:
        arrays["pos_embed"] = ("pos_embed", model.state("pos_embed")[0, spec.num_pos_prefix :])
    else:  # every named spec has one or the other, and a config cannot switch them
        tables = [model.state(f"blocks.{i}.attn.relative_position_bias_table") for i in range(spec.depth)]
        maps = np.stack([relative_position_bias_maps(table, spec.grid_size) for table in tables]).astype(np.float32)
        arrays["rel_pos_bias"] = ("blocks.*.attn.relative_position_bias_table", maps)
    for name, values in arrays.values():
        if not np.isfinite(values).all():
            raise NonFiniteError(f"{entry.key}: {name} holds NaN or Inf values; check the weights file {entry.weights}")
    write_npz(out_path, **{key: values for key, (_, values) in arrays.items()}, grid_size=np.int64(spec.grid_size))
