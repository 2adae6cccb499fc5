"""Reference side of the attribution parity tests: the published procedures re-expressed in
PyTorch on timm's modules, run in their own process (see timm_reference.py for why).

``maps`` mode, for each case of a JSON list: a timm model with random, sharpened weights (saved as
``<id>.safetensors``), a batch of inputs, and for each image its target's score backpropagated
through timm's own modules (hooks on ``attn_drop``, whose input is the softmax attention, and on
the last block's ``norm1``). From those it writes ``<id>.npz`` with:
- ``grad_rollout``: vit-explain's ``grad_rollout`` loop (mean over heads of attention x gradient,
  negatives to 0, the lowest ``discard_ratio`` dropped, (A + I) / 2, renormalised, multiplied),
  with this project's two conventions: rows renormalised with keepdim, and the discard limited to
  the patch-to-patch entries (ties: lowest index first). ``grad_rollout_literal``: vit-explain's
  own conventions (``a / a.sum(dim=-1)`` broadcasting over columns; the discard over the whole
  matrix, CLS entries included), for the documented difference.
- ``gae``: Transformer-MM-Explainability's ``generate_relevance`` (R = I; R += mean over heads of
  (grad x attention) clamped at 0, times R).
- ``gradcam``: pytorch-grad-cam's ViT recipe (target layer ``blocks[-1].norm1``, the prefix tokens
  dropped and the patches reshaped to a grid, channel weights the spatial mean of the gradient,
  weighted sum, ReLU), before its min-max scaling and resizing.
- ``score`` and ``target``: the explained logit and class (or the embedding target's cosine).
Each map is the class token's row over the patches (all prefix tokens dropped), unnormalised.

``perturbation`` mode: Chefer et al.'s ``pertubation_eval_from_hdf5.py`` loop on given maps: the
maps upsampled with ``interpolate(scale_factor=patch, mode="bilinear")``, pixels of the [0, 1]
crop set to 0 (positive: most relevant first; negative: the map negated), 10%..90%, normalised,
classified; writes the hits, the target probabilities and their AUCs (trapezoid over fractions
0, 0.1..0.9, divided by 0.9). Ties are ordered by a stable sort (topk leaves them unordered).

Usage: python timm_attribution.py maps cases.json out_dir
       python timm_attribution.py perturbation weights.safetensors inputs.npz out.npz
"""

import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch  # noqa: F401  (import torch before anything else)
from safetensors.torch import load_file, save_file
from timm_reference import checkpoint_filter, perturbed_state

STEPS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def capture(model):
    """Hooks that keep every block's attention and the last norm1's output, with their gradients."""
    kept = {"attn": [], "attn_grad": {}, "tokens": None, "tokens_grad": None}

    def on_attention(index):
        def hook(module, inputs, output):
            kept["attn"].append(output)
            output.register_hook(lambda grad: kept["attn_grad"].__setitem__(index, grad))

        return hook

    def on_tokens(module, inputs, output):
        kept["tokens"] = output
        output.register_hook(lambda grad: kept.__setitem__("tokens_grad", grad))

    for i, block in enumerate(model.blocks):
        block.attn.attn_drop.register_forward_hook(on_attention(i))
    model.blocks[-1].norm1.register_forward_hook(on_tokens)
    return kept


def vit_explain_grad_rollout(attentions, gradients, discard_ratio, num_prefix, literal):
    n = attentions[0].shape[-1]
    result = torch.eye(n, dtype=torch.float64)
    for attention, grad in zip(attentions, gradients):
        fused = (attention * grad).mean(dim=0)
        fused[fused < 0] = 0
        if literal:
            flat = fused.view(-1)
            _, indices = flat.topk(int(flat.numel() * discard_ratio), -1, False)
            flat[indices] = 0
        else:
            patches = fused[num_prefix:, num_prefix:].reshape(-1).clone()
            k = int(patches.numel() * discard_ratio)
            patches[torch.sort(patches, stable=True).indices[:k]] = 0
            fused[num_prefix:, num_prefix:] = patches.view(n - num_prefix, n - num_prefix)
        a = (fused + torch.eye(n, dtype=torch.float64)) / 2
        a = a / a.sum(dim=-1) if literal else a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result[0, num_prefix:]


