"""Killed runs, damaged shards and messy image folders lose nothing; results are deterministic."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import REPO, SNAKEMAKE, copy_workflow, snakemake

pytestmark = pytest.mark.slow

TABLES = ("manifest.parquet", "mean_attention_distance.parquet", "attention_distance_per_image.parquet", "predictions.parquet")
CONFIG = {
    "experiment": "faults",
    "images": {"source": "bundled", "count": 8, "seed": 3},
    "models": {"vit": {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1, "spec": {"depth": 2, "num_classes": 10}}},
    # Two shards of four images, each one CKA group of four.
    "extract": {"batch_size": 4, "shard_size": 4, "keep_attention": True},
    "cka": {"group_size": 4},
    "analysis": {"map_images": 1},
}


def setup(tmp_path: Path, name: str, config: dict = CONFIG) -> tuple[Path, Path]:
    (tmp_path / name).mkdir()
    workdir = copy_workflow(tmp_path / name)
    config_file = workdir / "faults.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return workdir, config_file


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run with --cores 2."""
    workdir, config = setup(tmp_path_factory.mktemp("faults"), "reference")
    snakemake(workdir, "--configfile", str(config))
    return workdir / "results" / "faults"


def assert_same_tables(a: Path, b: Path) -> None:
    for table in TABLES:
        left, right = pd.read_parquet(a / table), pd.read_parquet(b / table)
        assert left.equals(right), f"{table} differs"


def test_killed_run_keeps_finished_shards_and_ends_identical(reference_run, tmp_path):
    workdir, config = setup(tmp_path, "killed")
    out = workdir / "results" / "faults"
    process = subprocess.Popen(
        [*SNAKEMAKE, "--cores", "1", "--configfile", str(config)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    # Wait until one shard is extracted and another extract job has started (its log
    # exists) but not finished.
    def shards(pattern):
        return {int(p.name.split("_")[1].split(".")[0]) for p in out.glob(pattern)}

    while process.poll() is None:  # no time limit: the run itself ends the wait
        done, started = shards("attention/vit/shard_*.npz"), shards("logs/extract/vit_*.log")
        if done and started - done:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "attention/vit").glob("shard_*.npz")}
    assert 0 < len(finished) < 4

    # Snakemake keeps its lock after a kill -9; --unlock releases it (the README says so).
    snakemake(workdir, "--configfile", str(config), "--unlock")
    result = snakemake(workdir, "--configfile", str(config))  # incomplete jobs rerun by profiles/default
    for name, mtime in finished.items():  # finished shards were kept, not recomputed
        assert (out / "attention/vit" / name).stat().st_mtime_ns == mtime
    assert len(re.findall(r"Job \d+: extract_attention ", result.stdout + result.stderr)) == 2 - len(finished)
    assert not list(out.rglob("*.part"))
    assert_same_tables(reference_run, out)  # --cores 1 plus an interruption == --cores 2 straight


def test_truncated_shard_is_detected_then_rebuilt(reference_run, tmp_path):
    workdir, config = setup(tmp_path, "corrupt")
    out = workdir / "results" / "faults"
    snakemake(workdir, "--configfile", str(config))
    shard = out / "attention/vit/shard_1.npz"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    failed = snakemake(workdir, "--configfile", str(config), "--forcerun", "reduce", check=False)
    assert failed.returncode != 0
    log = (out / "logs/reduce/vit_1.log").read_text()
    assert f"{shard.relative_to(workdir)}: attention shard is truncated or corrupt" in log
    assert not shard.exists()  # never read again
    rebuilt = snakemake(workdir, "--configfile", str(config))
    assert re.search(r"Job \d+: extract_attention ", rebuilt.stdout + rebuilt.stderr)
    assert_same_tables(reference_run, out)


def test_rerun_from_scratch_is_bit_identical(reference_run, tmp_path):
    workdir, config = setup(tmp_path, "again")
    snakemake(workdir, "--configfile", str(config))
    assert_same_tables(reference_run, workdir / "results" / "faults")


