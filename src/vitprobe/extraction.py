"""The extract stage: one model over one shard of crops, writing its predictions and either
the per-image reductions (computed inside the compiled forward pass) or the raw attention.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import pandas as pd

from .atomic import write_npz, write_parquet
from .data.preprocess import normalize
from .experiment import ModelEntry
from .reduction import ShardReductions
from .shards import ShardInfo, ShardWriter, open_crops

log = logging.getLogger("vitprobe")

PREDICTION_COLUMNS = ["model", "image_id", "top1", "top1_name", "top1_prob", "correct"]


def build_model(entry: ModelEntry, precision: str = "float32"):
    from .api import load_model

    weights = None if entry.weights == "random" else entry.weights
    return load_model(
        entry.arch, weights, preprocess=entry.preprocess.as_dict(), seed=entry.seed, precision=precision, **entry.spec_overrides
    )


class Progress:
    """Images done / total and img/s in the log, and a bar when stderr is a terminal."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.done, self.start = total, what, 0, time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit="img")

    def update(self, n: int) -> None:
        self.done += n
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        log.info("%s: %d/%d images, %.2f img/s", self.what, self.done, self.total, rate)
        if self.bar:
            self.bar.update(n)

    def close(self) -> float:
        if self.bar:
            self.bar.close()
        return self.done / max(time.perf_counter() - self.start, 1e-9)


def extract(
    entry: ModelEntry,
    crops_path: str,
    manifest: pd.DataFrame,
    predictions_path: str,
    class_names: list[str],
    *,
    per_image_path: str | None = None,
    maps_path: str | None = None,
    attention_path: str | None = None,
    analysis: dict | None = None,
    batch_size: int = 8,
    precision: str = "float32",
    dtype: str = "float32",
    model=None,
) -> None:
    """Forward every crop of one shard through one model and write its predictions, and either
    the reductions (``per_image_path``, ``maps_path``; ``analysis``: the `AttentionReducer`
    settings) or, with ``attention_path``, the raw attention (stored as ``dtype``).
    ``model``: an already loaded `ProbeModel` for ``entry`` (the benchmark passes a warm one)."""
    if (attention_path is None) == (per_image_path is None or maps_path is None):
        raise ValueError("extract writes either attention_path or per_image_path and maps_path")
    model = model or build_model(entry, precision)
    spec = model.spec
    crops = open_crops(crops_path)
    image_ids = manifest["image_id"].tolist()
    if len(crops) != len(image_ids):
        raise ValueError(f"{crops_path}: {len(crops)} crops for {len(image_ids)} manifest rows; delete it and rerun")
    if attention_path:
        info = ShardInfo(entry.key, image_ids, spec.num_prefix_tokens, spec.grid_size, spec.patch_size)
        writer = ShardWriter(attention_path, info, (spec.depth, spec.num_heads, spec.num_tokens, spec.num_tokens), dtype)
    else:
        reductions = ShardReductions(entry.key)
    logits = []
    progress = Progress(len(image_ids), f"extract {entry.key}")
    for start in range(0, len(image_ids), batch_size):
        batch = normalize(crops[start : start + batch_size], model.preprocessing)
        n = len(batch)
        if n < batch_size:  # pad: one compiled shape for every batch
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
        if attention_path:
            out = model.forward(batch)
            writer.write_blocks([a[:n] for a in out.attentions])
        else:
            out = model.forward_reduced(batch, **(analysis or {}))
            reductions.add(image_ids[start : start + n], {name: v[:n] for name, v in out.reductions.items()})
        if out.logits is not None:
            logits.append(out.logits[:n])
        progress.update(n)
    if attention_path:
        writer.close()
    else:
        reductions.write(per_image_path, maps_path)
    log.info("extract %s: %.2f img/s", entry.key, progress.close())
    write_parquet(predictions_table(entry.key, manifest, np.concatenate(logits) if logits else None, class_names), predictions_path)


def predictions_table(model: str, manifest: pd.DataFrame, logits: np.ndarray | None, class_names: list[str]) -> pd.DataFrame:
    """Top-1 per image (empty for a model without a classifier head)."""
    if logits is None:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(PREDICTION_COLUMNS, ["str", "str", "int64", "str", "float64", "boolean"])})
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    top1 = probs.argmax(axis=1)
    labels = manifest["label"].to_numpy()
    correct = pd.array([None if label < 0 else bool(t == label) for t, label in zip(top1, labels)], dtype="boolean")
    return pd.DataFrame(
        {
            "model": model,
            "image_id": manifest["image_id"].astype(str).to_numpy(),
            "top1": top1.astype(np.int64),
            "top1_name": [class_names[t] if t < len(class_names) else str(t) for t in top1],
            "top1_prob": probs[np.arange(len(top1)), top1].astype(np.float64),
            "correct": correct,
        }
    )


def export_parameters(entry: ModelEntry, out_path: str) -> None:
    """The weights the static figures show: patch-embedding kernel (p, p, 3, D) and the
    patch position embeddings (P, D) at the model's grid."""
    model = build_model(entry)
    spec = model.spec
    kernel = model.state("patch_embed.proj.weight").reshape(spec.patch_size, spec.patch_size, 3, spec.embed_dim)
    pos = model.state("pos_embed")[0, spec.num_pos_prefix :]
    write_npz(out_path, patch_kernel=kernel, pos_embed=pos, grid_size=np.int64(spec.grid_size))
