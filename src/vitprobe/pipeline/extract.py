"""The extract stages: one model over one shard of crops, writing its predictions, the block-output
statistics (`ShardRepresentations`: Gram matrices per image group, token norms; computed inside the
compiled forward pass either way) and either the per-image reductions, computed inside the compiled
forward pass too (`extract_reduced`), or the raw attention (`extract_attention`, with
``extract.keep_attention``)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from ..api import ProbeModel
from ..atomic import write_parquet
from ..data.sources import source_class_names
from ..shards import ShardInfo, ShardWriter, open_crops
from ..tables import PREDICTION_COLUMNS, PREDICTION_DTYPES
from .calibration import choose_compile_mode
from .checks import require_finite
from .config import ModelEntry, model_entry, model_identity, shard_slice
from .model import build_model
from .reductions import ShardReductions
from .representations import ShardRepresentations

log = logging.getLogger("vitprobe")


class Progress:
    """An extract job's progress in its log (and a bar when stderr is a terminal), with the
    start-up and the steady rate apart, the way `benchmarks/bench.py` measures them too.

    The start-up is loading the model (``load_seconds``, timed by the caller) plus the first
    batch, which traces and compiles the program. The steady rate is the images after the first
    batch over the time from the end of the first batch to the end of the last, so it neither
    includes compilation nor the writing of the outputs. A shard of one batch has no steady rate.

    Args:
        total: images in the shard.
        what: the job, as every log line starts, e.g. ``extract vit_b16 shard 2/5``.
        load_seconds: seconds spent loading the model (building it, reading its weights) before this.
        clock: monotonic seconds; injectable so tests can check the arithmetic.
    """

    def __init__(self, total: int, what: str, load_seconds: float, clock: Callable[[], float] = time.perf_counter):
        self.total, self.what, self.load_seconds, self.clock = total, what, load_seconds, clock
        self.done, self.first_images = 0, 0
        self.started = clock()
        self.first_batch_end: float | None = None
        self.last_batch_end: float | None = None
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit="img")

    @property
    def first_batch_seconds(self) -> float | None:
        """The first batch (tracing and compiling included); None until it is done."""
        return None if self.first_batch_end is None else self.first_batch_end - self.started

    @property
    def startup_seconds(self) -> float | None:
        """Loading plus the first batch; None until the first batch is done."""
        first = self.first_batch_seconds
        return None if first is None else self.load_seconds + first

    @property
    def steady_images(self) -> int:
        return self.done - self.first_images

    @property
    def steady_seconds(self) -> float | None:
        """From the end of the first batch to the end of the last; None until the first is done."""
        return None if self.first_batch_end is None else self.last_batch_end - self.first_batch_end

    @property
    def rate(self) -> float | None:
        """Images per second after the first batch; None until a second batch is done."""
        if not self.steady_images:
            return None
        return self.steady_images / max(self.steady_seconds, 1e-9)

    def _startup(self) -> str:
        return (
            f"start-up {self.startup_seconds:.1f} s (model load {self.load_seconds:.1f} s "
            f"+ first batch, with trace and compile, {self.first_batch_seconds:.1f} s)"
        )

    def describe(self) -> str:
        """The log line after a batch."""
        head = f"{self.what}: {self.done}/{self.total} images"
        if self.first_batch_end is None:
            return f"{head}, loaded in {self.load_seconds:.1f} s"
        if self.rate is None:
            return f"{head}, {self._startup()}"
        return f"{head}, {self.rate:.2f} img/s after the first batch"

    def summary(self) -> str:
        """The job's last log line: start-up and steady rate, or why there is no steady rate."""
        if self.first_batch_end is None:
            return f"{self.what}: done, no images"
        if self.rate is None:
            steady = f"no steady rate: all {self.done} images were in the first batch, which includes compilation"
        else:
            steady = f"{self.rate:.2f} img/s over the {self.steady_images} images after the first batch"
        return f"{self.what}: done, {self.done} images; {steady}; {self._startup()}"

    def update(self, n: int) -> None:
        """Count a finished batch of ``n`` images and log the line for it."""
        self.done += n
        self.last_batch_end = self.clock()
        if self.first_batch_end is None:
            self.first_batch_end, self.first_images = self.last_batch_end, self.done
        log.info("%s", self.describe())
        if self.bar:
            self.bar.set_postfix_str(f"{self.rate:.2f} img/s" if self.rate else "compiling")
            self.bar.update(n)

    def close(self) -> None:
        """Log the summary (and close the bar)."""
        if self.bar:
            self.bar.close()
        log.info("%s", self.summary())


