"""The extract stages: one model over one shard of crops, writing its predictions, the block-output
statistics (`ShardRepresentations`: Gram matrices per image group, token norms; computed inside the
compiled forward pass either way), the map images' features and attention rows where the shard
holds map images (`ShardMapImages`, from the same program), and either the per-image reductions,
computed inside the compiled forward pass too (`extract_reduced`), or the raw attention
(`extract_attention`, with ``extract.keep_attention``)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from ..api import ProbeModel
from ..data.sources import source_class_names
from ..shards import ShardIdentity, ShardInfo, ShardWriter, open_crops, write_shard_table
from ..tables import PREDICTION_COLUMNS, PREDICTION_DTYPES
from .calibration import choose_compile_mode
from .checks import require_finite
from .config import ModelEntry, model_entry, model_identity, shard_slice
from .map_images import ShardMapImages
from .model import build_model
from .representations import ShardRepresentations
from .run_shards import shard_identity
from .shard_reductions import ShardReductions

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


def _predictions(
    entry: ModelEntry, rows: pd.DataFrame, logits: list[np.ndarray], class_names: list[str], path: str, identity: ShardIdentity
) -> None:
    stacked = np.concatenate(logits) if logits else None
    if stacked is not None:
        require_finite(entry.key, "logits", stacked, rows["image_id"].tolist())
    write_shard_table(predictions_table(entry.key, rows, stacked, class_names), path, identity)


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
    map_images: ShardMapImages | None = None,
    map_images_path: str | None = None,
) -> None:
    """The model, the `AttentionReducer` (``analysis``: its settings) and the `RepresentationReducer`
    (token norms; Gram matrices of groups of ``group_size`` images) as one program per batch:
    neither the attention nor the block outputs leave the device. ``attention_kernel``: see
    `ProbeModel.forward_reduced`. Without a ``representations_path`` the program computes no
    representation statistics (what `benchmarks/bench.py` measures their cost against).
    ``map_images`` (written to ``map_images_path``): the same program also returns the first
    images of each batch for it, where the shard holds map images."""
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
    # Only the batches that hold map images run the program that returns them: returning every
    # block's attention for them costs ~6% of a batch (ViT-B/16, one thread), a second trace ~1.3 s.
    k = min(map_images.count, batch_size) if map_images else 0
    for start, n, batch in batches(crops, batch_size):
        wanted = map_images.wanted(start, n) if map_images else 0
        out = model.forward_reduced(batch, attention_kernel, statistics, group_size, map_images=k if wanted else 0, **analysis)
        reductions.add(image_ids[start : start + n], {name: v[:n] for name, v in out.reductions.items()})
        if wanted:
            map_images.add(image_ids[start : start + wanted], out.map_features[:wanted], out.map_attention[:wanted])
        if statistics:
            representations.add(image_ids[start : start + n], out.representations)
        if out.logits is not None:
            logits.append(out.logits[:n])
        progress.update(n)
    progress.close()
    identity = shard_identity(entry, image_ids)
    reductions.write(per_image_path, maps_path, identity)
    if statistics:
        representations.write(representations_path, identity)
    if map_images:
        map_images.write(map_images_path, identity)
    _predictions(entry, rows, logits, class_names, predictions_path, identity)


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
    map_images: ShardMapImages | None = None,
    map_images_path: str | None = None,
) -> None:
    """The model's raw attention, stored as ``dtype`` in a self-describing shard (see `shards`)
    for the reduce stage and for users, and the block-output statistics and map images (as in
    `extract_reduced`)."""
    spec = model.spec
    image_ids = rows["image_id"].tolist()
    crops = _open_shard_crops(crops_path, image_ids)
    info = ShardInfo(
        entry.key, entry.checkpoint, image_ids, spec.prefix_tokens, spec.grid_size, spec.patch_size, model_identity(entry)
    )
    logits, representations = [], ShardRepresentations(entry.key, group_size)
    with ShardWriter(attention_path, info, (spec.depth, spec.num_heads, spec.num_tokens, spec.num_tokens), dtype) as writer:
        for start, n, batch in batches(crops, batch_size):
            wanted = map_images.wanted(start, n) if map_images else 0
            out = model.forward(batch, block_outputs=wanted > 0, representations=True, group_size=group_size)
            representations.add(image_ids[start : start + n], out.representations)
            if wanted:
                features = model.final_patch_tokens(out.block_outputs[-1][:wanted])
                map_images.add(image_ids[start : start + wanted], features, np.stack(out.attentions[: spec.depth], 1)[:wanted])
            for block, attention in enumerate(out.attentions):
                require_finite(entry.key, f"block {block} attention", attention[:n], image_ids[start : start + n])
            writer.write_blocks([a[:n] for a in out.attentions])
            if out.logits is not None:
                logits.append(out.logits[:n])
            progress.update(n)
    progress.close()
    identity = shard_identity(entry, image_ids)
    representations.write(representations_path, identity)
    if map_images:
        map_images.write(map_images_path, identity)
    _predictions(entry, rows, logits, class_names, predictions_path, identity)


def _start_job(
    key: str,
    model_settings: dict,
    manifest_path: str,
    shard: int,
    shard_count: int,
    shard_size: int,
    batch_size: int,
    group_size: int | None,
    precision: str,
    compile_mode: str,
    threads: int,
) -> tuple[ModelEntry, ProbeModel, pd.DataFrame, Progress, int]:
    """What both extract stages do first: the shard's manifest rows, the batch size fitted to them
    (`fitted_batch_size`), and the model compiled as ``compile_mode`` (``extract.compile``)
    resolves on this machine (`choose_compile_mode`; ``threads``, the job's, is part of the
    calibration's key). The log names the mode and why."""
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
    what = f"extract {key} shard {shard} (of {shard_count})"  # counted from 0, as in the file names
    log.info("%s: %d images of %s, batches of %d, %s", what, len(rows), entry.label, batch_size, precision)
    return entry, model, rows, Progress(len(rows), what, time.perf_counter() - loading), batch_size


def run_extract(
    key: str,
    model_settings: dict,
    crops_path: str,
    manifest_path: str,
    shard: int,
    shard_count: int,
    shard_size: int,
    *,
    predictions: str,
    per_image: str,
    maps: str,
    representations: str,
    map_images: str,
    batch_size: int,
    precision: str,
    group_size: int | None,
    analysis: dict,
    attention_kernel: str,
    compile_mode: str,
    threads: int,
    map_rows: int,
) -> None:
    """Rule extract's stage (``extract.keep_attention: false``): `extract_reduced` over one shard,
    writing the five paths named by their outputs (``map_images``: the PCA features and explorer
    rows of the shard's first ``map_rows`` images, the map images it holds)."""
    entry, model, rows, progress, batch_size = _start_job(
        key,
        model_settings,
        manifest_path,
        shard,
        shard_count,
        shard_size,
        batch_size,
        group_size,
        precision,
        compile_mode,
        threads,
    )
    extract_reduced(
        entry,
        model,
        crops_path,
        rows,
        list(source_class_names()),
        predictions,
        per_image,
        maps,
        representations,
        analysis=analysis,
        attention_kernel=attention_kernel,
        batch_size=batch_size,
        group_size=group_size,
        progress=progress,
        map_images=ShardMapImages(entry.key, model.spec, map_rows),
        map_images_path=map_images,
    )


def run_extract_attention(
    key: str,
    model_settings: dict,
    crops_path: str,
    manifest_path: str,
    shard: int,
    shard_count: int,
    shard_size: int,
    *,
    predictions: str,
    attention: str,
    representations: str,
    map_images: str,
    batch_size: int,
    precision: str,
    group_size: int | None,
    dtype: str,
    compile_mode: str,
    threads: int,
    map_rows: int,
) -> None:
    """Rule extract_attention's stage (``extract.keep_attention: true``): `extract_attention`
    over one shard, the raw attention kept as ``dtype`` for the reduce stage, and the map images'
    PCA features and explorer rows as `run_extract` writes them."""
    entry, model, rows, progress, batch_size = _start_job(
        key,
        model_settings,
        manifest_path,
        shard,
        shard_count,
        shard_size,
        batch_size,
        group_size,
        precision,
        compile_mode,
        threads,
    )
    extract_attention(
        entry,
        model,
        crops_path,
        rows,
        list(source_class_names()),
        predictions,
        attention,
        representations,
        dtype=dtype,
        batch_size=batch_size,
        group_size=group_size,
        progress=progress,
        map_images=ShardMapImages(entry.key, model.spec, map_rows),
        map_images_path=map_images,
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
