"""What this run's per-shard files must be, so that the stages reading them check each before
using it: a file copied from another model, from a run with other weights or settings, or from
another shard, is refused by name, and so is a damaged one (see `shards.ShardIdentity`)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..shards import ShardError, ShardIdentity, images_digest, load_shard_npz, read_shard_table
from .config import ModelEntry, model_entry, model_identity, shard_slice

# A model's per-shard file, as the workflow names it: shards/<model>/<kind>_<shard>.<suffix>.
_SHARD_FILE = re.compile(r"(?P<kind>[a-z_]+)_(?P<shard>\d+)\.(?:parquet|npz)")


def shard_identity(entry: ModelEntry, image_ids: list[str]) -> ShardIdentity:
    """The identity of ``entry``'s files of the shard of ``image_ids`` (what the extract stage writes into them)."""
    return ShardIdentity(entry.key, model_identity(entry), images_digest(image_ids))


class RunShards:
    """The identities this run's shards must carry.

    Args:
        manifest_path: the run's manifest (its rows, in shard order, are the shards' images).
        shard_size: ``extract.shard_size``.
        models: the models whose shards are read, key -> settings as the workflow gives them
            (`model_entry`); a local weights file is hashed once per model.
    """

    def __init__(self, manifest_path: str, shard_size: int, models: dict[str, dict]):
        self.image_ids = pd.read_parquet(manifest_path, columns=["image_id"])["image_id"].astype(str).tolist()
        self.shard_size, self.models = shard_size, models
        self._identity = cache(lambda key: model_identity(model_entry(key, self.models[key])))

    def shard_image_ids(self, shard: int) -> list[str]:
        return self.image_ids[shard_slice(shard, self.shard_size)]

    def expected(self, key: str, shard: int) -> ShardIdentity:
        """What model ``key``'s files of shard ``shard`` must say of themselves."""
        return ShardIdentity(key, self._identity(key), images_digest(self.shard_image_ids(shard)))

    def _expected_at(self, path: str) -> tuple[ShardIdentity, str]:
        """The identity and kind that a per-shard file's place (``shards/<model>/<kind>_<k>.*``) promises."""
        match = _SHARD_FILE.fullmatch(Path(path).name)
        key = Path(path).parent.name
        if match is None or key not in self.models:
            raise ShardError(f"{path}: not a per-shard file of the models {sorted(self.models)}")
        return self.expected(key, int(match["shard"])), f"{match['kind'].replace('_', ' ')} shard"

    def table(self, path: str) -> pd.DataFrame:
        """A per-shard Parquet table, checked (`read_shard_table`)."""
        return read_shard_table(path, *self._expected_at(path))

    def arrays(self, path: str) -> dict[str, np.ndarray]:
        """A per-shard .npz's members, checked (`load_shard_npz`)."""
        return load_shard_npz(path, *self._expected_at(path))
