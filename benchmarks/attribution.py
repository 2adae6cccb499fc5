"""Attribution maps per second: vitprobe's compiled forward-and-backward program against what a
user writes with timm (PyTorch autograd, hooks on ``attn_drop`` keeping each block's attention and
its gradient, then the gradient rollout and GAE in batched torch), on the same weights, batch and
thread count, in alternating runs of separate processes (timm and tensorflow never share one).

Both sides compute ``grad_rollout`` and ``gae`` of the predicted class for every image: one forward
and one backward pass per batch. Throughput is the steady rate after the first batch (which traces
and compiles); the first batch is recorded apart, with peak RSS. The record names the CPU.

Usage: python benchmarks/attribution.py [--arch vit_base_patch16_224] [--depth N] [--images 32] [--batch 8]
       [--runs 3] [--threads 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from record import RECORDS, cpu_info, describe_cpu, record

from vitprobe.models.spec import get_spec

WEIGHTS_SIDE = r"""
import json, sys, torch, timm
from safetensors.torch import save_file
args = json.loads(sys.argv[1])
torch.manual_seed(0)
state = timm.create_model(args["arch"], pretrained=False, **args["spec"]).state_dict()
for name, value in state.items():  # random weights alone give near-uniform attention: sharpen q and k
    if name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
        value[: 2 * value.shape[0] // 3] *= 4.0
save_file({k: v.contiguous() for k, v in state.items()}, args["weights"])
"""

VITPROBE_SIDE = r"""
import json, os, resource, sys, time
from vitprobe.pipeline.threads import limit_threads
args = json.loads(sys.argv[1])
limit_threads(args["threads"])
import numpy as np, vitprobe
model = vitprobe.load_model(args["arch"], weights=args["weights"], **args["spec"])
crops = np.load(args["crops"])
times = []
for start in range(0, args["images"], args["batch"]):
    began = time.perf_counter()
    out = model.attribute(crops[start : start + args["batch"]], methods=("grad_rollout", "gae"), discard_ratio=0.9)
    times.append(time.perf_counter() - began)
maps = {name: out.maps[name].reshape(len(out.maps[name]), -1).tolist() for name in ("grad_rollout", "gae")}
print(json.dumps({"batch_seconds": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "maps": maps}))
"""

TIMM_SIDE = r"""
import json, resource, sys, time
import torch, timm
from safetensors.torch import load_file
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
timm.layers.set_fused_attn(False)  # fused kernels return no attention weights
model = timm.create_model(args["arch"], pretrained=False, **args["spec"]).eval()
model.load_state_dict(load_file(args["weights"]))
kept, grads = [], {}
def keep(index):
    def hook(module, inputs, output):
        kept.append(output)
        output.register_hook(lambda g: grads.__setitem__(index, g))
    return hook
for i, block in enumerate(model.blocks):
    block.attn.attn_drop.register_forward_hook(keep(i))
import numpy as np
crops = torch.from_numpy(np.load(args["crops"])).permute(0, 3, 1, 2)
mean = torch.tensor(model.pretrained_cfg["mean"])[None, :, None, None]
std = torch.tensor(model.pretrained_cfg["std"])[None, :, None, None]
times = []
for start in range(0, args["images"], args["batch"]):
    began = time.perf_counter()
    kept.clear(); grads.clear()
    x = (crops[start : start + args["batch"]].float() / 255 - mean) / std
    logits = model(x)
    score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    model.zero_grad()
    score.backward()
    with torch.no_grad():
        n = kept[0].shape[-1]
        eye = torch.eye(n)
        rollout = eye.expand(len(x), n, n)
        relevance = eye.expand(len(x), n, n)
        for i, attention in enumerate(kept):
            grad = grads[i]
            fused = (attention * grad).mean(1).clamp(min=0)
            patches = fused[:, 1:, 1:].reshape(len(x), -1)
            k = int(patches.shape[-1] * 0.9)
            patches = patches.scatter(1, patches.topk(k, dim=-1, largest=False).indices, 0)
            fused = fused.clone(); fused[:, 1:, 1:] = patches.view(len(x), n - 1, n - 1)
            a = (fused + eye) / 2
            rollout = (a / a.sum(-1, keepdim=True)) @ rollout
            relevance = relevance + (grad * attention).clamp(min=0).mean(1) @ relevance
        maps = {"grad_rollout": rollout[:, 0, 1:].tolist(), "gae": relevance[:, 0, 1:].tolist()}
    times.append(time.perf_counter() - began)
print(json.dumps({"batch_seconds": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "maps": maps}))
"""


def run_side(code: str, args: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"benchmark side failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--depth", type=int, default=None, help="fewer blocks (smoke tests)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(RECORDS))
    args = parser.parse_args()
    if args.images < 2 * args.batch:
        parser.error("--images must hold at least two batches: the first one compiles and is not timed")
    spec = {"depth": args.depth} if args.depth else {}
    cpu = cpu_info()
    with tempfile.TemporaryDirectory() as work:
        weights = str(Path(work) / "weights.safetensors")
        common = {"arch": args.arch, "spec": spec, "weights": weights, "images": args.images, "batch": args.batch}
        common["threads"] = args.threads
        run_side(WEIGHTS_SIDE + "\nprint('{}')", common)
        size = get_spec(args.arch).image_size
        common["crops"] = str(Path(work) / "crops.npy")  # the same pixels for both sides
        np.save(common["crops"], np.random.default_rng(0).integers(0, 256, (args.images, size, size, 3), dtype=np.uint8))
        sides = {"vitprobe": (VITPROBE_SIDE, common), "timm": (TIMM_SIDE, common)}
        results = {name: [] for name in sides}
        for _ in range(args.runs):  # alternating, so drifting load hits both sides alike
            for name, (code, side_args) in sides.items():
                results[name].append(run_side(code, side_args))
    rows = {}
    for name, runs in results.items():
        rates = [(len(r["batch_seconds"]) - 1) * args.batch / sum(r["batch_seconds"][1:]) for r in runs]
        rows[name] = {
            "maps_per_second": statistics.median(rates),
            "runs_maps_per_second": rates,
            "first_batch_seconds": statistics.median(r["batch_seconds"][0] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        }
    ratio = rows["vitprobe"]["maps_per_second"] / rows["timm"]["maps_per_second"]
    # Both sides computed the same maps (the last batch of the last run), as a fraction of each map's maximum.
    difference = {}
    for name in ("grad_rollout", "gae"):
        ours, theirs = (np.asarray(results[side][-1]["maps"][name]) for side in ("vitprobe", "timm"))
        difference[name] = float((np.abs(ours - theirs) / np.abs(theirs).max(axis=1, keepdims=True)).max())
    date = datetime.date.today().isoformat()
    load = os.getloadavg()
    header = (
        f"Attribution maps (grad_rollout + gae, one forward and backward per batch), {args.arch}"
        f"{f' depth {args.depth}' if args.depth else ''}, batch {args.batch}, {args.threads} threads, "
        f"{args.images} images x {args.runs} runs; {describe_cpu(cpu)}; {date}; load average {load[0]:.1f}"
    )
    lines = [header, "", "| side | maps/s (median) | first batch s | peak RSS MB |", "|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['maps_per_second']:.2f} | {row['first_batch_seconds']:.1f} | {row['peak_rss_mb']:.0f} |")
    lines += [
        "",
        f"vitprobe / timm: {ratio:.2f}x; largest map difference between the sides: "
        + ", ".join(f"{name} {value:.1e}" for name, value in difference.items())
        + " of the map's maximum",
    ]
    data = {"date": date, **cpu, "load_average": load, "args": vars(args), "sides": rows, "ratio": ratio}
    data["map_difference"] = difference
    stem = f"{date}-{cpu['cpu_model'].lower().replace(' ', '-').replace('(', '').replace(')', '')[:40]}-{args.arch}-attribution"
    record(args.out, stem, "\n".join(lines), data)


if __name__ == "__main__":
    main()
