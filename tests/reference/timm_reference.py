"""Reference side of the parity tests: timm in PyTorch, run in its own process.

(Importing tensorflow before timm in one process crashed here, so the tests never import
timm themselves.) For each case in a JSON list it writes, under the output folder:
``<id>.safetensors`` (the timm state dict, with query/key weights sharpened so attention is
peaked rather than near-uniform), ``<id>.npz`` with the input (NHWC), every block's
attention (``attn_<i>``) and output tokens (``block_<i>``, the residual stream after block i, hooked
on the block module), the logits and each head's logits.

Usage: python timm_reference.py cases.json out_dir
Each case: {"id", "model", "kwargs", optional "checkpoint_kwargs" (build the saved
weights at other kwargs, e.g. another image size, and let timm's checkpoint filter adapt
them, as timm does when loading pretrained weights), and the query/key sharpening is chosen per case}.
"""

import json
import sys
from pathlib import Path

import torch  # noqa: F401  (import torch before anything else; see the module docstring)
import numpy as np
import timm
from safetensors.torch import save_file
from timm.models.vision_transformer import checkpoint_filter_fn


def sharpen(state: dict, factor: float) -> None:
    """Scale query and key projections so softmax rows are peaked (random weights give
    near-uniform attention, which hides indexing bugs)."""
    for name, value in state.items():
        if name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias"):
            dim = value.shape[0] // 3
            value[: 2 * dim] *= factor


def perturbed_state(source, factor: float) -> dict:
    state = {k: v.detach().clone().contiguous() for k, v in source.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sharpen(state, factor)
        # Non-trivial norms, biases, tokens and layer-scales, so every tensor matters.
        for name, value in state.items():
            noise = torch.randn(value.shape, generator=gen)
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
                value.copy_(1 + 0.2 * noise)
            elif name.endswith(".bias") or name.endswith(("cls_token", "dist_token", "reg_token")):
                value.copy_(0.1 * noise)
            elif name.endswith(".gamma"):
                value.copy_(0.5 + 0.1 * noise)
    return state


def forward_with_attention(model, x):
    attentions, outputs = [], []
    hooks = [
        # attn_drop receives the softmax output (identity in eval mode).
        block.attn.attn_drop.register_forward_hook(lambda mod, inp, outp: attentions.append(outp.detach().numpy()))
        for block in model.blocks
    ]
    hooks += [block.register_forward_hook(lambda mod, inp, outp: outputs.append(outp.detach().numpy())) for block in model.blocks]
    with torch.no_grad():
        features = model.forward_features(x)
    for hook in hooks:
        hook.remove()
    return features, attentions, outputs


def run_case(case: dict, out: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model(case["model"], pretrained=False, **case.get("checkpoint_kwargs", case["kwargs"]))
    model = timm.create_model(case["model"], pretrained=False, **case["kwargs"]).eval()
    size = model.patch_embed.img_size
    x = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (2, 3, *size)).astype(np.float32))
    # The smallest sharpening that makes every block's attention clearly peaked
    # (mean row maximum >= 0.2; uniform attention would give 1/N).
    for factor in (2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0):
        state = perturbed_state(source, factor)
        model.load_state_dict(checkpoint_filter_fn(state, model))
        features, attentions, outputs = forward_with_attention(model, x)
        if min(a.max(-1).mean() for a in attentions) >= 0.2:
            break
    save_file(state, str(out / f"{case['id']}.safetensors"))
    result = {"input": x.permute(0, 2, 3, 1).numpy(), **{f"attn_{i}": a for i, a in enumerate(attentions)}}
    result.update({f"block_{i}": b for i, b in enumerate(outputs)})
    if model.num_classes:
        with torch.no_grad():
            result["logits"] = model.forward_head(features).numpy()
            heads = [model.head(features[:, 0])]
            if hasattr(model, "head_dist"):
                heads.append(model.head_dist(features[:, 1]))
        for i, h in enumerate(heads):
            result[f"head_{i}"] = h.numpy()
    np.savez(out / f"{case['id']}.npz", **result)


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    timm.layers.set_fused_attn(False)  # fused kernels return no attention weights
    for case in cases:
        run_case(case, out)


if __name__ == "__main__":
    main()