def generate_relevance(attentions, gradients, num_prefix):
    n = attentions[0].shape[-1]
    relevance = torch.eye(n, dtype=torch.float64)
    for attention, grad in zip(attentions, gradients):
        cam = (grad * attention).clamp(min=0).mean(dim=0)
        relevance = relevance + cam @ relevance
    return relevance[0, num_prefix:]


def grad_cam(tokens, grad, num_prefix, grid):
    activations = tokens[num_prefix:].reshape(grid, grid, -1).permute(2, 0, 1)
    weights = grad[num_prefix:].reshape(grid, grid, -1).permute(2, 0, 1).mean(dim=(1, 2))
    return torch.relu((weights[:, None, None] * activations).sum(dim=0))


def safe_divide(a, b):
    """Their stabilised division: a / (b + 1e-9), 0 where b is 0."""
    den = b + 1e-9
    den = den + (den == 0).to(den.dtype) * 1e-9
    return torch.where(b != 0, a / den, torch.zeros_like(a))


def lrp_linear(relevance, x, weight):
    """Alpha 1, beta 0 on a dense layer (torch weight (out, in)), bias ignored."""
    px, nx = x.clamp(min=0), x.clamp(max=0)
    pw, nw = weight.clamp(min=0), weight.clamp(max=0)
    s = safe_divide(relevance, px @ pw.T + nx @ nw.T)
    return px * (s @ pw) + nx * (s @ nw)


def lrp_add(relevance, a, b):
    s = safe_divide(relevance, a + b)
    ra, rb = a * s, b * s
    a_sum, b_sum = ra.sum(), rb.sum()
    ra = ra * safe_divide(safe_divide(a_sum.abs(), a_sum.abs() + b_sum.abs()) * relevance.sum(), a_sum)
    rb = rb * safe_divide(safe_divide(b_sum.abs(), a_sum.abs() + b_sum.abs()) * relevance.sum(), b_sum)
    return ra, rb


def lrp_fork(x, r1, r2):
    return x * (safe_divide(r1, x) + safe_divide(r2, x))


