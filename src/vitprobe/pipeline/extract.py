"""The extract stages: one model over one shard of crops, writing its predictions and either the
per-image reductions, computed inside the compiled forward pass (`extract_reduced`), or the raw
attention (`extract_attention`, with ``extract.keep_attention``)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from ..api import ProbeModel
from ..atomic import write_parquet
from ..compiled import attention_kernel_is_fused
from ..data.preprocess import normalize
from ..data.sources import source_class_names
from ..shards import ShardInfo, ShardWriter, open_crops
from ..tables import PREDICTION_COLUMNS, PREDICTION_DTYPES
from .calibration import choose_compile_mode
from .checks import require_finite
from .config import ModelEntry, model_entry, shard_slice
from .model import build_model
from .reduce import ShardReductions

log = logging.getLogger("vitprobe")


class Progress:
    """Images done / total in the log (and a bar when stderr is a terminal), with the rate after
    the first batch apart from the start-up: loading the model (``load_seconds``) and the first
    batch, which traces and compiles the program."""

    def __init__(self, total: int, what: str, load_seconds: float, clock: Callable[[], float] = time.perf_counter):
        self.total, self.what, self.load_seconds, self.clock = total, what, load_seconds, clock
        self.done, self.first, self.start = 0, 0, clock()
        self.warm_at: float | None = None
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit="img")

    @property
    def startup_seconds(self) -> float:
        """Loading plus the first batch (tracing and compiling)."""
        return self.load_seconds + ((self.warm_at or self.clock()) - self.start)

    @property
    def rate(self) -> float | None:
        """Images per second after the first batch; None until a second batch is done."""
        if self.warm_at is None or self.done == self.first:
            return None
        return (self.done - self.first) / max(self.clock() - self.warm_at, 1e-9)

    def describe(self) -> str:
        rate = self.rate
        speed = f"{rate:.2f} img/s" if rate is not None else "rate after the first batch"
        return f"{self.what}: {self.done}/{self.total} images, {speed} (loaded and compiled in {self.startup_seconds:.1f} s)"

    def update(self, n: int) -> None:
        self.done += n
        if self.warm_at is None:
            self.warm_at, self.first = self.clock(), self.done
        log.info("%s", self.describe())
        if self.bar:
            self.bar.set_postfix_str(f"{self.rate:.2f} img/s" if self.rate else "compiling")
            self.bar.update(n)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def _batches(crops: np.ndarray, model: ProbeModel, batch_size: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, images, normalised batch), the last padded with zeros: one compiled shape."""
    for start in range(0, len(crops), batch_size):
        batch = normalize(crops[start : start + batch_size], model.preprocessing)
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
        yield start, n, batch


def _open_shard_crops(crops_path: str, image_ids: list[str]) -> np.ndarray:
    crops = open_crops(crops_path)
    if len(crops) != len(image_ids):
        raise ValueError(f"{crops_path}: {len(crops)} crops for {len(image_ids)} manifest rows; delete it and rerun")
    return crops


def _predictions(entry: ModelEntry, rows: pd.DataFrame, logits: list[np.ndarray], class_names: list[str], path: str) -> None:
    stacked = np.concatenate(logits) if logits else None
    if stacked is not None:
        require_finite(entry.key, "logits", stacked, rows["image_id"].tolist())
    write_parquet(predictions_table(entry.key, rows, stacked, class_names), path)


def extract_reduced(
    entry: ModelEntry,
    model: ProbeModel,
    crops_path: str,
    rows: pd.DataFrame,
    class_names: list[str],
    predictions_path: str,
    per_image_path: str,
    maps_path: str,
    *,
    analysis: dict,
    batch_size: int,
    progress: Progress,
    attention_kernel: str = "auto",
) -> None:
    """The model and the `AttentionReducer` (``analysis``: its settings) as one program per batch:
    the attention never leaves the device. ``attention_kernel``: see `ProbeModel.forward_reduced`."""
    image_ids = rows["image_id"].tolist()
    crops = _open_shard_crops(crops_path, image_ids)
    fused = attention_kernel_is_fused(attention_kernel, model.reducer(**analysis))
    log.info("%s: attention %s", entry.key, "in the fused kernel (no probabilities in memory)" if fused else "as softmax probabilities, then reduced")
    reductions, logits = ShardReductions(entry.key), []
    for start, n, batch in _batches(crops, model, batch_size):
        out = model.forward_reduced(batch, attention_kernel, **analysis)
        reductions.add(image_ids[start : start + n], {name: v[:n] for name, v in out.reductions.items()})
        if out.logits is not None:
            logits.append(out.logits[:n])
        progress.update(n)
    progress.close()
    reductions.write(per_image_path, maps_path)
    _predictions(entry, rows, logits, class_names, predictions_path)


