"""Image sources: each enumerates :class:`ImageRecord`s without decoding anything.

Every record carries a ``source`` key that :func:`read_source` turns back into the original
bytes, so later stages re-read images from the manifest alone:

- ``bundled:<name>``                 a photo shipped inside scikit-image (offline)
- ``file:<path>``                    any image file (a plain path works too)
- ``imagenet2012:<tar>#<member>``    a member of ``ILSVRC2012_img_val.tar``, read in place
- ``imagenet_v2:<root>#<class>/<file>``  a file of the extracted ImageNetV2 archive

Labels are ImageNet-1k indices in tfds order (sorted WordNet ids), -1 when unknown.
tensorflow_datasets is imported lazily and only by the ImageNetV2 download; the label files
it ships are read as plain text.
"""

from __future__ import annotations

import ast
import csv
import functools
import importlib.util
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..environment import tfds_data_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGENET_VAL_TAR = "ILSVRC2012_img_val.tar"
IMAGENET_VAL_COUNT = 50_000
IMAGENET_CLASSES = 1000  # labels are indices into ImageNet-1k (tfds order)
DEFAULT_MANUAL_DIR = Path("~/tensorflow_datasets/downloads/manual")
SOURCE_DESCRIPTIONS = {
    "imagenet2012": "manual ImageNet validation tar",
    "imagenet_v2": "public ImageNetV2 download",
    "folder": "your own images",
    "bundled": "offline photos",
}


def alternatives(to: str) -> str:
    """The image sources other than ``to``, for an error message."""
    others = [f"`images.source: {k}` ({v})" for k, v in SOURCE_DESCRIPTIONS.items() if k != to]
    return "Alternatives: " + ", ".join(others[:-1]) + " or " + others[-1] + "."


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    label: int  # ImageNet-1k index in tfds order, -1 when unknown
    source: str  # key for read_source()
    licence: str
    origin: str
    read_bytes: Callable[[], bytes] | None = None  # a faster reader than read_source, if known

    def read(self) -> bytes:
        return self.read_bytes() if self.read_bytes is not None else read_source(self.source)


# ---------------------------------------------------------------- tfds label files (plain text)


def _tfds_file(relative: str) -> Path:
    spec = importlib.util.find_spec("tensorflow_datasets")  # locates the package, imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("tensorflow_datasets is not installed; it ships the ImageNet label files")
    return Path(spec.submodule_search_locations[0]) / relative


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 WordNet ids in tfds' label order (its ``ClassLabel`` for imagenet2012 and imagenet_v2)."""
    wnids = tuple(_tfds_file("datasets/imagenet2012/labels.txt").read_text().split())
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids), "unexpected tfds imagenet2012/labels.txt"
    return wnids


