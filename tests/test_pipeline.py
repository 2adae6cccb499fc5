"""End-to-end: real snakemake runs in a temporary copy of the workflow, on tiny models
(timm reference weights) and bundled photos."""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import vitprobe
from helpers import (
    REPO,
    SNAKEMAKE,
    assert_pca_matches,
    copy_workflow,
    jobs_after_editing,
    planned_jobs,
    run_reference,
    snakemake,
)
from vitprobe.data.preprocess import default_preprocess
from vitprobe.pipeline.code_deps import module_closure

pytestmark = pytest.mark.slow


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
    "deit_t_dist": dict(
        arch="deit_tiny_distilled_patch16_224", case="deit_t_dist", timm="deit_tiny_distilled_patch16_224", prefix=2
    ),
}


IMAGES = 8  # two shards of 4, each one CKA group


@pytest.fixture(scope="module")
def run(tmp_path_factory, timm_reference):
    workdir = copy_workflow(tmp_path_factory.mktemp("pipeline"))
    write_clip(workdir / "clip.gif", frames=6)
    config = {
        "experiment": "e2e",
        "images": {"source": "bundled", "count": IMAGES, "seed": 0},
        "models": {
            key: {"arch": m["arch"], "weights": str(timm_reference / f"{m['case']}.safetensors"), "spec": {"depth": 2}}
            for key, m in MODELS.items()
        },
        "comparisons": [list(MODELS)],
        # Two threads per extract job (other rules have one): the jobs' logs show which count each got.
        "extract": {"batch_size": 4, "shard_size": 4, "keep_attention": True, "threads": 2},
        "cka": {"group_size": 4},
        "analysis": {"map_images": 2},
        "figures": {"filters": 32, "components": 8},
        "video": {"path": "clip.gif", "model": "vit_t", "fps": 4, "max_frames": 5},
        "export": {"attention_parquet": 1},
        "attribution": {
            "images": 3,
            "steps": 4,
            "methods": ["grad_rollout", "gae", "gradcam", "transformer_attribution", "rollout", "cls"],
        },
    }
    config_file = workdir / "e2e.yaml"
    config_file.write_text(yaml.safe_dump(config))
    console = snakemake(workdir, "--configfile", str(config_file)).stderr
    config_file.with_suffix(".console").write_text(console)
    return workdir, config_file, workdir / "results" / "e2e"


