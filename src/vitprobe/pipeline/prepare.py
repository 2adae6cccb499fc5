"""The prepare stage: one shard of the manifest's images decoded and cropped once per geometry."""

from __future__ import annotations

import pandas as pd

from ..data.manifest import prepare_crops
from ..data.preprocess import Preprocess
from .config import shard_slice


def prepare(manifest_path: str, shard: int, shard_size: int, image_size: int, geometry: dict, out_path: str) -> None:
    manifest = pd.read_parquet(manifest_path)
    rows = manifest.iloc[shard_slice(shard, shard_size)]
    prepare_crops(rows, image_size, Preprocess(**geometry), out_path)
