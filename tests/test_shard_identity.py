"""Nothing trusted by name (issue 23): every per-shard file the extract jobs write (predictions,
per-image distances, maps, representations, map images) carries its model, the digest of its
weights and settings, and its images, and the stages that read it refuse another model's file,
another run's, or a damaged one, naming it, before writing anything; the refused file is deleted
and the next run rebuilds it. Real snakemake runs of tiny random ViTs."""

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.slow
MODEL = {"arch": "vit_tiny_patch16_224", "weights": "random", "spec": {"depth": 1, "num_classes": 10}}
# Per kind of shard file: the stage that reads it first and the output it would write.
CONSUMERS = {
    "distance_0.parquet": ("aggregate", "attention_distance_per_image.parquet"),
    "predictions_0.parquet": ("aggregate", "predictions.parquet"),
    "maps_0.npz": ("maps/vit", "maps/vit.npz"),
    "map_images_0.npz": ("maps/vit", "maps/vit.npz"),
    "representations_0.npz": ("token_norms/vit", "token_norms/vit.parquet"),
}
# What the finished run is asked for: the stages that read the shard files, and nothing after them.
OUTPUTS = sorted({f"results/identity/{output}" for _, output in CONSUMERS.values()})


def _config(images: Path, experiment: str, models: dict) -> dict:
    return {
        "experiment": experiment,
        "images": {"source": "folder", "path": str(images)},
        "models": models,
        "extract": {"batch_size": 4, "shard_size": 4},
        "cka": {"group_size": 4},
        "analysis": {"map_images": 1, "pca": {"enabled": False}},
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of two models, and the shard files of another run of the first model
    (seed 9) over the same images: right names, other weights."""
    tmp = tmp_path_factory.mktemp("identity")
    images = tmp / "images"
    images.mkdir()
    for k in range(4):
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(images / f"{k}.png")
    (tmp / "work").mkdir()
    workdir = copy_workflow(tmp / "work")
    models = {"vit": {**MODEL, "seed": 1}, "vit2": {**MODEL, "seed": 2}}
    (workdir / "c.yaml").write_text(yaml.safe_dump(_config(images, "identity", models)))
    (workdir / "other.yaml").write_text(yaml.safe_dump(_config(images, "other", {"vit": {**MODEL, "seed": 9}})))
    snakemake(workdir, *OUTPUTS, "--configfile", "c.yaml")
    snakemake(workdir, *(f"results/other/shards/vit/{name}" for name in CONSUMERS), "--configfile", "other.yaml")
    return workdir


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run (its snakemake metadata too), for one case to damage."""
    return Path(shutil.copytree(finished, tmp_path / "work", symlinks=True))


def _flip_a_value(path: Path) -> None:
    """One bit that changes what a plain reader gets without an error (np.load's CRC check of
    a member aside, which the .npz case meets): for a Parquet table the first such bit that
    `pd.read_parquet` reads as other data; for an .npz, a bit of the median of its largest float
    array."""
    raw = path.read_bytes()
    if path.suffix == ".parquet":
        original = pd.read_parquet(path)
        for at in range(len(raw)):
            flipped = bytearray(raw)
            flipped[at] ^= 0x01
            try:
                if not pd.read_parquet(io.BytesIO(bytes(flipped))).equals(original):
                    path.write_bytes(bytes(flipped))
                    return
            except Exception:  # refused by the plain reader already: not the case to test
                continue
        raise AssertionError(f"no bit of {path} reads back as other data")
    with np.load(path) as npz:
        array = max((npz[name] for name in npz.files if npz[name].dtype.kind == "f"), key=lambda a: a.size).reshape(-1)
    value = np.sort(array)[len(array) // 2].tobytes()
    at = raw.find(value)
    assert at >= 0, (path, value)
    flipped = bytearray(raw)
    flipped[at + len(value) // 2] ^= 0x01
    path.write_bytes(bytes(flipped))


CASES = {
    "another_model": (
        lambda shard, work: shutil.copy(work / "results/identity/shards/vit2" / shard.name, shard),
        "holds model 'vit2', not 'vit'",
    ),
    "another_run": (
        lambda shard, work: shutil.copy(work / "results/other/shards/vit" / shard.name, shard),
        "written with other weights or model settings",
    ),
    "flipped_byte": (lambda shard, work: _flip_a_value(shard), "truncated or corrupt"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", CONSUMERS)
def test_foreign_or_damaged_shard_file_is_refused_by_name(run, name, case):
    """The reading stage fails naming the file and what is wrong, writes nothing, and deletes the
    file, so that the next run plans its extract job again. After a flipped byte (one case per
    kind, to keep the suite short), that next run is made: the stage's output is the untouched
    run's again."""
    out = run / "results" / "identity"
    shard = out / "shards" / "vit" / name
    log_name, output = CONSUMERS[name]
    before = _content(out / output)
    damage, words = CASES[case]
    damage(shard, run)
    result = snakemake(run, f"results/identity/{output}", "--configfile", "c.yaml", check=False)
    assert result.returncode != 0
    log = (out / "logs" / f"{log_name}.log").read_text()
    for word in [f"results/identity/shards/vit/{name}", words, "rerun to rebuild it"]:
        assert word in log, (word, log[-2000:])
    assert not (out / output).exists()  # nothing written from the refused file
    assert not shard.exists()
    assert planned_jobs(run, run / "c.yaml").get("extract") == 1
    if case != "flipped_byte":
        return
    snakemake(run, f"results/identity/{output}", "--configfile", "c.yaml")
    assert shard.is_file()
    after = _content(out / output)
    assert after.keys() == before.keys()
    for key, values in before.items():
        if isinstance(values, pd.Series):
            pd.testing.assert_series_equal(after[key], values, check_exact=True)
        else:
            np.testing.assert_array_equal(after[key], values)


def _content(path: Path) -> dict[str, np.ndarray | pd.Series]:
    if path.suffix == ".parquet":
        return dict(pd.read_parquet(path).items())
    with np.load(path) as npz:
        return {name: npz[name] for name in npz.files}
