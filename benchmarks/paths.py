"""Every compiled path of the extract program on this machine, against the matmul ceiling and timm.

Candidates (`vitprobe.pipeline.calibration.CANDIDATES`): TensorFlow's tf.function graph, TensorFlow
with XLA, the jax backend (jit) and the torch backend (eager), each timed on the real extract
program (`ProbeModel.forward_reduced`: the model and every reduction, seeded random weights) in
its own process, in float32 and, where the CPU multiplies bfloat16 natively, bfloat16. Beside
them, in their own processes and alternating with the candidates: timm in float32 with the
attention hooked out and the mean attention distance in numpy (what a user would write; torch
is imported first and tensorflow never), and the matmul ceiling: the best GFLOP/s of a
ViT-sized float32 matmul in PyTorch and in TensorFlow at the same thread count, converted to
img/s with the model's FLOPs (an upper bound: softmax, norms and GELU are not counted).

The float32 record is also stored as this machine's calibration, which the extract jobs read
to pick their compile mode (``extract.compile: auto``; ``--no-save`` skips this).

Writes benchmarks/records/<date>-<cpu model>-<flags hash>-<arch>-b<batch>-t<threads>-paths.json and .md (printing the
table first).

Usage: python benchmarks/paths.py [--arch vit_base_patch16_224] [--batch 8] [--threads 1] [--runs 3] [--depth N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from record import RECORDS

from vitprobe.atomic import write_text
from vitprobe.hardware import cpu_flags, cpu_model, machine_key, native_bfloat16
from vitprobe.models.spec import ViTSpec, get_spec
from vitprobe.pipeline.calibration import CANDIDATES, measure, record_path, save

SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")

TIMM_SIDE = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import torch  # first: tensorflow is never imported here
torch.set_num_threads(args["threads"])
import numpy as np, timm
timm.layers.set_fused_attn(False)  # fused attention returns no weights
torch.manual_seed(0)
model = timm.create_model(args["arch"], pretrained=False, **args["overrides"]).eval()
captured = []
for block in model.blocks:
    block.attn.attn_drop.register_forward_hook(lambda m, i, o: captured.append(o.numpy()))
size = model.patch_embed.img_size[0]; patch = model.patch_embed.patch_size[0]; grid = size // patch; p = model.num_prefix_tokens
rows, cols = np.divmod(np.arange(grid * grid), grid)
pixels = (patch * np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])).astype(np.float32)
x = torch.from_numpy(np.random.default_rng(0).normal(size=(args["batch"], 3, size, size)).astype(np.float32))
def batch():
    captured.clear()
    logits = model(x)
    return logits, np.stack([(a[:, :, p:, p:] * pixels).sum(-1).mean(-1) for a in captured], 1)
seconds = []
with torch.no_grad():
    batch()
    for _ in range(args["batches"]):
        t = time.perf_counter(); batch(); seconds.append(time.perf_counter() - t)
print(json.dumps({"seconds_per_batch": seconds}))
"""

MATMUL_SIDE = r"""
import json, os, sys, time
args = json.loads(sys.argv[1])
m, k, n = args["shape"]
if args["library"] == "torch":
    import torch
    torch.set_num_threads(args["threads"])
    a, b = torch.randn(m, k), torch.randn(k, n)
    run = lambda: torch.matmul(a, b)
else:
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[var] = str(args["threads"])
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    import tensorflow as tf
    a, b = tf.random.normal((m, k)), tf.random.normal((k, n))
    f = tf.function(tf.matmul)
    run = lambda: f(a, b).numpy()
run()
best = 0.0
for _ in range(args["repeats"]):
    t = time.perf_counter()
    for _ in range(5):
        run()
    best = max(best, 5 * 2 * m * k * n / (time.perf_counter() - t) / 1e9)
print(json.dumps({"gflop_s": best}))
"""


def macs_per_image(spec: ViTSpec) -> int:
    """Multiply-accumulates of one forward pass: patch embedding, per block the four projections
    on every token and the two attention products, and the classifier head."""
    d, n = spec.embed_dim, spec.num_tokens
    block = n * (4 * d * d + 2 * d * spec.mlp_dim) + 2 * n * n * d
    return spec.num_patches * spec.patch_size**2 * 3 * d + spec.depth * block + d * spec.num_classes


