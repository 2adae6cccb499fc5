"""Reference side of the parity tests: timm in PyTorch, run in its own process.

(Importing tensorflow before timm in one process crashed here, so the tests never import
timm themselves.) For each case in a JSON list it writes, under the output folder:
``<id>.safetensors`` (the timm state dict, with query/key weights sharpened so attention is
peaked rather than near-uniform), ``<id>.npz`` with the input (NHWC), every block's
attention (``attn_<i>``) and output tokens (``block_<i>``, the residual stream after block i, hooked
on the block module), ``tokens`` (``forward_features``: the last block's tokens after the final norm,
where the model has one), the pooled features (timm's pre-logits), and with a head the logits and each
head's logits. An attention-pooling model (SigLIP) also gets ``attn_<depth>``: its pooling
query's attention, recomputed from the query and key/value projections timm's ``attn_pool``
ran (the module computes it inline, with nothing to hook); the pooled features check it.

Usage: python timm_reference.py cases.json out_dir
Each case: {"id", "model", "kwargs", optional "checkpoint_kwargs" (build the saved
weights at other kwargs, e.g. another image size, and let timm's checkpoint filter adapt
them, as timm does when loading pretrained weights), and the query/key sharpening is chosen per case}.
"""

import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch  # noqa: F401  (import torch before anything else; see the module docstring)
from safetensors.torch import save_file

QUERY_KEY = ("attn.q_bias", "attn.q_proj.weight", "attn.q_proj.bias", "attn.k_proj.weight")
FACTORS = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


def sharpen(state: dict, factor: float) -> None:
    """Scale the blocks' query and key projections so softmax rows are peaked (random weights
    give near-uniform attention, which hides indexing bugs). Covers every layout: fused qkv
    (query and key are the first two thirds), BEiT's q_bias, EVA's q_proj/k_proj."""
    for name, value in state.items():
        if name.startswith("blocks.") and name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
            value[: 2 * (value.shape[0] // 3)] *= factor
        elif name.startswith("blocks.") and name.endswith(QUERY_KEY):
            value *= factor


def sharpen_pool(state: dict, factor: float) -> None:
    """The same for the attention pool's query (q) and key (the first half of kv), chosen on
    its own: sharpening the blocks as far as the pool needs would make their attention
    one-hot and their logits large."""
    for name, value in state.items():
        if name in ("attn_pool.q.weight", "attn_pool.q.bias"):
            value *= factor
        elif name in ("attn_pool.kv.weight", "attn_pool.kv.bias"):
            value[: value.shape[0] // 2] *= factor


def perturbed_state(source, factor: float, pool_factor: float) -> dict:
    state = {k: v.detach().clone().contiguous() for k, v in source.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sharpen(state, factor)
        # Non-trivial norms, biases, tokens and layer-scales, so every tensor matters.
        for name, value in state.items():
            noise = torch.randn(value.shape, generator=gen)
            if name.endswith(".weight") and "norm" in name.split(".")[-2]:  # every LayerNorm
                value.copy_(1 + 0.2 * noise)
            elif name.endswith(("bias", "cls_token", "dist_token", "reg_token", "latent")):
                value.copy_(0.1 * noise)
            elif name.endswith((".gamma", "gamma_1", "gamma_2")):
                value.copy_(0.5 + 0.1 * noise)
            elif name.endswith("relative_position_bias_table"):  # large enough to move the attention
                value.copy_(noise)
        sharpen_pool(state, pool_factor)  # after the noise: the pool's query is mostly its bias
    return state


def checkpoint_filter(state: dict, model) -> dict:
    """The model's own module's checkpoint filter (VisionTransformer, Beit, Eva)."""
    return sys.modules[type(model).__module__].checkpoint_filter_fn(state, model)


def forward_with_attention(model, x):
    attentions, pool, outputs = [], {}, []
    hooks = [
        # attn_drop receives the softmax output (identity in eval mode).
        block.attn.attn_drop.register_forward_hook(lambda mod, inp, outp: attentions.append(outp.detach().numpy()))
        for block in model.blocks
    ]
    hooks += [block.register_forward_hook(lambda mod, inp, outp: outputs.append(outp.detach().numpy())) for block in model.blocks]
    attn_pool = getattr(model, "attn_pool", None)
    if attn_pool is not None:
        hooks += [
            getattr(attn_pool, name).register_forward_hook(lambda mod, inp, outp, name=name: pool.__setitem__(name, outp))
            for name in ("q", "kv")
        ]
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
    for hook in hooks:
        hook.remove()
    if attn_pool is not None:
        heads, head_dim = attn_pool.num_heads, attn_pool.head_dim
        q = pool["q"].reshape(x.shape[0], 1, heads, head_dim).transpose(1, 2)
        k = pool["kv"].reshape(x.shape[0], -1, 2, heads, head_dim)[:, :, 0].transpose(1, 2)
        attentions.append(((q * attn_pool.scale) @ k.transpose(-2, -1)).softmax(-1).numpy())
    return features, pre_logits, attentions, outputs


def run_case(case: dict, out: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model(case["model"], pretrained=False, **case.get("checkpoint_kwargs", case["kwargs"]))
    model = timm.create_model(case["model"], pretrained=False, **case["kwargs"]).eval()
    size = model.patch_embed.img_size
    x = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (2, 3, *size)).astype(np.float32))
    # The smallest sharpening that makes every block's attention clearly peaked
    # (mean row maximum >= 0.2; uniform attention would give 1/N), then the same for the pool.
    depth, pool_factor = len(model.blocks), 1.0
    for factor in FACTORS:
        state = perturbed_state(source, factor, pool_factor)
        model.load_state_dict(checkpoint_filter(state, model))
        features, pre_logits, attentions, outputs = forward_with_attention(model, x)
        if min(a.max(-1).mean() for a in attentions[:depth]) >= 0.2:
            break
    for pool_factor in FACTORS if len(attentions) > depth else ():
        state = perturbed_state(source, factor, pool_factor)
        model.load_state_dict(checkpoint_filter(state, model))
        features, pre_logits, attentions, outputs = forward_with_attention(model, x)
        if attentions[depth].max(-1).mean() >= 0.2:
            break
    save_file(state, str(out / f"{case['id']}.safetensors"))
    result = {"input": x.permute(0, 2, 3, 1).numpy(), **{f"attn_{i}": a for i, a in enumerate(attentions)}}
    result.update({f"block_{i}": b for i, b in enumerate(outputs)})
    result["tokens"] = features.numpy()  # forward_features: the last block's tokens after the final norm (if any)
    distilled = hasattr(model, "head_dist")
    if not distilled:  # timm's distilled pre-logits average two tokens; vitprobe's features are the CLS token
        result["features"] = pre_logits.numpy()
    if model.num_classes:
        with torch.no_grad():
            result["logits"] = model.forward_head(features).numpy()
            heads = [model.head(features[:, 0]), model.head_dist(features[:, 1])] if distilled else [model.head(pre_logits)]
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
