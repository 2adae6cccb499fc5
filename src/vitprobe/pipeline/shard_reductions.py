"""One shard's per-image reductions, collected and checked batch by batch, then written as the
per-image table and the maps file. Filled by the extract stage (reductions computed inside the
compiled forward pass) and by the reduce stage (over kept attention shards)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..shards import ShardIdentity, write_shard_npz, write_shard_table
from ..tables import PER_IMAGE_COLUMNS
from .checks import require_finite

# A row of attention may miss 1 by float32 rounding, never by more than this.
ROW_SUM_ATOL = 1e-3


class ShardReductions:
    """One shard's reductions, batch by batch: checked, then written as the per-image table and
    the maps file (every image's rollout and last-block CLS maps)."""

    def __init__(self, model: str):
        self.model = model
        self.image_ids: list[str] = []
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, image_ids: list[str], reductions: dict[str, np.ndarray]) -> None:
        """Raise ValueError naming the model, block and images whose attention rows are not
        finite or do not sum to 1, or the reduction that is not finite."""
        bad = ~(reductions["row_error"] <= ROW_SUM_ATOL)  # (n, blocks); NaN counts as bad
        for block in np.flatnonzero(bad.any(axis=0)):
            images = [image_ids[i] for i in np.flatnonzero(bad[:, block])]
            raise ValueError(
                f"{self.model} block {block}: attention rows not finite or not summing to 1 "
                f"(atol={ROW_SUM_ATOL}) for images {images}"
            )
        for name, values in reductions.items():
            require_finite(self.model, name, values, image_ids)
        self.image_ids.extend(image_ids)
        self.parts.append(reductions)

    def _stacked(self, name: str) -> np.ndarray:
        return np.concatenate([part[name] for part in self.parts])

    def table(self) -> pd.DataFrame:
        distance = self._stacked("distance")  # (images, blocks, heads)
        n, blocks, heads = distance.shape
        table = pd.DataFrame(
            {
                "model": self.model,
                "image_id": np.repeat(np.asarray(self.image_ids, dtype=object), blocks * heads),
                "block": np.tile(np.repeat(np.arange(blocks, dtype=np.int64), heads), n),
                "head": np.tile(np.arange(heads, dtype=np.int64), n * blocks),
                "distance_px": distance.reshape(-1).astype(np.float64),
                "prefix_mass": self._stacked("prefix_mass").reshape(-1).astype(np.float64),
                "entropy": self._stacked("entropy").reshape(-1).astype(np.float64),
            }
        )
        return table[list(PER_IMAGE_COLUMNS)].sort_values(["image_id", "block", "head"], kind="stable").reset_index(drop=True)

    def write(self, per_image_path: str, maps_path: str, identity: ShardIdentity) -> None:
        """Both files, each carrying ``identity`` (whose shard they are)."""
        write_shard_table(self.table(), per_image_path, identity)
        write_shard_npz(
            maps_path,
            identity,
            image_ids=np.array(self.image_ids, dtype=str),
            rollout=self._stacked("rollout").astype(np.float32),
            cls=self._stacked("cls").astype(np.float32),
        )
