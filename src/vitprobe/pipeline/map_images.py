"""The map images' share of an extract job: their patch features (for the PCA views) and every
block's attention rows (for the explorer page), taken from the extract program's own outputs in
the job of the shard that holds them (the map images are the first manifest rows), so that no
later stage runs a model for them. One small file per shard; the maps stage merges them.

The explorer's rows are the CLS query and every patch query over the patch keys, for every head
(`query_rows`), each quantised to 8 bits against its own maximum (attention is non-negative):
``value = code * scale / 255`` with ``scale`` the row's maximum, so the error of a value is at
most ``scale / 510`` (`quantise_rows`). Every block is kept, so that the page's choice of blocks
(``explorer.blocks``) reruns the page only.
"""

from __future__ import annotations

import numpy as np

from ..models.spec import ViTSpec
from ..shards import ShardIdentity, write_shard_npz
from .checks import require_finite


def query_rows(attention: np.ndarray, num_prefix: int) -> np.ndarray:
    """The rows the page shows, from one block's attention (B, heads, N, N): the CLS query
    (row 0) then every patch query, each over the patch keys only -> (B, heads, 1 + P, P)."""
    rows = np.concatenate([attention[:, :, :1], attention[:, :, num_prefix:]], axis=2)
    return rows[..., num_prefix:]


def quantise_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of non-negative weights (..., keys) as uint8 codes and one float32 scale per row.

    ``codes * scale / 255`` reconstructs each value within ``scale / 510``; a row of zeros
    gets scale 0 and zero codes.
    """
    scales = rows.max(axis=-1).astype(np.float32)
    divisor = np.where(scales > 0, scales, 1.0)[..., None]
    codes = np.clip(np.rint(rows / divisor * 255.0), 0, 255).astype(np.uint8)
    return codes, scales


def dequantise_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The inverse of `quantise_rows` (what the page computes), in float64."""
    return codes.astype(np.float64) * (scales.astype(np.float64)[..., None] / 255.0)


class ShardMapImages:
    """The map images of one shard, batch by batch: checked, then written as one ``.npz`` with
    ``image_ids``, ``features`` (images, patches, dim) and the explorer rows of every block,
    ``codes`` (images, blocks, heads, 1 + P, P) uint8 and ``scales`` (images, blocks, heads, 1 + P).

    Args:
        model: the config's model key (named in errors).
        spec: the model's architecture (the shapes of a shard without map images).
        count: how many of the shard's first images are map images (0 for most shards).
    """

    def __init__(self, model: str, spec: ViTSpec, count: int):
        self.model, self.spec, self.count = model, spec, count
        self.image_ids: list[str] = []
        self.features: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.scales: list[np.ndarray] = []

    def wanted(self, start: int, n: int) -> int:
        """How many of the batch of ``n`` images from shard row ``start`` are map images (its first ones)."""
        return max(0, min(n, self.count - start))

    def add(self, image_ids: list[str], features: np.ndarray, attention: np.ndarray) -> None:
        """One batch's map images: their patch features (n, patches, dim) and every block's
        attention (n, blocks, heads, N, N)."""
        require_finite(self.model, "map-image patch features", features, image_ids)
        require_finite(self.model, "map-image attention", attention, image_ids)
        rows = query_rows(attention.reshape(-1, *attention.shape[2:]), self.spec.num_prefix_tokens)
        codes, scales = quantise_rows(rows)
        self.image_ids.extend(image_ids)
        self.features.append(np.asarray(features, np.float32))
        self.codes.append(codes.reshape(*attention.shape[:3], *codes.shape[2:]))
        self.scales.append(scales.reshape(*attention.shape[:3], -1))

    def write(self, path: str, identity: ShardIdentity) -> None:
        """The file, carrying ``identity`` (whose shard it is; `write_shard_npz`)."""
        s = self.spec
        p, rows = s.num_patches, 1 + s.num_patches
        empty = {
            "features": np.zeros((0, p, s.embed_dim), np.float32),
            "codes": np.zeros((0, s.depth, s.num_heads, rows, p), np.uint8),
            "scales": np.zeros((0, s.depth, s.num_heads, rows), np.float32),
        }
        if len(self.image_ids) != self.count:
            raise RuntimeError(f"{self.model}: {len(self.image_ids)} map images collected, {self.count} expected")
        arrays = {name: np.concatenate(getattr(self, name)) if self.image_ids else value for name, value in empty.items()}
        write_shard_npz(path, identity, image_ids=np.array(self.image_ids, dtype=str), **arrays)
