"""End-to-end: real snakemake runs in a temporary copy of the workflow, on tiny models
(timm reference weights) and bundled photos."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import vitprobe
from conftest import run_reference
from vitprobe.data.preprocess import default_preprocess

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
pytestmark = pytest.mark.slow


def copy_workflow(dest: Path) -> Path:
    """Snakefile, rules, schema and the library sources (so a test can edit code and see
    what reruns without touching the repository)."""
    for name in ("Snakefile", "config.yaml", "weights.lock.json"):
        shutil.copy(REPO / name, dest / name)
    for name in ("workflow", "src", "envs", "profiles"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def snakemake(workdir: Path, *args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True,
        env={**os.environ, "VITPROBE_WEIGHTS_LOCK": str(workdir / "weights.lock.json")},
    )
    if check and result.returncode:
        raise AssertionError(f"snakemake {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(workdir: Path, config: Path) -> dict[str, int]:
    """Rule -> job count of a dry run (empty when nothing would run)."""
    out = snakemake(workdir, "-n", "--configfile", str(config)).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("Reasons:")[0]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M))
    jobs.pop("total", None)
    return {rule: int(n) for rule, n in jobs.items()}


def write_clip(path: Path, frames: int) -> None:
    """A short real video: a bright square moving across a photo, as an animated GIF."""
    from PIL import Image
    from skimage import data

    base = data.chelsea()[:, :300]
    images = []
    for t in range(frames):
        frame = base.copy()
        frame[100:160, 40 * t : 40 * t + 60] = 255
        images.append(Image.fromarray(frame))
    images[0].save(path, save_all=True, append_images=images[1:], duration=125, loop=0)


MODELS = {
    "vit_t": dict(arch="vit_tiny_patch16_224", case="vit_t16", timm="vit_tiny_patch16_224", prefix=1),
    "deit_t_dist": dict(arch="deit_tiny_distilled_patch16_224", case="deit_t_dist", timm="deit_tiny_distilled_patch16_224", prefix=2),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, timm_reference):
    workdir = copy_workflow(tmp_path_factory.mktemp("pipeline"))
    write_clip(workdir / "clip.gif", frames=6)
    config = {
        "experiment": "e2e",
        "images": {"source": "bundled", "count": 3, "seed": 0},
        "models": {
            key: {"arch": m["arch"], "weights": str(timm_reference / f"{m['case']}.safetensors"), "spec": {"depth": 2}}
            for key, m in MODELS.items()
        },
        "comparisons": [list(MODELS)],
        "extract": {"batch_size": 2, "shard_size": 2, "keep_attention": True},
        "analysis": {"map_images": 2},
        "figures": {"filters": 32, "components": 8},
        "video": {"path": "clip.gif", "model": "vit_t", "fps": 4, "max_frames": 5},
        "export": {"attention_parquet": 1},
    }
    config_file = workdir / "e2e.yaml"
    config_file.write_text(yaml.safe_dump(config))
    snakemake(workdir, "--configfile", str(config_file))
    return workdir, config_file, workdir / "results" / "e2e"


def test_outputs_follow_the_contract(run):
    _, _, out = run
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 3
    assert {c: str(t) for c, t in manifest.dtypes.items() if c in ("label", "width", "height")} == {
        "label": "int64", "width": "int64", "height": "int64"}
    assert manifest["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()

    per_image = pd.read_parquet(out / "attention_distance_per_image.parquet")
    assert list(per_image.columns[:6]) == ["model", "image_id", "block", "head", "distance_px", "prefix_mass"]
    assert len(per_image) == 2 * 3 * 2 * 3  # models x images x blocks x heads (tiny: 3 heads)
    assert per_image["prefix_mass"].between(0, 1).all()

    mean = pd.read_parquet(out / "mean_attention_distance.parquet")
    assert list(mean.columns) == ["model", "block", "head", "distance_px", "std_px", "n_images"]
    assert len(mean) == 2 * 2 * 3 and (mean["n_images"] == 3).all()
    expected = per_image.groupby(["model", "block", "head"])["distance_px"].mean().to_numpy()
    np.testing.assert_allclose(mean["distance_px"].to_numpy(), expected)

    predictions = pd.read_parquet(out / "predictions.parquet")
    assert list(predictions.columns) == ["model", "image_id", "top1", "top1_name", "top1_prob", "correct"]
    assert len(predictions) == 2 * 3
    assert str(predictions["correct"].dtype) == "boolean" and str(predictions["top1"].dtype) == "int64"
    # chelsea is labelled (tabby cat); the others are not.
    labelled = predictions.merge(manifest, on="image_id")
    assert (labelled["correct"].isna() == (labelled["label"] < 0)).all()

    figures = sorted(p.name for p in (out / "figures").iterdir())
    for key in MODELS:
        for stem in ("distance_by_block", "patch_embedding_filters", "patch_embedding_components",
                     "position_embedding_cosine", "position_embedding_dot", "top1_gallery"):
            assert f"{stem}_{key}.png" in figures
        assert f"cls_attention_heads_{key}_image0.png" in figures
    assert {"attention_rollout.png", "top1_predictions.png", "distance_comparison_vit_t_vs_deit_t_dist.png"} <= set(figures)


def test_kept_shards_and_export_agree(run):
    """The kept shards are self-describing .npz; the export of the first image equals its rows."""
    _, _, out = run
    manifest = pd.read_parquet(out / "manifest.parquet")
    for key, m in MODELS.items():
        shard = vitprobe.open_attention(out / "attention" / key / "shard_0.npz")
        assert shard.image_ids == manifest["image_id"].tolist()[:2] and shard.num_prefix_tokens == m["prefix"]
        export = pd.read_parquet(out / "export" / f"attention_{key}.parquet")
        assert export["image_id"].unique().tolist() == shard.image_ids[:1]
        weights = export["weight"].to_numpy().reshape(shard.attention.shape[1:])
        np.testing.assert_allclose(weights, shard.attention[0], rtol=6e-4, atol=1e-6)


def test_video_has_one_overlay_per_frame(run):
    from PIL import Image, ImageSequence

    _, _, out = run
    with Image.open(out / "figures" / "cls_attention_video_vit_t.gif") as video:
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(video)]
    assert len(frames) == 5  # max_frames of the 6 in the clip
    assert frames[0].shape == (224, 224, 3)


def test_report_holds_every_figure(run):
    workdir, config, out = run
    report = workdir / "report.zip"
    snakemake(workdir, "--configfile", str(config), "--report", str(report))
    import zipfile

    names = "\n".join(zipfile.ZipFile(report).namelist())
    for figure in (out / "figures").iterdir():
        assert figure.name in names
    for table in ("mean_attention_distance.parquet", "predictions.parquet"):
        assert table in names


def test_distance_matches_timm_on_the_same_pixels(run, tmp_path):
    workdir, _, out = run
    manifest = pd.read_parquet(out / "manifest.parquet")
    crops = sorted((out / "crops").glob("*/shard_*.npy"), key=lambda p: int(p.stem.split("_")[1]))
    assert len({p.parent for p in crops}) == 1  # both models share one crop geometry
    job = {
        "image_ids": manifest["image_id"].tolist(),
        "models": [
            dict(key=key, model=m["timm"], kwargs={"depth": 2}, num_prefix=m["prefix"], crops=[str(p) for p in crops],
                 weights=str(Path(yaml.safe_load((workdir / "e2e.yaml").read_text())["models"][key]["weights"])),
                 mean=default_preprocess(m["arch"]).mean, std=default_preprocess(m["arch"]).std)
            for key, m in MODELS.items()
        ],
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    run_reference("timm_distance.py", tmp_path / "job.json", tmp_path / "ref.parquet")
    ref = pd.read_parquet(tmp_path / "ref.parquet")
    ours = pd.read_parquet(out / "attention_distance_per_image.parquet")
    merged = ours.merge(ref, on=["model", "image_id", "block", "head"], suffixes=("", "_timm"), validate="1:1")
    assert len(merged) == len(ours) == len(ref)
    assert np.abs(merged["distance_px"] - merged["distance_px_timm"]).max() <= 1e-3


def test_nothing_reruns_when_nothing_changed(run):
    workdir, config, _ = run
    assert planned_jobs(workdir, config) == {}


def test_figure_option_reruns_only_that_figure(run, tmp_path):
    workdir, config, _ = run
    changed = yaml.safe_load(config.read_text())
    changed["figures"]["filters"] = 16
    other = workdir / "changed_figure.yaml"
    other.write_text(yaml.safe_dump(changed))
    assert planned_jobs(workdir, other) == {"figure_patch_filters": 2, "all": 1}


def test_published_accuracy_reruns_only_the_predictions_figure(run):
    workdir, config, _ = run
    changed = yaml.safe_load(config.read_text())
    changed["models"]["vit_t"]["published_top1"] = 75.5
    other = workdir / "changed_published.yaml"
    other.write_text(yaml.safe_dump(changed))
    assert planned_jobs(workdir, other) == {"figure_predictions": 1, "all": 1}


def jobs_after_editing(workdir: Path, config: Path, relative: str) -> dict[str, int]:
    """The dry-run job list after an edit of one library file (restored afterwards)."""
    path = workdir / relative
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        return planned_jobs(workdir, config)
    finally:
        path.write_text(original)


def test_metrics_code_reruns_analysis_not_extraction(run):
    workdir, config, _ = run
    jobs = jobs_after_editing(workdir, config, "src/vitprobe/metrics/attention.py")
    assert "extract_attention" not in jobs and "sample" not in jobs and "prepare" not in jobs
    assert jobs["reduce"] == 2 * 2 and jobs["aggregate"] == 1 and jobs["figure_distance_by_block"] == 2


def test_model_code_reruns_extraction(run):
    workdir, config, _ = run
    jobs = jobs_after_editing(workdir, config, "src/vitprobe/models/vit.py")
    assert jobs["extract_attention"] == 2 * 2 and jobs["model_parameters"] == 2
    assert "sample" not in jobs and "prepare" not in jobs
    assert planned_jobs(workdir, config) == {}  # restored: nothing to do again


def test_preprocessing_change_reruns_extraction(run):
    workdir, config, _ = run
    changed = yaml.safe_load(config.read_text())
    changed["models"]["vit_t"]["preprocess"] = {"mean": [0.4, 0.5, 0.5]}
    other = workdir / "changed_preprocess.yaml"
    other.write_text(yaml.safe_dump(changed))
    jobs = planned_jobs(workdir, other)
    assert jobs["extract_attention"] == 2 and "prepare" not in jobs  # same geometry: crops are reused


def test_lint_is_clean():
    result = subprocess.run([*SNAKEMAKE, "--lint", "--configfile", "config/demo.yaml"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def fused_run(run):
    """The same experiment without keep_attention: the reductions run inside the compiled
    forward pass and no attention reaches the disk."""
    workdir, config_file, _ = run
    config = yaml.safe_load(config_file.read_text())
    config["experiment"] = "e2e_fused"
    config["extract"]["keep_attention"] = False
    del config["video"], config["export"]
    fused = workdir / "fused.yaml"
    fused.write_text(yaml.safe_dump(config))
    snakemake(workdir, "--configfile", str(fused))
    return workdir, fused, workdir / "results" / "e2e_fused"


def test_fused_reductions_equal_the_stored_shard_reductions(run, fused_run):
    _, _, kept = run
    _, _, fused = fused_run
    assert not (fused / "attention").exists()
    tables = [pd.read_parquet(out / "attention_distance_per_image.parquet") for out in (kept, fused)]
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=False, rtol=0, atol=1e-5)
    pd.testing.assert_frame_equal(*(pd.read_parquet(out / "predictions.parquet") for out in (kept, fused)))
    for key in MODELS:
        maps = [np.load(out / "maps" / f"{key}.npz") for out in (kept, fused)]
        assert list(maps[0]["image_ids"]) == list(maps[1]["image_ids"]) and len(maps[0]["image_ids"]) == 2
        for name in ("rollout", "cls", "crops"):
            np.testing.assert_allclose(maps[0][name], maps[1][name], rtol=0, atol=1e-6, err_msg=name)


def test_fused_rerun_rules(fused_run):
    workdir, config, _ = fused_run
    jobs = jobs_after_editing(workdir, config, "src/vitprobe/metrics/attention.py")
    assert jobs["extract"] == 2 * 2 and "reduce" not in jobs and "prepare" not in jobs
    for unrelated in ("src/vitprobe/pipeline/aggregate.py", "src/vitprobe/metrics/parameters.py"):  # aggregation; parameter figures
        assert "extract" not in jobs_after_editing(workdir, config, unrelated)
    changed = yaml.safe_load(config.read_text())
    changed["analysis"]["map_images"] = 1
    fewer_maps = workdir / "fused_fewer_maps.yaml"
    fewer_maps.write_text(yaml.safe_dump(changed))
    jobs = planned_jobs(workdir, fewer_maps)
    assert "extract" not in jobs and jobs["maps"] == 2 and jobs["figure_rollout"] == 1
    changed["analysis"]["renormalize"] = True
    renormalized = workdir / "fused_renormalized.yaml"
    renormalized.write_text(yaml.safe_dump(changed))
    assert planned_jobs(workdir, renormalized)["extract"] == 2 * 2
