"""The offline embedded default (config/demo.yaml) runs end to end with no network."""

import shutil

import pandas as pd
import pytest

from test_pipeline import REPO, copy_workflow, snakemake

pytestmark = pytest.mark.slow


def test_demo_runs_offline(tmp_path, monkeypatch):
    workdir = copy_workflow(tmp_path)
    (workdir / "config").mkdir()
    shutil.copy(REPO / "config" / "demo.yaml", workdir / "config" / "demo.yaml")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snakemake(workdir, "--configfile", "config/demo.yaml")
    out = workdir / "results" / "demo"

    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) >= 8
    assert manifest["licence"].str.len().gt(0).all() and manifest["origin"].str.len().gt(0).all()
    mean = pd.read_parquet(out / "mean_attention_distance.parquet")
    assert set(mean["model"]) == {"dinov2_s14_imgfocus", "dinov2_s14_random"}
    by_model = mean.groupby("model")["distance_px"].mean()
    # The untrained baseline attends almost uniformly: 16x16 grid of 14 px patches -> 116.6 px;
    # the trained backbone attends far more locally.
    assert by_model["dinov2_s14_random"] == pytest.approx(uniform_distance(16, 14), rel=0.02)
    assert by_model["dinov2_s14_imgfocus"] < 0.85 * by_model["dinov2_s14_random"]
    figures = {p.name for p in (out / "figures").iterdir()}
    assert "attention_rollout.png" in figures and "top1_predictions.png" not in figures  # no classifier heads
    # per model: distance by block, 4 embedding figures, 4 CLS-head maps; then the comparison and the rollout
    assert len(figures) == 2 * (1 + 4 + 4) + 1 + 1
    assert not (out / "attention").exists() and not (out / "export").exists()  # keep_attention and the export are off


def uniform_distance(grid: int, patch: int) -> float:
    total = 0.0
    cells = [(r, c) for r in range(grid) for c in range(grid)]
    for r, c in cells:
        total += sum(((r - r2) ** 2 + (c - c2) ** 2) ** 0.5 for r2, c2 in cells)
    return patch * total / len(cells) ** 2
