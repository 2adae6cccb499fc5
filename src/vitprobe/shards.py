"""Attention shards: one uncompressed ``.npy`` of (images, blocks, heads, N, N) per
(model, shard), written batch by batch through a memory map, plus a JSON sidecar.

Uncompressed ``.npy`` rather than ``.npz``: it is written sequentially batch by batch and
read in pieces through a memory map, so neither the extract job nor the reduce job ever
holds a whole shard in memory, and writing runs at disk speed (zlib manages about 30 MB/s here).
A shard is written under a temporary name and renamed only when complete; a reader
memory-maps it, which checks the file length against its header, so a truncated shard is
reported, not read.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path


class ShardError(ValueError):
    """A shard on disk is incomplete or inconsistent; rerunning rebuilds it."""


@dataclass
class ShardInfo:
    model: str
    image_ids: list[str]
    num_prefix_tokens: int
    grid_size: int
    patch_size: int


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


class ShardWriter:
    """Append attention to ``path`` (an .npy of (images, blocks, heads, N, N)) image by image,
    with sequential writes (no memory map: page faults cost more than the copy). Used as a
    context manager: the shard and its sidecar are renamed into place when every image is
    written, and deleted if the block raises."""

    def __init__(self, path: str | os.PathLike, info: ShardInfo, shape_per_image: tuple, dtype: str):
        self.path, self.info = Path(path), info
        self.dtype = np.dtype(dtype)
        self.shape = (len(info.image_ids), *shape_per_image)
        self._filled = 0

    def __enter__(self) -> ShardWriter:
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            self._sidecar_tmp = stack.enter_context(atomic_path(_sidecar(self.path)))
            self._file = stack.enter_context(open(tmp, "wb"))
            np.lib.format.write_array_header_1_0(
                self._file, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
            )
            self._stack = stack.pop_all()
        return self

    def write_blocks(self, blocks: list[np.ndarray]) -> None:
        """One batch given as the model returns it: per block, (batch, heads, N, N)."""
        for i in range(len(blocks[0])):
            for block in blocks:
                self._file.write(np.ascontiguousarray(block[i], dtype=self.dtype).data)
        self._filled += len(blocks[0])

    def __exit__(self, kind, error, traceback) -> None:
        # The file closes first, then the sidecar and the shard are renamed (or, on error, deleted).
        if kind is None and self._filled != self.shape[0]:
            error = ShardError(f"{self.path}: {self._filled} of {self.shape[0]} images written")
            self._stack.__exit__(ShardError, error, None)
            raise error
        if kind is None:
            self._sidecar_tmp.write_text(json.dumps(asdict(self.info)))
        self._stack.__exit__(kind, error, traceback)


def open_shard(path: str | os.PathLike) -> tuple[np.ndarray, ShardInfo]:
    """Memory-map a shard for reading. A damaged shard is deleted (with its sidecar) and
    reported with `ShardError`, so that the next run rebuilds it instead of reading it."""
    path = Path(path)
    try:
        info = ShardInfo(**json.loads(_sidecar(path).read_text()))
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.ndim != 5 or len(array) != len(info.image_ids):
            raise ValueError(f"shape {array.shape} does not match its {len(info.image_ids)} images")
    except (OSError, ValueError, TypeError, json.JSONDecodeError) as e:
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
        raise ShardError(f"{path}: attention shard is truncated or corrupt ({e}); deleted it, rerun to rebuild it") from e
    return array, info


def open_crops(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a crop shard (n, S, S, 3) uint8; a damaged one is deleted and reported like an
    attention shard, so the next run rebuilds it."""
    path = Path(path)
    try:
        crops = np.load(path, mmap_mode="r", allow_pickle=False)
        if crops.ndim != 4 or crops.dtype != np.uint8:
            raise ValueError(f"expected (n, S, S, 3) uint8, got {crops.dtype} {crops.shape}")
    except (OSError, ValueError) as e:
        path.unlink(missing_ok=True)
        raise ShardError(f"{path}: crop shard is truncated or corrupt ({e}); deleted it, rerun to rebuild it") from e
    return crops