@functools.cache
def source_class_names() -> tuple[str, ...]:
    """Human-readable ImageNet-1k class names by label index ("tabby, tabby cat" at 281).

    tfds ships them as ``IMAGENET_LABELS_LIST`` in its SI-Score labels module (same order as
    :func:`imagenet_wnids`); it is parsed, not imported.
    """
    tree = ast.parse(_tfds_file("datasets/siscore/labels.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "IMAGENET_LABELS_LIST":
            names = tuple(ast.literal_eval(node.value))
            assert len(names) == 1000, "unexpected tfds IMAGENET_LABELS_LIST"
            return names
    raise LookupError("IMAGENET_LABELS_LIST not found in tensorflow_datasets/datasets/siscore/labels.py")


@functools.cache
def imagenet_validation_labels() -> tuple[int, ...]:
    """Label index of each validation image, in sorted file-name order (tfds' validation_labels.txt)."""
    index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    wnids = _tfds_file("datasets/imagenet2012/validation_labels.txt").read_text().split()
    return tuple(index[w] for w in wnids)


# ---------------------------------------------------------------- bundled (scikit-image)

# Real photographs shipped inside scikit-image's wheel (no download). Licence and origin as
# the skimage.data docstrings state them. Labels only where one ImageNet class is unambiguous.
_SKIMAGE = "scikit-image sample data (skimage.data.{})"
BUNDLED = {
    # name: (file, label, licence, origin)
    "astronaut": (
        "astronaut.png",
        -1,
        "public domain (no known copyright restrictions)",
        "NASA Great Images database, https://flic.kr/p/r9qvLn; " + _SKIMAGE.format("astronaut"),
    ),
    "chelsea": ("chelsea.png", 281, "CC0 (photographer Stefan van der Walt)", "Chelsea the cat; " + _SKIMAGE.format("chelsea")),
    "coffee": (
        "coffee.png",
        -1,
        "CC0 (photographer Rachel Michetti)",
        "courtesy of Pikolo Espresso Bar; " + _SKIMAGE.format("coffee"),
    ),
    "rocket": (
        "rocket.jpg",
        -1,
        "public domain (released by SpaceX)",
        "SpaceX Photos, https://www.flickr.com/photos/spacexphotos/16511594820/; " + _SKIMAGE.format("rocket"),
    ),
    "hubble_deep_field": (
        "hubble_deep_field.jpg",
        -1,
        "public domain (NASA)",
        "HubbleSite release 2012-37; " + _SKIMAGE.format("hubble_deep_field"),
    ),
    "immunohistochemistry": (
        "ihc.png",
        -1,
        "no known copyright restrictions",
        "Center for Microscopy And Molecular Imaging (CMMI); " + _SKIMAGE.format("immunohistochemistry"),
    ),
    "retina": (
        "retina.jpg",
        -1,
        "CC0 1.0 (Mikael Häggström)",
        "Wikimedia Commons, File:Fundus_photograph_of_normal_left_eye.jpg; " + _SKIMAGE.format("retina"),
    ),
    "coins": (
        "coins.png",
        -1,
        "no known copyright restrictions",
        "Brooklyn Museum Collection, Greek coins from Pompeii; " + _SKIMAGE.format("coins"),
    ),
    "camera": ("camera.png", -1, "CC0 (photographer Lav Varshney)", _SKIMAGE.format("camera")),
    "clock": (
        "clock_motion.png",
        -1,
        "public domain (photographer Stefan van der Walt)",
        "motion-blurred wall clock; " + _SKIMAGE.format("clock"),
    ),
}


def _skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("scikit-image is not installed; the bundled photos ship inside it")
    return Path(spec.submodule_search_locations[0]) / "data"


def bundled() -> list[ImageRecord]:
    """The offline photos (10, three of them greyscale), read as the original files."""
    return [
        ImageRecord(name, label, f"bundled:{name}", licence, origin) for name, (_file, label, licence, origin) in BUNDLED.items()
    ]


# ---------------------------------------------------------------- folder


def folder(path: str | os.PathLike) -> list[ImageRecord]:
    """Every image file under ``path`` (recursive, sorted); ``image_id`` is the relative path.

    Every entry with an image extension is a record, also one that cannot be read as a file: a
    dangling symbolic link or a folder (or a link to one) named like an image is rejected by the
    sample stage with the reason, not skipped without a word. A name that is not valid UTF-8 is
    refused (ValueError naming it): it cannot be written to the tables.

    An optional ``labels.csv`` (UTF-8, with or without Excel's byte order mark) (columns ``filename,label``, filename relative to the folder)
    gives labels; files it does not list get -1. A row naming no image file of the folder, a
    file listed twice, or a label that is not an integer from -1 to 999 is refused (ValueError
    naming the file and the row): it would silently score the image as unlabelled or wrong.
    """
    root = _folder_root(path)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    names = [p.relative_to(root).as_posix() for p in files]
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = ascii(name)[1:-1]
            raise ValueError(
                f"{root}: the file name {shown} is not valid UTF-8 (the \\udcXX are its undecodable bytes); "
                "rename it, e.g. with convmv -f latin1 -t utf8"
            ) from None
    labels = _read_labels(root / "labels.csv", set(names)) if (root / "labels.csv").is_file() else {}
    origin = f"folder {root}"
    return [ImageRecord(rel, labels.get(rel, -1), f"file:{p}", "unknown", origin) for p, rel in zip(files, names)]


def _folder_root(path: str | os.PathLike) -> Path:
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"images.path: {root} is not a folder. {alternatives('folder')}")
    return root


def folder_non_images(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """The files under ``path`` that :func:`folder` does not take (no image extension; the
    folder's ``labels.csv`` apart), as (relative name, ``file:`` source, reason) rows for the
    table of rejected images: a skipped file is listed, not dropped without a word. Hidden
    files and OS litter (``.DS_Store``, ``Thumbs.db``) are listed like any other; a name that
    is not valid UTF-8 is shown with its undecodable bytes escaped."""
    root = _folder_root(path)
    accepted = " ".join(IMAGE_EXTENSIONS)
    rows = []
    for file in sorted(root.rglob("*")):
        if file.suffix.lower() in IMAGE_EXTENSIONS or file.is_dir() or file == root / "labels.csv":
            continue
        extension = f"({file.suffix})" if file.suffix else "(none)"
        reason = f"not an image extension {extension}; accepted: {accepted}"
        row = (file.relative_to(root).as_posix(), f"file:{file}", reason)
        rows.append(tuple(text.encode("utf-8", "backslashreplace").decode() for text in row))
    return rows


def _read_labels(csv_path: Path, names: set[str]) -> dict[str, int]:
    """``labels.csv`` as {relative file name: ImageNet-1k label index}, checked row by row."""
    labels = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # Excel writes a byte order mark
        reader = csv.DictReader(f)
        if not {"filename", "label"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{csv_path} needs the columns filename,label; found {reader.fieldnames}")
        for row in reader:
            where = f"{csv_path} line {reader.line_num}"
            name = Path(row["filename"] or "").as_posix()
            text = (row["label"] or "").strip()
            if name not in names:
                raise ValueError(f"{where}: {row['filename']!r} is not an image file in {csv_path.parent}; fix or remove the row")
            if name in labels:
                raise ValueError(f"{where}: {name!r} is listed twice; keep one row per file")
            if not re.fullmatch(r"-?[0-9]+", text) or not -1 <= int(text) < IMAGENET_CLASSES:
                raise ValueError(
                    f"{where}: label {row['label']!r} of {name!r} is not an ImageNet-1k class index "
                    f"(an integer from 0 to {IMAGENET_CLASSES - 1}, or -1 for unknown)"
                )
            labels[name] = int(text)
    return labels


# ---------------------------------------------------------------- imagenet2012 validation tar


@functools.cache
def _index_tar(path: str, mtime_ns: int, size: int) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size), headers only (tar members are stored uncompressed)."""
    with tarfile.open(path, mode="r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}


def _tar_index(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    st = os.stat(path)
    return _index_tar(str(path), st.st_mtime_ns, st.st_size)


def _read_range(path: str | os.PathLike, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"{path}: short read at offset {offset} ({len(data)} of {size} bytes)")
    return data


def _tar_member_reader(path: str, offset: int, size: int) -> Callable[[], bytes]:
    return lambda: _read_range(path, offset, size)


def imagenet2012(manual_dir: str | os.PathLike | None = None, expected_count: int = IMAGENET_VAL_COUNT) -> list[ImageRecord]:
    """The ILSVRC2012 validation images, read in place from ``<manual_dir>/ILSVRC2012_img_val.tar``.

    Labels are assigned the way tfds does (sorted member names zipped with its
    validation_labels.txt), so the tar must hold exactly the ``expected_count`` members
    ``ILSVRC2012_val_00000001.JPEG`` ...; anything else is refused rather than mislabelled.
    """
    manual_dir = Path(manual_dir or DEFAULT_MANUAL_DIR).expanduser()
    tar_path = (manual_dir / IMAGENET_VAL_TAR).resolve()
    if not tar_path.is_file():
        raise FileNotFoundError(
            f"images.source: imagenet2012 needs the ImageNet validation tar at {tar_path} "
            f"(download {IMAGENET_VAL_TAR}, 6.7 GB, from https://image-net.org after registering; "
            f"set images.path to the folder that holds it). {alternatives('imagenet2012')}"
        )
    index = _tar_index(tar_path)
    expected = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, expected_count + 1)]
    missing = sorted(set(expected) - set(index))
    extra = sorted(set(index) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{tar_path} is not the complete ImageNet validation tar: it holds {len(index)} files, "
            f"expected exactly the {expected_count} files ILSVRC2012_val_00000001.JPEG ... "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(extra)} unexpected, e.g. {extra[:3]}). "
            "Labels are assigned by sorted file name, so a partial or altered tar would be mislabelled. "
            "Re-download the tar (sha256 c7e06a6c0baccf06d8dbeb6577d71efff84673a5dbdd50633ab44f8ea0456ae0)."
        )
    labels = imagenet_validation_labels()
    if len(labels) < expected_count:
        raise ValueError(f"tfds ships {len(labels)} validation labels, fewer than {expected_count}")
    licence = "ImageNet terms of access (non-commercial research and education)"
    origin = "ILSVRC2012 validation set, https://image-net.org"
    return [
        ImageRecord(
            name, labels[i], f"imagenet2012:{tar_path}#{name}", licence, origin, _tar_member_reader(str(tar_path), *index[name])
        )
        for i, name in enumerate(expected)  # expected is already in sorted order
    ]


# ---------------------------------------------------------------- imagenet_v2 (tfds download)


def _imagenet_v2_root(data_dir: Path, variant: str) -> Path:
    """The extracted archive: found in tfds' download folder, else downloaded and extracted once
    with tfds' download manager and its registered checksums."""
    import urllib.error
    import urllib.request

    from tensorflow_datasets.core.download import checksums
    from tensorflow_datasets.core.download.download_manager import DownloadManager
    from tensorflow_datasets.datasets.imagenet_v2 import imagenet_v2_dataset_builder as v2

    url, topdir = v2._IMAGENET_V2_URLS[variant], v2._TAR_TOPDIR[variant]
    for found in sorted((data_dir / "downloads" / "extracted").glob(f"*/{topdir}")):
        if any(found.iterdir()):
            return found  # extracted before (by us or by tfds' own download_and_prepare): offline is fine
    try:  # fail in seconds when offline, not after tfds' minutes of retries
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=20).close()
    except urllib.error.HTTPError:
        pass  # the server answered; let the download itself decide
    manager = DownloadManager(
        download_dir=data_dir / "downloads",
        url_infos=checksums.load_url_infos(_tfds_file("datasets/imagenet_v2/checksums.tsv")),
        dataset_name="imagenet_v2",
        force_checksums_validation=True,
    )
    return Path(manager.download_and_extract(url)) / topdir


def imagenet_v2(data_dir: str | os.PathLike | None = None, variant: str = "matched-frequency") -> list[ImageRecord]:
    """ImageNetV2 (default: matched-frequency, 10,000 images), labels as tfds gives them.

    tfds' imagenet_v2 builder stores its examples as ``<class index>/<file>`` and labels each
    by its folder; this reads the extracted archive the same way, without building the tfds
    dataset (which would decode and re-write every image). Downloads 1.2 GB once.
    """
    data_dir = Path(data_dir or tfds_data_dir()).expanduser().resolve()
    try:
        root = _imagenet_v2_root(data_dir, variant)
    except Exception as error:  # offline, blocked, checksum mismatch ...
        raise RuntimeError(
            f"images.source: imagenet_v2 could not download or extract ImageNetV2 ({variant}) "
            f"into {data_dir / 'downloads'} ({type(error).__name__}: {error}). It needs network access "
            f"once (1.2 GB from huggingface.co); afterwards it works offline from that folder. {alternatives('imagenet_v2')}"
        ) from error
    files = sorted(
        (p for p in root.glob("*/*") if p.is_file() and p.parent.name.isdigit()),
        key=lambda p: (int(p.parent.name), p.name),
    )
    if not files:
        raise FileNotFoundError(f"no images under {root}; delete it to re-extract")
    licence = "see https://github.com/modestyachts/ImageNetV2 (Flickr images, research use)"
    origin = f"ImageNetV2 {variant} via tensorflow_datasets"
    return [
        ImageRecord(rel, int(p.parent.name), f"imagenet_v2:{root}#{rel}", licence, origin)
        for p in files
        for rel in [f"{p.parent.name}/{p.name}"]
    ]


# ---------------------------------------------------------------- dispatch and re-reading

SOURCES = {"bundled": bundled, "folder": folder, "imagenet2012": imagenet2012, "imagenet_v2": imagenet_v2}


def load_source(kind: str, **options) -> list[ImageRecord]:
    """``load_source("folder", path=...)``, ``load_source("imagenet2012", manual_dir=...)`` ..."""
    if kind not in SOURCES:
        raise ValueError(f"images.source must be one of {sorted(SOURCES)}, not {kind!r}")
    return SOURCES[kind](**options)


def read_source(source: str) -> bytes:
    """The original bytes of one image from its manifest ``source`` key."""
    scheme, sep, rest = source.partition(":")
    if not sep or scheme not in ("bundled", "file", "imagenet2012", "imagenet_v2"):
        return Path(source).read_bytes()  # a plain path (also Windows drive letters)
    if scheme == "bundled":
        if rest not in BUNDLED:
            raise KeyError(f"unknown bundled image {rest!r}; known: {sorted(BUNDLED)}")
        return (_skimage_data_dir() / BUNDLED[rest][0]).read_bytes()
    if scheme == "file":
        return Path(rest).read_bytes()
    path, _, member = rest.rpartition("#")
    if scheme == "imagenet_v2":
        return (Path(path) / member).read_bytes()
    index = _tar_index(path)
    if member not in index:
        raise KeyError(f"{member} is not in {path}")
    return _read_range(path, *index[member])
