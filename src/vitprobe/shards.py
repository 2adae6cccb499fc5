"""Attention shards: one self-describing ``.npz`` per (model, shard) that ``np.load`` reads in a
notebook without vitprobe, and that `open_attention` memory-maps.

The archive is an uncompressed (stored) zip. Its ``attention`` member, (image, block, head, query,
key), is written batch by batch, so the extract job never holds a shard in memory, and it is read
through a memory map at its offset inside the zip, so the reduce job never does either. The other
members are small arrays (strings as unicode arrays, integers as int64 scalars; no object arrays,
so ``allow_pickle=False`` reads them) with everything a reader needs: image ids, model key and
checkpoint, the prefix tokens' kinds, grid and patch size, block and head counts, dtype.

The zip is written here rather than through `zipfile`: the attention member's size is known
before its first byte, so its header is written once (only its CRC is patched in at the end), and
its disk space is reserved up front. Its CRC-32 (which `np.load` checks) is the one cost the plain
``.npy`` did not have; `zipfile` computes it with zlib, slower than the write itself. Here ISA-L
computes it (5x zlib's speed here) over each (image, block) slice right after writing it, in the
writing thread, while the slice is still in the CPU's cache: a thread of its own (tried) reads
the data from memory a second time and costs more on a machine whose cores are busy, and
smaller writes (tried, to keep pieces in the L2 cache) cost the page cache more than they save
(measured with ``benchmarks/shard_write.py``).
The dates in the archive are fixed, so a rerun writes identical bytes. A shard is written under
a temporary name and renamed only when complete; a truncated or inconsistent one is reported.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import struct
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from isal.isal_zlib import crc32

from .atomic import atomic_path, write_npz

AXES = ("image", "block", "head", "query", "key")
ATTENTION_MEMBER = "attention.npy"
_MAX32 = 0xFFFFFFFF
_DOS_DATE = (1 << 5) | 1  # 1980-01-01 00:00, the zip epoch
_LOCAL_CRC_AT = 14  # byte offset of the CRC-32 in a local file header


class ShardError(ValueError):
    """A shard on disk is incomplete or inconsistent; rerunning rebuilds it."""


def images_digest(image_ids: list[str]) -> str:
    """The SHA-256 of a shard's image ids in order: which manifest rows a shard file was made from."""
    return hashlib.sha256("\n".join(image_ids).encode()).hexdigest()


@dataclass(frozen=True)
class ShardIdentity:
    """Whose a per-shard file is: the model key, the digest of what produced it (see
    `pipeline.config.model_identity`), and the digest of its shard's image ids (`images_digest`).
    Written into every per-shard file (`write_shard_table`, `write_shard_npz`; the attention
    shard holds the same in its own members) and compared by every stage that reads one."""

    model: str
    identity: str
    images: str

    # The .npz members and Parquet key/value metadata (prefixed) that hold the fields.
    FIELDS = ("model", "identity", "images")

    def refuse_other(self, found: ShardIdentity | None, path: Path, what: str) -> None:
        """Raise `ShardError` when ``found`` (what the file at ``path`` says, None when it says
        nothing) is not this identity, after deleting the file so that the next run rebuilds it."""
        if found is None:
            wrong = ["it says nothing of the run that wrote it (written by an older vitprobe or another program)"]
        else:
            wrong = []
            if found.model != self.model:
                wrong.append(f"it holds model {found.model!r}, not {self.model!r}")
            if found.identity != self.identity:
                wrong.append("it was written with other weights or model settings than this config's")
            if found.images != self.images:
                wrong.append("it was made from other images than the manifest's rows of this shard")
        if wrong:
            path.unlink(missing_ok=True)
            raise ShardError(f"{path}: {what} is not this run's: {'; '.join(wrong)}. Deleted it, rerun to rebuild it")


# Failures of the reader, not of the file: a missing or unreadable file, or memory running out.
_NOT_DAMAGE = (FileNotFoundError, PermissionError, MemoryError)


def _damaged(path: Path, what: str, reason: object) -> ShardError:
    path.unlink(missing_ok=True)
    return ShardError(f"{path}: {what} is truncated or corrupt ({reason}); deleted it, rerun to rebuild it")


