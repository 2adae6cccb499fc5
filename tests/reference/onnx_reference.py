"""Reference attention maps from an ONNX graph, computed by onnxruntime.

Every ``Softmax`` node of the backbone (the attention probabilities of each block) is made
a graph output of an in-memory copy of the model, which is then run on the given pixels.
Imports only numpy, onnx and onnxruntime (no tensorflow, no vitprobe), so tests and
benchmarks can use it in any process.
"""

from __future__ import annotations

import os
import re

import numpy as np

_BLOCK = re.compile(r"/layer\.(\d+)/")


def backbone_softmax_nodes(model) -> list:
    """The backbone's Softmax nodes in block order (by their ``/layer.{i}/`` scope when named)."""
    nodes = [n for n in model.graph.node if n.op_type == "Softmax" and not n.name.startswith("/decoder/")]
    if all(_BLOCK.search(n.name) for n in nodes):
        nodes.sort(key=lambda n: int(_BLOCK.search(n.name).group(1)))
    return nodes  # otherwise graph (topological) order, which is block order


def _run(model, nchw_batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """Run ``model`` (a ModelProto, edited in place) with the float tensors ``names`` exposed as outputs."""
    import onnx
    import onnxruntime as ort

    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(nchw_batch, dtype=np.float32)}
    return session.run(names, feed)


def graph_outputs(onnx_path: str | os.PathLike, nchw_batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """Values of the named intermediate float tensors of the graph for a float32 NCHW batch."""
    import onnx

    return _run(onnx.load(os.fspath(onnx_path)), nchw_batch, list(names))


def block_outputs(onnx_path: str | os.PathLike, nchw_batch: np.ndarray) -> list[np.ndarray]:
    """Every backbone block's output tokens, each (B, N, dim), for a float32 NCHW batch: the
    output of the block's last residual ``Add`` (after the MLP branch), found by its
    ``/backbone/encoder/layer.{i}/`` scope and ordered by block."""
    import onnx

    model = onnx.load(os.fspath(onnx_path))
    last_add = re.compile(r"^/backbone/encoder/layer\.(\d+)/Add_1$")
    found = {int(m.group(1)): n.output[0] for n in model.graph.node if (m := last_add.match(n.name))}
    if not found or sorted(found) != list(range(len(found))):
        raise ValueError(f"{onnx_path}: no complete set of /backbone/encoder/layer.<i>/Add_1 nodes (found {sorted(found)})")
    return _run(model, nchw_batch, [found[i] for i in range(len(found))])


def softmax_outputs(onnx_path: str | os.PathLike, nchw_batch: np.ndarray) -> list[np.ndarray]:
    """Attention probabilities of every backbone block, each (B, heads, N, N), for a float32 NCHW batch."""
    import onnx

    model = onnx.load(os.fspath(onnx_path))
    nodes = backbone_softmax_nodes(model)
    if not nodes:
        raise ValueError(f"{onnx_path}: no Softmax node in the graph")
    return _run(model, nchw_batch, [n.output[0] for n in nodes])
