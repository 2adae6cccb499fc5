"""The PCA feature-map figure of one model, from the PCA stage's file."""

from __future__ import annotations

import numpy as np

from ...plots.pca import plot_pca_maps


def pca_maps(pca_file: str, label: str, out: str) -> None:
    """Draw ``pca_file`` (`vitprobe.pipeline.pca.run_pca_features`'s output) to ``out``."""
    data = np.load(pca_file, allow_pickle=False)
    features = "last-block patch tokens" + (" after the final LayerNorm" if bool(data["final_norm"]) else "")
    plot_pca_maps(
        data["crops"],
        data["projections"],
        data["mask"],
        data["foreground"],
        label,
        out,
        image_ids=data["image_ids"].tolist(),
        explained=data["explained"],
        foreground_explained=data["foreground_explained"],
        threshold=float(data["threshold"]),
        features=features,
    )