def write_shard_npz(path: str | os.PathLike, identity: ShardIdentity, **arrays: np.ndarray) -> None:
    """``arrays`` and the identity's fields as members of one .npz (stored: the zip holds a
    CRC-32 of every member, which `load_shard_npz` checks)."""
    write_npz(path, **arrays, **{name: np.array(getattr(identity, name), dtype=str) for name in ShardIdentity.FIELDS})


def load_shard_npz(path: str | os.PathLike, expected: ShardIdentity, what: str) -> dict[str, np.ndarray]:
    """Every member of a per-shard .npz (the zip's CRC-32 of each checked) but the identity's
    fields, once its identity is ``expected``. A damaged or foreign file is deleted and
    reported (`ShardError`, naming it), so that the next run rebuilds it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if any(m.compress_type != zipfile.ZIP_STORED for m in npz.zip.infolist()):
                raise ValueError("compressed members (shard files are written uncompressed)")
            # Every member read whole against its CRC-32 (a member read as an array is not when its
            # header, damaged, announces fewer bytes than it holds).
            bad = npz.zip.testzip()
            if bad is not None:
                raise ValueError(f"member {bad} fails its CRC-32: bytes changed on disk")
            arrays = {name: npz[name] for name in npz.files}
    except _NOT_DAMAGE:
        raise  # the file may be sound: never delete it for these
    except Exception as e:  # a damaged header fails in any of numpy's parsers
        raise _damaged(path, what, e) from e
    fields = ShardIdentity.FIELDS
    said = [arrays.pop(name, None) for name in fields]
    found = None if any(v is None or v.shape != () for v in said) else ShardIdentity(*(str(v) for v in said))
    expected.refuse_other(found, path, what)
    return arrays


_META = "vitprobe."  # the prefix of the identity's keys in a Parquet file's key/value metadata
_PAYLOAD = _META + "payload_sha256"


def _frame_digest(frame: pd.DataFrame) -> str:
    """A digest of a table's columns, their dtypes and every value (pandas' per-row hashes).
    Parquet checks no checksum by default, and its optional page checksums leave the footer
    (column names, types) unchecked: a flipped byte there reads back as other data."""
    digest = hashlib.sha256(repr([(str(name), str(dtype)) for name, dtype in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def write_shard_table(frame: pd.DataFrame, path: str | os.PathLike, identity: ShardIdentity) -> None:
    """``frame`` as Parquet, with the identity's fields and the digest of its content
    (`_frame_digest`) in the file's key/value metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    ours = {_META + name: getattr(identity, name) for name in ShardIdentity.FIELDS} | {_PAYLOAD: _frame_digest(frame)}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in ours.items()}})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_shard_table(path: str | os.PathLike, expected: ShardIdentity, what: str) -> pd.DataFrame:
    """A per-shard Parquet table written by `write_shard_table`, once its content digest holds
    and its identity is ``expected``; a damaged or foreign file is deleted and reported
    (`ShardError`, naming it), so that the next run rebuilds it."""
    path = Path(path)
    try:
        table = pq.read_table(path)
        frame = table.to_pandas()
    except _NOT_DAMAGE:
        raise  # the file may be sound: never delete it for these
    except Exception as e:  # a damaged footer fails in any of pyarrow's and pandas' parsers
        raise _damaged(path, what, e) from e
    meta = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in (table.schema.metadata or {}).items()}
    if _PAYLOAD in meta and meta[_PAYLOAD] != _frame_digest(frame):
        raise _damaged(path, what, "its content does not match the digest written with it: bytes changed on disk")
    fields = [_META + name for name in ShardIdentity.FIELDS]
    found = ShardIdentity(*(meta[k] for k in fields)) if all(k in meta for k in fields + [_PAYLOAD]) else None
    expected.refuse_other(found, path, what)
    return frame


@dataclass(frozen=True)
class ShardInfo:
    """What a shard says about its attention besides the array itself."""

    model: str  # the config's model key
    checkpoint: str  # the exact checkpoint name
    image_ids: list[str]  # in the order of the attention's first axis
    prefix_tokens: tuple[str, ...]  # kinds of the tokens before the patches, in token order
    grid_size: int  # patches per side; the patches follow the prefix tokens, row-major
    patch_size: int  # pixels per patch side
    # What produced the attention (a digest of the model's settings and weights, see
    # `pipeline.config.model_identity`): a reader tells another run's shard from its own.
    identity: str = ""

    @property
    def num_prefix_tokens(self) -> int:
        return len(self.prefix_tokens)


