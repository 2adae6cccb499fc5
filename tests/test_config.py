"""A bad config stops the run before any job, with one message naming the key and the fix."""

import os
import subprocess
import sys

import pytest
import yaml

from test_pipeline import REPO

BASE = {
    "experiment": "cfg",
    "images": {"source": "bundled", "count": 2},
    "models": {"m": {"arch": "vit_tiny_patch16_224", "weights": "random"}},
}


def dry_run(tmp_path, config: dict | None, env: dict | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)]
    if config is not None:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        args += ["--configfile", str(tmp_path / "c.yaml")]
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})
    result.output = result.stdout + result.stderr  # snakemake logs its errors to either
    return result


def with_(path: str, value) -> dict:
    config = yaml.safe_load(yaml.safe_dump(BASE))
    *parents, leaf = path.split(".")
    target = config
    for key in parents:
        target = target[key]
    target[leaf] = value
    return config


def test_good_config_plans_jobs(tmp_path):
    result = dry_run(tmp_path, BASE)
    assert result.returncode == 0, result.output
    assert "sample" in result.output


@pytest.mark.parametrize(
    "path,value,words",
    [
        ("images.colour", "red", ["Additional properties are not allowed", "colour"]),
        ("unknown_section", {}, ["unknown_section"]),
        ("images.count", "many", ["'many' is not of type", "count"]),
        ("images.source", "flickr", ["flickr", "is not one of"]),
        ("models.m.arch", "vit_huge_patch99", ["models.m.arch", "unknown architecture 'vit_huge_patch99'"]),
        ("models.m.weights", "nothere.safetensors", ["models.m.weights", "nothere.safetensors not found"]),
        ("models.m.weights", "http://example.org/w.npz", ["models.m.weights", "only downloaded over https"]),
        ("models.m.preprocess", {"crop_fraction": 1.5}, ["crop_fraction", "1.5"]),
        ("images.count", 50, ["images.count", "50 images requested", "bundled source has 10"]),
        ("comparisons", [["m", "other"]], ["comparisons", "'other'"]),
        ("images", {"source": "folder", "path": "no_such_folder"}, ["images.path", "no_such_folder"]),
        ("experiment", "../outside", ["'../outside' does not match"]),
        ("export", {"attention_parquet": 1000}, ["attention_parquet", "1000"]),  # a few images, never a run
        ("export", {"attention_parquet": []}, ["attention_parquet"]),
    ],
)
def test_bad_config_is_refused_before_any_job(tmp_path, path, value, words):
    result = dry_run(tmp_path, with_(path, value))
    assert result.returncode != 0
    for word in words:
        assert word in result.output, result.output[-2000:]
    assert not (tmp_path / "results").exists()


def test_attention_export_is_planned_only_on_request(tmp_path):
    assert "export_attention" not in dry_run(tmp_path, BASE).output
    for selection in (2, ["astronaut.png"]):
        result = dry_run(tmp_path, with_("export", {"attention_parquet": selection}))
        assert result.returncode == 0, result.output
        assert "export_attention" in result.output


def test_hub_id_while_offline(tmp_path):
    config = with_("models.m.weights", "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    result = dry_run(tmp_path, config, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")})
    assert result.returncode != 0
    assert "models.m.weights" in result.output and "HF_HUB_OFFLINE=1" in result.output


def test_missing_imagenet_tar_names_the_file_and_the_alternatives(tmp_path):
    # The default config (the paper experiment) with no tar where it is expected.
    result = dry_run(tmp_path, None, env={"HOME": str(tmp_path)})
    assert result.returncode != 0
    assert str(tmp_path / "tensorflow_datasets/downloads/manual/ILSVRC2012_img_val.tar") in result.output
    for alternative in ("imagenet_v2", "folder", "bundled"):
        assert f"images.source: {alternative}" in result.output
