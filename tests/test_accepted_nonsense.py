"""Late failures and accepted nonsense (issue 23 item 4): refused before any job (or before any
extraction) with the key or file named and the fix, or accepted where the input is fine. Dry
runs and a real run of the workflow, files made here."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import copy_workflow, peak_memory_mb, snakemake
from vitprobe.data import sources
from vitprobe.pipeline.config import check_images
from vitprobe.pipeline.sample import sample_stage

SRC = Path(__file__).resolve().parents[1] / "src"
MODEL = {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1, "spec": {"depth": 1, "num_classes": 10}}


def _png(path: Path, seed: int = 0) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path, "PNG")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nonsense")
    (tmp / "work").mkdir()
    images = tmp / "images"
    images.mkdir()
    for k in range(4):
        _png(images / f"p{k}.png", k)
    return copy_workflow(tmp / "work"), images


def _dry_run(workdir: Path, config: dict) -> tuple[int, str]:
    """The exit status and console output of a dry run."""
    (workdir / "c.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    result = snakemake(workdir, "-n", "--configfile", "c.yaml", check=False)
    return result.returncode, result.stdout + result.stderr


def _config(images: Path, **changes) -> dict:
    config = {
        "experiment": "nonsense",
        "images": {"source": "folder", "path": str(images)},
        "models": {"vit": dict(MODEL)},
        "cka": {"group_size": 4},
        "extract": {"batch_size": 4, "shard_size": 4},
    }
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    return config


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("token_norms.min_gap", float("nan"), ["token_norms.min_gap: nan is not a finite number"]),
        ("analysis.pca.threshold", float("inf"), ["analysis.pca.threshold: inf is not a finite number"]),
        ("models.vit.published_top1", float("nan"), ["models.vit.published_top1: nan is not a finite number"]),
        ("models.vit.preprocess.std", [float("inf"), 0.2, 0.2], ["models.vit.preprocess.std[0]: inf is not a finite number"]),
        (
            "models.vit.preprocess.mean",
            [123.675, 116.28, 103.53],
            ["models.vit.preprocess.mean", "0-255 convention? divide by 255: [0.485, 0.456, 0.406]"],
        ),
        ("models.vit.preprocess.std", [58.395, 57.12, 57.375], ["divide by 255: [0.229, 0.224, 0.225]"]),
    ],
)
def test_non_finite_and_0_255_settings_are_refused_before_any_job(workdir, key, value, words):
    root, images = workdir
    status, console = _dry_run(root, _config(images, **{key: value}))
    assert status != 0
    for word in words:
        assert word in console, console[-2000:]
    assert "Traceback" not in console


def test_results_inside_images_path_is_refused(workdir):
    root, _ = workdir
    status, console = _dry_run(root, _config(root))  # the working folder holds results/
    assert status != 0
    assert "holds (or lies inside) this run's results folder" in console, console[-2000:]


def test_non_utf8_file_name_is_named_in_the_error(tmp_path, workdir):
    root, _ = workdir
    images = tmp_path / "latin1"
    images.mkdir()
    _png(images / "ok.png")
    _png(Path(os.fsdecode(bytes(images) + b"/caf\xe9.png")))
    status, console = _dry_run(root, _config(images))
    assert status != 0
    assert "the file name caf\\udce9.png is not valid UTF-8" in console, console[-2000:]
    assert "Traceback" not in console


def test_labels_csv_with_a_byte_order_mark_is_read(tmp_path):
    _png(tmp_path / "cat.png")
    (tmp_path / "labels.csv").write_bytes("filename,label\r\ncat.png,281\r\n".encode("utf-8-sig"))
    assert [(r.image_id, r.label) for r in sources.folder(tmp_path)] == [("cat.png", 281)]


def test_tilde_in_images_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "photos").mkdir()
    _png(tmp_path / "photos" / "a.png")
    assert check_images({"source": "folder", "path": "~/photos", "count": None}) == 1
    assert [r.image_id for r in sources.folder("~/photos")] == ["a.png"]


def sample_folder(images: Path, tmp_path: Path, strict: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sample stage on folder ``images``: its manifest and its rejected files."""
    sample_stage(
        {"source": "folder", "path": str(images), "count": None, "seed": 0, "strict": strict},
        tmp_path / "m.parquet",
        tmp_path / "r.parquet",
    )
    return pd.read_parquet(tmp_path / "m.parquet"), pd.read_parquet(tmp_path / "r.parquet")


