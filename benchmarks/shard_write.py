"""Write speed of a kept-attention shard: the self-describing .npz (`vitprobe.shards.ShardWriter`)
against the plain .npy + JSON sidecar it replaced (reproduced below as it was), for a realistic
shard (default: 32 images of ViT-B/16 attention, 12 x 12 x 197 x 197 float32 = 670 MiB).

Each run writes the shard batch by batch as extraction does (batches of 8, per block) and is
timed twice: until the shard is renamed into place (what the extract job waits for; the data is
then in the page cache) and until it is on disk (fsync). Runs alternate between the formats;
medians are recorded with the CPU model and the load average (the machine may be shared).

Usage: python benchmarks/shard_write.py [--images 32] [--runs 5] [--dir .]
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

from vitprobe.atomic import atomic_path
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


def timed(write, path: Path, *args) -> tuple[float, float]:
    """Seconds until the shard is in place, and until it is on disk."""
    start = time.perf_counter()
    write(path, *args)
    written = time.perf_counter() - start
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return written, time.perf_counter() - start


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
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default=".", help="folder on the disk to measure (a temporary folder is made inside)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("shard_write.json")))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    batch = [rng.random((BATCH, HEADS, TOKENS, TOKENS), dtype=np.float32) for _ in range(BLOCKS)]
    batches = [[b[: min(BATCH, args.images - start)] for b in batch] for start in range(0, args.images, BATCH)]
    shape = (args.images, BLOCKS, HEADS, TOKENS, TOKENS)
    info = ShardInfo("vit_b16", "vit_base_patch16_224", [f"image_{k:05d}.jpg" for k in range(args.images)], ("cls",), 14, 16)
    nbytes = int(np.prod(shape)) * 4
    times: dict[str, list[tuple[float, float]]] = {"npy": [], "npz": []}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for _ in range(args.runs):
            for name, write in (("npy", write_npy), ("npz", write_npz)):
                path = Path(folder) / f"shard.{name}"
                times[name].append(timed(write, path, info, batches, shape))
                path.unlink()
                path.with_suffix(".json").unlink(missing_ok=True)

    def summary(name: str) -> dict:
        written = statistics.median(t[0] for t in times[name])
        on_disk = statistics.median(t[1] for t in times[name])
        return {
            "median_written_s": round(written, 3),
            "median_on_disk_s": round(on_disk, 3),
            "written_GBps": round(nbytes / written / 1e9, 3),
            "on_disk_GBps": round(nbytes / on_disk / 1e9, 3),
            "runs_s": [[round(a, 3), round(b, 3)] for a, b in times[name]],
        }

    result = {
        "what": f"{args.images} images of ViT-B/16 attention ({BLOCKS}x{HEADS}x{TOKENS}x{TOKENS} float32), "
        f"{nbytes / 2**20:.0f} MiB, batches of {BATCH}; medians of {args.runs} alternating runs",
        "cpu": cpu(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "npy_plus_json_sidecar": summary("npy"),
        "npz": summary("npz"),
    }
    result["npz_time_over_npy"] = {
        "written": round(result["npz"]["median_written_s"] / result["npy_plus_json_sidecar"]["median_written_s"], 3),
        "on_disk": round(result["npz"]["median_on_disk_s"] / result["npy_plus_json_sidecar"]["median_on_disk_s"], 3),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
