"""The parameters stage: the weights the static figures show, exported small."""

from __future__ import annotations

import numpy as np

from ..atomic import write_npz
from .checks import NonFiniteError
from .config import ModelEntry
from .model import build_model


def export_parameters(entry: ModelEntry, out_path: str) -> None:
    """The patch-embedding kernel (p, p, 3, D) and the patch position embeddings (P, D) at the
    model's grid."""
    model = build_model(entry)
    spec = model.spec
    kernel = model.state("patch_embed.proj.weight").reshape(spec.patch_size, spec.patch_size, 3, spec.embed_dim)
    pos = model.state("pos_embed")[0, spec.num_pos_prefix :]
    for name, values in (("patch_embed.proj.weight", kernel), ("pos_embed", pos)):
        if not np.isfinite(values).all():
            raise NonFiniteError(f"{entry.key}: {name} holds NaN or Inf values; check the weights file {entry.weights}")
    write_npz(out_path, patch_kernel=kernel, pos_embed=pos, grid_size=np.int64(spec.grid_size))