def test_jfif_links_and_folders_named_like_images_are_listed_with_why(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(images / "photo.jfif", "JPEG")
    _png(tmp_path / "outside.png")
    (images / "good_link.png").symlink_to(tmp_path / "outside.png")
    (images / "dangling.png").symlink_to(tmp_path / "gone.png")
    (images / "folder.jpg").mkdir()
    (images / "dir_link.png").symlink_to(images / "folder.jpg")
    manifest, rejected = sample_folder(images, tmp_path, strict=False)
    assert sorted(manifest.image_id) == ["good_link.png", "photo.jfif"]
    reasons = dict(zip(rejected.image_id, rejected.reason))
    assert reasons.keys() == {"dangling.png", "folder.jpg", "dir_link.png"}
    assert f"dangling symbolic link (to {tmp_path / 'gone.png'})" in reasons["dangling.png"]
    assert "a folder (or a link to one) named like an image" in reasons["folder.jpg"]
    assert "a folder (or a link to one) named like an image" in reasons["dir_link.png"]


@pytest.mark.parametrize("strict", [False, True])
def test_files_without_an_image_extension_are_listed_with_why(tmp_path, strict):
    """Notes, OS litter and hidden files in the images folder are not sampled, and each is listed
    in rejected.parquet naming its extension and the accepted ones; images.strict is for images."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    _png(images / "a.png")
    _png(images / "sub" / ".hidden.png", seed=1)  # a hidden image is still an image
    for name in ("notes.txt", "README", ".DS_Store", "Thumbs.db", "sub/scan.PDF"):
        (images / name).write_bytes(b"not an image")
    (images / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"latin-1 name")
    (images / "labels.csv").write_text("filename,label\na.png,3\n")
    manifest, rejected = sample_folder(images, tmp_path, strict)
    assert sorted(manifest.image_id) == ["a.png", "sub/.hidden.png"]
    reasons = dict(zip(rejected.image_id, rejected.reason))
    extensions = {".DS_Store": "none", "README": "none", "Thumbs.db": ".db", "caf\\udce9.txt": ".txt", "notes.txt": ".txt"}
    extensions["sub/scan.PDF"] = ".PDF"
    assert reasons.keys() == extensions.keys()
    for name, extension in extensions.items():
        assert reasons[name].startswith(f"not an image extension ({extension}); accepted: .jpg .jpeg .jpe .jfif .png"), reasons
    assert dict(zip(rejected.image_id, rejected.source))["notes.txt"] == f"file:{images / 'notes.txt'}"


def test_large_non_image_file_is_refused_from_its_header(tmp_path):
    """A 3 GB file named .jpg that is no image (sparse: no disk used) is rejected after its first
    bytes; the peak memory of the sample stage stays that of the interpreter and its imports."""
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(3 << 30)
    peak = peak_memory_mb(f"""
        from vitprobe.data import manifest, sources
        rows, rejected = manifest.build_manifest(sources.folder({str(tmp_path)!r}))
        assert rows.empty and "UnidentifiedImageError" in rejected.reason[0], rejected
    """)
    assert peak < 400, peak


@pytest.mark.slow
def test_too_few_usable_images_for_a_cka_group_stop_before_extraction(tmp_path):
    """10 files, 3 broken: 7 usable, fewer than cka.group_size 8. The sample job stops naming the
    key and the counts; no extract job starts."""
    images = tmp_path / "images"
    images.mkdir()
    for k in range(7):
        _png(images / f"good{k}.png", k)
    for k in range(3):
        (images / f"broken{k}.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "work").mkdir()
    root = copy_workflow(tmp_path / "work")
    config = _config(images, **{"cka.group_size": 8, "extract.batch_size": 8, "extract.shard_size": 8})
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(root, "--configfile", "c.yaml", check=False)
    assert result.returncode != 0
    log = (root / "results" / "nonsense" / "logs" / "sample.log").read_text()
    assert "cka.group_size: CKA needs one group of 8 images but only 7 of the 10 sampled images are usable" in log
    assert not (root / "results" / "nonsense" / "logs" / "extract").exists()
    assert not (root / "results" / "nonsense" / "manifest.parquet").exists()
