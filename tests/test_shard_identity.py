"""Nothing trusted by name (issue 23): every per-shard file the extract jobs write (predictions,
per-image distances, maps, representations, map images) carries its model, the digest of its
weights and settings, and its images, and the stages that read it refuse another model's file,
another run's, or a damaged one, naming it, before writing anything; the refused file is deleted
and the next run rebuilds it. Real snakemake runs of tiny random ViTs."""

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
    snakemake(workdir, "--configfile", "c.yaml")
    snakemake(workdir, "--configfile", "other.yaml", *(f"results/other/shards/vit/{name}" for name in CONSUMERS))
    return workdir


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run (its snakemake metadata too), for one case to damage."""
    return Path(shutil.copytree(finished, tmp_path / "work", symlinks=True))


def _flip_byte(path: Path) -> None:
    """One bit of the payload: the middle of the file (a Parquet footer, or an .npz's central
    directory, is at its end)."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    path.write_bytes(bytes(raw))


CASES = {
    "another_model": (
        lambda shard, work: shutil.copy(work / "results/identity/shards/vit2" / shard.name, shard),
        "holds model 'vit2', not 'vit'",
    ),
    "another_run": (
        lambda shard, work: shutil.copy(work / "results/other/shards/vit" / shard.name, shard),
        "written with other weights or model settings",
    ),
    "flipped_byte": (lambda shard, work: _flip_byte(shard), "truncated or corrupt"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", CONSUMERS)
def test_foreign_or_damaged_shard_file_is_refused_by_name(run, name, case):
    """The reading stage fails naming the file and what is wrong, writes nothing, and deletes the
    file; the next run rebuilds it and the stage's output is the untouched run's again."""
    out = run / "results" / "identity"
    shard = out / "shards" / "vit" / name
    log_name, output = CONSUMERS[name]
    before = _content(out / output)
    damage, words = CASES[case]
    damage(shard, run)
    result = snakemake(run, "--configfile", "c.yaml", f"results/identity/{output}", check=False)
    assert result.returncode != 0
    log = (out / "logs" / f"{log_name}.log").read_text()
    for word in [f"results/identity/shards/vit/{name}", words, "rerun to rebuild it"]:
        assert word in log, (word, log[-2000:])
    assert not (out / output).exists()  # nothing written from the refused file
    assert not shard.exists()
    assert planned_jobs(run, run / "c.yaml").get("extract") == 1  # the deleted shard is rebuilt
    snakemake(run, "--configfile", "c.yaml", f"results/identity/{output}")
    assert shard.is_file()
    after = _content(out / output)
    assert after.keys() == before.keys()
    for key, values in before.items():
        np.testing.assert_array_equal(after[key], values)


def _content(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".parquet":
        return {name: column.to_numpy() for name, column in pd.read_parquet(path).items()}
    with np.load(path) as npz:
        return {name: npz[name] for name in npz.files}
