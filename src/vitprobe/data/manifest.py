"""Sampling, the manifest (what was analysed, with checksums) and the shared crops."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile

from ..atomic import atomic_path
from .preprocess import Preprocess, crop
from .sources import ImageRecord, read_source

MANIFEST_COLUMNS = ("image_id", "label", "source", "sha256", "width", "height", "licence", "origin", "note")
REJECTED_COLUMNS = ("image_id", "source", "reason")
# Pillow refuses images above twice this many pixels as decompression bombs: 10000 x 10000
# passes, anything above 200 MP is refused.
MAX_IMAGE_PIXELS = 100_000_000
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # more than 8 bits per pixel: preprocess.to_rgb scales them


def sample_records(records: Sequence[ImageRecord], count: int | None, seed: int) -> list[ImageRecord]:
    """``count`` records drawn without replacement, kept in source order; None or 0 means all."""
    records = list(records)
    if not count:
        return records
    if count < 0 or count > len(records):
        raise ValueError(f"images.count={count} but the source has {len(records)} images")
    chosen = np.sort(np.random.default_rng(seed).choice(len(records), size=count, replace=False))
    return [records[i] for i in chosen]


@contextlib.contextmanager
def _decoding_limits():
    """Strict decoding: truncated files fail, decompression bombs above ~200 MP fail."""
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = MAX_IMAGE_PIXELS, False
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _open(data: bytes, check_only: bool = False) -> Image.Image:
    """The decoded image. ``check_only`` (the sample stage: is it whole?) decodes a JPEG at 1/8
    scale: every byte of the stream is still read, so truncation and corrupt data still fail, in
    1/64 of the memory (a 196 MP JPEG: 9 MB instead of 590). The size is the file's either way
    (``original_size``)."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    image = Image.open(io.BytesIO(data))
    image.original_size = image.size
    if check_only and image.format == "JPEG":
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
    image.load()  # decodes everything: catches truncation and corrupt data
    return image


def check_header(record: ImageRecord) -> None:
    """For a file on disk, what can be known before its bytes are read whole: that it is a file
    (not a dangling link or a folder named like an image), that its header is an image format's,
    and (Pillow's check at open) that its pixel count is within the decompression-bomb limit.
    So a 3 GB file that is not an image is refused after its first bytes."""
    scheme, _, rest = record.source.partition(":")
    if scheme != "file":
        return
    path = Path(rest)
    if path.is_symlink() and not path.exists():
        raise FileNotFoundError(f"dangling symbolic link (to {os.readlink(path)})")
    if path.is_dir():
        raise IsADirectoryError("a folder (or a link to one) named like an image")
    if path.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    with Image.open(path):  # reads the header only
        pass


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the file's image after EXIF orientation, as preprocess.to_rgb will see it."""
    w, h = image.original_size
    orientation = image.getexif().get(0x0112)
    return (h, w) if orientation in _TRANSPOSING_ORIENTATIONS else (w, h)


def _note(image: Image.Image) -> str:
    """What the crop will not show as the file holds it: frames beyond the first, deep pixel modes."""
    notes = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        notes.append(f"first of {frames} frames")
    if image.mode in _DEEP_MODES:
        notes.append(f"mode {image.mode} scaled to 8 bits")
    return "; ".join(notes)


def build_manifest(records: Sequence[ImageRecord]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and decode every record once: (manifest, rejected). Each record lands in exactly one.

    A file whose bytes equal an earlier record's (same sha256) is rejected as ``duplicate of
    <image_id>``: it would be analysed and counted twice."""
    rows, rejected, seen, first_with = [], [], set(), {}
    with _decoding_limits():
        for record in records:
            if record.image_id in seen:
                rejected.append((record.image_id, record.source, "duplicate image_id"))
                continue
            seen.add(record.image_id)
            try:
                check_header(record)
                data = record.read()
                with _open(data, check_only=True) as image:
                    width, height = _displayed_size(image)
                    if image.mode == "F" and not np.isfinite(np.asarray(image)).all():
                        raise ValueError("float pixels hold NaN or Inf")
                    note = _note(image)
            except Exception as error:
                rejected.append((record.image_id, record.source, f"{type(error).__name__}: {error}"))
                continue
            sha256 = hashlib.sha256(data).hexdigest()
            if sha256 in first_with:
                rejected.append((record.image_id, record.source, f"duplicate of {first_with[sha256]}"))
                continue
            first_with[sha256] = record.image_id
            rows.append(
                (record.image_id, int(record.label), record.source, sha256, width, height, record.licence, record.origin, note)
            )
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(
        {
            "image_id": str,
            "label": "int64",
            "source": str,
            "sha256": str,
            "width": "int64",
            "height": "int64",
            "licence": str,
            "origin": str,
            "note": str,
        }
    )
    rejected = pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS)).astype(str)
    return manifest, rejected


def prepare_crops(
    manifest: pd.DataFrame,
    image_size: int,
    pre: Preprocess,
    out_path: str | os.PathLike,
    reader: Callable[[str], bytes] | Mapping[str, ImageRecord] | None = None,
) -> Path:
    """Decode, resize and centre-crop every manifest image once; write uint8 (n, S, S, 3) .npy.

    ``reader`` maps a ``source`` key to bytes (default :func:`read_source`), or is a mapping of
    image_id to record. Bytes are checked against the manifest's sha256. The array is filled
    through a memory map and renamed into place when complete.
    """
    shape = (len(manifest), image_size, image_size, 3)
    with atomic_path(out_path) as tmp, _decoding_limits():
        crops = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for i, row in enumerate(manifest.itertuples(index=False)):
            if reader is None:
                data = read_source(row.source)
            elif isinstance(reader, Mapping):
                data = reader[row.image_id].read()
            else:
                data = reader(row.source)
            if hashlib.sha256(data).hexdigest() != row.sha256:
                raise ValueError(f"{row.image_id} ({row.source}) changed since the manifest was built: its sha256 differs")
            with _open(data) as image:
                crops[i] = crop(image, image_size, pre)
        crops.flush()
        del crops
    return Path(out_path)
