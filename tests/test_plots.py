"""Tests for vitprobe.plots: every figure on small synthetic inputs, the video frames and writer."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot, which the tests import only to check that no figure is left open

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vitprobe.metrics.arrays import upsample_map
from vitprobe.metrics.parameters import (
    patch_embedding_components,
    patch_embedding_filters,
    position_embedding_similarity,
)
from vitprobe.metrics.pca import pca_feature_maps
from vitprobe.pipeline.aggregate import accuracy_table
from vitprobe.plots import distance, parameters, predictions, style, video
from vitprobe.plots import maps as map_plots
from vitprobe.plots import pca as pca_plots
from vitprobe.plots import token_norms as norm_plots

LABELS = {
    "vit_b16_i21k": "vit_b16_i21k (vit_base_patch16_224.augreg_in21k)",
    "deit_b16_distilled": "deit_b16_distilled (deit_base_distilled_patch16_224.fb_in1k)",
    "dino_b16": "dino_b16 (vit_base_patch16_224.dino)",
}
MAX_BYTES = 300_000


def check_png(path, min_size=(200, 150), max_size=(2500, 2500)) -> Image.Image:
    """The file exists, opens as a PNG of plausible pixel size and byte size; no pyplot figure is left open."""
    assert path.exists(), path
    assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        w, h = image.size
        assert min_size[0] <= w <= max_size[0] and min_size[1] <= h <= max_size[1], image.size
    assert plt.get_fignums() == []
    return image


@pytest.fixture(scope="module")
def distance_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for m, (model, depth) in enumerate([("vit_b16_i21k", 4), ("deit_b16_distilled", 4), ("dino_b16", 6)]):
        for block in range(depth):
            for head in range(4):
                rows.append(
                    dict(
                        model=model,
                        block=block,
                        head=head,
                        distance_px=20 + 15 * block + rng.normal(0, 8) + 3 * m,
                        std_px=abs(rng.normal(5, 2)) if block else np.nan,
                        n_images=10,
                    )
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Three smooth 56x56 synthetic 'photos' (gradients and a disc)."""
    yy, xx = np.mgrid[:56, :56] / 55.0
    out = []
    for k in range(3):
        disc = ((yy - 0.3 - 0.2 * k) ** 2 + (xx - 0.6) ** 2 < 0.05).astype(float)
        out.append(np.stack([yy, xx * (1 - disc), 0.5 * disc + 0.2 * k], -1))
    return (np.clip(np.stack(out), 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def predictions_table() -> pd.DataFrame:
    rows = [
        ("vit_b16_i21k", "img0", 281, "tabby", 0.91, True),
        ("vit_b16_i21k", "img1", 967, "espresso", 0.55, False),
        ("vit_b16_i21k", "img2", 812, "space shuttle", 0.40, None),
        ("deit_b16_distilled", "img0", 282, "tiger cat", 0.61, False),
        ("deit_b16_distilled", "img1", 967, "espresso", 0.77, True),
        ("deit_b16_distilled", "img2", 209, "German short-haired pointer", 0.33, None),
        ("dino_b16", "img0", 281, "tabby", 0.5, None),  # no labels at all: left out of the accuracy bars
    ]
    table = pd.DataFrame(rows, columns=["model", "image_id", "top1", "top1_name", "top1_prob", "correct"])
    table["correct"] = table["correct"].astype("boolean")
    return table


def test_wrap_breaks_checkpoint_names_at_separators():
    wrapped = style._wrap(LABELS["deit_b16_distilled"], 24)
    lines = wrapped.split("\n")
    assert lines[0] == "deit_b16_distilled"
    assert lines[1].startswith("(deit_base_")
    assert all(len(line) <= 24 for line in lines)
    assert wrapped.replace("\n", "") == LABELS["deit_b16_distilled"].replace(" ", "")
    assert style._wrap("short (x)", 80) == "short (x)"


def test_distance_by_block(tmp_path, distance_table):
    path = distance.plot_distance_by_block(distance_table, "dino_b16", LABELS["dino_b16"], tmp_path / "d.png")
    assert path == tmp_path / "d.png"
    check_png(path)
    with pytest.raises(ValueError, match="no rows for model 'nope'"):
        distance.plot_distance_by_block(distance_table, "nope", "x", tmp_path / "x.png")
    with pytest.raises(ValueError, match="missing columns"):
        distance.plot_distance_by_block(distance_table.drop(columns="std_px"), "dino_b16", "x", tmp_path / "x.png")


def test_distance_comparison(tmp_path, distance_table):
    path = distance.plot_distance_comparison(
        distance_table, list(LABELS), LABELS, tmp_path / "cmp.png", "Mean attention distance: all models"
    )
    check_png(path)
    with pytest.raises(KeyError, match="exact checkpoint"):
        distance.plot_distance_comparison(distance_table, ["dino_b16"], {}, tmp_path / "x.png", "t")


def test_vector_suffix_and_bad_suffix(tmp_path, distance_table):
    svg = distance.plot_distance_by_block(distance_table, "dino_b16", LABELS["dino_b16"], tmp_path / "d.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match="png"):
        distance.plot_distance_by_block(distance_table, "dino_b16", LABELS["dino_b16"], tmp_path / "d.jpg")


def test_rollout_any_grid(tmp_path, crops):
    rng = np.random.default_rng(1)
    maps = {"vit_b16_i21k": rng.random((3, 7, 7)), "dino_b16": rng.random((3, 4, 4))}  # grids need not divide 56
    path = map_plots.plot_rollout(crops, maps, LABELS, tmp_path / "rollout.png", image_ids=["a", "b", "c"])
    check_png(path)
    with pytest.raises(ValueError, match="maps\\['dino_b16'\\]"):
        map_plots.plot_rollout(crops, {"dino_b16": rng.random((2, 4, 4))}, LABELS, tmp_path / "x.png")
    with pytest.raises(ValueError, match="uint8"):
        map_plots.plot_rollout(crops.astype(np.float32), maps, LABELS, tmp_path / "x.png")


def test_rollout_overlays_each_model_on_its_own_crops(tmp_path, crops):
    from PIL import Image

    rng = np.random.default_rng(5)
    maps = {"vit_b16_i21k": rng.random((3, 7, 7)), "dino_b16": rng.random((3, 4, 4))}
    shared = map_plots.plot_rollout(crops, maps, LABELS, tmp_path / "shared.png")
    same = map_plots.plot_rollout({m: crops for m in maps}, maps, LABELS, tmp_path / "same.png")
    other = map_plots.plot_rollout({"vit_b16_i21k": crops, "dino_b16": 255 - crops}, maps, LABELS, tmp_path / "other.png")
    pixels = [np.asarray(Image.open(p).convert("RGB")) for p in (shared, same, other)]
    assert np.array_equal(pixels[0], pixels[1])
    assert not np.array_equal(pixels[0], pixels[2])


def test_cls_heads(tmp_path, crops):
    maps = np.random.default_rng(2).random((6, 8, 8))
    check_png(map_plots.plot_cls_heads(crops[0], maps, LABELS["dino_b16"], tmp_path / "heads.png"))


def test_norm_histograms_with_registers(tmp_path):
    """Patches, CLS and registers per block; one block with a threshold, one without (and a constant one)."""
    rng = np.random.default_rng(3)
    patches = np.exp(rng.normal(0, 0.2, (4, 3, 16)))
    patches[0, 1, :2] = 20.0  # block 1: two high-norm patches
    patches[:, 2] = 1.0
    norms = {"patch": patches, "cls": np.full((4, 3, 1), 2.0), "register": np.exp(rng.normal(1, 0.5, (4, 3, 4)))}
    path = norm_plots.plot_norm_histograms(norms, np.array([np.nan, 5.0, np.nan]), LABELS["dino_b16"], tmp_path / "h.png")
    check_png(path)


def test_high_norm_maps_box_the_patches_above_the_threshold(tmp_path, crops):
    rng = np.random.default_rng(4)
    rollout, cls = rng.random((3, 4, 4)), rng.random((3, 6, 4, 4))
    norms = 1 + 0.1 * rng.random((3, 4, 4))
    norms[1, 2, 3] = 12.0
    args = (crops, rollout, cls, norms)
    kwargs = dict(image_ids=["a", "b", "c"], register_norms=rng.random((3, 4)) * 10)
    boxed = norm_plots.plot_high_norm_maps(*args, 5.0, LABELS["dino_b16"], tmp_path / "boxed.png", **kwargs)
    above_all = norm_plots.plot_high_norm_maps(*args, 13.0, LABELS["dino_b16"], tmp_path / "none.png", **kwargs)
    check_png(boxed)
    check_png(norm_plots.plot_high_norm_maps(*args, np.nan, LABELS["dino_b16"], tmp_path / "nan.png", **kwargs))
    # Only image b has a patch above 5 (and none is above 13): below the title, the two figures
    # differ in b's row (its boxes) and not in c's, the last row.
    first, second = (np.asarray(Image.open(p).convert("RGB")) for p in (boxed, above_all))
    differs = (first != second).any(-1)
    height = len(differs)
    assert differs[height // 4 : int(0.68 * height)].any() and not differs[int(0.72 * height) :].any()
    with pytest.raises(ValueError, match="patch norm must be"):
        norm_plots.plot_high_norm_maps(crops, rollout, cls, norms[:2], 5.0, LABELS["dino_b16"], tmp_path / "x.png")


def test_pca_maps(tmp_path, crops):
    """The figure draws what `pca_feature_maps` returns: four panels per image, mask white on black."""
    features = np.random.default_rng(3).normal(size=(3, 64, 16))
    features[:, 27:29] += 5.0  # an "object" in the middle of the 8x8 grid
    maps = pca_feature_maps(features)
    path = pca_plots.plot_pca_maps(
        crops,
        maps.projections,
        maps.mask,
        maps.foreground,
        LABELS["dino_b16"],
        tmp_path / "pca.png",
        image_ids=["a", "b", "c"],
        explained=maps.explained,
        foreground_explained=maps.foreground_explained,
    )
    check_png(path)
    with pytest.raises(ValueError, match="square grid"):
        pca_plots.plot_pca_maps(
            crops, maps.projections[:, :63], maps.mask[:, :63], maps.foreground[:, :63], "x", tmp_path / "x.png"
        )


@pytest.mark.parametrize("kind", ["filters", "components"])
def test_patch_filters(tmp_path, kind):
    kernel = np.random.default_rng(3).standard_normal((8, 8, 3, 160))
    filters = patch_embedding_filters(kernel, 128) if kind == "filters" else patch_embedding_components(kernel, 28)
    title = f"Patch-embedding {kind}"
    path = parameters.plot_patch_filters(filters, LABELS["vit_b16_i21k"], tmp_path / f"{kind}.png", title)
    check_png(path)
    assert style._default_ncols(128) == 16 and style._default_ncols(28) == 7
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        parameters.plot_patch_filters(filters * 2 - 1, "x", tmp_path / "x.png", "t")


def test_position_similarity(tmp_path):
    g = 6
    yy, xx = np.mgrid[:g, :g]
    freqs = np.linspace(0.3, 1.2, 4)
    pos = np.concatenate([f(a.ravel()[:, None] * freqs) for a in (yy, xx) for f in (np.sin, np.cos)], 1)
    cosine, dot = position_embedding_similarity(pos, g)
    cos_path, dot_path = parameters.plot_position_similarity(
        cosine, dot, LABELS["vit_b16_i21k"], tmp_path / "position_cosine_grid.png", tmp_path / "position_dot.png"
    )
    check_png(cos_path)
    check_png(dot_path)
    with pytest.raises(ValueError, match="grid_h, grid_w"):
        parameters.plot_position_cosine_grid(dot, "x", tmp_path / "x.png")


def test_accuracy_and_predictions(tmp_path, predictions_table, crops):
    table = predictions_table
    published = {"vit_b16_i21k": 81.4, "deit_b16_distilled": 83.4}
    acc = accuracy_table(table)
    assert list(acc["model"]) == ["vit_b16_i21k", "deit_b16_distilled"]  # dino_b16 has no labels
    assert acc["accuracy"].tolist() == [50.0, 50.0] and acc["n"].tolist() == [2, 2]
    # The Wilson 95% interval of 1 success in 2 trials, by hand: 0.5 +- 1.96 sqrt(0.125 + 1.96^2/16) / (1 + 1.96^2/2).
    np.testing.assert_allclose(acc["low"], 9.4531, atol=1e-3)
    np.testing.assert_allclose(acc["high"], 90.5469, atol=1e-3)

    check_png(predictions.plot_predictions(acc, table, None, published, LABELS, tmp_path / "acc.png"))
    check_png(predictions.plot_accuracy(acc, published, LABELS, tmp_path / "acc2.png"))
    path = predictions.plot_predictions(acc, table, crops, published, LABELS, tmp_path / "pred.png")
    check_png(path)
    unlabelled = table.assign(correct=pd.array([None] * len(table), dtype="boolean"))
    check_png(predictions.plot_accuracy(accuracy_table(unlabelled), published, LABELS, tmp_path / "none.png"))


def test_top1_gallery(tmp_path, predictions_table, crops):
    ids = ["img0", "img1", "img2"]
    path = predictions.plot_top1_gallery(
        crops, ids, predictions_table, "deit_b16_distilled", LABELS["deit_b16_distilled"], tmp_path / "gallery.png"
    )
    check_png(path)
    text, colour = predictions._caption(predictions_table.iloc[0], 30)
    assert text == "tabby (0.91)" and colour == style.CORRECT_COLOUR
    assert predictions._caption(predictions_table.iloc[2], 30)[1] == "black"
    assert predictions._caption(None, 30)[0] == "no prediction"


def test_photo_figure_switches_to_palette_when_large(tmp_path):
    noise = np.random.default_rng(4).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    maps = {m: np.random.default_rng(5).random((4, 7, 7)) for m in LABELS}
    path = map_plots.plot_rollout(noise, maps, LABELS, tmp_path / "noisy.png")
    with Image.open(path) as image:
        assert image.mode == "P"


def test_video_frames_overlay_where_map_is_high():
    rng = np.random.default_rng(6)
    frames = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    maps = np.zeros((3, 4, 4))
    maps[:, 1, 2] = 1.0  # high on patch (1, 2): pixels rows 8..15, cols 16..23
    out = video.attention_video_frames(frames, maps, interpolation="nearest")
    assert out.shape == frames.shape and out.dtype == np.uint8
    high = np.s_[:, 8:16, 16:24]
    assert np.abs(out[high].astype(int) - frames[high]).mean() > 20
    low = np.s_[:, 24:, :8]  # map 0 after scaling: the frame is untouched
    np.testing.assert_array_equal(out[low], frames[low])
    smooth = video.attention_video_frames(frames, maps)
    assert np.abs(smooth[:, 12, 20].astype(int) - frames[:, 12, 20]).sum() > 0
    with pytest.raises(ValueError, match="maps must be"):
        video.attention_video_frames(frames, maps[:2])


def test_resize_map_matches_upsample_map_and_interpolates():
    m = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_array_equal(video._resize_map(m, 32, 32, "nearest"), upsample_map(m, 32))
    bilinear = video._resize_map(m, 32, 32, "bilinear")
    assert bilinear.shape == (32, 32) and bilinear.min() == m.min() and bilinear.max() == m.max()
    assert video._resize_map(m, 30, 20, "nearest").shape == (30, 20)


def test_write_gif(tmp_path):
    t = 5
    frames = np.zeros((t, 24, 24, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, :, i * 4 : i * 4 + 4] = 255  # distinct frames (Pillow merges identical ones)
    path = video.write_video(frames, tmp_path / "sub" / "attention.gif", fps=5)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == t and gif.size == (24, 24)
        assert gif.info["duration"] == 200 and gif.info["loop"] == 0
        gif.seek(2)
        assert np.asarray(gif.convert("RGB"))[0, 9].tolist() == [255, 255, 255]
    for suffix in (".avi", ".mp4"):
        with pytest.raises(ValueError, match="videos are written as animated GIFs"):
            video.write_video(frames, tmp_path / f"a{suffix}")
    with pytest.raises(ValueError, match="uint8"):
        video.write_video(frames.astype(np.float32), tmp_path / "a.gif")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["attention.gif", "sub"]  # no temporary file left


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    """A figure or video is written to a temporary name beside it and renamed into place: a write
    that fails half-way leaves neither a partial file under the final name nor the temporary one."""

    def half_then_fail(self, fp, *args, **kwargs):  # Image.save: some bytes, then the disk is full
        Path(fp).write_bytes(b"GIF89a")
        raise OSError("disk full")

    def half_bytes_then_fail(self, data):  # Path.write_bytes likewise
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    frames = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", half_then_fail)
        with pytest.raises(OSError, match="disk full"):
            video.write_video(frames, tmp_path / "a.gif")
    table = pd.DataFrame({"model": "m", "block": [0, 1], "head": 0, "distance_px": [1.0, 2.0], "std_px": 0.0, "n_images": 1})
    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_bytes", half_bytes_then_fail)
        with pytest.raises(OSError, match="disk full"):
            distance.plot_distance_by_block(table, "m", "m", tmp_path / "d.png")
    assert list(tmp_path.iterdir()) == []


def test_a_figure_job_splits_its_inputs_per_figure():
    """A figure job for every model gets one list of inputs, each figure's files after the other's."""
    from vitprobe.pipeline.figures import consecutive, per_model

    assert consecutive(["a", "b", "c", "d"], [1, 0, 3]) == [["a"], [], ["b", "c", "d"]]
    assert per_model(["a0", "a1", "b0", "b1"], ["a", "b"]) == {"a": ["a0", "a1"], "b": ["b0", "b1"]}
    with pytest.raises(ValueError, match="4 input files for figures of \\[1, 2\\] files"):
        consecutive(["a", "b", "c", "d"], [1, 2])
    with pytest.raises(ValueError, match="do not split evenly"):
        per_model(["a0", "a1", "b0"], ["a", "b"])
