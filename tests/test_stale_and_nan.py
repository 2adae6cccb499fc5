"""Real snakemake runs on tiny configs: non-finite weights stop the run at the job that meets
them, naming model, tensor and images; results/<experiment>/ holds only the current config's
outputs; an image added to a folder source is sampled on the next run (issue 13)."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from test_pipeline import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.slow
MODEL = {"arch": "vit_tiny_patch16_224", "spec": {"depth": 1, "num_classes": 10}}


def write_weights(path, poison: str | None) -> None:
    """A tiny random model's weights as a timm-named safetensors file, with NaN in every
    tensor whose name starts with ``poison`` ('' poisons all)."""
    from safetensors.numpy import save_file

    import vitprobe

    model = vitprobe.load_model(MODEL["arch"], **MODEL["spec"])
    state = {}
    for name, var in model.keras_model.weights_by_name.items():
        value = np.array(var.numpy(), dtype=np.float32)
        if name == "patch_embed.proj.weight":  # Keras (p*p*3, D) -> timm (D, 3, p, p)
            value = value.reshape(16, 16, 3, -1).transpose(3, 2, 0, 1)
        elif name.endswith(".weight") and value.ndim == 2:
            value = value.T
        if poison is not None and name.startswith(poison):
            value[...] = np.nan
        state[name] = np.ascontiguousarray(value)
    save_file(state, str(path))


def setup(tmp_path, config: dict):
    workdir = copy_workflow(tmp_path)
    (workdir / "c.yaml").write_text(yaml.safe_dump(config))
    return workdir, workdir / "c.yaml"


@pytest.mark.parametrize("poison", ["head.", "norm."])
def test_nan_in_head_or_final_norm_fails_extraction_naming_model_tensor_images(tmp_path, poison):
    workdir, config = setup(
        tmp_path,
        {
            "experiment": "nan",
            "images": {"source": "bundled", "count": 2},
            "models": {"m": dict(MODEL, weights="w.safetensors")},
            "analysis": {"map_images": 1},
        },
    )
    write_weights(workdir / "w.safetensors", poison)
    # --keep-going: pca_features runs the same poisoned model and may fail first; every job that
    # can run still runs, so the extract job's own failure is what is checked, whatever the order.
    result = snakemake(workdir, "--keep-going", "--configfile", str(config), check=False)
    assert result.returncode != 0
    log = (workdir / "results/nan/logs/extract/m_0.log").read_text()
    # The final norm also feeds the map image's patch features, checked in the same batch: either names it.
    assert re.search(
        r"m: (logits not finite \(NaN or Inf\) for 2 of 2|map-image patch features not finite \(NaN or Inf\) for 1 of 1) images",
        log,
    ), log[-2000:]
    images = pd.read_parquet(workdir / "results/nan/manifest.parquet")["image_id"].tolist()
    assert f"e.g. {images}" in log or f"e.g. {images[:1]}" in log  # the images named
    assert not (workdir / "results/nan/predictions.parquet").exists()


def test_all_nan_weights_first_error_is_the_nan_one(tmp_path):
    workdir, config = setup(
        tmp_path,
        {
            "experiment": "nan",
            "images": {"source": "bundled", "count": 2},
            "models": {"m": dict(MODEL, weights="w.safetensors")},
            "analysis": {"map_images": 1},
        },
    )
    write_weights(workdir / "w.safetensors", "")
    result = snakemake(workdir, "--cores", "1", "--configfile", str(config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    logs = "".join(p.read_text() for p in (workdir / "results/nan/logs").rglob("*.log"))
    assert "NaN or Inf" in logs, logs[-3000:]
    jobs = re.findall(r"^Job \d+: (\w+)", output, flags=re.M)
    assert jobs and not [job for job in jobs if job.startswith("figure_")], jobs  # no figure job started


def test_results_hold_only_the_current_config_and_folder_changes_resample(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate([(200, 20, 20), (20, 200, 20)]):
        Image.new("RGB", (40, 30), colour).save(photos / f"p{i}.png")
    config = {
        "experiment": "stale",
        "images": {"source": "folder", "path": str(photos), "count": None},
        "models": {"m": dict(MODEL, weights="random")},
        "analysis": {"map_images": 2},
        "figures": {"filters": 8, "components": 4},
    }
    (tmp_path / "wf").mkdir()
    workdir, config_file = setup(tmp_path / "wf", config)
    out = workdir / "results/stale"
    snakemake(workdir, "--configfile", str(config_file))
    listed = json.loads((out / "outputs.json").read_text())["files"]
    assert "figures/cls_attention_heads_m_image1.png" in listed and "shards/m/maps_0.npz" in listed
    assert set(listed) == {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.parts[len(out.parts)] not in ("logs", "benchmarks") and p.name != "outputs.json"
    }

    # Fewer map images: the dropped figures leave figures/ for stale/<timestamp>/, nothing is deleted.
    config["analysis"]["map_images"] = 1
    config_file.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--configfile", str(config_file))
    assert "cls_attention_heads_m_image1.png is not an output of this config: moved to" in result.stdout + result.stderr
    assert not (out / "figures/cls_attention_heads_m_image1.png").exists()
    assert len(list((out / "stale").glob("*/figures/cls_attention_heads_m_image1.png"))) == 1
    assert "figures/cls_attention_heads_m_image1.png" not in json.loads((out / "outputs.json").read_text())["files"]
    assert planned_jobs(workdir, config_file) == {}

    # An image added to the folder (count: null) is sampled on the next run.
    Image.new("RGB", (40, 30), (20, 20, 200)).save(photos / "p2.png")
    assert "sample" in planned_jobs(workdir, config_file)
