"""Reference side of the weight-layout tests: timm's own model names, and the key names and shapes
of its state dicts.

A hub checkpoint of a timm model holds exactly ``model.state_dict()``'s tensors (timm writes
them from it), so these are the names and shapes a downloaded file has. Built on the ``meta``
device: no weights, no init cost, so even the billion-parameter towers build in a moment. Runs in
its own process (see timm_reference.py).

Usage:
  python timm_state_keys.py job.json out.json
    job.json: [{"id", "model", "kwargs"}]; out.json: {id: {"state": {key: shape}, "facts": {...}}}, the
    facts being what the shapes do not show: the number of prefix tokens, the activation in the first
    block's MLP (``GELU(none)``, ``GELU(tanh)``, ``QuickGELU``, ``SiLU``), that block's LayerNorm eps,
    the patch and image size of the patch embedding.
  python timm_state_keys.py --list families.json out.json
    families.json: {family: {"include": [globs], "exclude": [globs], "pretrained": bool}};
    out.json: {family: [names]} from ``timm.list_models``, and "timm_version".
"""

import json
import sys
from pathlib import Path

import timm
import torch  # noqa: F401  (import torch before anything else)


def _activation(module) -> str | None:
    for sub in module.modules():
        name = type(sub).__name__
        if name == "GELU":
            return f"GELU({getattr(sub, 'approximate', 'none')})"
        if name == "GELUTanh":
            return "GELU(tanh)"
        if name in ("QuickGELU", "SiLU"):
            return name
    return None


def facts(model) -> dict:
    block = model.blocks[0]
    return {
        "num_prefix_tokens": int(model.num_prefix_tokens),
        "activation": _activation(block.mlp),
        "norm_eps": float(block.norm1.eps),
        "patch_size": int(model.patch_embed.patch_size[0]),
        "image_size": int(model.patch_embed.img_size[0]),
    }


def layouts(job_file: str, out_file: str) -> None:
    out = {}
    for entry in json.loads(Path(job_file).read_text()):
        with torch.device("meta"):
            model = timm.create_model(entry["model"], pretrained=False, **entry.get("kwargs", {}))
        out[entry["id"]] = {
            "state": {key: list(value.shape) for key, value in model.state_dict().items()},
            "facts": facts(model),
        }
    Path(out_file).write_text(json.dumps(out, indent=1))


def names(families_file: str, out_file: str) -> None:
    out = {"timm_version": timm.__version__}
    for family, query in json.loads(Path(families_file).read_text()).items():
        out[family] = timm.list_models(query["include"], exclude_filters=query["exclude"], pretrained=query["pretrained"])
    Path(out_file).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "--list":
        names(*sys.argv[2:4])
    else:
        layouts(*sys.argv[1:3])
