"""Side-by-side benchmark: vitprobe's extract + reduce against the straightforward
alternative a user would write (timm in PyTorch with attention hooks, mean attention
distance in numpy), on the same images, batch size and machine, in alternating runs.

Each run is its own process (timm and tensorflow never share one), so peak RSS is per side.
Throughput counts the steady state: model loading and compilation are timed separately.
Writes benchmarks/<date>-<machine>.json and .md and prints the Markdown table.

Usage: python benchmarks/bench.py [--images 48] [--batch 8] [--runs 3] [--arch vit_base_patch16_224]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

VITPROBE_SIDE = r"""
import json, os, resource, sys, time
from pathlib import Path
import numpy as np, pandas as pd
from vitprobe.threads import limit_threads
limit_threads(os.cpu_count())
from vitprobe.experiment import model_entry
from vitprobe.extraction import build_model, extract
from vitprobe.analysis import reduce
args = json.loads(sys.argv[1]); work = Path(args["work"])
entry = model_entry("bench", {"arch": args["arch"], "weights": "random"})
t0 = time.perf_counter()
model = build_model(entry)
model.forward(np.zeros((args["batch"], model.image_size, model.image_size, 3), np.float32))  # compile
setup = time.perf_counter() - t0
crops = np.load(args["crops"], mmap_mode="r")
manifest = pd.DataFrame({"image_id": [f"img{i}" for i in range(len(crops))], "label": -1})
t0 = time.perf_counter()
extract(entry, args["crops"], manifest, str(work / "attention.npy"), str(work / "predictions.parquet"), [],
        batch_size=args["batch"], model=model)
reduce(str(work / "attention.npy"), str(work / "distance.parquet"), str(work / "maps.npz"), [])
elapsed = time.perf_counter() - t0
written = sum(p.stat().st_size for p in work.iterdir())
print(json.dumps({"seconds": elapsed, "setup_seconds": setup, "bytes_written": written,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

TIMM_SIDE = r"""
import json, resource, sys, time
import torch
import numpy as np, timm
args = json.loads(sys.argv[1])
timm.layers.set_fused_attn(False)  # fused attention returns no weights
t0 = time.perf_counter()
model = timm.create_model(args["arch"], pretrained=False).eval()
captured = []
for block in model.blocks:
    block.attn.attn_drop.register_forward_hook(lambda m, i, o: captured.append(o.numpy()))
size = model.patch_embed.img_size[0]; patch = model.patch_embed.patch_size[0]; grid = size // patch
rows, cols = np.divmod(np.arange(grid * grid), grid)
pixels = (patch * np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])).astype(np.float32)
mean = np.array([0.5, 0.5, 0.5], np.float32); std = mean
with torch.no_grad():
    model(torch.zeros(args["batch"], 3, size, size))
setup = time.perf_counter() - t0
crops = np.load(args["crops"])
distances = []
t0 = time.perf_counter()
with torch.no_grad():
    for start in range(0, len(crops), args["batch"]):
        x = (crops[start:start + args["batch"]].astype(np.float32) / 255 - mean) / std
        captured.clear()
        model(torch.from_numpy(x).permute(0, 3, 1, 2))
        for attn in captured:  # (B, heads, N, N): drop CLS, weight patch-to-patch by pixel distance
            distances.append(((attn[:, :, 1:, 1:] * pixels).sum(-1).mean(-1)))
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "setup_seconds": setup, "bytes_written": 0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_crops(count: int, size: int, path: Path) -> None:
    """``count`` real photo crops (the bundled scikit-image photos, repeated)."""
    import io

    import numpy as np
    from PIL import Image

    from vitprobe.data import sources
    from vitprobe.data.preprocess import Preprocess, crop

    photos = [crop(Image.open(io.BytesIO(r.read())), size, Preprocess()) for r in sources.bundled()]
    np.save(path, np.stack([photos[i % len(photos)] for i in range(count)]))


def run_side(code: str, args: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    import keras

    from vitprobe.models.spec import get_spec

    spec = get_spec(args.arch)
    runs = {"vitprobe": [], "timm": []}
    with tempfile.TemporaryDirectory() as tmp:
        crops = Path(tmp) / "crops.npy"
        make_crops(args.images, spec.image_size, crops)
        for i in range(args.runs):  # alternate A/B so drift on a noisy machine hits both sides
            work = Path(tmp) / f"run{i}"
            work.mkdir()
            common = {"arch": args.arch, "batch": args.batch, "crops": str(crops), "work": str(work)}
            runs["vitprobe"].append(run_side(VITPROBE_SIDE, common))
            runs["timm"].append(run_side(TIMM_SIDE, common))
            print(f"run {i + 1}/{args.runs}: vitprobe {args.images / runs['vitprobe'][-1]['seconds']:.2f} img/s, "
                  f"timm {args.images / runs['timm'][-1]['seconds']:.2f} img/s", file=sys.stderr)

    def median(side, key):
        return statistics.median(r[key] for r in runs[side])

    rate = {side: args.images / median(side, "seconds") for side in runs}
    row = {
        "model": args.arch, "backend": f"keras {keras.__version__} / {keras.backend.backend()}",
        "device": f"CPU ({os.cpu_count()} cores)", "batch_size": args.batch, "images": args.images,
        "runs": args.runs, "vitprobe_img_s": round(rate["vitprobe"], 2), "timm_img_s": round(rate["timm"], 2),
        "ratio": round(rate["vitprobe"] / rate["timm"], 3),
        "vitprobe_peak_rss_mb": round(median("vitprobe", "peak_rss_mb")), "timm_peak_rss_mb": round(median("timm", "peak_rss_mb")),
        "vitprobe_bytes_written": int(median("vitprobe", "bytes_written")), "timm_bytes_written": 0,
        "vitprobe_setup_s": round(median("vitprobe", "setup_seconds"), 1), "timm_setup_s": round(median("timm", "setup_seconds"), 1),
    }
    table = "\n".join([
        "| model | backend | device | batch | images | vitprobe img/s | timm img/s | ratio | peak RSS vitprobe / timm (MB) | bytes written (vitprobe) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {row['model']} | {row['backend']} | {row['device']} | {row['batch_size']} | {row['images']} | "
        f"{row['vitprobe_img_s']} | {row['timm_img_s']} | {row['ratio']} | {row['vitprobe_peak_rss_mb']} / {row['timm_peak_rss_mb']} | "
        f"{row['vitprobe_bytes_written'] / 2**20:.0f} MiB |",
    ])
    stem = f"{datetime.date.today()}-{socket.gethostname()}-{platform.machine()}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"summary": row, "runs": runs}, indent=2) + "\n")
    (out / f"{stem}.md").write_text(f"Medians of {args.runs} alternating runs.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
