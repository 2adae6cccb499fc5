"""Write speed of a kept-attention shard: the self-describing .npz (`vitprobe.shards.ShardWriter`)
against the plain .npy + JSON sidecar it replaced (reproduced below as it was), for a realistic
shard (default: 32 images of ViT-B/16 attention, 12 x 12 x 197 x 197 float32 = 670 MiB).

Each run writes the shard batch by batch as extraction does (batches of 8, per block) and is
timed twice: until the shard is renamed into place ("written": what the extract job waits for;
the data is then in the page cache) and until it is on disk (fsync); the CPU time of the write
(user + system, all threads) is recorded too. The machine may be shared with other jobs, so the
formats are measured in pairs, one right after the other, alternating which goes first; the
record holds medians, the ratio of the medians and the median of the per-pair ratios (robust
to the load changing during the runs), the CPU model and flags, and the load average.

Usage: python benchmarks/shard_write.py [--images 32] [--runs 15] [--dir .] [--out benchmarks/records/shard_write.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from record import RECORDS

from vitprobe.atomic import atomic_path, write_text
from vitprobe.shards import ShardInfo, ShardWriter

BLOCKS, HEADS, TOKENS, BATCH = 12, 12, 197, 8


def write_npy(path: Path, info: ShardInfo, batches: list[list[np.ndarray]], shape: tuple) -> None:
    """The previous format: an .npy header, the images written sequentially, a JSON sidecar."""
    with atomic_path(path) as tmp, atomic_path(path.with_suffix(".json")) as sidecar, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        for blocks in batches:
            for i in range(len(blocks[0])):
                for block in blocks:
                    f.write(np.ascontiguousarray(block[i], dtype=np.float32).data)
        sidecar.write_text(json.dumps({"model": info.model, "image_ids": info.image_ids}))


def write_npz(path: Path, info: ShardInfo, batches: list[list[np.ndarray]], shape: tuple) -> None:
    with ShardWriter(path, info, shape[1:], "float32") as writer:
        for blocks in batches:
            writer.write_blocks(blocks)


def timed(write, path: Path, *args) -> dict[str, float]:
    """Seconds until the shard is in place and until it is on disk, and the CPU seconds of the write."""
    cpu_start, start = time.process_time(), time.perf_counter()
    write(path, *args)
    written, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"written": written, "on_disk": time.perf_counter() - start, "cpu": cpu_seconds}


def cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), platform.processor()
    )
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "amx_tile", "pclmulqdq", "vpclmulqdq")
    return {"model": model, "flags": [f for f in wanted if f in flags], "cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--runs", type=int, default=15, help="pairs of runs (one per format)")
    parser.add_argument("--dir", default=".", help="folder on the disk to measure (a temporary folder is made inside)")
    parser.add_argument("--out", default=str(RECORDS / "shard_write.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    batch = [rng.random((BATCH, HEADS, TOKENS, TOKENS), dtype=np.float32) for _ in range(BLOCKS)]
    batches = [[b[: min(BATCH, args.images - start)] for b in batch] for start in range(0, args.images, BATCH)]
    shape = (args.images, BLOCKS, HEADS, TOKENS, TOKENS)
    info = ShardInfo("vit_b16", "vit_base_patch16_224", [f"image_{k:05d}.jpg" for k in range(args.images)], ("cls",), 14, 16)
    nbytes = int(np.prod(shape)) * 4
    writers = {"npy": write_npy, "npz": write_npz}
    times: dict[str, list[dict[str, float]]] = {"npy": [], "npz": []}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for run in range(args.runs):
            for name in ("npy", "npz") if run % 2 == 0 else ("npz", "npy"):
                path = Path(folder) / f"shard.{name}"
                times[name].append(timed(writers[name], path, info, batches, shape))
                path.unlink()
                path.with_suffix(".json").unlink(missing_ok=True)

    def median(name: str, what: str) -> float:
        return statistics.median(t[what] for t in times[name])

    def summary(name: str) -> dict:
        return {
            "median_written_s": round(median(name, "written"), 3),
            "median_on_disk_s": round(median(name, "on_disk"), 3),
            "median_cpu_s": round(median(name, "cpu"), 3),
            "written_GBps": round(nbytes / median(name, "written") / 1e9, 3),
            "on_disk_GBps": round(nbytes / median(name, "on_disk") / 1e9, 3),
            "runs_written_on_disk_cpu_s": [[round(t[w], 3) for w in ("written", "on_disk", "cpu")] for t in times[name]],
        }

    measures = ("written", "on_disk", "cpu")
    result = {
        "what": f"{args.images} images of ViT-B/16 attention ({BLOCKS}x{HEADS}x{TOKENS}x{TOKENS} float32), "
        f"{nbytes / 2**20:.0f} MiB, batches of {BATCH}; {args.runs} pairs of runs, alternating which format goes first",
        "cpu": cpu(),
        "load_average_1_5_15min_before_after": [[round(x, 2) for x in load] for load in (load_before, os.getloadavg())],
        "npy_plus_json_sidecar": summary("npy"),
        "npz": summary("npz"),
        "npz_over_npy_ratio_of_medians": {w: round(median("npz", w) / median("npy", w), 3) for w in measures},
        "npz_over_npy_median_of_paired_ratios": {
            w: round(statistics.median(z[w] / y[w] for y, z in zip(times["npy"], times["npz"])), 3) for w in measures
        },
    }
    print(json.dumps(result, indent=2))
    write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