@dataclass(frozen=True)
class AttentionShard(ShardInfo):
    """An opened shard: its metadata, and ``attention`` (image, block, head, query, key)
    memory-mapped (slices are read from disk when used)."""

    attention: np.ndarray = field(kw_only=True)
    path: Path = field(kw_only=True)
    crc: int = field(kw_only=True)  # the zip's CRC-32 of the attention member (its .npy header and array)
    header_crc: int = field(kw_only=True)  # the CRC-32 of that member's .npy header alone

    @property
    def num_blocks(self) -> int:
        return self.attention.shape[1]

    @property
    def num_heads(self) -> int:
        return self.attention.shape[2]

    def checked_chunks(self, size: int, *, delete_if_damaged: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """(first image, attention of up to ``size`` images) in order, read from the memory map
        while the member's CRC-32 is computed over the same bytes (what `np.load` checks, which
        a memory map skips): after the last chunk, a mismatch (a flipped bit) raises
        `ShardError`, deleting the shard first when asked, so that the next run rebuilds it."""
        crc = self.header_crc
        for start in range(0, len(self.image_ids), size):
            part = np.asarray(self.attention[start : start + size])
            crc = crc32(part.data, crc)
            yield start, part
        if crc != self.crc:
            if delete_if_damaged:
                self.path.unlink(missing_ok=True)
            action = "deleted it, rerun to rebuild it" if delete_if_damaged else "delete it and rerun to rebuild it"
            raise ShardError(f"{self.path}: attention shard is corrupt (its CRC-32 fails: bytes changed on disk); {action}")


METADATA = (
    "image_ids",
    "model",
    "checkpoint",
    "identity",
    "prefix_tokens",
    "num_prefix_tokens",
    "grid_size",
    "patch_size",
    "num_blocks",
    "num_heads",
    "dtype",
    "axes",
)


def _metadata(info: ShardInfo, shape: tuple, dtype: np.dtype) -> dict[str, np.ndarray]:
    """The small members (named in `METADATA`), as ``np.load`` gives them back."""
    return {
        "image_ids": np.array(info.image_ids, dtype=str),
        "model": np.array(info.model, dtype=str),
        "checkpoint": np.array(info.checkpoint, dtype=str),
        "identity": np.array(info.identity, dtype=str),
        "prefix_tokens": np.array(info.prefix_tokens, dtype=str).reshape(-1),
        "num_prefix_tokens": np.int64(info.num_prefix_tokens),
        "grid_size": np.int64(info.grid_size),
        "patch_size": np.int64(info.patch_size),
        "num_blocks": np.int64(shape[1]),
        "num_heads": np.int64(shape[2]),
        "dtype": np.array(dtype.name, dtype=str),
        "axes": np.array(AXES, dtype=str),
    }


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def _local_header(name: bytes, crc: int, size: int, zip64: bool) -> bytes:
    extra = struct.pack("<HHQQ", 1, 16, size, size) if zip64 else b""
    field = _MAX32 if zip64 else size
    version = 45 if zip64 else 20
    return (
        struct.pack("<4s5H3L2H", b"PK\x03\x04", version, 0, 0, 0, _DOS_DATE, crc, field, field, len(name), len(extra))
        + name
        + extra
    )


def _central_header(name: bytes, crc: int, size: int, offset: int, zip64: bool) -> bytes:
    extra = struct.pack("<HHQQQ", 1, 24, size, size, offset) if zip64 else b""
    field, at = (_MAX32, _MAX32) if zip64 else (size, offset)
    version = 45 if zip64 else 20
    return (
        struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            version,
            version,
            0,
            0,
            0,
            _DOS_DATE,
            crc,
            field,
            field,
            len(name),
            len(extra),
            0,
            0,
            0,
            0,
            at,
        )
        + name
        + extra
    )


