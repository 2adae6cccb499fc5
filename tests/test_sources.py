"""Image sources, the manifest and the shared crops, on real files written by the tests."""

import hashlib
import io
import random
import socket
import struct
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from vitprobe.data import manifest as mf
from vitprobe.data import sources
from vitprobe.data.preprocess import Preprocess

PRE = Preprocess(crop_fraction=1.0)
S = 32


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def gradient(w=48, h=40) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)
    return Image.fromarray(np.stack(np.broadcast_arrays(x[None, :], x[::-1][None, :], 128 * np.ones((h, 1), np.uint8)), -1))


def png_header_only(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG with a real IHDR (1-bit grey) and the given compressed pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- bundled


def test_bundled_photos_are_original_files_with_licences(tmp_path):
    from skimage.data._registry import registry

    records = sources.bundled()
    assert len(records) >= 8
    assert all(r.licence and r.origin for r in records)
    manifest, rejected = mf.build_manifest(records)
    assert rejected.empty and len(manifest) == len(records)
    assert tuple(manifest.columns) == mf.MANIFEST_COLUMNS
    assert manifest.dtypes.to_dict() == {
        "image_id": "str",
        "label": "int64",
        "source": "str",
        "sha256": "str",
        "width": "int64",
        "height": "int64",
        "licence": "str",
        "origin": "str",
        "note": "str",
    }
    for row in manifest.itertuples():  # the bytes are the files skimage ships, unchanged
        assert row.sha256 == registry["data/" + sources.BUNDLED[row.image_id][0]]
    modes = {r.image_id: Image.open(io.BytesIO(r.read())).mode for r in records}
    assert "L" in modes.values() and "RGB" in modes.values()
    chelsea = manifest.set_index("image_id").loc["chelsea"]
    assert (chelsea.width, chelsea.height) == (451, 300)
    assert sources.source_class_names()[chelsea.label].startswith("tabby")
    out = mf.prepare_crops(manifest, S, PRE, tmp_path / "crops.npy")
    crops = np.load(out)
    assert crops.shape == (len(manifest), S, S, 3) and crops.dtype == np.uint8


def test_class_names_and_validation_labels():
    names = sources.source_class_names()
    assert len(names) == 1000 and names[0].startswith("tench") and names[999].startswith("toilet tissue")
    assert len(sources.imagenet_validation_labels()) == 50_000
    assert sources.imagenet_validation_labels()[0] == 65  # ILSVRC2012_val_00000001: sea snake


# ---------------------------------------------------------------- folder, modes, rejects


def test_folder_source_rejects_undecodable_files(tmp_path):
    jpeg = encode(gradient(), "JPEG")
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.JPG").write_bytes(jpeg)
    (tmp_path / "sub" / "b.png").write_bytes(encode(gradient(30, 50), "PNG"))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "readme.txt").write_text("ignored: not an image extension")
    (tmp_path / "labels.csv").write_text("filename,label\na.JPG,281\nsub/b.png,7\n")

    records = sources.folder(tmp_path)
    assert [r.image_id for r in records] == ["a.JPG", "cut.jpg", "empty.jpg", "notes.jpg", "sub/b.png"]
    manifest, rejected = mf.build_manifest(records)
    assert manifest.image_id.tolist() == ["a.JPG", "sub/b.png"]
    assert manifest.label.tolist() == [281, 7]
    assert manifest.width.tolist() == [48, 30] and manifest.height.tolist() == [40, 50]
    assert manifest.sha256[0] == hashlib.sha256(jpeg).hexdigest()
    reasons = rejected.set_index("image_id").reason
    assert sorted(reasons.index) == ["cut.jpg", "empty.jpg", "notes.jpg"]
    assert "empty" in reasons["empty.jpg"]
    assert "truncated" in reasons["cut.jpg"].lower()
    assert "cannot identify" in reasons["notes.jpg"]
    # read back from the manifest's source column alone
    assert sources.read_source(manifest.source[0]) == jpeg
    assert sources.read_source(manifest.source[0].removeprefix("file:")) == jpeg


