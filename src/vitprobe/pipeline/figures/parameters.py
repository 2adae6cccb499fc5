"""Figures of a model's parameters: patch-embedding filters and position-embedding similarity."""

from __future__ import annotations

import numpy as np

from ...metrics.parameters import patch_embedding_components, patch_embedding_filters, position_embedding_similarity
from ...plots.parameters import plot_patch_filters, plot_position_similarity


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
    data = np.load(parameters, allow_pickle=False)
    cosine, dot = position_embedding_similarity(data["pos_embed"], int(data["grid_size"]))
    plot_position_similarity(cosine, dot, label, out_cosine, out_dot)
