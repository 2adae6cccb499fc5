"""Figures of a model's parameters: patch-embedding filters and position-embedding similarity (or relative bias)."""

from __future__ import annotations

import numpy as np

from ...metrics.parameters import (
    patch_embedding_components,
    patch_embedding_filters,
    position_embedding_similarity,
    relative_bias_similarity,
)
from ...plots.parameters import plot_patch_filters, plot_position_cosine_grid, plot_position_similarity, plot_relative_bias_maps


def patch_filters(parameters: str, label: str, out_filters: str, out_components: str, count: int, components: int) -> None:
    kernel = np.load(parameters, allow_pickle=False)["patch_kernel"]
    count = min(count, kernel.shape[-1])
    components = min(components, kernel.shape[-1], int(np.prod(kernel.shape[:3])))
    plot_patch_filters(patch_embedding_filters(kernel, count), label, out_filters, f"Patch-embedding filters (first {count})")
    plot_patch_filters(
        patch_embedding_components(kernel, components),
        label,
        out_components,
        f"Principal components of the patch-embedding filters (first {components})",
    )


def position_similarity(parameters: str, label: str, out_cosine: str, out_dot: str) -> None:
    """The two position figures of a model, from what it has: with absolute position embeddings, their
    cosine similarity grid and dot products; with a relative position bias instead (BEiT), the cosine
    similarity of the patches' bias rows (every block and head) in the grid figure's place, and each
    head's bias over the patch offset in the first and last block in the dot-product figure's place,
    so the files are the same whatever the config's models."""
    data = np.load(parameters, allow_pickle=False)
    if "pos_embed" in data:
        cosine, dot = position_embedding_similarity(data["pos_embed"], int(data["grid_size"]))
        plot_position_similarity(cosine, dot, label, out_cosine, out_dot)
        return
    maps = data["rel_pos_bias"]
    cosine, _ = relative_bias_similarity(maps)
    plot_position_cosine_grid(
        cosine,
        label,
        out_cosine,
        title=f"Relative position bias similarity: each patch's bias row over the patches, all {len(maps)} blocks "
        "and heads (no absolute position embedding)",
    )
    blocks = sorted({0, len(maps) - 1})
    plot_relative_bias_maps(maps[blocks], blocks, label, out_dot)
