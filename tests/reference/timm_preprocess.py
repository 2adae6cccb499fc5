"""Reference side of the preprocessing tests: timm's own evaluation transform, in its own process.

(Importing tensorflow before timm in one process crashed here, so the tests never import
timm themselves.) For each model in the job it builds the model on the ``meta`` device (no
weights, no init cost: only its pretrained cfg is needed), resolves timm's data config the
way timm's validate.py / inference does (``resolve_data_config({}, model=model)``), builds
``create_transform(**cfg)`` (evaluation) and applies it to every image, opened with PIL and
converted to RGB as timm's ``ImageDataset`` does.

Usage: python timm_preprocess.py job.json out_dir
job.json: {"images": [paths], "models": [name or {"id", "name", "kwargs", "args", "pixels"}]}
  name: a timm pretrained name (``vit_base_patch16_224.augreg_in21k_ft_in1k``);
  kwargs: for ``timm.create_model`` (``{"img_size": 224}``);
  args: overrides for ``resolve_data_config`` (``{"crop_mode": "squash", "crop_pct": 0.875}``;
        ``input_size`` as a list);
  pixels: false to write only the cfg.
Writes ``out_dir/cfgs.json`` ({id: data config, the pretrained tag, url and hf_hub_id, the
transform's repr}) and, for each model
with pixels, ``out_dir/<id>.npz`` holding ``x``: (images, H, W, 3) float32, NHWC.
"""

import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch  # noqa: F401  (import torch before anything else; see the module docstring)
from PIL import Image
from timm.data import create_transform, resolve_data_config


def main(job_file: str, out_dir: str) -> None:
    job = json.loads(Path(job_file).read_text())
    out = Path(out_dir)
    # Decode each file once, as timm's ImageDataset does: Image.open(...).convert("RGB").
    images = []
    for path in job["images"]:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    cfgs = {}
    for entry in job["models"]:
        entry = {"name": entry} if isinstance(entry, str) else entry
        key = entry.get("id", entry["name"])
        with torch.device("meta"):
            model = timm.create_model(entry["name"], pretrained=False, **entry.get("kwargs", {}))
        args = dict(entry.get("args", {}))
        if "input_size" in args:
            args["input_size"] = tuple(args["input_size"])
        cfg = resolve_data_config(args, model=model)
        transform = create_transform(**cfg)  # is_training=False: the evaluation transform
        pretrained = model.pretrained_cfg
        cfgs[key] = {
            **cfg,
            "pretrained_tag": pretrained.get("tag"),
            "url": pretrained.get("url"),
            "hf_hub_id": pretrained.get("hf_hub_id"),
            "transform": repr(transform),
        }
        if entry.get("pixels", True):
            batch = torch.stack([transform(image) for image in images])  # (B, 3, H, W)
            np.savez(out / f"{key}.npz", x=batch.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32))
    (out / "cfgs.json").write_text(json.dumps(cfgs, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
