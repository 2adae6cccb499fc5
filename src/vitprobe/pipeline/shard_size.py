"""``extract.shard_size: auto``: images per extract job from this machine's measured start-up and rate.

A job of n images costs its start-up s (importing the backend, building the model, compiling the
program) plus n / r at its steady rate r, so the start-up is s r / (s r + n) of the job. Keeping
that at most `OVERHEAD` takes n >= s r (1 - OVERHEAD) / OVERHEAD: about 32 start-ups' worth of
images. A run gets as many shards of at least that size as its images allow (a failed or
cancelled job loses little, a cluster's time limit holds, the progress is fine-grained).

Then the last round: models x shards jobs run on `slots` parallel jobs (cores / extract.threads)
in ceil(jobs / slots) rounds, and a last round with fewer jobs than slots leaves cores idle for a
whole job. Five models in five one-shard jobs on two cores take three rounds, the last on one
core: 3 x (1000 + s r) image-times for 1,000 images, where two shards per model take five full
rounds, 5 x (500 + s r). So the count of shards per model is, of that count and the next
``slots - 1`` ones, the one with the shortest estimated run, rounds x (images per shard + s r)
(ties: fewer shards). The start-up can then exceed 3% of a job, but only where that buys back
idle cores.

s r (the start-up in images) comes from this machine's calibration record of each model
(`vitprobe.pipeline.calibration`: the fastest candidate of the running backend at the job's
precision), the largest over the models, since every model reads the same crop shards. Without
a record it is `FALLBACK_STARTUP_IMAGES`. The size is resolved when the workflow is parsed, from
the machine's cores, not ``--cores``: rerunning a finished experiment with other ``--cores`` keeps
its shards (and so its results). A results folder shared between machines, or a cluster, should
set an integer.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction

from ..environment import keras_backend
from .calibration import CalibrationError, load_record, record_path
from .config import ModelEntry

OVERHEAD = Fraction(3, 100)  # exact: the bound of a whole number of start-ups is a whole number
# A ViT-B/16 one-thread extract job on a 2-core Ice Lake Xeon, 2026-11-25 (docs/performance.md):
# about 8 s of start-up at 4.45 img/s, the time of 36 images.
FALLBACK_STARTUP_IMAGES = 36.0
HOW_TO_MEASURE = "python -m vitprobe.pipeline.calibration, or make bench-paths, measures it"


@dataclass(frozen=True)
class ShardSizing:
    """The resolved size and, for the run's log, how it was reached."""

    size: int
    reason: str


def usable_cores() -> int:
    """The CPUs this process may run on (a container's or a batch job's affinity, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def measured_startup_images(record: dict, backend: str, precision: str) -> float | None:
    """Start-up in images' worth, (import + build + compile) x img/s, of the record's fastest
    candidate of ``backend`` at ``precision``; None when the record has none."""
    same = [c for c in record["candidates"] if c["backend"] == backend and c["precision"] == precision and c.get("img_s")]
    if not same:
        return None
    best = max(same, key=lambda c: c["img_s"])
    seconds = best.get("import_s", 0.0) + best.get("build_s", 0.0) + best.get("compile_s", 0.0)
    return seconds * best["img_s"]


def smallest_shard(startup_images: float) -> int:
    """The fewest images for which a job's start-up is at most `OVERHEAD` of it."""
    return math.ceil(Fraction(startup_images) * (1 - OVERHEAD) / OVERHEAD)


def auto_shard_size(images: int, models: int, slots: int, startup_images: float, multiple: int) -> int:
    """Images per shard for ``images`` images and ``models`` models on ``slots`` parallel jobs,
    rounded up to a multiple of ``multiple`` (cka.group_size: groups never span shards)."""

    def size_for(shards: int) -> int:
        return max(1, math.ceil(math.ceil(images / shards) / multiple)) * multiple  # one group for a run of none

    def estimated_run(shards: int) -> float:  # in image-times of one job slot
        size = size_for(shards)
        jobs = models * math.ceil(images / size)
        return math.ceil(jobs / slots) * (size + startup_images)

    fewest = max(1, images // smallest_shard(startup_images), math.ceil(slots / models))
    return size_for(min(range(fewest, fewest + slots), key=estimated_run))


def resolve_shard_size(config: dict, entries: dict[str, ModelEntry], images: int | None, slots: int | None = None) -> ShardSizing:
    """``extract.shard_size`` of a validated ``config``: an integer as given; ``"auto"`` from
    `auto_shard_size` with ``images`` the run samples (None: not known before sampling, when
    one start-up bound's worth of images is taken) on ``slots`` parallel extract jobs (default:
    this machine's cores over extract.threads)."""
    extract = config["extract"]
    if extract["shard_size"] != "auto":
        return ShardSizing(extract["shard_size"], "as configured")
    slots = slots or max(1, usable_cores() // extract["threads"])
    backend, measured, missing = keras_backend(), [], []
    for key, entry in entries.items():
        path = record_path(entry.arch, extract["batch_size"], extract["threads"], entry.spec_overrides)
        try:
            value = measured_startup_images(load_record(path), backend, extract["precision"]) if path.is_file() else None
        except CalibrationError:
            value = None
        (measured if value is not None else missing).append((key, value))
    startup = max([v for _, v in measured] + ([FALLBACK_STARTUP_IMAGES] if missing else []))
    if not measured:
        source = f"no calibration record of this machine: {FALLBACK_STARTUP_IMAGES:g} assumed ({HOW_TO_MEASURE})"
    else:
        source = "measured for " + ", ".join(k for k, _ in measured)
        if missing:
            source += f"; {FALLBACK_STARTUP_IMAGES:g} assumed for " + ", ".join(k for k, _ in missing)
    count = images if images is not None else smallest_shard(startup)
    size = auto_shard_size(count, len(entries), slots, startup, config["cka"]["group_size"])
    reason = (
        f"auto: a start-up worth {startup:.0f} images ({source}) is at most {float(OVERHEAD):.0%} of a job of "
        f"{smallest_shard(startup)} images or more, the last round of jobs balanced; {count} images, {len(entries)} models, "
        f"{slots} parallel extract jobs"
    )
    return ShardSizing(size, reason)