def make_messy_folder(folder: Path) -> dict[str, str]:
    """Every kind of awkward file; returns name -> expected outcome ('ok' or a reason fragment)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(photo).save(folder / "rgb.jpg")
    Image.fromarray(photo[..., 0]).save(folder / "gray.png")
    Image.fromarray(photo).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.dstack([photo, photo[..., :1]])).save(folder / "rgba.png")
    Image.fromarray(photo).convert("P").save(folder / "palette.png")
    Image.fromarray((photo[..., 0].astype(np.uint16) * 257)).save(folder / "deep16.png")
    Image.fromarray(photo[:10, :10]).save(folder / "tiny10.png")
    Image.new("RGB", (10000, 10000), (20, 120, 200)).save(folder / "huge.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(photo).save(folder / "rotated.jpg", exif=exif)
    (folder / "empty.jpg").write_bytes(b"")
    good = (folder / "rgb.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.jpg").write_text("not an image")
    return {
        "rgb.jpg": "ok",
        "gray.png": "ok",
        "cmyk.jpg": "ok",
        "rgba.png": "ok",
        "palette.png": "ok",
        "deep16.png": "ok",
        "tiny10.png": "ok",
        "huge.png": "ok",
        "rotated.jpg": "ok",
        "empty.jpg": "empty file",
        "truncated.jpg": "runcated",
        "notes.jpg": "cannot identify",
    }


def test_messy_folder_rejects_bad_files_and_keeps_the_rest(tmp_path):
    expected = make_messy_folder(tmp_path / "photos")
    config = dict(CONFIG, images={"source": "folder", "path": str(tmp_path / "photos")}, experiment="messy")
    workdir, config_file = setup(tmp_path, "messy", config)
    snakemake(workdir, "--configfile", str(config_file))
    out = workdir / "results" / "messy"
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("image_id")
    rejected = pd.read_parquet(out / "rejected.parquet").set_index("image_id")
    assert set(manifest.index) | set(rejected.index) == set(expected)  # nothing silently lost
    for name, outcome in expected.items():
        if outcome == "ok":
            assert name in manifest.index, rejected.loc[name, "reason"] if name in rejected.index else name
        else:
            assert outcome in rejected.loc[name, "reason"], rejected.loc[name, "reason"]
    assert tuple(manifest.loc["rotated.jpg", ["width", "height"]]) == (60, 80)  # orientation applied
    assert len(pd.read_parquet(out / "predictions.parquet")) == 9

    strict = dict(config, images=dict(config["images"], strict=True), experiment="messy_strict")
    (workdir / "strict.yaml").write_text(yaml.safe_dump(strict))
    failed = snakemake(workdir, "--configfile", "strict.yaml", check=False)
    assert failed.returncode != 0
    log = failed.stdout + failed.stderr
    for name, outcome in expected.items():
        if outcome != "ok":
            assert name in log


def test_no_pickle_loading_and_no_shell_from_config():
    """The project never unpickles, and never builds a shell command from config values."""
    forbidden = ["import " + "pickle", "pickle" + ".load", "torch" + ".load(", "allow_pickle" + "=True"]
    sources = [
        *REPO.glob("src/**/*.py"),
        *REPO.glob("workflow/**/*.py"),
        *REPO.glob("workflow/**/*.smk"),
        REPO / "Snakefile",
        *REPO.glob("tests/**/*.py"),
        *REPO.glob("benchmarks/**/*.py"),
    ]
    hits = [f"{p}: {w}" for p in sources for w in forbidden if w in p.read_text()]
    assert hits == []
    rules = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    assert not re.search(r"^\s+(shell|run):", rules, flags=re.M)  # every rule runs a script
    library = {p: p.read_text() for p in REPO.glob("src/**/*.py")}
    assert not any("os.system" in text or "shell=True" in text for text in library.values())
    # Only the calibration starts processes: this Python, on its own module, with an argument list.
    assert {p.name for p, text in library.items() if "subprocess" in text} == {"calibration.py"}
