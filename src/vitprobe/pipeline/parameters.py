"""The parameters stage: the weights the static figures show, exported small. The arrays are read
from the checkpoint file (or drawn as the random initialisation draws them) without building the
model: no Keras, no TensorFlow in this job."""

from __future__ import annotations

import numpy as np

from ..atomic import write_npz
from ..metrics.parameters import relative_position_bias_maps
from ..models.pos_embed import relative_position_table_size
from ..models.random_init import random_weight
from ..models.spec import ViTSpec
from ..weights.convert import fit_pos_embed, to_keras_layout
from ..weights.errors import WeightsError
from ..weights.fetch import resolve
from ..weights.loader import read_tensors
from .checks import NonFiniteError
from .config import ModelEntry


def exported_shapes(spec: ViTSpec) -> dict[str, tuple[int, ...]]:
    """The weights the export reads, by timm name, with their shapes in Keras layout (those of the
    model's variables, `VisionTransformer.weights_by_name`): the patch-embedding kernel, and the
    position embedding or (BEiT, none) every block's relative position bias table."""
    d, p = spec.embed_dim, spec.patch_size
    shapes = {"patch_embed.proj.weight": (p * p * 3, d)}
    if spec.abs_pos_embed:
        shapes["pos_embed"] = (1, spec.num_pos_prefix + spec.num_patches, d)
    else:  # every named spec has one or the other, and a config cannot switch them
        size = relative_position_table_size(spec.grid_size)
        shapes |= {f"blocks.{i}.attn.relative_position_bias_table": (size, spec.num_heads) for i in range(spec.depth)}
    return shapes


def read_weights(entry: ModelEntry, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The weights of ``shapes`` as the model would hold them after loading ``entry.weights``
    (`vitprobe.weights.convert.assign_state`: Keras layout, position grid resampled to the
    model's), or as `random_weight` draws them for ``weights: random``; a missing or misshapen
    tensor is a `WeightsError` naming the file."""
    spec = entry.spec
    if entry.weights == "random":
        return {name: random_weight(name, shape, entry.seed, spec.layer_scale_keys) for name, shape in shapes.items()}
    path = resolve(entry.weights)
    state, antialias = read_tensors(path, list(shapes))
    missing = [name for name in shapes if name not in state]
    if missing:
        raise WeightsError(
            f"{path}: missing keys ({len(missing)}): {', '.join(missing)}; check that the weights belong to {entry.arch}"
        )
    weights = {}
    for name, shape in shapes.items():
        value = np.asarray(state[name], dtype=np.float32)
        if name == "pos_embed":
            value = fit_pos_embed(value, spec, antialias)
        value = to_keras_layout(name, value)
        if value.shape != shape:
            raise WeightsError(
                f"{path}: {name} has shape {np.shape(state[name])} in the file, {entry.arch} needs {shape} (Keras layout); "
                "check that the weights belong to this architecture (arch name, image size)"
            )
        weights[name] = value
    return weights


def export_parameters(entry: ModelEntry, out_path: str) -> None:
    """The patch-embedding kernel (p, p, 3, D) and the model's position information at its grid:
    the patch position embeddings (P, D) (``pos_embed``), or for a model without them (BEiT) every
    block's relative position bias as (blocks, heads, 2g-1, 2g-1) maps over the patch offset
    (``rel_pos_bias``), which the position figures then show instead.

    Args:
        entry: the config's model entry.
        out_path: the ``.npz`` to write.
    """
    spec = entry.spec
    weights = read_weights(entry, exported_shapes(spec))
    kernel = weights["patch_embed.proj.weight"].reshape(spec.patch_size, spec.patch_size, 3, spec.embed_dim)
    # npz name: (the checkpoint tensors it comes from, values)
    arrays = {"patch_kernel": ("patch_embed.proj.weight", kernel)}
    if spec.abs_pos_embed:
        arrays["pos_embed"] = ("pos_embed", weights["pos_embed"][0, spec.num_pos_prefix :])
    else:
        tables = [weights[f"blocks.{i}.attn.relative_position_bias_table"] for i in range(spec.depth)]
        maps = np.stack([relative_position_bias_maps(table, spec.grid_size) for table in tables]).astype(np.float32)
        arrays["rel_pos_bias"] = ("blocks.*.attn.relative_position_bias_table", maps)
    for name, values in arrays.values():
        if not np.isfinite(values).all():
            raise NonFiniteError(f"{entry.key}: {name} holds NaN or Inf values; check the weights file {entry.weights}")
    write_npz(out_path, **{key: values for key, (_, values) in arrays.items()}, grid_size=np.int64(spec.grid_size))
