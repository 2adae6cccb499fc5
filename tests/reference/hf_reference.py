"""Reference side of the transformers parity tests: Hugging Face models in PyTorch, in their own process.

For each case (a transformers model class and its config, reduced depth) it builds the model with
random weights made non-trivial (LayerNorm scales around 1, biases, tokens and layer scales drawn;
query and key projections sharpened until every layer's attention is peaked), saves it with
``save_pretrained`` (``model.safetensors`` and ``config.json``, as a downloaded checkpoint is), and writes
``<id>.npz``: the input (NHWC), every layer's attention (eager attention, ``attn_<i>``) and the output the
model ends in (``logits``, ``image_embeds`` or the class token after the final norm, as ``output``).

Usage: python hf_reference.py cases.json out_dir
Each case: {"id", "class" (a transformers class name), "config_class", "config" (its kwargs)}.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch  # noqa: F401  (import torch before anything else)
import transformers

QUERY_KEY = ("query.weight", "key.weight", "q_proj.weight", "k_proj.weight", "query.bias", "q_proj.bias")
FACTORS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)


def perturb(model, factor: float) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if not value.dtype.is_floating_point:
                continue
            noise = torch.randn(value.shape, generator=gen)
            if "norm" in name and name.endswith(".weight"):
                value.copy_(1 + 0.2 * noise)
            elif name.endswith("bias") or name.endswith(
                ("cls_token", "distillation_token", "register_tokens", "class_embedding")
            ):
                value.copy_(0.1 * noise)
            elif name.endswith("lambda1"):
                value.copy_(0.5 + 0.1 * noise)
            else:
                value.copy_(0.02 * noise)
            if name.endswith(QUERY_KEY):
                value.mul_(factor)


def output_of(model, out) -> np.ndarray:
    for name in ("logits", "image_embeds"):
        if getattr(out, name, None) is not None:
            return getattr(out, name).numpy()
    return out.pooler_output.numpy()  # DINOv2: the class token after the final norm


def run_case(case: dict, out_dir: Path) -> None:
    config = getattr(transformers, case["config_class"])(**case["config"], attn_implementation="eager")
    model = getattr(transformers, case["class"])(config).eval()
    size = config.image_size
    x = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (2, 3, size, size)).astype(np.float32))
    for factor in FACTORS:
        perturb(model, factor)
        with torch.no_grad():
            out = model(pixel_values=x, output_attentions=True)
        if min(float(a.max(-1).values.mean()) for a in out.attentions) >= 0.2:
            break
    model.save_pretrained(out_dir / case["id"])
    result = {"input": x.permute(0, 2, 3, 1).numpy(), "output": output_of(model, out)}
    result.update({f"attn_{i}": a.numpy() for i, a in enumerate(out.attentions)})
    np.savez(out_dir / f"{case['id']}.npz", **result)


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        run_case(case, out)


if __name__ == "__main__":
    main()
