"""Side-by-side benchmark: vitprobe's extract + reduce against the straightforward
alternative a user would write (timm in PyTorch with attention hooks, mean attention
distance in numpy), on the same images, batch size and machine, in alternating runs.

Sides: vitprobe with the reductions inside the compiled forward pass (the default), in
float32 and bfloat16; vitprobe with ``keep_attention`` (raw attention written to disk, then
reduced from it); timm in float32 (the reference a user writes) and under bfloat16 autocast
(for a like-for-like bfloat16 comparison). Each run of each side is its own process (timm and
tensorflow never share one), so peak RSS is per side. Throughput is the steady state: model
loading and compilation are timed separately. Every vitprobe row also records how far its
distances are from the float32 timm reference's on the same images.

On a GPU machine: ``KERAS_BACKEND=jax python benchmarks/bench.py --batch 256 --images 4096
--sides "vitprobe float32" "vitprobe bfloat16" "timm float32" "timm bfloat16 autocast"`` (timm
then runs on CUDA, vitprobe on jax's default device; keep_attention would write 86 GB).
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

import numpy as np

HERE = Path(__file__).resolve().parent

WEIGHTS_SIDE = r"""
import json, sys, torch, timm
from safetensors.torch import save_file
args = json.loads(sys.argv[1])
torch.manual_seed(0)
state = timm.create_model(args["arch"], pretrained=False).state_dict()
for name, value in state.items():  # random weights alone give near-uniform attention: sharpen q and k
    if name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
        value[: 2 * value.shape[0] // 3] *= args["sharpen"]
save_file({k: v.contiguous() for k, v in state.items()}, args["weights"])
print("{}")
"""

VITPROBE_SIDE = r"""
import json, os, resource, sys, time
from pathlib import Path
import numpy as np, pandas as pd
from vitprobe.threads import limit_threads
limit_threads(os.cpu_count())
import keras
from vitprobe.experiment import model_entry
from vitprobe.extraction import build_model, extract
from vitprobe.reduction import reduce
args = json.loads(sys.argv[1]); work = Path(args["work"]); keep = args["keep_attention"]
entry = model_entry("bench", {"arch": args["arch"], "weights": args["weights"]})
t0 = time.perf_counter()
model = build_model(entry, args["precision"])
warm = np.zeros((args["batch"], model.image_size, model.image_size, 3), np.float32)
model.forward(warm) if keep else model.forward_reduced(warm)  # compile
setup = time.perf_counter() - t0
crops = np.load(args["crops"], mmap_mode="r")
manifest = pd.DataFrame({"image_id": [f"img{i:05d}" for i in range(len(crops))], "label": -1})
per_image, maps = str(work / "distance.parquet"), str(work / "maps.npz")
t0 = time.perf_counter()
if keep:
    extract(entry, args["crops"], manifest, str(work / "predictions.parquet"), [], attention_path=str(work / "attention.npy"),
            batch_size=args["batch"], model=model)
    reduce(str(work / "attention.npy"), per_image, maps)
else:
    extract(entry, args["crops"], manifest, str(work / "predictions.parquet"), [], per_image_path=per_image, maps_path=maps,
            batch_size=args["batch"], model=model)
elapsed = time.perf_counter() - t0
written = sum(p.stat().st_size for p in work.iterdir())
table = pd.read_parquet(per_image).sort_values(["image_id", "block", "head"])
np.save(work / "distance.npy", table["distance_px"].to_numpy().reshape(len(crops), -1))
print(json.dumps({"seconds": elapsed, "setup_seconds": setup, "bytes_written": written,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "device": str(keras.ops.convert_to_tensor(0.0).device) if keras.backend.backend() == "jax" else "CPU"}))
"""

TIMM_SIDE = r"""
import contextlib, json, resource, sys, time
from pathlib import Path
import torch
import numpy as np, timm
args = json.loads(sys.argv[1]); work = Path(args["work"])
device = "cuda" if torch.cuda.is_available() else "cpu"
timm.layers.set_fused_attn(False)  # fused attention returns no weights
t0 = time.perf_counter()
model = timm.create_model(args["arch"], pretrained=False)
from safetensors.torch import load_file
model.load_state_dict(load_file(args["weights"]))
model = model.eval().to(device)
captured = []
for block in model.blocks:
    block.attn.attn_drop.register_forward_hook(lambda m, i, o: captured.append(o.float().cpu().numpy()))
size = model.patch_embed.img_size[0]; patch = model.patch_embed.patch_size[0]; grid = size // patch
rows, cols = np.divmod(np.arange(grid * grid), grid)
pixels = (patch * np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])).astype(np.float32)
mean, std = np.array(args["mean"], np.float32), np.array(args["std"], np.float32)  # vitprobe's, for this arch
precision = torch.autocast(device, dtype=torch.bfloat16) if args["precision"] == "bfloat16" else contextlib.nullcontext()
with torch.no_grad(), precision:
    model(torch.zeros(args["batch"], 3, size, size, device=device))
setup = time.perf_counter() - t0
crops = np.load(args["crops"])
distances = []
t0 = time.perf_counter()
with torch.no_grad(), precision:
    for start in range(0, len(crops), args["batch"]):
        x = (crops[start:start + args["batch"]].astype(np.float32) / 255 - mean) / std
        captured.clear()
        model(torch.from_numpy(x).permute(0, 3, 1, 2).to(device))
        # (B, heads, N, N) per block: drop the prefix tokens, weight patch-to-patch by pixel distance
        p = model.num_prefix_tokens
        distances.append(np.stack([(attn[:, :, p:, p:] * pixels).sum(-1).mean(-1) for attn in captured], 1))