def run_child(code: str, args: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| path | precision | img/s | ratio to best | ratio to timm float32 | ratio to matmul ceiling | compile (s) | img/s per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:

        def cell(key, r=r):
            return "" if r.get(key) is None else f"{r[key]:.3f}"

        rate = "failed" if r["img_s"] is None else f"{r['img_s']:.2f}"
        runs = ", ".join(f"{x:.2f}" for x in r.get("img_s_runs", []))
        compile_s = "" if r.get("compile_s") is None else f"{r['compile_s']:.1f}"
        lines.append(
            f"| {r['path']} | {r['precision']} | {rate} | {cell('ratio_to_best')} | {cell('ratio_to_timm_float32')} | "
            f"{cell('ratio_to_ceiling')} | {compile_s} | {runs} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="threads per process (an extract job's extract.threads)")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of every side")
    parser.add_argument("--batches", type=int, default=3, help="timed batches per run, after a warm-up batch")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["float32", "bfloat16"],
        help="default: float32, and bfloat16 where the CPU has native bfloat16",
    )
    parser.add_argument("--candidates", nargs="+", default=[f"{b}:{m}" for b, m in CANDIDATES], help="backend:mode pairs")
    parser.add_argument("--no-save", action="store_true", help="do not store the record as this machine's calibration")
    parser.add_argument("--depth", type=int, default=None, help="blocks (default: the arch's); for a quick check")
    parser.add_argument("--out", default=str(RECORDS))
    args = parser.parse_args()
    precisions = args.precisions or ["float32"] + (["bfloat16"] if native_bfloat16() else [])
    overrides = {"depth": args.depth} if args.depth else {}
    spec = get_spec(args.arch, **overrides)
    macs = macs_per_image(spec)
    common = {"arch": args.arch, "overrides": overrides, "batch": args.batch, "threads": args.threads, "batches": args.batches}
    timm_runs, ceiling_runs = [], []

    def other_sides(repeat: int) -> None:  # alternates with the candidates
        timm = run_child(TIMM_SIDE, common)
        timm_runs.append(args.batch / statistics.median(timm["seconds_per_batch"]))
        shape = (args.batch * spec.num_tokens, spec.embed_dim, spec.mlp_dim)  # fc1 of one batch
        best = max(
            run_child(MATMUL_SIDE, {"library": lib, "shape": shape, "threads": args.threads, "repeats": 3})["gflop_s"]
            for lib in ("torch", "tensorflow")
        )
        ceiling_runs.append(best)
        print(f"run {repeat + 1}/{args.runs} timm float32: {timm_runs[-1]:.2f} img/s; matmul {best:.0f} GFLOP/s", file=sys.stderr)

    record = measure(
        args.arch,
        args.batch,
        args.threads,
        precisions=precisions,
        repeats=args.runs,
        batches=args.batches,
        candidates=[tuple(c.split(":", 1)) for c in args.candidates],
        spec_overrides=overrides,
        after_repeat=other_sides,
    )
    timm_img_s = statistics.median(timm_runs)
    gflop_s = statistics.median(ceiling_runs)
    ceiling_img_s = gflop_s * 1e9 / (2 * macs)
    ceiling_img_s_runs = [g * 1e9 / (2 * macs) for g in ceiling_runs]

    def ratio(runs: list[float] | None, reference: list[float]) -> float | None:
        """The median of the per-round ratios: each round's sides ran at about the same load."""
        return statistics.median(a / b for a, b in zip(runs, reference)) if runs else None

    rows = []
    for c in record["candidates"]:
        runs = c.get("img_s_runs")
        best = max(
            (o for o in record["candidates"] if o["precision"] == c["precision"] and o["img_s"]),
            key=lambda o: o["img_s"],
            default=None,
        )
        rows.append(
            {
                **c,
                "path": f"{c['backend']} {c['compile']}",
                "ratio_to_best": ratio(runs, best["img_s_runs"]) if best else None,
                "ratio_to_timm_float32": ratio(runs, timm_runs),
                "ratio_to_ceiling": ratio(runs, ceiling_img_s_runs),
            }
        )
    rows.append(
        {
            "path": "timm float32 (PyTorch, hooks, numpy distance)",
            "precision": "float32",
            "img_s": timm_img_s,
            "img_s_runs": timm_runs,
            "ratio_to_timm_float32": 1.0,
            "ratio_to_ceiling": ratio(timm_runs, ceiling_img_s_runs),
        }
    )
    rows.append(
        {
            "path": f"matmul ceiling ({gflop_s:.0f} GFLOP/s float32, {2 * macs / 1e9:.1f} GFLOP/image)",
            "precision": "float32",
            "img_s": ceiling_img_s,
            "img_s_runs": ceiling_img_s_runs,
            "ratio_to_ceiling": 1.0,
        }
    )
    flags = cpu_flags()
    header = (
        f"{args.arch}{f' at depth {args.depth}' if args.depth else ''}, batch {args.batch}, "
        f"{args.threads} thread(s) per process; {cpu_model()} "
        f"({', '.join(f for f in SHOWN_FLAGS if f in flags) or 'flags unknown'}; {os.cpu_count()} cores); "
        f"medians of {args.runs} alternating runs of {args.batches} batches after a warm-up, each side in its own process "
        "(ratios: medians of the per-round ratios); "
        f"1-minute load average {', '.join(map(str, record['load_average_1min']))} (before, and after each round)."
    )
    text = f"{header}\n\n{table(rows)}\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    depth = f"-d{args.depth}" if args.depth else ""
    stem = f"{datetime.date.today()}-{machine_key()}-{args.arch}{depth}-b{args.batch}-t{args.threads}-paths"
    result = {
        **{k: v for k, v in record.items() if k != "candidates"},
        "cpu_count": os.cpu_count(),
        "macs_per_image": macs,
        "matmul_gflop_s": gflop_s,
        "matmul_gflop_s_runs": ceiling_runs,
        "rows": rows,
    }
    write_text(out / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    write_text(out / f"{stem}.md", text)
    if not args.no_save:
        path = record_path(args.arch, args.batch, args.threads, overrides)
        save(record, path)
        print(f"calibration stored: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
