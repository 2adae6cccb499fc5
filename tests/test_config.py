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
    ],
)
def test_bad_config_is_refused_before_any_job(tmp_path, path, value, words):
    result = dry_run(tmp_path, with_(path, value))
    assert result.returncode != 0
    for word in words:
        assert word in result.output, result.output[-2000:]
    assert not (tmp_path / "results").exists()


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


def _families_config(tmp_path) -> dict:
    """config/families.yaml, schema-validated (defaults filled) as the Snakefile does, its ImageNet
    tar replaced by an empty stand-in file (check_config only needs it to exist)."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config/families.yaml").read_text())
    (tmp_path / "ILSVRC2012_img_val.tar").touch()
    config["images"]["path"] = str(tmp_path)
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


def test_families_config_checks(tmp_path, monkeypatch):
    """Everything but the network: the five base-size families, their preprocessing and weights sources."""
    from vitprobe.pipeline.config import check_config

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    entries = check_config(_families_config(tmp_path))
    assert list(entries) == ["clip_b16_openai", "siglip_b16", "mae_b16", "dinov2_b14", "deit3_b16"]
    assert all(e.weights.startswith("hf-hub:timm/") and e.spec.embed_dim == 768 and e.spec.image_size == 224 for e in entries.values())
    assert [key for key, e in entries.items() if e.has_head] == ["deit3_b16"]  # CLIP's head is a projection
    assert entries["clip_b16_openai"].preprocess.mean == (0.48145466, 0.4578275, 0.40821073)
    assert entries["siglip_b16"].spec.num_prefix_tokens == 0


def test_families_config_offline_is_refused_before_any_job(tmp_path):
    """The network-dependent part: offline with an empty hub cache, the dry run stops naming the model."""
    result = dry_run(tmp_path, _families_config(tmp_path), env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")})
    assert result.returncode != 0
    assert "models.clip_b16_openai.weights: hf-hub:timm/vit_base_patch16_clip_224.openai is not in the Hugging Face cache" in result.output
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "extract,words",
    [
        ({"keep_attention": True}, ["extract.keep_attention", "models.m", "attention-pooling head"]),
        ({"attention_kernel": "fused"}, ["extract.attention_kernel", "models.m", "attention-pooling head"]),
    ],
)
def test_siglip_settings_that_cannot_run_are_refused(tmp_path, extract, words):
    config = with_("models.m.arch", "vit_base_patch16_siglip_224")
    config["extract"] = extract
    result = dry_run(tmp_path, config)
    assert result.returncode != 0
    for word in words:
        assert word in result.output, result.output[-2000:]
