"""Convert a Google Research AugReg ViT ``.npz`` (Flax names and layout) to timm names and layout.

Flax layouts in these files (D = width, H = heads, d = head width, M = MLP width, C = classes):

    embedding/kernel                      (p, p, in, D)   conv kernel, HWIO
    cls                                   (1, 1, D)
    Transformer/posembed_input/pos_embedding  (1, N, D)
    .../MultiHeadDotProductAttention_1/{query,key,value}/kernel  (D, H, d), bias (H, d)
    .../MultiHeadDotProductAttention_1/out/kernel                (H, d, D), bias (D,)
    .../MlpBlock_3/Dense_{0,1}/kernel     (in, out)
    head/kernel                           (D, C)

The block sub-module numbers (LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2,
MlpBlock_3) come from the old flax.nn naming, which counts all sub-modules of a block
together. ``MlpBlock_1`` is accepted as an alternative name for the MLP.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from typing import Mapping

import numpy as np

from .errors import WeightsError
from .fetch import read_head

_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/")
_MLP_NAMES = ("MlpBlock_3", "MlpBlock_1")
_REDOWNLOAD = "Delete the cached file and download it again."


def _listing(keys, limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` archive; any failure becomes a `WeightsError`."""
    path = os.fspath(path)
    head = read_head(path, 16, _REDOWNLOAD)
    if not head.startswith((b"PK", b"\x93NUMPY")):
        # np.load would take this for a pickle and suggest enabling pickle loading; never do that.
        raise WeightsError(
            f"{path}: is not an .npz (zip) archive; it starts with {head!r} (an error page or another format?). " + _REDOWNLOAD
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise WeightsError(
            f"{path}: not a readable .npz (zip) archive ({type(e).__name__}: {e}); "
            f"the file is corrupt or truncated. {_REDOWNLOAD}"
        ) from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise WeightsError(f"{path}: holds a single .npy array, not an .npz archive of named tensors. {_REDOWNLOAD}")
    arrays = {}
    with loaded:
        for key in loaded.files:
            try:
                arrays[key] = loaded[key]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise WeightsError(
                        f"{path}: array {key!r} is an object array (pickled Python data), which is refused "
                        f"because unpickling can run code. This is not a genuine AugReg checkpoint. {_REDOWNLOAD}"
                    ) from e
                raise WeightsError(f"{path}: array {key!r} cannot be read ({e}). {_REDOWNLOAD}") from e
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise WeightsError(
                    f"{path}: array {key!r} is corrupt or truncated ({type(e).__name__}: {e}). {_REDOWNLOAD}"
                ) from e
            if not isinstance(arrays[key], np.ndarray):  # NpzFile hands back raw bytes for non-.npy members
                raise WeightsError(f"{path}: member {key!r} is not a .npy array. {_REDOWNLOAD}")
    return arrays


class _Tensors:
    """The file's arrays as the conversion reads them: each key taken is marked used, checked for
    a float dtype and its expected shape, and converted to float32; every problem is collected so
    that one `WeightsError` can list them all."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.arrays = arrays
        self.used: set[str] = set()
        self.needed: list[str] = []  # every key required, to report the missing ones together
        self.problems: list[str] = []
        self.state: dict[str, np.ndarray] = {}

    def get(self, key: str, shape: tuple | None) -> np.ndarray | None:
        """``key`` as float32, or None (a problem recorded) if it is absent, misshapen or not float."""
        self.needed.append(key)
        if key not in self.arrays:
            return None  # reported with all the other missing keys
        self.used.add(key)
        value = np.asarray(self.arrays[key])
        if value.dtype.kind != "f":
            self.problems.append(f"{key}: dtype {value.dtype}, expected a float type")
            return None
        if shape is not None and value.shape != shape:
            expected = "(" + ", ".join("?" if n < 0 else str(n) for n in shape) + ")"
            self.problems.append(f"{key}: shape {value.shape}, expected {expected}")
            return None
        return value.astype(np.float32)

    def size(self, key: str, ndim: int, axis: int) -> int:
        """A size read off another tensor; -1 (matches nothing, shown as ?) if that tensor is unusable."""
        value = self.arrays.get(key)
        return value.shape[axis] if value is not None and value.ndim == ndim else -1

    def put(self, name: str, key: str, shape: tuple | None, convert=lambda x: x) -> None:
        """timm's ``name`` from the file's ``key``, converted to timm's layout."""
        value = self.get(key, shape)
        if value is not None:
            self.state[name] = np.ascontiguousarray(convert(value))


def _refuse_representation_layer(arrays: Mapping[str, np.ndarray], source: str) -> None:
    """The original ViT ImageNet-21k files have a tanh representation layer between the encoder and
    the head; timm (and our model) have none, so dropping it would change outputs."""
    if any(k.startswith("pre_logits/") for k in arrays):
        raise WeightsError(
            f"{source}: has a representation layer ({_listing(k for k in arrays if k.startswith('pre_logits/'))}) "
            "that this Vision Transformer cannot represent. Use an AugReg checkpoint without pre_logits."
        )


def _architecture(arrays: Mapping[str, np.ndarray], source: str) -> tuple[int, int, int, int]:
    """(depth, width, heads, head width), read off the block names, the patch embedding and the
    first block's query kernel."""
    depth = 1 + max((int(m.group(1)) for k in arrays if (m := _BLOCK.match(k))), default=-1)
    embed = arrays.get("embedding/kernel")
    q0 = arrays.get("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")
    if embed is None or np.ndim(embed) != 4 or depth == 0 or q0 is None or np.ndim(q0) != 3:
        raise WeightsError(
            f"{source}: not an AugReg ViT checkpoint: needs a 4-d 'embedding/kernel' and encoder blocks "
            f"'Transformer/encoderblock_<i>/...' with 3-d attention kernels. Keys found: {_listing(arrays)}"
        )
    _, heads, head_dim = q0.shape
    return depth, embed.shape[-1], heads, head_dim


def _convert_embeddings(t: _Tensors, dim: int) -> None:
    t.put("patch_embed.proj.weight", "embedding/kernel", None, lambda k: k.transpose(3, 2, 0, 1))  # HWIO -> OIHW
    t.put("patch_embed.proj.bias", "embedding/bias", (dim,))
    t.put("cls_token", "cls", (1, 1, dim))
    pos = "Transformer/posembed_input/pos_embedding"
    t.put("pos_embed", pos, (1, t.size(pos, 3, 1), dim))


def _convert_block(t: _Tensors, i: int, dim: int, heads: int, head_dim: int) -> None:
    bp, tp = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
    t.put(tp + "norm1.weight", bp + "LayerNorm_0/scale", (dim,))
    t.put(tp + "norm1.bias", bp + "LayerNorm_0/bias", (dim,))
    t.put(tp + "norm2.weight", bp + "LayerNorm_2/scale", (dim,))
    t.put(tp + "norm2.bias", bp + "LayerNorm_2/bias", (dim,))

    mha = bp + "MultiHeadDotProductAttention_1/"
    qkv = [t.get(f"{mha}{n}/kernel", (dim, heads, head_dim)) for n in ("query", "key", "value")]
    qkv_b = [t.get(f"{mha}{n}/bias", (heads, head_dim)) for n in ("query", "key", "value")]
    if all(x is not None for x in qkv):  # (D, H, d) -> (H*d, D), stacked q, k, v
        t.state[tp + "attn.qkv.weight"] = np.concatenate([x.reshape(dim, -1).T for x in qkv])
    if all(x is not None for x in qkv_b):
        t.state[tp + "attn.qkv.bias"] = np.concatenate([x.reshape(-1) for x in qkv_b])
    t.put(tp + "attn.proj.weight", mha + "out/kernel", (heads, head_dim, dim), lambda k: k.reshape(-1, dim).T)
    t.put(tp + "attn.proj.bias", mha + "out/bias", (dim,))

    # Use whichever MLP name the block has; keys under the other one stay unused and are reported.
    mlp_name = next((n for n in _MLP_NAMES if f"{bp}{n}/Dense_0/kernel" in t.arrays), _MLP_NAMES[0])
    mlp = f"{bp}{mlp_name}/"
    hidden = t.size(mlp + "Dense_0/kernel", 2, 1)
    t.put(tp + "mlp.fc1.weight", mlp + "Dense_0/kernel", (dim, hidden), np.transpose)
    t.put(tp + "mlp.fc1.bias", mlp + "Dense_0/bias", (hidden,))
    t.put(tp + "mlp.fc2.weight", mlp + "Dense_1/kernel", (hidden, dim), np.transpose)
    t.put(tp + "mlp.fc2.bias", mlp + "Dense_1/bias", (dim,))


def _convert_head(t: _Tensors, dim: int) -> None:
    t.put("norm.weight", "Transformer/encoder_norm/scale", (dim,))
    t.put("norm.bias", "Transformer/encoder_norm/bias", (dim,))
    classes = t.size("head/kernel", 2, 1)
    t.put("head.weight", "head/kernel", (dim, classes), np.transpose)
    t.put("head.bias", "head/bias", (classes,))


def _report(t: _Tensors, source: str, depth: int, dim: int, heads: int) -> None:
    """One `WeightsError` listing every problem, missing key and key left over, if any."""
    missing = [k for k in t.needed if k not in t.arrays]
    unknown = sorted(set(t.arrays) - t.used)
    problems = list(t.problems)
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unknown:
        problems.append(f"unknown keys: {_listing(unknown)}")
    if problems:
        raise WeightsError(
            f"{source}: does not match the AugReg ViT layout (depth {depth}, width {dim}, {heads} heads):\n  "
            + "\n  ".join(problems)
        )


def augreg_to_timm(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """The timm-named float32 tensors in PyTorch layout that the file's arrays hold.

    Every key must be understood (none is left over); unknown, missing, misshapen or non-float
    tensors are all reported together in one `WeightsError` naming ``source``.

    Args:
        arrays: the file's arrays by Flax name (`read_npz`).
        source: the file, named in errors.
    """
    _refuse_representation_layer(arrays, source)
    depth, dim, heads, head_dim = _architecture(arrays, source)
    tensors = _Tensors(arrays)
    _convert_embeddings(tensors, dim)
    for i in range(depth):
        _convert_block(tensors, i, dim, heads, head_dim)
    _convert_head(tensors, dim)
    _report(tensors, source, depth, dim, heads)
    return tensors.state