def test_outputs_follow_the_contract(run):
    _, _, out = run
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == IMAGES
    assert {c: str(t) for c, t in manifest.dtypes.items() if c in ("label", "width", "height")} == {
        "label": "int64",
        "width": "int64",
        "height": "int64",
    }
    assert manifest["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()

    per_image = pd.read_parquet(out / "attention_distance_per_image.parquet")
    assert list(per_image.columns[:6]) == ["model", "image_id", "block", "head", "distance_px", "prefix_mass"]
    assert len(per_image) == 2 * IMAGES * 2 * 3  # models x images x blocks x heads (tiny: 3 heads)
    assert per_image["prefix_mass"].between(0, 1).all()

    mean = pd.read_parquet(out / "mean_attention_distance.parquet")
    assert list(mean.columns) == ["model", "block", "head", "distance_px", "std_px", "n_images"]
    assert len(mean) == 2 * 2 * 3 and (mean["n_images"] == IMAGES).all()
    expected = per_image.groupby(["model", "block", "head"])["distance_px"].mean().to_numpy()
    np.testing.assert_allclose(mean["distance_px"].to_numpy(), expected)

    predictions = pd.read_parquet(out / "predictions.parquet")
    assert list(predictions.columns) == ["model", "image_id", "top1", "top1_name", "top1_prob", "correct"]
    assert len(predictions) == 2 * IMAGES
    assert str(predictions["correct"].dtype) == "boolean" and str(predictions["top1"].dtype) == "int64"
    # chelsea is labelled (tabby cat); the others are not.
    labelled = predictions.merge(manifest, on="image_id")
    assert (labelled["correct"].isna() == (labelled["label"] < 0)).all()

    figures = sorted(p.name for p in (out / "figures").iterdir())
    for key in MODELS:
        for stem in (
            "distance_by_block",
            "patch_embedding_filters",
            "patch_embedding_components",
            "position_embedding_cosine",
            "position_embedding_dot",
            "top1_gallery",
            "token_norms",
            "high_norm",
            "pca",
        ):
            assert f"{stem}_{key}.png" in figures
        assert f"cls_attention_heads_{key}_image0.png" in figures
        assert f"cka_within_{key}.png" in figures
    assert {
        "attention_rollout.png",
        "top1_predictions.png",
        "distance_comparison_vit_t_vs_deit_t_dist.png",
        "cka_between_vit_t_vs_deit_t_dist.png",
    } <= set(figures)

    cka = pd.read_parquet(out / "cka.parquet")
    assert list(cka.columns) == ["model_a", "block_a", "model_b", "block_b", "features", "cka", "cka_se", "n_images", "n_groups"]
    assert (cka["cka_se"] >= 0).all()  # two groups: a jackknife over them
    pairs = set(zip(cka["model_a"], cka["model_b"]))
    assert pairs == {("vit_t", "vit_t"), ("deit_t_dist", "deit_t_dist"), ("vit_t", "deit_t_dist")}
    assert len(cka) == 3 * 3 * 2 * 2  # pairs x features x blocks x blocks
    assert (cka["n_images"] == IMAGES).all() and (cka["n_groups"] == 2).all()
    within = cka[cka["model_a"] == cka["model_b"]]
    diagonal = within[within["block_a"] == within["block_b"]]
    np.testing.assert_allclose(diagonal["cka"], 1, rtol=0, atol=1e-6)
    assert cka["cka"].between(-1e-6, 1 + 1e-6).all()
    assert_token_norms_follow_the_shards(out)
    page = (out / "explorer.html").read_text()
    assert "<script src" not in page and "<link" not in page and "https://" not in page  # self-contained
    assert '"key":"vit_t"' in page and '"key":"deit_t_dist"' in page


def assert_token_norms_follow_the_shards(out: Path) -> None:
    """token_norms.parquet has the contract's columns, one row per (model, image, block, token kind),
    and its statistics are numpy's over the norms in the representation shards (CLS at 0, the
    distillation token at 1, then the patches)."""
    table = pd.read_parquet(out / "token_norms.parquet")
    assert list(table.columns) == [
        "model",
        "image_id",
        "block",
        "tokens",
        "n_tokens",
        "norm_mean",
        "norm_max",
        "n_high_norm",
        "threshold",
    ]
    layouts = {"vit_t": {"cls": [0]}, "deit_t_dist": {"cls": [0], "distillation": [1]}}
    assert len(table) == sum(IMAGES * 2 * (len(kinds) + 1) for kinds in layouts.values())  # images x blocks x kinds
    for key, kinds in layouts.items():
        shards = sorted((out / "shards" / key).glob("representations_*.npz"), key=lambda p: int(p.stem.split("_")[1]))
        image_ids = np.concatenate([np.load(p)["image_ids"] for p in shards]).tolist()
        norms = np.concatenate([np.load(p)["token_norms"] for p in shards]).astype(np.float64)
        assert norms.shape == (IMAGES, 2, 197 + len(kinds) - 1)
        kinds = {**kinds, "patch": list(range(len(kinds), norms.shape[2]))}
        rows = table[table["model"] == key]
        assert set(rows["tokens"]) == set(kinds)
        for (image_id, block, kind), row in rows.set_index(["image_id", "block", "tokens"]).iterrows():
            values = norms[image_ids.index(image_id), block, kinds[kind]]
            assert row["n_tokens"] == len(values)
            np.testing.assert_allclose([row["norm_mean"], row["norm_max"]], [values.mean(), values.max()], rtol=1e-6)


def test_attribution_outputs(run):
    """Every model, image and method has a row; the predicted class each map explains is the
    extract job's top-1; the attribution program's plain rollout equals the extract program's."""
    _, _, out = run
    table = pd.read_parquet(out / "attribution.parquet")
    methods = ["grad_rollout", "gae", "gradcam", "rollout", "cls", "random"]
    # transformer_attribution runs on the plain ViT; the distilled DeiT's two heads are outside its rules.
    assert set(table[table["model"] == "vit_t"]["method"]) == {*methods, "transformer_attribution"}
    assert set(table[table["model"] == "deit_t_dist"]["method"]) == set(methods)
    assert len(table) == 3 * (2 * len(methods) + 1)
    log = (out / "logs" / "attribution" / "deit_t_dist.log").read_text()
    assert "no transformer_attribution: its prediction averages two heads" in log
    aucs = table[["positive_auc", "negative_auc", "positive_score_auc", "negative_score_auc", "deletion_auc", "insertion_auc"]]
    assert aucs.notna().all().all() and ((aucs >= 0) & (aucs <= 1)).all().all()
    assert (table["target_source"] == "predicted").all()
    predictions = pd.read_parquet(out / "predictions.parquet").set_index(["model", "image_id"])["top1"]
    explained = table.set_index(["model", "image_id"])["target_class"]
    assert (explained == predictions.loc[explained.index]).all()
    curves = pd.read_parquet(out / "attribution_curves.parquet")
    assert set(curves["curve"]) == {
        "positive_hits",
        "negative_hits",
        "positive_scores",
        "negative_scores",
        "deletion",
        "insertion",
    }
    assert len(curves[curves["curve"] == "deletion"]) == len(table) * 5  # steps + 1 points
    for model in MODELS:
        maps = np.load(out / "attribution" / f"{model}.npz")
        assert set(maps.files) == {"image_id", "crops", "target", *methods} | (
            {"transformer_attribution"} if model == "vit_t" else set()
        )
        assert maps["gae"].shape == (3, 14, 14)
        rollout = np.load(out / "maps" / f"{model}.npz")["rollout"]
        np.testing.assert_allclose(maps["rollout"][:2], rollout, rtol=1e-5, atol=1e-7)
        for name in ("curves", "auc"):
            assert (out / "figures" / f"attribution_{name}_{model}.png").stat().st_size > 10_000
    assert [p.name for p in sorted((out / "figures").glob("attribution_maps_image*.png"))] == [
        "attribution_maps_image0.png",
        "attribution_maps_image1.png",
    ]


def test_attribution_options_rerun_only_the_attribution_rules(run):
    workdir, config, _ = run
    changed = yaml.safe_load(config.read_text())
    changed["attribution"]["steps"] = 5
    other = workdir / "changed_attribution.yaml"
    other.write_text(yaml.safe_dump(changed))
    assert planned_jobs(workdir, other) == {
        "attribution": 2,
        "attribution_table": 1,
        "figure_attribution_curves": 1,  # every model's, one job
        "figure_attribution_maps": 1,
        "explorer": 1,  # its attribution layers
        "outputs": 1,
        "all": 1,
    }


def test_kept_shards_and_export_agree(run):
    """The kept shards are self-describing .npz; the export of the first image equals its rows."""
    _, _, out = run
    manifest = pd.read_parquet(out / "manifest.parquet")
    for key, m in MODELS.items():
        shard = vitprobe.open_attention(out / "attention" / key / "shard_0.npz")
        assert shard.image_ids == manifest["image_id"].tolist()[:4] and shard.num_prefix_tokens == m["prefix"]
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
    for table in ("mean_attention_distance.parquet", "predictions.parquet", "explorer.html"):
        assert table in names


def test_distance_and_pca_match_timm_on_the_same_pixels(run, tmp_path):
    workdir, _, out = run
    manifest = pd.read_parquet(out / "manifest.parquet")
    crops = sorted((out / "crops").glob("*/shard_*.npy"), key=lambda p: int(p.stem.split("_")[1]))
    assert len({p.parent for p in crops}) == 1  # both models share one crop geometry
    map_images = 2
    job = {
        "image_ids": manifest["image_id"].tolist(),
        "tokens_images": map_images,
        "models": [
            dict(
                key=key,
                model=m["timm"],
                kwargs={"depth": 2},
                num_prefix=m["prefix"],
                crops=[str(p) for p in crops],
                weights=str(Path(yaml.safe_load((workdir / "e2e.yaml").read_text())["models"][key]["weights"])),
                mean=default_preprocess(m["arch"]).mean,
                std=default_preprocess(m["arch"]).std,
            )
            for key, m in MODELS.items()
        ],
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    run_reference("timm_distance.py", tmp_path / "job.json", tmp_path / "ref.parquet", tmp_path / "tokens.npz")
    ref = pd.read_parquet(tmp_path / "ref.parquet")
    ours = pd.read_parquet(out / "attention_distance_per_image.parquet")
    merged = ours.merge(ref, on=["model", "image_id", "block", "head"], suffixes=("", "_timm"), validate="1:1")
    assert len(merged) == len(ours) == len(ref)
    assert np.abs(merged["distance_px"] - merged["distance_px_timm"]).max() <= 1e-3

    # The PCA feature maps: the map images' final-normed last-block patch tokens, as timm computes them.
    tokens = np.load(tmp_path / "tokens.npz")
    for key, m in MODELS.items():
        pca = np.load(out / "pca" / f"{key}.npz", allow_pickle=False)
        assert pca["image_ids"].tolist() == manifest["image_id"].tolist()[:map_images]
        assert pca["grid"] == 14 and bool(pca["final_norm"])
        assert_pca_matches(pca, tokens[key][:, m["prefix"] :])


def test_nothing_reruns_when_nothing_changed(run):
    workdir, config, _ = run
    assert planned_jobs(workdir, config) == {}


def test_figure_option_reruns_only_that_figure(run):
    workdir, config, out = run
    changed = yaml.safe_load(config.read_text())
    changed["figures"]["filters"] = 16
    other = workdir / "changed_figure.yaml"
    other.write_text(yaml.safe_dump(changed))
    assert planned_jobs(workdir, other) == {"figure_patch_filters": 1, "outputs": 1, "all": 1}  # every model's, one job
    drawn = {figure: figure.stat().st_mtime_ns for figure in (out / "figures").iterdir()}
    try:
        snakemake(workdir, "--configfile", str(other))
        redrawn = {figure.name for figure, mtime in drawn.items() if figure.stat().st_mtime_ns != mtime}
        assert redrawn == {f"patch_embedding_{kind}_{key}.png" for kind in ("filters", "components") for key in MODELS}
    finally:
        snakemake(workdir, "--configfile", str(config))  # the module's other tests compare against this config


def test_map_image_count_reruns_only_the_shards_holding_map_images(run):
    """The map images' features and attention rows come from the extract jobs of the shards that
    hold them (here the first of two per model); the PCA and the explorer run no model."""
    workdir, config, _ = run
    changed = yaml.safe_load(config.read_text())
    changed["analysis"]["map_images"] = 3
    other = workdir / "changed_map_images.yaml"
    other.write_text(yaml.safe_dump(changed))
    jobs = planned_jobs(workdir, other)
    assert jobs["extract_attention"] == 2 and jobs["maps"] == 2 and jobs["pca_features"] == 2 and jobs["explorer"] == 1
    assert "prepare" not in jobs and "model_parameters" not in jobs


def test_pca_options_rerun_only_the_pca_rules(run):
    workdir, config, _ = run
    changed = yaml.safe_load(config.read_text())
    changed["analysis"]["pca"] = {"threshold": 0.5}
    other = workdir / "changed_pca.yaml"
    other.write_text(yaml.safe_dump(changed))
    assert planned_jobs(workdir, other) == {"pca_features": 2, "figure_pca": 1, "outputs": 1, "all": 1}
    changed["analysis"]["pca"] = {"enabled": False}  # the files leave (quarantined at the next real run)
    other.write_text(yaml.safe_dump(changed))
    assert planned_jobs(workdir, other) == {"outputs": 1, "all": 1}


def test_published_accuracy_reruns_only_the_predictions_figure(run):
    workdir, config, _ = run
    changed = yaml.safe_load(config.read_text())
    changed["models"]["vit_t"]["published_top1"] = 75.5
    other = workdir / "changed_published.yaml"
    other.write_text(yaml.safe_dump(changed))
    assert planned_jobs(workdir, other) == {"figure_predictions": 1, "outputs": 1, "all": 1}


def test_token_norm_option_reruns_only_the_token_norm_rules(run):
    workdir, config, _ = run
    changed = yaml.safe_load(config.read_text())
    changed["token_norms"] = {"min_gap": 3.5}
    other = workdir / "changed_token_norms.yaml"
    other.write_text(yaml.safe_dump(changed))
    assert planned_jobs(workdir, other) == {
        "token_norms": 2,
        "token_norms_combine": 1,
        "figure_token_norms": 1,
        "figure_high_norm": 1,
        "outputs": 1,
        "all": 1,
    }


def test_explorer_option_and_page_code_rerun_only_the_explorer(run):
    workdir, config, _ = run
    changed = yaml.safe_load(config.read_text())
    changed["explorer"] = {"blocks": [-1]}
    other = workdir / "changed_explorer.yaml"
    other.write_text(yaml.safe_dump(changed))
    # outputs.json lists every file with its size, so it follows the page.
    assert planned_jobs(workdir, other) == {"explorer": 1, "outputs": 1, "all": 1}
    edited = jobs_after_editing(workdir, config, "src/vitprobe/pipeline/explorer_page/explorer.js")
    assert edited == {"explorer": 1, "outputs": 1, "all": 1}


def test_reduce_code_reruns_analysis_not_extraction(run):
    workdir, config, _ = run
    jobs = jobs_after_editing(workdir, config, "src/vitprobe/pipeline/reduce.py")
    assert "extract_attention" not in jobs and "sample" not in jobs and "prepare" not in jobs
    assert jobs["reduce"] == 2 * 2 and jobs["aggregate"] == 1 and jobs["figure_distance_by_block"] == 1
    # The metric code is part of the model API (ProbeModel.forward_reduced), so it reruns extraction too.
    assert jobs_after_editing(workdir, config, "src/vitprobe/metrics/attention.py")["extract_attention"] == 2 * 2


def test_model_code_reruns_extraction(run):
    workdir, config, _ = run
    jobs = jobs_after_editing(workdir, config, "src/vitprobe/models/vit.py")
    # The parameters stage reads the checkpoint's arrays: the model's code is not its code.
    assert jobs["extract_attention"] == 2 * 2 and "model_parameters" not in jobs
    assert "sample" not in jobs and "prepare" not in jobs
    assert jobs_after_editing(workdir, config, "src/vitprobe/weights/convert.py")["model_parameters"] == 2
    assert planned_jobs(workdir, config) == {}  # restored: nothing to do again


def test_download_code_reruns_only_what_loads_weights(run):
    """runlog.py, which every job starts with, no longer imports the downloader: sampling and
    cropping stay put when weights/fetch.py changes."""
    workdir, config, _ = run
    jobs = jobs_after_editing(workdir, config, "src/vitprobe/weights/fetch.py")
    assert jobs["extract_attention"] == 2 * 2 and "sample" not in jobs and "prepare" not in jobs


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
    # A second key with vit_t's weights: CKA 1 block for block.
    config["models"]["vit_t_twin"] = dict(config["models"]["vit_t"])
    config["comparisons"].append(["vit_t", "vit_t_twin"])
    fused = workdir / "fused.yaml"
    fused.write_text(yaml.safe_dump(config))
    console = snakemake(workdir, "--configfile", str(fused)).stderr
    fused.with_suffix(".console").write_text(console)
    return workdir, fused, workdir / "results" / "e2e_fused"


def test_fused_reductions_equal_the_stored_shard_reductions(run, fused_run):
    _, _, kept = run
    _, _, fused = fused_run
    assert not (fused / "attention").exists()

    def original_models(path):  # the fused run adds vit_t_twin
        table = pd.read_parquet(path)
        return table[table["model"].isin(MODELS)].reset_index(drop=True)

    tables = [original_models(out / "attention_distance_per_image.parquet") for out in (kept, fused)]
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=False, rtol=0, atol=1e-5)
    pd.testing.assert_frame_equal(*(original_models(out / "predictions.parquet") for out in (kept, fused)))
    # The token norms of the plain forward pass (kept attention) and of the reducing program agree.
    norms = [original_models(out / "token_norms.parquet") for out in (kept, fused)]
    pd.testing.assert_frame_equal(norms[0], norms[1], check_exact=False, rtol=1e-5, atol=0)
    for key in MODELS:
        maps = [np.load(out / "maps" / f"{key}.npz") for out in (kept, fused)]
        assert list(maps[0]["image_ids"]) == list(maps[1]["image_ids"]) and len(maps[0]["image_ids"]) == 2
        for name in ("rollout", "cls", "crops"):
            np.testing.assert_allclose(maps[0][name], maps[1][name], rtol=0, atol=1e-6, err_msg=name)


def test_fused_rerun_rules(fused_run):
    workdir, config, _ = fused_run
    jobs = jobs_after_editing(workdir, config, "src/vitprobe/metrics/attention.py")
    assert jobs["extract"] == 3 * 2 and "reduce" not in jobs and "prepare" not in jobs
    for unrelated in (
        "src/vitprobe/pipeline/aggregate.py",
        "src/vitprobe/metrics/parameters.py",
    ):  # aggregation; parameter figures
        assert "extract" not in jobs_after_editing(workdir, config, unrelated)
    changed = yaml.safe_load(config.read_text())
    changed["analysis"]["map_images"] = 1
    fewer_maps = workdir / "fused_fewer_maps.yaml"
    fewer_maps.write_text(yaml.safe_dump(changed))
    jobs = planned_jobs(workdir, fewer_maps)
    # Only the first shard of each model holds map images: its extract job keeps their features and rows.
    assert jobs["extract"] == 3 and jobs["maps"] == 3 and jobs["figure_rollout"] == 1
    changed["analysis"]["renormalize"] = True
    renormalized = workdir / "fused_renormalized.yaml"
    renormalized.write_text(yaml.safe_dump(changed))
    assert planned_jobs(workdir, renormalized)["extract"] == 3 * 2


def test_cka_of_the_same_weights_is_one_and_kept_equals_fused(run, fused_run):
    _, _, kept = run
    _, _, fused = fused_run
    cka = pd.read_parquet(fused / "cka.parquet")
    twins = cka[(cka["model_a"] == "vit_t") & (cka["model_b"] == "vit_t_twin")]
    assert len(twins) == 3 * 2 * 2
    same_block = twins[twins["block_a"] == twins["block_b"]]
    np.testing.assert_allclose(same_block["cka"], 1, rtol=0, atol=1e-6)
    # The Gram matrices of the attention-keeping program and of the fused one agree.
    merged = pd.read_parquet(kept / "cka.parquet").merge(cka, on=["model_a", "block_a", "model_b", "block_b", "features"])
    assert len(merged) == 3 * 3 * 2 * 2
    np.testing.assert_allclose(merged["cka_x"], merged["cka_y"], rtol=0, atol=1e-6)
    assert (fused / "figures" / "cka_between_vit_t_vs_vit_t_twin.png").is_file()


def test_cka_rerun_rules(fused_run):
    workdir, config, _ = fused_run
    changed = yaml.safe_load(config.read_text())
    changed["comparisons"].append(["deit_t_dist", "vit_t_twin"])
    more = workdir / "fused_more_comparisons.yaml"
    more.write_text(yaml.safe_dump(changed))
    # The new pair only, the table and the new comparison's figures (and the explorer, which shows
    # the comparisons side by side, and outputs.json); no model runs.
    assert planned_jobs(workdir, more) == {
        "cka_pair": 1,
        "cka": 1,
        "figure_cka": 1,  # every model's and comparison's CKA figures, one job
        "figure_distance_comparison": 1,
        "explorer": 1,
        "outputs": 1,
        "all": 1,
    }
    changed = yaml.safe_load(config.read_text())
    changed["cka"]["features"] = ["tokens"]
    fewer = workdir / "fused_fewer_features.yaml"
    fewer.write_text(yaml.safe_dump(changed))
    jobs = planned_jobs(workdir, fewer)
    assert "extract" not in jobs and jobs["cka_pair"] == 3 + 2 and jobs["cka"] == 1
    changed["cka"]["group_size"] = 8
    changed["extract"].update(batch_size=8, shard_size=8)
    regrouped = workdir / "fused_regrouped.yaml"
    regrouped.write_text(yaml.safe_dump(changed))
    assert planned_jobs(workdir, regrouped)["extract"] == 3


def test_jobs_run_with_their_rules_thread_count(run, fused_run):
    """Each job's script set the rule's thread count before its stage loaded Keras (which
    limit_threads enforces by raising), and the variables TensorFlow reads say so."""
    expected = {
        "extract": "threads: 2 (OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 "
        "TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=1)",
        "reduce": "threads: 1 (OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
        "TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1)",
    }
    for out in (run[2], fused_run[2]):
        for stage, line in expected.items():
            logs = sorted((out / "logs" / stage).glob("*.log"))
            assert logs or (stage == "reduce" and out == fused_run[2])  # the fused run has no reduce jobs
            for log in logs:
                assert line in log.read_text(), log


# Rule -> its script, for every rule whose code is a parameter (read from the rule files).
RULE_BLOCK = re.compile(r"^\s*(rule|checkpoint) (\w+):\n(.*?)(?=^\s*(?:rule|checkpoint) \w+:|\Z)", re.M | re.S)
RULE_BLOCKS = [
    block for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")) for block in RULE_BLOCK.findall(smk.read_text())
]
RULE_SCRIPTS = {name: code.group(1) for _, name, body in RULE_BLOCKS if (code := re.search(r'code=code\("([\w.]+)"\)', body))}
CHECKPOINTS = {name for kind, name, _ in RULE_BLOCKS if kind == "checkpoint"}


def test_every_rule_declares_its_memory_and_is_measured():
    """Every rule that runs a job (the local `outputs` and `all` apart) declares mem_mb, directly or as an
    extract rule through EXTRACT_RESOURCES, and writes a benchmark file (its measured peak)."""
    for _, name, body in RULE_BLOCKS:
        if "localrule: True" not in body:
            assert re.search(r"^\s+resources:\n(\s+.*\n)*?\s+(mem_mb=|\*\*EXTRACT_RESOURCES)", body, re.M), name
            log = re.search(r"^\s+log:\n\s+result\(\"logs/([^\"]+)\.log\"\)", body, re.M)
            benchmark = re.search(r"^\s+benchmark:\n\s+result\(\"benchmarks/([^\"]+)\.tsv\"\)", body, re.M)
            assert log and benchmark and log[1] == benchmark[1], name  # the job's log says where its peak is


LOCAL_RULES = {name for _, name, body in RULE_BLOCKS if "localrule: True" in body} | {"all"}


def _started_jobs(workdir: Path, console: str) -> list[dict]:
    """Each job a snakemake run started, from its console line (``Job N: <rule> ..., log: <file>``):
    its rule, the mem_mb its log says the rule declared, and its benchmark file (every rule's is
    its log's path under benchmarks/ instead of logs/, as the test above checks)."""
    jobs = []
    for rule, log in re.findall(r"^Job \d+: (\w+)\b.*, log: (\S+)$", console, re.M):
        declared = re.search(r"memory: (\d+) MB declared", (workdir / log).read_text())
        benchmark = str(Path(log.replace("/logs/", "/benchmarks/", 1)).with_suffix(".tsv"))
        jobs.append(dict(rule=rule, benchmark=benchmark, mem_mb=declared and int(declared[1])))
    return jobs


def test_every_job_peaks_below_its_declared_memory(run, fused_run):
    """Every job of both runs (the local `outputs` and `all` apart) declared mem_mb, and the
    max_rss of its benchmark (sampled every half second, child processes included) stayed below it."""
    measured = set()
    for workdir, config, _ in (run, fused_run):
        console = config.with_suffix(".console").read_text()
        jobs = [job for job in _started_jobs(workdir, console) if job["rule"] not in LOCAL_RULES]
        assert len(jobs) > 20, jobs
        for job in jobs:
            assert job["mem_mb"] and job["benchmark"], job
            peak = pd.read_csv(workdir / job["benchmark"], sep="\t")["max_rss"].iloc[0]
            if not pd.isna(peak):
                assert peak < job["mem_mb"], (job, peak)
                measured.add(job["rule"])
    assert measured >= {"sample", "prepare", "extract", "extract_attention", "reduce", "aggregate", "cka_pair"}, measured


def rule_graph(workdir: Path, config: Path) -> dict[str, set[str]]:
    """Rule -> the rules it depends on, directly or not (from snakemake --rulegraph)."""
    dot = snakemake(workdir, "--rulegraph", "--configfile", str(config)).stdout
    names = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", dot, flags=re.M))
    parents = {name: set() for name in names.values()}
    for source, target in re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.M):
        parents[names[target]].add(names[source])

    def ancestors(rule: str) -> set[str]:
        return set().union(*({p} | ancestors(p) for p in parents[rule]))

    return {rule: ancestors(rule) for rule in parents}