def transformer_attribution(model, x, target, gradients):
    """Chefer et al. 2021a on timm's modules for one image: a float64 forward that keeps every
    activation, relevance propagated from the class's one-hot logit down through each block
    (their rules: alpha-beta 1/0 dense layers, LayerNorm/GELU/softmax passed through, residual
    sums split and rescaled, the attention products by gradient x input, halved), then the
    product of (mean over heads of max(0, gradient x attention relevance) + I); row 0 over the patches."""
    p = {k: v.detach().double() for k, v in model.state_dict().items()}
    num_heads = model.blocks[0].attn.num_heads
    with torch.no_grad():
        tokens = model.patch_embed(x).double()
        tokens = torch.cat([p["cls_token"].expand(1, -1, -1), tokens], 1) + p["pos_embed"]
        saved = []
        for i, block in enumerate(model.blocks):
            pre = f"blocks.{i}."
            h1 = torch.nn.functional.layer_norm(
                tokens, tokens.shape[-1:], p[pre + "norm1.weight"], p[pre + "norm1.bias"], block.norm1.eps
            )
            qkv = h1 @ p[pre + "attn.qkv.weight"].T + p[pre + "attn.qkv.bias"]
            n, d = tokens.shape[1], tokens.shape[2]
            q, k, v = qkv.reshape(1, n, 3, num_heads, d // num_heads).permute(2, 0, 3, 1, 4)
            attention = torch.softmax((q @ k.transpose(-2, -1)) * block.attn.scale, -1)
            heads_out = attention @ v
            merged = heads_out.transpose(1, 2).reshape(1, n, d)
            attended = merged @ p[pre + "attn.proj.weight"].T + p[pre + "attn.proj.bias"]
            middle = tokens + attended
            h2 = torch.nn.functional.layer_norm(
                middle, middle.shape[-1:], p[pre + "norm2.weight"], p[pre + "norm2.bias"], block.norm2.eps
            )
            hidden = torch.nn.functional.gelu(h2 @ p[pre + "mlp.fc1.weight"].T + p[pre + "mlp.fc1.bias"])
            out_mlp = hidden @ p[pre + "mlp.fc2.weight"].T + p[pre + "mlp.fc2.bias"]
            saved.append(
                dict(
                    x=tokens,
                    h1=h1,
                    q=q,
                    k=k,
                    v=v,
                    attention=attention,
                    heads_out=heads_out,
                    merged=merged,
                    attended=attended,
                    middle=middle,
                    h2=h2,
                    hidden=hidden,
                    out_mlp=out_mlp,
                )
            )
            tokens = middle + out_mlp
        normed = torch.nn.functional.layer_norm(tokens, tokens.shape[-1:], p["norm.weight"], p["norm.bias"], model.norm.eps)
        relevance = torch.zeros(1, p["head.weight"].shape[0], dtype=torch.float64)
        relevance[0, target] = 1
        relevance = lrp_linear(relevance, normed[:, 0], p["head.weight"])
        relevance = torch.cat([torch.where(normed[:, :1] != 0, relevance[:, None], 0), torch.zeros_like(normed[:, 1:])], 1)
        cams = []
        for i in reversed(range(len(model.blocks))):
            a, pre = saved[i], f"blocks.{i}."
            r_middle, r_mlp = lrp_add(relevance, a["middle"], a["out_mlp"])
            r_mlp = lrp_linear(lrp_linear(r_mlp, a["hidden"], p[pre + "mlp.fc2.weight"]), a["h2"], p[pre + "mlp.fc1.weight"])
            relevance = lrp_fork(a["middle"], r_middle, r_mlp)
            r_x, r_attended = lrp_add(relevance, a["x"], a["attended"])
            r_merged = lrp_linear(r_attended, a["merged"], p[pre + "attn.proj.weight"])
            r_heads = r_merged.reshape(1, -1, num_heads, r_merged.shape[-1] // num_heads).transpose(1, 2)
            s = safe_divide(r_heads, a["heads_out"])
            r_attention = a["attention"] * (s @ a["v"].transpose(-2, -1)) / 2
            r_v = a["v"] * (a["attention"].transpose(-2, -1) @ s) / 2
            s = safe_divide(r_attention, a["q"] @ a["k"].transpose(-2, -1))
            r_q, r_k = a["q"] * (s @ a["k"]) / 2, a["k"] * (s.transpose(-2, -1) @ a["q"]) / 2
            r_qkv = torch.cat([t.transpose(1, 2).reshape(1, -1, r_merged.shape[-1]) for t in (r_q, r_k, r_v)], -1)
            relevance = lrp_fork(a["x"], r_x, lrp_linear(r_qkv, a["h1"], p[pre + "attn.qkv.weight"]))
            cams.insert(0, r_attention[0])
        n = tokens.shape[1]
        joint = torch.eye(n, dtype=torch.float64)
        for cam, grad in zip(cams, gradients):
            joint = ((grad * cam).clamp(min=0).mean(0) + torch.eye(n, dtype=torch.float64)) @ joint
    return joint[0, model.num_prefix_tokens :]


def target_score(model, output, image, case):
    """The logit of the case's target (predicted unless a class is given), or the cosine between
    the pooled features and the case's concept."""
    if "concept" in case:
        concept = torch.tensor(case["concept"][image], dtype=torch.float32)
        return torch.nn.functional.cosine_similarity(output[0], concept, dim=0), -1
    target = case.get("target", -1)
    target = int(output[0].argmax()) if target < 0 else target
    return output[0, target], target


def run_maps_case(case, out):
    torch.manual_seed(0)
    model = timm.create_model(case["model"], pretrained=False, **case["kwargs"]).eval()
    state = perturbed_state(model, case.get("sharpen", 4.0), 1.0)
    model.load_state_dict(checkpoint_filter(state, model))
    save_file(state, str(out / f"{case['id']}.safetensors"))
    size = model.patch_embed.img_size
    grid = model.patch_embed.grid_size[0]
    num_prefix = model.num_prefix_tokens
    x = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (2, 3, *size)).astype(np.float32))
    names = ("grad_rollout", "grad_rollout_literal", "gae", "gradcam", "transformer_attribution", "score", "target")
    result = {k: [] for k in names}
    for image in range(len(x)):  # the reference procedures explain one image at a time
        kept = capture(model)
        output = model(x[image : image + 1])
        score, target = target_score(model, output, image, case)
        model.zero_grad()
        score.backward()
        attentions = [a[0].detach().double() for a in kept["attn"]]
        gradients = [kept["attn_grad"][i][0].double() for i in range(len(attentions))]
        for literal, name in ((False, "grad_rollout"), (True, "grad_rollout_literal")):
            row = vit_explain_grad_rollout(attentions, gradients, case["discard_ratio"], num_prefix, literal)
            result[name].append(row.reshape(grid, grid).numpy())
        result["gae"].append(generate_relevance(attentions, gradients, num_prefix).reshape(grid, grid).numpy())
        tokens, tokens_grad = kept["tokens"][0].detach().double(), kept["tokens_grad"][0].double()
        result["gradcam"].append(grad_cam(tokens, tokens_grad, num_prefix, grid).numpy())
        if case.get("transformer_attribution"):
            lrp = transformer_attribution(model, x[image : image + 1], target, gradients)
            result["transformer_attribution"].append(lrp.reshape(grid, grid).numpy())
        result["score"].append(float(score))
        result["target"].append(target)
        for module in model.modules():
            module._forward_hooks.clear()
    arrays = {k: np.asarray(v) for k, v in result.items() if len(v)}
    np.savez(out / f"{case['id']}.npz", input=x.permute(0, 2, 3, 1).numpy(), **arrays)