def batches(crops: np.ndarray, batch_size: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, images, uint8 batch), the last padded with zeros: one compiled shape. The model
    normalises them (`ProbeModel.forward_reduced`: inside its compiled program on a GPU)."""
    for start in range(0, len(crops), batch_size):
        batch = np.asarray(crops[start : start + batch_size])
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
        yield start, n, batch


def fitted_batch_size(batch_size: int, images: int, group_size: int | None) -> int:
    """``extract.batch_size``, lowered for a shard of fewer images: the last batch is padded to
    one compiled shape, and padding a batch of 512 around 4 images would cost the memory of 512
    (a multiple of ``group_size`` still, so that the CKA groups stay inside one batch)."""
    step = group_size or 1
    return min(batch_size, max(step, -(-images // step) * step))


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
    representations_path: str | None,
    *,
    analysis: dict,
    group_size: int | None = None,
    batch_size: int,
    progress: Progress,
    attention_kernel: str = "auto",
) -> None:
    """The model, the `AttentionReducer` (``analysis``: its settings) and the `RepresentationReducer`
    (token norms; Gram matrices of groups of ``group_size`` images) as one program per batch:
    neither the attention nor the block outputs leave the device. ``attention_kernel``: see
    `ProbeModel.forward_reduced`. Without a ``representations_path`` the program computes no
    representation statistics (what `benchmarks/bench.py` measures their cost against)."""
    image_ids = rows["image_id"].tolist()
    crops = _open_shard_crops(crops_path, image_ids)
    fused = model.uses_fused_kernel(attention_kernel, model.reducer(**analysis))
    log.info(
        "%s: attention %s",
        entry.key,
        "in the fused kernel (no probabilities in memory)" if fused else "as softmax probabilities, then reduced",
    )
    reductions, logits = ShardReductions(entry.key), []
    statistics = representations_path is not None
    representations = ShardRepresentations(entry.key, group_size)
    for start, n, batch in batches(crops, batch_size):
        out = model.forward_reduced(batch, attention_kernel, statistics, group_size, **analysis)
        reductions.add(image_ids[start : start + n], {name: v[:n] for name, v in out.reductions.items()})
        if statistics:
            representations.add(image_ids[start : start + n], out.representations)
        if out.logits is not None:
            logits.append(out.logits[:n])
        progress.update(n)
    progress.close()
    reductions.write(per_image_path, maps_path)
    if statistics:
        representations.write(representations_path)
    _predictions(entry, rows, logits, class_names, predictions_path)


def extract_attention(
    entry: ModelEntry,
    model: ProbeModel,
    crops_path: str,
    rows: pd.DataFrame,
    class_names: list[str],
    predictions_path: str,
    attention_path: str,
    representations_path: str,
    *,
    dtype: str,
    group_size: int | None = None,
    batch_size: int,
    progress: Progress,
) -> None:
    """The model's raw attention, stored as ``dtype`` in a self-describing shard (see `shards`)
    for the reduce stage and for users, and the block-output statistics (as in `extract_reduced`)."""
    spec = model.spec
    image_ids = rows["image_id"].tolist()
    crops = _open_shard_crops(crops_path, image_ids)
    info = ShardInfo(
        entry.key, entry.checkpoint, image_ids, spec.prefix_tokens, spec.grid_size, spec.patch_size, model_identity(entry)
    )
    logits, representations = [], ShardRepresentations(entry.key, group_size)
    with ShardWriter(attention_path, info, (spec.depth, spec.num_heads, spec.num_tokens, spec.num_tokens), dtype) as writer:
        for start, n, batch in batches(crops, batch_size):
            out = model.forward(batch, representations=True, group_size=group_size)
            representations.add(image_ids[start : start + n], out.representations)
            for block, attention in enumerate(out.attentions):
                require_finite(entry.key, f"block {block} attention", attention[:n], image_ids[start : start + n])
            writer.write_blocks([a[:n] for a in out.attentions])
            if out.logits is not None:
                logits.append(out.logits[:n])
            progress.update(n)
    progress.close()
    representations.write(representations_path)
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
    group_size: int | None = None,
    analysis: dict | None = None,
    attention_kernel: str = "auto",
    compile_mode: str = "auto",
    threads: int = 1,
    dtype: str | None = None,
) -> None:
    """The extract rules' stage: `extract_attention` when ``outputs`` has ``attention``, else
    `extract_reduced`; both write ``outputs["representations"]`` (groups of ``group_size`` images).
    ``compile_mode`` (``extract.compile``) is resolved for this machine by
    `choose_compile_mode` (``threads``: the job's, part of the calibration's key); the log
    names the mode taken and why."""
    loading = time.perf_counter()
    entry = model_entry(key, model_settings)
    rows = pd.read_parquet(manifest_path).iloc[shard_slice(shard, shard_size)]
    batch_size = fitted_batch_size(batch_size, len(rows), group_size)
    choice = choose_compile_mode(
        compile_mode,
        arch=entry.arch,
        batch_size=batch_size,
        threads=threads,
        precision=precision,
        images=len(rows),
        spec_overrides=entry.spec_overrides,
    )
    (log.warning if choice.warning else log.info)("%s: compiled as %s (%s)", key, choice.mode, choice.reason)
    model = build_model(entry, precision, choice.mode)
    what = f"extract {key} shard {shard + 1}/{shard_count}"
    log.info("%s: %d images of %s, batches of %d, %s", what, len(rows), entry.label, batch_size, precision)
    progress = Progress(len(rows), what, time.perf_counter() - loading)
    common = dict(batch_size=batch_size, group_size=group_size, progress=progress)
    names = list(source_class_names())
    if "attention" in outputs:
        extract_attention(
            entry,
            model,
            crops_path,
            rows,
            names,
            outputs["predictions"],
            outputs["attention"],
            outputs["representations"],
            dtype=dtype,
            **common,
        )
    else:
        extract_reduced(
            entry,
            model,
            crops_path,
            rows,
            names,
            outputs["predictions"],
            outputs["per_image"],
            outputs["maps"],
            outputs["representations"],
            analysis=analysis or {},
            attention_kernel=attention_kernel,
            **common,
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