def code_edit_plans(workdir: Path, config: Path, rules: list[str]) -> dict:
    """Edits of library modules chosen so that, for each rule, one edited module is in its code
    closure and one is in neither its closure nor those of the rules upstream of it (whose
    reruns would rerun it too). Greedy: few edits, one dry run each.

    A dry run cannot list the jobs after a checkpoint that will rerun (the shard lists come from
    its output), so a rule's "inside" edit is one outside the closures of its upstream checkpoints."""
    graph = rule_graph(workdir, config)
    assert set(RULE_SCRIPTS) >= set(graph) - {"all"}, "a rule without params: code=code(...)"
    scripts = workdir / "workflow" / "scripts"
    closures = {
        rule: {str(path.relative_to(workdir)) for path in module_closure(scripts / script, workdir / "src").values()}
        for rule, script in RULE_SCRIPTS.items()
        if rule in graph
    }
    upstream = {rule: closures[rule].union(*(closures[r] for r in graph[rule] if r in closures)) for rule in closures}
    inside = {rule: closures[rule].difference(*(closures[r] for r in graph[rule] & CHECKPOINTS)) for rule in closures}
    modules = sorted(set().union(*closures.values()))
    for rule in rules:
        assert inside[rule], f"{rule}: no module reruns it alone"
    # A rule downstream of every stage (outputs.json) reruns on any edit: it has no "outside" module.
    needs = {(rule, True) for rule in rules} | {(rule, False) for rule in rules if set(modules) - upstream[rule]}

    def covers(module):
        return {(r, i) for r, i in needs if (module in inside[r] if i else module not in upstream[r])}

    edits = []
    while needs:
        module = max(modules, key=lambda m: len(covers(m)))
        edits.append(module)
        needs -= covers(module)
    planned = {module: set(jobs_after_editing(workdir, config, module)) for module in edits}
    return {"inside": inside, "upstream": upstream, "planned": planned, "modules": modules}


@pytest.fixture(scope="module")
def kept_code_edits(run):
    workdir, config, _ = run
    return code_edit_plans(workdir, config, [r for r in RULE_SCRIPTS if r != "extract"])


@pytest.fixture(scope="module")
def fused_code_edits(fused_run):
    workdir, config, _ = fused_run
    return code_edit_plans(workdir, config, ["extract"])


@pytest.mark.parametrize("rule", sorted(RULE_SCRIPTS))
def test_code_edit_reruns_the_rules_that_import_it_and_no_other(rule, request):
    edits = request.getfixturevalue("fused_code_edits" if rule == "extract" else "kept_code_edits")
    inside = [m for m in edits["planned"] if m in edits["inside"][rule]]
    outside = [m for m in edits["planned"] if m not in edits["upstream"][rule]]
    assert inside and (outside or not set(edits["modules"]) - edits["upstream"][rule])
    for module in inside:
        assert rule in edits["planned"][module], f"editing {module} does not rerun {rule}"
    for module in outside:
        assert rule not in edits["planned"][module], f"editing {module} reruns {rule}, whose code does not import it"
