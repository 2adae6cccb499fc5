"""Where the time of one extract batch goes, part by part, against the float32 matmul ceiling.

Times, in this process (its Keras backend, each part compiled as the extract program is), on
one batch of seeded random inputs at the model's shapes:

- the whole extract program (`ProbeModel.forward_reduced` on normalised images: the model, every
  attention reduction and the token norms);
- the model alone (the forward pass to the pooled features: the attention is computed, since the
  blocks need it, but not reduced); the reductions' cost in the program is the difference;
- the projections as the blocks run them (qkv with its reshapes, proj, and the MLP with its
  bias and activation: the model's own layers), every block;
- the attention core: q k^T, softmax, attention x v, every block;
- the LayerNorms: two per block and the final one (the model's own);
- the matmul ceiling: the GFLOP/s of fc1- and fc2-sized float32 matmuls, applied to the
  projections' FLOPs and to all of the model's (as `make bench-paths` does).

The floor it reports is the whole program with its projections at the ceiling and everything
else as measured: the best ratio to the ceiling that speeding up the matmuls alone could reach.
Writes benchmarks/records/<date>-<cpu model>-<flags hash>-<arch>-b<batch>-t<threads>-breakdown.{json,md}.

Usage: python benchmarks/breakdown.py [--arch vit_base_patch16_224] [--batch 8] [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

from record import RECORDS

from vitprobe.pipeline.threads import limit_threads

WHOLE = "whole extract program (forward_reduced)"
MODEL = "model alone (to the pooled features; attention computed, not reduced)"
PROJECTIONS = "projections (qkv, proj, MLP with its bias and activation)"
MATMUL_PAIRS = 4


def seconds(run, repeats: int) -> float:
    """Median wall seconds of ``run()`` after one warm-up call (which traces and compiles)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--depth", type=int, default=None, help="blocks (default: the arch's); for a quick check")
    parser.add_argument("--out", default=str(RECORDS))
    args = parser.parse_args()
    limit_threads(args.threads)

    import keras
    import numpy as np
    from keras import ops
    from paths import macs_per_image
    from record import cpu_info, describe_cpu, record

    from vitprobe.api import load_model
    from vitprobe.compiled import compile_for_backend
    from vitprobe.data.preprocess import normalize
    from vitprobe.hardware import machine_key

    model = load_model(args.arch, **({"depth": args.depth} if args.depth else {}))
    vit, spec = model.keras_model, model.spec
    b, n, d, h = args.batch, spec.num_tokens, spec.embed_dim, spec.num_heads
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(b, model.image_size, model.image_size, 3), dtype=np.uint8)
    images = normalize(crops, model.preprocessing)  # normalised once, outside the timings
    tokens = rng.normal(size=(b, n, d)).astype(np.float32)
    heads = rng.normal(size=(b, h, n, spec.head_dim)).astype(np.float32)

    class Part(keras.Model):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn
            compile_for_backend(self)

        def call(self, x):
            # One number per output, so that copying outputs to the host costs nothing.
            return ops.stack([ops.sum(y) for y in keras.tree.flatten(self.fn(x))])

    def projections(x):
        out = []
        for block in vit.blocks:  # each block's own weights: nothing to merge between blocks
            out += [*block._project_qkv(x, n), block.proj(x), block.mlp(x)]
        return out

    def attention_core(x):  # chained: each block's input is the previous output, as in the model
        for _ in vit.blocks:
            x = ops.matmul(ops.softmax(ops.matmul(x, ops.transpose(x, (0, 1, 3, 2))), axis=-1), x)
        return x

    def norms(x):  # chained, so that no two norms share their mean and variance
        for norm in [norm for block in vit.blocks for norm in (block.norm1, block.norm2)] + ([vit.norm] if vit.norm else []):
            x = norm(x)
        return x

    def model_alone(x):
        return vit(x)["features"]

    parts = {
        MODEL: (model_alone, images),
        PROJECTIONS: (projections, tokens),
        "attention core (q k^T, softmax, attention x v)": (attention_core, heads),
        "LayerNorms": (norms, tokens),
    }
    ms = {WHOLE: 1e3 * seconds(lambda: model.forward_reduced(images), args.repeats)}
    for name, (fn, x) in parts.items():
        program = Part(fn)
        ms[name] = 1e3 * seconds(lambda p=program, x=x: p.predict_on_batch(x), args.repeats)

    # The ceiling: fc1- and fc2-shaped matmuls chained, so that the call's overhead and the one
    # sum at the end are a small part of the time.
    up, down = (rng.normal(size=shape).astype(np.float32) / 30 for shape in ((d, spec.mlp_dim), (spec.mlp_dim, d)))

    def mlp_matmuls(x):
        for _ in range(MATMUL_PAIRS):
            x = ops.matmul(ops.matmul(x, ops.convert_to_tensor(up)), ops.convert_to_tensor(down))
        return x

    matmuls = Part(mlp_matmuls)
    matmul_s = seconds(lambda: matmuls.predict_on_batch(tokens.reshape(b * n, d)), args.repeats)
    gflop_s = MATMUL_PAIRS * 2 * 2 * b * n * d * spec.mlp_dim / matmul_s / 1e9
    projection_flop = 2 * b * n * spec.depth * (4 * d * d + 2 * d * spec.mlp_dim)
    projections_ms = 1e3 * projection_flop / (gflop_s * 1e9)
    ceiling_ms = 1e3 * 2 * b * macs_per_image(spec) / (gflop_s * 1e9)  # as make bench-paths counts it
    whole = ms[WHOLE]
    derived = {
        "reductions and token norms in the program (whole - model alone)": whole - ms[MODEL],
        "the rest of the model (embedding, residual adds, reshapes, head)": ms[MODEL]
        - sum(v for k, v in ms.items() if k not in (WHOLE, MODEL)),
    }
    floor_ms = whole - ms[PROJECTIONS] + projections_ms

    cpu = cpu_info()
    rows = [(name, value, value / whole) for name, value in {**ms, **derived}.items()]
    rows.append((f"projections at the matmul ceiling ({gflop_s:.0f} GFLOP/s)", projections_ms, projections_ms / whole))
    rows.append(("floor: the whole program with its projections at the ceiling", floor_ms, floor_ms / whole))
    rows.append(("matmul ceiling: every multiply-accumulate of the model at that rate", ceiling_ms, ceiling_ms / whole))
    lines = [
        f"{args.arch}, batch {b}, {args.threads} thread(s), {keras.backend.backend()} backend; CPU: {describe_cpu(cpu)}; "
        f"medians of {args.repeats} runs; 1-minute load average {os.getloadavg()[0]:.2f}.",
        "",
        "| part | ms per batch | share of the whole program |",
        "|---|---|---|",
        *[f"| {name} | {value:.1f} | {share:.3f} |" for name, value, share in rows],
        "",
        f"Ratio to the matmul ceiling (as `make bench-paths` computes it): the whole program {ceiling_ms / whole:.3f}, "
        f"the floor {ceiling_ms / floor_ms:.3f}.",
    ]
    data = {
        **cpu,
        "arch": args.arch,
        "batch": b,
        "threads": args.threads,
        "backend": keras.backend.backend(),
        "load_average_1min": os.getloadavg()[0],
        "ms_per_batch": ms,
        "derived_ms_per_batch": derived,
        "matmul_gflop_s": gflop_s,
        "projections_at_ceiling_ms": projections_ms,
        "ceiling_ms": ceiling_ms,
        "floor_ms": floor_ms,
        "ratio_to_ceiling": ceiling_ms / whole,
        "floor_ratio_to_ceiling": ceiling_ms / floor_ms,
    }
    stem = f"{datetime.date.today()}-{machine_key()}-{args.arch}-b{b}-t{args.threads}-breakdown"
    record(args.out, stem, "\n".join(lines), data)


if __name__ == "__main__":
    main()