def exif_rotated_jpeg() -> bytes:
    """Stored 60x30, left half red, right half blue; EXIF orientation 6 (rotate 90 degrees clockwise)."""
    pixels = np.zeros((30, 60, 3), np.uint8)
    pixels[:, :30] = (255, 0, 0)
    pixels[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)


MODES = {
    "grey.jpg": lambda: encode(gradient().convert("L"), "JPEG"),
    "cmyk.jpg": lambda: encode(gradient().convert("CMYK"), "JPEG"),
    "rgba.png": lambda: encode(gradient().convert("RGBA"), "PNG"),
    "palette.png": lambda: encode(gradient().convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    "grey16.png": lambda: encode(Image.fromarray(np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 30), "PNG"),
    "rotated.jpg": exif_rotated_jpeg,
}


def test_every_mode_decodes_and_crops(tmp_path):
    for name, make in MODES.items():
        (tmp_path / name).write_bytes(make())
    manifest, rejected = mf.build_manifest(sources.folder(tmp_path))
    assert rejected.empty, rejected.reason.tolist()
    modes = {n: Image.open(tmp_path / n).mode for n in MODES}
    assert modes == {
        "grey.jpg": "L",
        "cmyk.jpg": "CMYK",
        "rgba.png": "RGBA",
        "palette.png": "P",
        "grey16.png": "I;16",
        "rotated.jpg": "RGB",
    }
    sizes = manifest.set_index("image_id")[["width", "height"]].T.to_dict("list")
    assert sizes["rotated.jpg"] == [30, 60]  # after orientation
    assert sizes["grey.jpg"] == [48, 40]
    crops = np.load(mf.prepare_crops(manifest, S, PRE, tmp_path / "out" / "crops.npy"))
    assert crops.shape == (len(MODES), S, S, 3) and crops.dtype == np.uint8
    rotated = crops[manifest.image_id.tolist().index("rotated.jpg")].astype(int)
    assert rotated[2, S // 2, 0] > 200 and rotated[2, S // 2, 2] < 60  # red on top after rotation
    assert rotated[-3, S // 2, 2] > 200 and rotated[-3, S // 2, 0] < 60  # blue at the bottom
    assert not list((tmp_path / "out").glob("*.part"))


def test_crops_refuse_changed_bytes(tmp_path):
    (tmp_path / "a.png").write_bytes(encode(gradient(), "PNG"))
    manifest, _ = mf.build_manifest(sources.folder(tmp_path))
    (tmp_path / "a.png").write_bytes(encode(gradient(50, 40), "PNG"))
    with pytest.raises(ValueError, match="sha256"):
        mf.prepare_crops(manifest, S, PRE, tmp_path / "crops.npy")
    assert list(tmp_path.iterdir()) == [tmp_path / "a.png"]  # no partial file left


def test_large_images_pass_and_decompression_bombs_are_refused(tmp_path):
    row = b"\x00" + b"\x00" * (10_000 // 8)
    (tmp_path / "big.png").write_bytes(png_header_only(10_000, 10_000, zlib.compress(row * 10_000)))
    (tmp_path / "bomb.png").write_bytes(png_header_only(20_000, 20_000))
    before = Image.MAX_IMAGE_PIXELS
    manifest, rejected = mf.build_manifest(sources.folder(tmp_path))
    assert manifest.image_id.tolist() == ["big.png"] and manifest.width[0] == 10_000
    assert rejected.image_id.tolist() == ["bomb.png"] and "DecompressionBomb" in rejected.reason[0]
    assert Image.MAX_IMAGE_PIXELS == before  # the global limit is restored


# ---------------------------------------------------------------- sampling


def test_sampling_is_seeded_stable_and_bounded():
    records = [sources.ImageRecord(f"img{i:03d}", -1, f"file:{i}", "", "") for i in range(200)]
    a = mf.sample_records(records, 20, seed=0)
    assert [r.image_id for r in a] == [r.image_id for r in mf.sample_records(records, 20, seed=0)]
    assert [r.image_id for r in a] == sorted(r.image_id for r in a)  # source order kept
    assert len({r.image_id for r in a}) == 20
    assert [r.image_id for r in a] != [r.image_id for r in mf.sample_records(records, 20, seed=1)]
    assert mf.sample_records(records, None, seed=0) == records == mf.sample_records(records, 0, seed=0)
    with pytest.raises(ValueError, match="images.count=201 but the source has 200 images"):
        mf.sample_records(records, 201, seed=0)


# ---------------------------------------------------------------- imagenet2012 validation tar


def write_val_tar(path, numbers, shuffle_seed=0):
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in numbers]
    random.Random(shuffle_seed).shuffle(names)  # tar order is not sorted order
    payloads = {}
    with tarfile.open(path, "w") as tar:
        for name in names:
            shade = int(name[-10:-5]) * 10
            data = encode(Image.new("RGB", (8 + shade % 7, 8), (shade, 0, 0)), "JPEG")
            payloads[name] = data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return payloads


def test_imagenet2012_tar_labels_follow_sorted_names(tmp_path):
    payloads = write_val_tar(tmp_path / sources.IMAGENET_VAL_TAR, range(1, 21))
    records = sources.imagenet2012(manual_dir=tmp_path, expected_count=20)
    expected_labels = sources.imagenet_validation_labels()[:20]
    assert [r.image_id for r in records] == sorted(payloads)
    assert [r.label for r in records] == list(expected_labels)
    for r in records:
        assert r.read() == payloads[r.image_id] == sources.read_source(r.source)
    manifest, rejected = mf.build_manifest(mf.sample_records(records, 5, seed=3))
    assert rejected.empty and len(manifest) == 5
    crops = np.load(mf.prepare_crops(manifest, S, PRE, tmp_path / "crops.npy"))
    assert crops.shape == (5, S, S, 3)


@pytest.mark.parametrize("numbers", [range(1, 20), [*range(1, 20), 21], [*range(1, 21), 21_000]])
def test_imagenet2012_partial_or_altered_tar_is_refused(tmp_path, numbers):
    write_val_tar(tmp_path / sources.IMAGENET_VAL_TAR, numbers)
    with pytest.raises(ValueError, match="ILSVRC2012_img_val.tar is not the complete ImageNet validation tar"):
        sources.imagenet2012(manual_dir=tmp_path, expected_count=20)


def test_imagenet2012_missing_tar_names_path_and_alternatives(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        sources.load_source("imagenet2012", manual_dir=tmp_path / "manual")
    message = str(error.value)
    assert str(tmp_path / "manual" / sources.IMAGENET_VAL_TAR) in message
    for alternative in ("images.source: imagenet_v2", "images.source: folder", "images.source: bundled"):
        assert alternative in message


def test_imagenet_v2_offline_failure_is_clear(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable (blocked by the test)")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setattr(socket.socket, "connect", offline)
    with pytest.raises(RuntimeError) as error:
        sources.load_source("imagenet_v2", data_dir=tmp_path)
    message = str(error.value)
    assert "imagenet_v2" in message and str(tmp_path / "downloads") in message
    assert "network" in message and "images.source: bundled" in message


def test_imagenet_v2_reads_an_extracted_archive_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("no network expected"))
    root = tmp_path / "downloads" / "extracted" / "TAR_GZ.example" / "imagenetv2-matched-frequency-format-val"
    for label, name in [(0, "a.jpeg"), (10, "b.jpeg"), (2, "c.jpeg")]:
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        (root / str(label) / name).write_bytes(encode(gradient(), "JPEG"))
    records = sources.imagenet_v2(data_dir=tmp_path)
    assert [(r.image_id, r.label) for r in records] == [("0/a.jpeg", 0), ("2/c.jpeg", 2), ("10/b.jpeg", 10)]
    assert sources.read_source(records[1].source) == (root / "2" / "c.jpeg").read_bytes()


def test_unknown_source_and_bundled_name():
    with pytest.raises(ValueError, match="images.source must be one of"):
        sources.load_source("imagenet")
    with pytest.raises(KeyError, match="unknown bundled image"):
        sources.read_source("bundled:lena")
