"""The block-output statistics of one shard, collected batch by batch inside the extract job and
written as one small file: each complete group's Gram matrices (for CKA) and every image's token norms.

Groups are consecutive manifest rows: group g holds rows g*n .. g*n+n-1, the same images for every
model. Shards start at multiples of the shard size, which the config requires to be a multiple of
the group size (and the batch size too), so a group never spans two shards or two batches. The last
group of the manifest is dropped when it is incomplete (fewer than n images)."""

from __future__ import annotations

import numpy as np

from ..metrics.cka import FEATURES
from ..shards import ShardIdentity, write_shard_npz
from .checks import require_finite


class ShardRepresentations:
    """One shard's `RepresentationReducer` outputs, batch by batch. Without a ``group_size`` (a run
    smaller than one CKA group computes no Gram matrices), the image ids and token norms only."""

    def __init__(self, model: str, group_size: int | None):
        self.model, self.group_size = model, group_size
        self.image_ids: list[str] = []
        self.group_image_ids: list[list[str]] = []
        self.grams: dict[str, list[np.ndarray]] = {features: [] for features in FEATURES}
        self.norms: list[np.ndarray] = []

    def add(self, image_ids: list[str], representations: dict[str, np.ndarray]) -> None:
        """``image_ids``: the batch's real images (the batch may end in padding); the outputs are
        the whole batch's. Keeps the groups made only of real images."""
        self.image_ids.extend(image_ids)
        n = len(image_ids)
        norms = representations["token_norms"][:n]
        require_finite(self.model, "token norms", norms, image_ids)
        self.norms.append(norms.astype(np.float32))
        if self.group_size is None:
            return
        size = self.group_size
        complete = n // size
        for features in FEATURES:
            grams = representations[f"gram_{features}"][:complete]
            require_finite(self.model, f"{features} Gram matrices", grams, image_ids[: complete * size])
            self.grams[features].append(grams.astype(np.float64))
        self.group_image_ids.extend(image_ids[g * size : (g + 1) * size] for g in range(complete))

    def write(self, path: str, identity: ShardIdentity) -> None:
        """With ``identity`` (whose shard it is; `write_shard_npz`): ``image_ids`` (images,) and ``token_norms`` (images, blocks, tokens) float32; with a
        group size also ``group_image_ids`` (groups, n) and ``gram_<features>`` (groups, blocks, n, n)
        float64."""
        common = dict(image_ids=np.array(self.image_ids, dtype=str), token_norms=np.concatenate(self.norms))
        size = self.group_size
        if size is None:
            write_shard_npz(path, identity, **common)
            return
        write_shard_npz(
            path,
            identity,
            **common,
            group_image_ids=np.array(self.group_image_ids, dtype=str).reshape(-1, size),
            **{f"gram_{f}": np.concatenate(self.grams[f]) for f in FEATURES},
        )