def extract_attention(
    entry: ModelEntry,
    model: ProbeModel,
    crops_path: str,
    rows: pd.DataFrame,
    class_names: list[str],
    predictions_path: str,
    attention_path: str,
    *,
    dtype: str,
    batch_size: int,
    progress: Progress,
) -> None:
    """The model's raw attention, stored as ``dtype`` for the reduce stage."""
    spec = model.spec
    image_ids = rows["image_id"].tolist()
    crops = _open_shard_crops(crops_path, image_ids)
    info = ShardInfo(entry.key, image_ids, spec.num_prefix_tokens, spec.grid_size, spec.patch_size)
    logits = []
    with ShardWriter(attention_path, info, (spec.depth, spec.num_heads, spec.num_tokens, spec.num_tokens), dtype) as writer:
        for start, n, batch in _batches(crops, model, batch_size):
            out = model.forward(batch)
            for block, attention in enumerate(out.attentions):
                require_finite(entry.key, f"block {block} attention", attention[:n], image_ids[start : start + n])
            writer.write_blocks([a[:n] for a in out.attentions])
            if out.logits is not None:
                logits.append(out.logits[:n])
            progress.update(n)
    progress.close()
    _predictions(entry, rows, logits, class_names, predictions_path)


def run_extract(
    key: str,
    model_settings: dict,
    crops_path: str,
    manifest_path: str,
    shard: int,
    shard_count: int,
    shard_size: int,
    outputs: dict[str, str],
    *,
    batch_size: int,
    precision: str,
    analysis: dict | None = None,
    attention_kernel: str = "auto",
    compile_mode: str = "auto",
    threads: int = 1,
    dtype: str | None = None,
) -> None:
    """The extract rules' stage: `extract_attention` when ``outputs`` has ``attention``, else
    `extract_reduced`. ``compile_mode`` (``extract.compile``) is resolved for this machine by
    `choose_compile_mode` (``threads``: the job's, part of the calibration's key); the log
    names the mode taken and why."""
    loading = time.perf_counter()
    entry = model_entry(key, model_settings)
    rows = pd.read_parquet(manifest_path).iloc[shard_slice(shard, shard_size)]
    choice = choose_compile_mode(compile_mode, arch=entry.arch, batch_size=batch_size, threads=threads, precision=precision,
                                 images=len(rows), spec_overrides=entry.spec_overrides)
    (log.warning if choice.warning else log.info)("%s: compiled as %s (%s)", key, choice.mode, choice.reason)
    model = build_model(entry, precision, choice.mode)
    progress = Progress(len(rows), f"extract {key} shard {shard + 1}/{shard_count}", time.perf_counter() - loading)
    common = dict(batch_size=batch_size, progress=progress)
    names = list(source_class_names())
    if "attention" in outputs:
        extract_attention(entry, model, crops_path, rows, names, outputs["predictions"], outputs["attention"], dtype=dtype, **common)
    else:
        extract_reduced(
            entry, model, crops_path, rows, names, outputs["predictions"], outputs["per_image"], outputs["maps"],
            analysis=analysis or {}, attention_kernel=attention_kernel, **common,
        )


def predictions_table(model: str, manifest: pd.DataFrame, logits: np.ndarray | None, class_names: list[str]) -> pd.DataFrame:
    """Top-1 per image (empty for a model without a classifier head)."""
    if logits is None:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(PREDICTION_COLUMNS, PREDICTION_DTYPES)})
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
