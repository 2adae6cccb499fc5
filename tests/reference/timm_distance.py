"""Independent reference for the pipeline's distance table: timm attentions on the pipeline's
own crops, mean attention distance computed here in float64 from first principles. Also writes
each model's ``forward_features`` tokens (the last block's, after the final norm) of the first
``tokens_images`` images, for the PCA feature maps' check.

Usage: python timm_distance.py job.json out.parquet tokens.npz
job: {"image_ids": [...], "tokens_images": int, "models": [{"key", "model", "kwargs", "weights", "mean",
"std", "num_prefix", "crops": [the model's crop shards (.npy) in manifest order]}]}
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch  # noqa: F401  (before anything else: see timm_reference.py)
from safetensors.torch import load_file


def distances(attn: np.ndarray, num_prefix: int, grid: int, patch: int) -> np.ndarray:
    """(heads,) mean over query patches of sum_k attn[q, k] * |pos(q) - pos(k)| in pixels,
    prefix rows and columns dropped without renormalising."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    pixel = patch * np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])
    patches = attn[:, num_prefix:, num_prefix:].astype(np.float64)
    return (patches * pixel).sum(axis=-1).mean(axis=-1)


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    timm.layers.set_fused_attn(False)
    records, tokens = [], {}
    for m in job["models"]:
        crops = np.concatenate([np.load(p) for p in m["crops"]])
        model = timm.create_model(m["model"], pretrained=False, **m["kwargs"]).eval()
        model.load_state_dict(load_file(m["weights"]))
        captured = []
        for block in model.blocks:
            block.attn.attn_drop.register_forward_hook(lambda mod, i, o, out=captured: out.append(o.detach().numpy()))
        x = (crops.astype(np.float32) / 255.0 - np.float32(m["mean"])) / np.float32(m["std"])
        with torch.no_grad():
            features = model.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
        tokens[m["key"]] = features[: job["tokens_images"]].numpy()
        grid, patch = model.patch_embed.grid_size[0], model.patch_embed.patch_size[0]
        for b, attn in enumerate(captured):
            for i, image_id in enumerate(job["image_ids"]):
                for h, d in enumerate(distances(attn[i], m["num_prefix"], grid, patch)):
                    records.append((m["key"], image_id, b, h, d))
    table = pd.DataFrame(records, columns=["model", "image_id", "block", "head", "distance_px"])
    table.to_parquet(sys.argv[2], index=False)
    np.savez(sys.argv[3], **tokens)


if __name__ == "__main__":
    main()