def _end_records(entries: int, directory_at: int, directory_size: int) -> bytes:
    """Zip64 end of central directory, its locator, and the classic end record."""
    zip64_at = directory_at + directory_size
    return (
        struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, directory_size, directory_at)
        + struct.pack("<4sLQL", b"PK\x06\x07", 0, zip64_at, 1)
        + struct.pack(
            "<4s4H2LH", b"PK\x05\x06", 0, 0, entries, entries, min(directory_size, _MAX32), min(directory_at, _MAX32), 0
        )
    )


def _reserve(fd: int, offset: int, length: int) -> None:
    """Allocate a file's blocks before they are written: filling reserved blocks costs the
    kernel less than allocating them write by write (about 8% of the write's CPU time here).

    fallocate(2) itself, not `os.posix_fallocate`: where a file system cannot reserve space
    (older NFS), glibc emulates it by writing every block, which would cost a second write.
    Reserving is only an optimisation: where it fails (a file system or system without it), the
    writes allocate as they go, and a full disk fails them with its own error.
    """
    try:
        fallocate = ctypes.CDLL(None).fallocate
    except (OSError, AttributeError):  # not Linux
        return
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fallocate(fd, 0, offset, length)


class ShardWriter:
    """Write a shard (an .npz, see the module) image by image, with sequential writes (no memory
    map: page faults cost more than the copy) into space reserved when it opens. Used as a
    context manager: the shard is renamed into place when every image is written, and deleted
    if the block raises."""

    def __init__(self, path: str | os.PathLike, info: ShardInfo, shape_per_image: tuple, dtype: str):
        self.path, self.info = Path(path), info
        self.dtype = np.dtype(dtype)
        self.shape = (len(info.image_ids), *shape_per_image)
        self._filled = 0
        self._entries: list[tuple[bytes, int, int, int, bool]] = []  # name, crc, size, offset, zip64

    def __enter__(self) -> ShardWriter:
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            self._file = stack.enter_context(open(tmp, "wb"))
            for name, value in _metadata(self.info, self.shape, self.dtype).items():
                self._write_member(f"{name}.npy".encode(), _npy_bytes(value))
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
            )
            size = len(header.getvalue()) + int(np.prod(self.shape)) * self.dtype.itemsize
            self._attention_at = self._file.tell()
            self._entries.append((ATTENTION_MEMBER.encode(), 0, size, self._attention_at, True))
            local_header = _local_header(ATTENTION_MEMBER.encode(), 0, size, zip64=True)
            # Exactly the member: the central directory is appended after it, so the file ends
            # where the zip format needs it to.
            _reserve(self._file.fileno(), self._attention_at, len(local_header) + size)
            self._file.write(local_header + header.getvalue())
            self._crc = crc32(header.getvalue())
            self._stack = stack.pop_all()
        return self

    def _write_member(self, name: bytes, data: bytes) -> None:
        crc, offset = crc32(data), self._file.tell()
        self._file.write(_local_header(name, crc, len(data), zip64=False) + data)
        self._entries.append((name, crc, len(data), offset, False))

    def write_blocks(self, blocks: list[np.ndarray]) -> None:
        """One batch given as the model returns it: per block, (batch, heads, N, N)."""
        if self._filled + len(blocks[0]) > self.shape[0]:
            raise ShardError(f"{self.path}: more than its {self.shape[0]} images written")
        crc = self._crc
        for i in range(len(blocks[0])):
            for block in blocks:
                data = np.ascontiguousarray(block[i], dtype=self.dtype).data
                self._file.write(data)
                crc = crc32(data, crc)
        self._crc = crc
        self._filled += len(blocks[0])

    def _finish(self) -> None:
        """The attention member's CRC into its header, then the central directory."""
        end = self._file.tell()
        name, _, size, offset, zip64 = self._entries[-1]
        self._entries[-1] = (name, self._crc, size, offset, zip64)
        self._file.flush()
        os.pwrite(self._file.fileno(), struct.pack("<L", self._crc), self._attention_at + _LOCAL_CRC_AT)
        directory = b"".join(_central_header(*entry) for entry in self._entries)
        self._file.write(directory + _end_records(len(self._entries), end, len(directory)))

    def __exit__(self, kind, error, traceback) -> None:
        # The file closes first, then the shard is renamed (or, on error, deleted).
        failed = None
        if kind is None:
            try:
                if self._filled != self.shape[0]:
                    raise ShardError(f"{self.path}: {self._filled} of {self.shape[0]} images written")
                self._finish()
            except BaseException as e:
                failed = e
                kind, error, traceback = type(e), e, e.__traceback__
        self._stack.__exit__(kind, error, traceback)
        if failed is not None:
            raise failed


