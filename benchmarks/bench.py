"""Side-by-side benchmark: vitprobe's extract + reduce against the straightforward
alternative a user would write (timm in PyTorch with attention hooks, mean attention
distance in numpy), on the same images, batch size and machine, in alternating runs.

Sides: vitprobe with the reductions inside the compiled forward pass (the default), in
float32 and bfloat16, and in float32 with the representation statistics the pipeline also computes
(Gram matrices for CKA, token norms: their cost is the ratio of those two rows); vitprobe with ``keep_attention`` (raw attention written to disk, then
reduced from it); timm in float32 (the reference a user writes) and under bfloat16 autocast
(for a like-for-like bfloat16 comparison). Each run of each side is its own process (timm and
tensorflow never share one), so peak RSS is per side. Throughput is the steady rate after the
first batch, measured as the extract jobs measure it (`vitprobe.pipeline.extract.Progress`);
the start-up (model loading plus the first batch, which traces and compiles) is recorded
apart. Every vitprobe row also records how far its distances are from the float32 timm
reference's on the same images, and every record names the CPU model and its AVX/AMX flags.

On a GPU machine: ``KERAS_BACKEND=jax python benchmarks/bench.py --batch 256 --images 4096
--sides "vitprobe float32" "vitprobe bfloat16" "timm float32" "timm bfloat16 autocast"`` (timm
then runs on CUDA, vitprobe on jax's default device; keep_attention would write 86 GB).
Prints the Markdown table, then writes <out>/<date>-<host>-<machine>.json and .md (--out:
benchmarks/records/ by default).

Usage: python benchmarks/bench.py [--images 48] [--batch 8] [--runs 3] [--arch vit_base_patch16_224] [--depth N] [--out DIR]
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
from record import RECORDS, cpu_info, describe_cpu, record

WEIGHTS_SIDE = r"""
import json, sys, torch, timm
from safetensors.torch import save_file
args = json.loads(sys.argv[1])
torch.manual_seed(0)
state = timm.create_model(args["arch"], pretrained=False, **args["spec"]).state_dict()
for name, value in state.items():  # random weights alone give near-uniform attention: sharpen q and k
    if name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
        value[: 2 * value.shape[0] // 3] *= args["sharpen"]
save_file({k: v.contiguous() for k, v in state.items()}, args["weights"])
print("{}")
"""

VITPROBE_SIDE = r"""
import json, os, resource, sys, time
from pathlib import Path
import pandas as pd
from vitprobe.pipeline.threads import limit_threads
limit_threads(os.cpu_count())
import keras, numpy as np
from vitprobe.pipeline.config import validated_entries
from vitprobe.pipeline.extract import Progress, extract_attention, extract_reduced
from vitprobe.pipeline.model import build_model
from vitprobe.pipeline.reduce import reduce
args = json.loads(sys.argv[1]); work = Path(args["work"]); keep = args["keep_attention"]
entry = validated_entries({"bench": {"arch": args["arch"], "weights": args["weights"], "spec": args["spec"]}})["bench"]
settings = entry.settings
loading = time.perf_counter()
model = build_model(entry, args["precision"])
rows = pd.DataFrame({"image_id": [f"img{i:05d}" for i in range(args["images"])], "label": -1})
# The pipeline's own stage functions and progress: the same start-up and steady rate as an extract job's log.
progress = Progress(len(rows), args["side"], time.perf_counter() - loading)
per_image, maps = str(work / "distance.parquet"), str(work / "maps.npz")
common = dict(batch_size=args["batch"], progress=progress)
reduce_seconds = 0.0
if keep:
    extract_attention(entry, model, args["crops"], rows, [], str(work / "predictions.parquet"), str(work / "attention.npz"),
                      str(work / "representations.npz"), dtype="float32", **common)
    start = time.perf_counter()
    rows.to_parquet(work / "manifest.parquet")  # the reduce stage checks the shard's image ids against it
    reduce(str(work / "attention.npz"), str(work / "manifest.parquet"), "bench", settings, 0, len(rows), per_image, maps)
    reduce_seconds = time.perf_counter() - start
else:
    extract_reduced(entry, model, args["crops"], rows, [], str(work / "predictions.parquet"), per_image, maps,
                    str(work / "representations.npz") if args["group_size"] else None, analysis={},
                    group_size=args["group_size"], **common)
written = sum(p.stat().st_size for p in work.iterdir())
table = pd.read_parquet(per_image).sort_values(["image_id", "block", "head"])
np.save(work / "distance.npy", table["distance_px"].to_numpy().reshape(len(rows), -1))
print(json.dumps({"steady_images": progress.steady_images, "steady_seconds": progress.steady_seconds,
                  "startup_seconds": progress.startup_seconds, "reduce_seconds": reduce_seconds, "bytes_written": written,
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
start = time.perf_counter()
model = timm.create_model(args["arch"], pretrained=False, **args["spec"])
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
crops = np.load(args["crops"])
distances = []
with torch.no_grad(), precision:
    for start_image in range(0, len(crops), args["batch"]):
        x = (crops[start_image:start_image + args["batch"]].astype(np.float32) / 255 - mean) / std
        captured.clear()
        model(torch.from_numpy(x).permute(0, 3, 1, 2).to(device))
        # (B, heads, N, N) per block: drop the prefix tokens, weight patch-to-patch by pixel distance
        p = model.num_prefix_tokens
        distances.append(np.stack([(attn[:, :, p:, p:] * pixels).sum(-1).mean(-1) for attn in captured], 1))
        if start_image == 0:  # start-up ends with the first batch, as in vitprobe's Progress
            first_batch_end = time.perf_counter()
end = time.perf_counter()
np.save(work / "distance.npy", np.concatenate(distances).reshape(len(crops), -1))
print(json.dumps({"steady_images": len(crops) - len(distances[0]), "steady_seconds": end - first_batch_end,
                  "startup_seconds": first_batch_end - start, "reduce_seconds": 0.0, "bytes_written": 0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "device": device}))
"""

# (name, code, settings): the vitprobe sides first, then the timm ones. "vitprobe float32" computes the
# attention reductions alone; "+ representations" adds what the pipeline's extract jobs also compute
# (token norms, Gram matrices of groups of 8 images for CKA), so their ratio is those statistics' cost.
SIDES = [
    ("vitprobe float32", VITPROBE_SIDE, {"precision": "float32", "keep_attention": False}),
    ("vitprobe float32 + representations", VITPROBE_SIDE, {"precision": "float32", "keep_attention": False, "group_size": 8}),
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
    parser.add_argument("--depth", type=int, default=None, help="blocks (default: the arch's; fewer for a quick check)")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sharpen", type=float, default=4.0, help="query/key scale of the random weights (peaked attention)")
    parser.add_argument("--sides", nargs="*", default=[name for name, _, _ in SIDES], help="which sides to run")
    parser.add_argument("--out", default=str(RECORDS), help="folder for <date>-<host>-<machine>.json and .md (created)")
    args = parser.parse_args()
    if args.images <= args.batch:
        parser.error(f"--images {args.images} must exceed --batch {args.batch}: the rate is measured after the first batch")
    import keras

    from vitprobe.data.preprocess import default_preprocess
    from vitprobe.models.spec import get_spec

    spec_overrides = {"depth": args.depth} if args.depth else {}
    spec = get_spec(args.arch, **spec_overrides)
    preprocess = default_preprocess(args.arch)
    sides = [s for s in SIDES if s[0] in args.sides]
    runs = {name: [] for name, _, _ in sides}
    with tempfile.TemporaryDirectory() as tmp:
        crops, weights = Path(tmp) / "crops.npy", Path(tmp) / "weights.safetensors"
        make_crops(args.images, spec.image_size, crops)
        run_side(
            WEIGHTS_SIDE,
            {"arch": args.arch, "spec": spec_overrides, "sharpen": args.sharpen, "weights": str(weights), "work": tmp},
        )
        for i in range(args.runs):  # alternate the sides so drift on a noisy machine hits all of them
            for name, code, settings in sides:
                work = Path(tmp) / f"run{i}_{name.replace(' ', '_')}"
                work.mkdir()
                common = {
                    "side": name,
                    "arch": args.arch,
                    "spec": spec_overrides,
                    "images": args.images,
                    "batch": args.batch,
                    "crops": str(crops),
                    "weights": str(weights),
                    "work": str(work),
                    "mean": preprocess.mean,
                    "std": preprocess.std,
                }
                result = run_side(code, {"group_size": None, **common, **settings})
                result["distance"] = np.load(work / "distance.npy")
                # Steady seconds per image of the extraction, plus (keep_attention) the reduce stage's per image.
                per_image = result["steady_seconds"] / result["steady_images"] + result["reduce_seconds"] / args.images
                result["img_s"] = 1 / per_image
                runs[name].append(result)
                print(f"run {i + 1}/{args.runs} {name}: {result['img_s']:.2f} img/s after the first batch", file=sys.stderr)

    def median(name, key):
        return statistics.median(r[key] for r in runs[name])

    rate = {name: median(name, "img_s") for name in runs}
    reference = runs[REFERENCE][0]["distance"] if REFERENCE in runs else None
    cpu = cpu_info()
    rows = []
    for name, _, settings in sides:
        row = {
            "side": name,
            "model": args.arch,
            "depth": spec.depth,
            "device": runs[name][0]["device"],
            "batch_size": args.batch,
            "images": args.images,
            "runs": args.runs,
            "img_s": round(rate[name], 2),
            "peak_rss_mb": round(median(name, "peak_rss_mb")),
            "bytes_written": int(median(name, "bytes_written")),
            "startup_s": round(median(name, "startup_seconds"), 2),
            "steady_images": runs[name][0]["steady_images"],
            "img_s_by_run": [round(r["img_s"], 3) for r in runs[name]],
        }
        if settings.get("keep_attention"):
            row["reduce_s"] = round(median(name, "reduce_seconds"), 2)
        if REFERENCE in rate:
            row["ratio_to_timm_float32"] = round(rate[name] / rate[REFERENCE], 3)
            row["max_abs_distance_diff_px"] = float(np.abs(runs[name][0]["distance"] - reference).max())
        rows.append(row)
    backend = f"keras {keras.__version__} / {keras.backend.backend()}"
    lines = [
        (
            "| side | device | batch | images | img/s | ratio to timm float32 | max abs distance diff vs timm float32 (px) "
            "| start-up (s) | peak RSS (MB) | bytes written |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['side']} | {r['device']} | {r['batch_size']} | {r['images']} | {r['img_s']} | {r.get('ratio_to_timm_float32', '')} | "
            f"{r.get('max_abs_distance_diff_px', float('nan')):.2g} | {r['startup_s']} | {r['peak_rss_mb']} | {r['bytes_written'] / 2**20:.1f} MiB |"
        )
    depth = f" at depth {spec.depth}" if args.depth else ""
    header = (
        f"{args.arch}{depth}, vitprobe on {backend}, CPU: {describe_cpu(cpu)}; medians of {args.runs} alternating runs; "
        f"the same seeded timm weights (query/key x{args.sharpen:g}) and real photo crops on every side. "
        f"img/s is the steady rate after the first batch ({args.images - args.batch} of {args.images} images), as the extract "
        "jobs' logs report it; start-up is model loading plus the first batch (tracing and compiling). "
        "keep_attention's img/s adds the reduce stage's seconds per image."
    )
    statistics_cost = ""
    if {"vitprobe float32", "vitprobe float32 + representations"} <= rate.keys():
        cost = 1 - rate["vitprobe float32 + representations"] / rate["vitprobe float32"]
        statistics_cost = (
            f" The representation statistics (CKA Gram matrices, token norms) cost {100 * cost:.1f}% of the float32 rate."
        )
    header += statistics_cost
    stem = f"{datetime.date.today()}-{socket.gethostname()}-{platform.machine()}"
    data = {"backend": backend, **cpu, "rate": "steady, after the first batch", "rows": rows}
    record(args.out, stem, f"{header}\n\n" + "\n".join(lines) + "\n", data)


if __name__ == "__main__":
    main()
