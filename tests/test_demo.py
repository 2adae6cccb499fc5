"""The offline embedded default (config/demo.yaml) runs end to end with no network."""

import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import OfflinePage
from helpers import REPO, assert_jobs_announced, copy_workflow, snakemake

pytestmark = pytest.mark.slow


def test_demo_runs_offline(tmp_path, monkeypatch, browser):
    workdir = copy_workflow(tmp_path)
    (workdir / "config").mkdir()
    shutil.copy(REPO / "config" / "demo.yaml", workdir / "config" / "demo.yaml")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    console = snakemake(workdir, "--configfile", "config/demo.yaml").stderr
    out = workdir / "results" / "demo"

    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) >= 8
    assert manifest["licence"].str.len().gt(0).all() and manifest["origin"].str.len().gt(0).all()
    mean = pd.read_parquet(out / "mean_attention_distance.parquet")
    assert set(mean["model"]) == {"dinov2_s14_imgfocus", "dinov2_s14_random"}
    by_model = mean.groupby("model")["distance_px"].mean()
    # The untrained baseline attends almost uniformly: uniform over the 16x16 grid of 14 px patch keys
    # gives 116.6 px (116.1 px over all 257 keys with the CLS column dropped); the trained backbone
    # attends far more locally.
    assert by_model["dinov2_s14_random"] == pytest.approx(uniform_distance(16, 14), rel=0.02)
    assert by_model["dinov2_s14_imgfocus"] < 0.85 * by_model["dinov2_s14_random"]
    figures = {p.name for p in (out / "figures").iterdir()}
    assert "attention_rollout.png" in figures and "top1_predictions.png" not in figures  # no classifier heads
    # per model: distance by block, 4 embedding figures, 4 CLS-head maps, its CKA heatmap, its token-norm
    # histograms and high-norm maps, its PCA feature maps, its attribution curves and AUC table; then the
    # distance comparison, the CKA comparison, the rollout and the attribution maps of the 2 attribution images
    assert len(figures) == 2 * (1 + 4 + 4 + 1 + 2 + 1 + 2) + 1 + 1 + 1 + 2
    # No classifier head: every map explains an embedding target, and every AUC has its chance level.
    attribution = pd.read_parquet(out / "attribution.parquet")
    assert (attribution["target"] == "embedding").all() and attribution["positive_auc"].isna().all()
    assert set(attribution["method"]) == {"grad_rollout", "gae", "gradcam", "rollout", "cls", "random"}
    assert {"pca_dinov2_s14_imgfocus.png", "pca_dinov2_s14_random.png"} <= figures
    assert not (out / "attention").exists() and not (out / "export").exists()  # keep_attention and the export are off

    # The explorer: its size printed by the rule and kept under 30 MB; offline in a browser in under 3 s.
    page = out / "explorer.html"
    megabytes = page.stat().st_size / 1e6
    assert megabytes < 30
    assert f"explorer.html is {megabytes:.2f} MB" in (out / "logs" / "explorer.log").read_text()
    opened = OfflinePage(browser, page, viewport={"width": 1000, "height": 1100})
    assert opened.load_seconds < 3, f"the demo explorer took {opened.load_seconds:.2f} s to load and draw"
    assert opened.tab.eval_on_selector_all(".panel", "ps => ps.map(p => p.dataset.model)") == [
        "dinov2_s14_imgfocus",
        "dinov2_s14_random",
    ]
    opened.tab.screenshot(path=tmp_path / "explorer.png")
    opened.close()
    assert_console_guides(console, len(manifest), shard_size=8, workdir=workdir)


def assert_console_guides(console: str, images: int, shard_size: int, workdir: Path) -> None:
    """Each extract job says on the console which model and shard it is, where its log is, and
    how fast it ran (or that one batch has no steady rate); the run ends saying where the
    figures are and how to make the report."""
    assert_jobs_announced(console)
    shards = -(-images // shard_size)
    for model in ("dinov2_s14_imgfocus", "dinov2_s14_random"):
        for shard in range(shards):
            # The job's line: its rule's message
            assert re.search(
                rf"^Job \d+: extract {model} shard {shard}, log: results/demo/logs/extract/{model}_{shard}.log$", console, re.M
            )
            done = [line for line in console.splitlines() if f"extract {model} shard {shard} (of {shards}): done, " in line]
            assert len(done) == 1, console[-3000:]
            assert "img/s over the" in done[0] or "no steady rate: all" in done[0]
            assert "start-up" in done[0]
    lines = console.strip().splitlines()
    done_at = max(i for i, line in enumerate(lines) if line.startswith("Done. Figures: "))
    assert lines[done_at].startswith("Done. Figures: results/demo/figures/")
    assert lines[done_at + 1].startswith("Explorer: open results/demo/explorer.html")
    # The report command runs as printed: the Python of this run, not a snakemake on PATH.
    report = shlex.split(lines[done_at + 2].removeprefix("Report: "))
    assert report[1:] == ["-m", "snakemake", "--report", "results/demo/report.html", "--configfile", "config/demo.yaml"]
    python = workdir / report[0]  # as the shell resolves it in the run's folder
    assert os.access(python, os.X_OK) and python.samefile(sys.executable)
    assert all(line.startswith(("Complete log", "Elapsed time")) for line in lines[done_at + 3 :]), lines[done_at:]


def uniform_distance(grid: int, patch: int) -> float:
    total = 0.0
    cells = [(r, c) for r in range(grid) for c in range(grid)]
    for r, c in cells:
        total += sum(((r - r2) ** 2 + (c - c2) ** 2) ** 0.5 for r2, c2 in cells)
    return patch * total / len(cells) ** 2
