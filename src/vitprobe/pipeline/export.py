"""The attention export: the full attention of a few chosen images as a long Parquet table, for
pandas, DuckDB or polars users. One small forward pass over those images' crops computes it, so
it needs no kept attention shards (and never covers a whole run: 8-11 MB per ViT-B/16 image)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_path
from ..shards import open_crops
from .checks import require_finite
from .config import export_rows, export_shards, model_entry
from .extract import batches
from .model import build_model

# One row per (image, block, head, query, key); the indices are 0-based, tokens are the prefix
# tokens then the patches row-major, as in the attention shards.
EXPORT_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("block", pa.int16()),
        ("head", pa.int16()),
        ("query", pa.int16()),
        ("key", pa.int16()),
        ("weight", pa.float16()),
    ]
)


def attention_rows(image_id: str, attention: np.ndarray) -> pa.Table:
    """One image's attention (blocks, heads, N, N) in long format, ``weight`` as float16."""
    indices = np.indices(attention.shape, dtype=np.int16).reshape(4, -1)
    columns = [pa.array(np.full(indices.shape[1], image_id, dtype=object), pa.string())]
    columns += [pa.array(axis) for axis in indices]
    columns.append(pa.array(attention.reshape(-1).astype(np.float16)))
    return pa.Table.from_arrays(columns, schema=EXPORT_SCHEMA)


def export_attention(
    key: str,
    model_settings: dict,
    manifest_path: str,
    crop_paths: list[str],
    shard_size: int,
    selection: int | list[str],
    out: str,
    *,
    precision: str = "float32",
    batch_size: int = 8,
) -> None:
    """Write ``out``: the attention of the images ``selection`` names (``export.attention_parquet``)
    for model ``key``, one row group per image.

    Args:
        key: the model's config key; ``model_settings`` its settings (as the extract rules get them).
        manifest_path: the run's manifest; its row order maps images to crop shards.
        crop_paths: the crop shards that hold the selected images, as `export_shards` lists them.
        shard_size: images per shard (``extract.shard_size``).
        selection: a count (the first manifest images) or a list of image ids.
        out: the Parquet file to write.
        precision, batch_size: as for extraction, so the weights equal the kept shards'.
    """
    image_ids = pd.read_parquet(manifest_path, columns=["image_id"])["image_id"].astype(str).tolist()
    rows = export_rows(image_ids, selection)
    shards = dict(zip(export_shards(image_ids, selection, shard_size), crop_paths))
    crops = np.stack([open_crops(shards[row // shard_size])[row % shard_size] for row in rows])
    selected = [image_ids[row] for row in rows]
    model = build_model(model_entry(key, model_settings), precision)
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, EXPORT_SCHEMA, compression="zstd") as writer:
        for start, n, batch in batches(crops, batch_size):
            attention = np.stack(model.forward(batch).attentions, axis=1)[:n]  # (n, blocks, heads, N, N)
            require_finite(key, "attention", attention, selected[start : start + n])
            for image_id, image in zip(selected[start : start + n], attention):
                writer.write_table(attention_rows(image_id, image))