def perturbation(case_path, inputs_path, out_path):
    case = json.loads(Path(case_path).read_text())
    inputs = np.load(inputs_path)
    model = timm.create_model(case["model"], pretrained=False, **case["kwargs"]).eval()
    model.load_state_dict(load_file(case["weights"]))
    mean = torch.tensor(case["mean"], dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(case["std"], dtype=torch.float32)[None, :, None, None]
    data = torch.from_numpy(inputs["crops"]).permute(0, 3, 1, 2).float() / 255
    target = torch.from_numpy(inputs["targets"].astype(np.int64))
    base_size = data.shape[-1] * data.shape[-2]
    with torch.no_grad():
        probs = torch.softmax(model((data - mean) / std), dim=1)
    result = {
        "unperturbed_hits": (probs.argmax(1) == target).double().numpy(),
        "unperturbed_probs": probs.gather(1, target[:, None])[:, 0].double().numpy(),
    }
    fractions = np.array([0.0, *STEPS])
    for method in case["methods"]:
        maps = torch.from_numpy(inputs[method]).double()[:, None]
        upsampled = torch.nn.functional.interpolate(maps, scale_factor=case["patch"], mode="bilinear")
        for sign in ("positive", "negative"):
            vis = (-upsampled if sign == "negative" else upsampled).reshape(len(data), -1)
            hits, target_probs = np.zeros((len(data), 9)), np.zeros((len(data), 9))
            for i, step in enumerate(STEPS):
                _data = data.clone().reshape(len(data), 3, -1)
                idx = torch.sort(vis, dim=-1, descending=True, stable=True).indices[:, : int(base_size * step)]
                _data = _data.scatter_(-1, idx.unsqueeze(1).repeat(1, 3, 1), 0).reshape(data.shape)
                with torch.no_grad():
                    out = model((_data - mean) / std)
                hits[:, i] = (out.argmax(1) == target).double().numpy()
                target_probs[:, i] = torch.softmax(out, dim=1).gather(1, target[:, None])[:, 0].double().numpy()
            for kind, values, start in (("hits", hits, "unperturbed_hits"), ("probs", target_probs, "unperturbed_probs")):
                curve = np.concatenate([result[start][:, None], values], axis=1)
                result[f"{method}_{sign}_{kind}"] = values
                result[f"{method}_{sign}_{kind}_auc"] = np.trapezoid(curve, fractions, axis=1) / 0.9
    np.savez(out_path, **result)


def main():
    timm.layers.set_fused_attn(False)  # fused kernels return no attention weights
    if sys.argv[1] == "maps":
        out = Path(sys.argv[3])
        out.mkdir(parents=True, exist_ok=True)
        for case in json.loads(Path(sys.argv[2]).read_text()):
            run_maps_case(case, out)
    else:
        perturbation(*sys.argv[2:5])


if __name__ == "__main__":
    main()