def _memmap_member(path: Path, member: zipfile.ZipInfo) -> tuple[np.ndarray, int]:
    """The ``.npy`` member ``member`` (stored, not compressed) as a read-only memory map, and
    the CRC-32 of its .npy header (the start of the member's CRC)."""
    if member.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{member.filename} is compressed; only stored members can be memory-mapped")
    with open(path, "rb") as f:
        f.seek(member.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"no local header for {member.filename}")
        name_length, extra_length = struct.unpack("<2H", local[26:30])
        data_at = member.header_offset + 30 + name_length + extra_length
        f.seek(data_at)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        array_at = f.tell()
        f.seek(data_at)
        header_crc = crc32(f.read(array_at - data_at))
    if fortran_order or dtype.hasobject:
        raise ValueError(f"{member.filename}: expected a C-ordered numeric array")
    if array_at - data_at + int(np.prod(shape)) * dtype.itemsize != member.file_size:
        raise ValueError(f"{member.filename}: its .npy header does not match the member size")
    return np.memmap(path, dtype=dtype, mode="r", offset=array_at, shape=shape), header_crc


def open_attention(path: str | os.PathLike, *, delete_if_damaged: bool = False) -> AttentionShard:
    """Open an attention shard written with ``extract.keep_attention``: its metadata, and its
    attention (image, block, head, query, key) memory-mapped, so a slice reads only its bytes.

    Tokens are the prefix tokens (``prefix_tokens`` names their kinds: ``cls``,
    ``distillation``, ``register``) followed by ``grid_size**2`` patches, row-major.

    Args:
        path: an ``attention/<model>/shard_<k>.npz`` file.
        delete_if_damaged: delete a truncated or inconsistent shard before raising, so that
            the next pipeline run rebuilds it (the reduce stage does).

    Raises:
        ShardError: the shard is truncated or inconsistent; the message names it.
    """
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with npz:
            # Shards are written stored: a compressed member is not one of ours, and inflating it
            # could take any amount of memory (a zip bomb). Stored, every read is bounded by the file.
            compressed = [m.filename for m in npz.zip.infolist() if m.compress_type != zipfile.ZIP_STORED]
            if compressed:
                raise ValueError(f"compressed members {compressed} (shards are written uncompressed)")
            meta = {name: npz[name] for name in METADATA}
            member = npz.zip.getinfo(ATTENTION_MEMBER)
        attention, header_crc = _memmap_member(path, member)
        shard = AttentionShard(
            model=meta["model"].item(),
            checkpoint=meta["checkpoint"].item(),
            identity=meta["identity"].item(),
            image_ids=meta["image_ids"].tolist(),
            prefix_tokens=tuple(meta["prefix_tokens"].tolist()),
            grid_size=int(meta["grid_size"]),
            patch_size=int(meta["patch_size"]),
            attention=attention,
            path=path,
            crc=member.CRC,
            header_crc=header_crc,
        )
        tokens = shard.num_prefix_tokens + shard.grid_size**2
        expected = (len(shard.image_ids), int(meta["num_blocks"]), int(meta["num_heads"]), tokens, tokens)
        if attention.shape != expected or attention.dtype.name != meta["dtype"].item():
            raise ValueError(
                f"attention {attention.dtype} {attention.shape} does not match its metadata ({meta['dtype']} {expected})"
            )
        if int(meta["num_prefix_tokens"]) != shard.num_prefix_tokens:
            raise ValueError(f"num_prefix_tokens {int(meta['num_prefix_tokens'])} but prefix_tokens {shard.prefix_tokens}")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        if delete_if_damaged:
            path.unlink(missing_ok=True)
            raise ShardError(f"{path}: attention shard is truncated or corrupt ({e}); deleted it, rerun to rebuild it") from e
        raise ShardError(f"{path}: attention shard is truncated or corrupt ({e}); delete it and rerun to rebuild it") from e
    return shard


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