elapsed = time.perf_counter() - t0
np.save(work / "distance.npy", np.concatenate(distances).reshape(len(crops), -1))
print(json.dumps({"seconds": elapsed, "setup_seconds": setup, "bytes_written": 0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "device": device}))
"""

# (name, code, settings): the vitprobe sides first, then the timm ones.
SIDES = [
    ("vitprobe float32", VITPROBE_SIDE, {"precision": "float32", "keep_attention": False}),
    ("vitprobe bfloat16", VITPROBE_SIDE, {"precision": "bfloat16", "keep_attention": False}),
    ("vitprobe float32 keep_attention", VITPROBE_SIDE, {"precision": "float32", "keep_attention": True}),
    ("timm float32", TIMM_SIDE, {"precision": "float32"}),
    ("timm bfloat16 autocast", TIMM_SIDE, {"precision": "bfloat16"}),
]
REFERENCE = "timm float32"


def make_crops(count: int, size: int, path: Path) -> None:
    """``count`` real photo crops (the bundled scikit-image photos, repeated)."""
    import io

    from PIL import Image

    from vitprobe.data import sources
    from vitprobe.data.preprocess import Preprocess, crop

    photos = [crop(Image.open(io.BytesIO(r.read())), size, Preprocess()) for r in sources.bundled()]
    np.save(path, np.stack([photos[i % len(photos)] for i in range(count)]))


def run_side(code: str, args: dict) -> dict:
    env = {**os.environ, "VITPROBE_WEIGHTS_LOCK": str(Path(args["work"]) / "weights.lock.json")}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sharpen", type=float, default=4.0, help="query/key scale of the random weights (peaked attention)")
    parser.add_argument("--sides", nargs="*", default=[name for name, _, _ in SIDES], help="which sides to run")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    import keras

    from vitprobe.data.preprocess import default_preprocess
    from vitprobe.models.spec import get_spec

    spec = get_spec(args.arch)
    preprocess = default_preprocess(args.arch)
    sides = [s for s in SIDES if s[0] in args.sides]
    runs = {name: [] for name, _, _ in sides}
    with tempfile.TemporaryDirectory() as tmp:
        crops, weights = Path(tmp) / "crops.npy", Path(tmp) / "weights.safetensors"
        make_crops(args.images, spec.image_size, crops)
        run_side(WEIGHTS_SIDE, {"arch": args.arch, "sharpen": args.sharpen, "weights": str(weights), "work": tmp})
        for i in range(args.runs):  # alternate the sides so drift on a noisy machine hits all of them
            for name, code, settings in sides:
                work = Path(tmp) / f"run{i}_{name.replace(' ', '_')}"
                work.mkdir()
                common = {"arch": args.arch, "batch": args.batch, "crops": str(crops), "weights": str(weights), "work": str(work),
                          "mean": preprocess.mean, "std": preprocess.std}
                result = run_side(code, {**common, **settings})
                result["distance"] = np.load(work / "distance.npy")
                runs[name].append(result)
                print(f"run {i + 1}/{args.runs} {name}: {args.images / result['seconds']:.2f} img/s", file=sys.stderr)

    def median(name, key):
        return statistics.median(r[key] for r in runs[name])

    rate = {name: args.images / median(name, "seconds") for name in runs}
    reference = runs[REFERENCE][0]["distance"] if REFERENCE in runs else None
    rows = []
    for name, _, _ in sides:
        row = {
            "side": name, "model": args.arch, "device": runs[name][0]["device"], "batch_size": args.batch, "images": args.images,
            "runs": args.runs, "img_s": round(rate[name], 2), "peak_rss_mb": round(median(name, "peak_rss_mb")),
            "bytes_written": int(median(name, "bytes_written")), "setup_s": round(median(name, "setup_seconds"), 1),
            "seconds": [round(r["seconds"], 3) for r in runs[name]],
        }
        if REFERENCE in rate:
            row["ratio_to_timm_float32"] = round(rate[name] / rate[REFERENCE], 3)
            row["max_abs_distance_diff_px"] = float(np.abs(runs[name][0]["distance"] - reference).max())
        rows.append(row)
    backend = f"keras {keras.__version__} / {keras.backend.backend()}"
    lines = [
        "| side | device | batch | images | img/s | ratio to timm float32 | max abs distance diff vs timm float32 (px) | peak RSS (MB) | bytes written |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['side']} | {r['device']} | {r['batch_size']} | {r['images']} | {r['img_s']} | {r.get('ratio_to_timm_float32', '')} | "
            f"{r.get('max_abs_distance_diff_px', float('nan')):.2g} | {r['peak_rss_mb']} | {r['bytes_written'] / 2**20:.1f} MiB |"
        )
    table = "\n".join(lines)
    header = (f"{args.arch}, vitprobe on {backend}, {os.cpu_count()} CPU cores; medians of {args.runs} alternating runs; "
              f"the same seeded timm weights (query/key x{args.sharpen:g}) and real photo crops on every side.")
    stem = f"{datetime.date.today()}-{socket.gethostname()}-{platform.machine()}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"backend": backend, "cpu_count": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    (out / f"{stem}.md").write_text(f"{header}\n\n{table}\n")
    print(header, table, sep="\n\n")


if __name__ == "__main__":
    main()
