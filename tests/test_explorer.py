"""The explorer page in a real browser (Debian's chromium, driven by playwright), checked
against `ProbeModel.forward`'s attention of the same models on the same crops.

The page is written by the explorer stage from tiny random-weight models (depth 2; one with a
CLS token, one distilled DeiT with CLS and DIST tokens) on bundled photos, opened from disk with
every network request refused, and driven as a user would: selects, keyboard, mouse.
"""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import OfflinePage, settled
from vitprobe.data.preprocess import normalize, to_rgb
from vitprobe.data.sources import bundled
from vitprobe.pipeline.config import model_entry
from vitprobe.pipeline.explorer import write_explorer
from vitprobe.pipeline.map_images import ShardMapImages, dequantise_rows, quantise_rows
from vitprobe.pipeline.model import build_model
from vitprobe.shards import ShardIdentity, images_digest

MODELS = {
    "vit_t": {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1, "spec": {"depth": 2}},
    "deit_t_dist": {"arch": "deit_tiny_distilled_patch16_224", "weights": "random", "seed": 2, "spec": {"depth": 2}},
}
IMAGES = 3


def test_quantised_rows_come_back_within_half_a_step():
    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.full(196, 0.3), size=(3, 5))
    rows[0, 0] = 0.0  # a row of zeros (a fully discarded row) survives
    codes, scales = quantise_rows(rows)
    assert codes.dtype == np.uint8 and scales.dtype == np.float32 and codes.max() == 255
    error = np.abs(dequantise_rows(codes, scales) - rows)
    assert np.all(error <= scales[..., None].astype(np.float64) / 510 + 1e-9)
    assert np.all(dequantise_rows(codes, scales)[0, 0] == 0)


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    """The page of a tiny two-model experiment (its attention rows kept from the extract program,
    as the extract job holding the map images keeps them), with each model's reference forward pass."""
    out = tmp_path_factory.mktemp("explorer")
    photos = [to_rgb(Image.open(io.BytesIO(record.read()))) for record in bundled()[:IMAGES]]
    image_ids = [record.image_id for record in bundled()[:IMAGES]]
    maps, attribution, references, distance_rows = {}, {}, {}, []
    for key, settings in MODELS.items():
        model = build_model(model_entry(key, settings))
        crops = model.crop(photos)
        x = normalize(crops, model.preprocessing)
        program = model.forward_reduced(x, map_images=IMAGES)
        reduced = program.reductions
        kept = ShardMapImages(key, model.spec, IMAGES)
        kept.add(image_ids, program.map_features, program.map_attention)
        kept.write(str(out / f"{key}_map_images.npz"), ShardIdentity(key, "settings digest", images_digest(image_ids)))
        with np.load(out / f"{key}_map_images.npz") as kept_file:
            rows = {name: kept_file[name] for name in ("codes", "scales")}
        maps[key] = str(out / f"{key}.npz")
        np.savez(maps[key], image_ids=np.array(image_ids), crops=crops, rollout=reduced["rollout"], cls=reduced["cls"], **rows)
        for block, per_head in enumerate(reduced["distance"].mean(axis=0)):
            distance_rows += [dict(model=key, block=block, head=h, distance_px=float(d)) for h, d in enumerate(per_head)]
        # Attribution maps of the first two images only: the third image has none.
        attributed = model.attribute(crops[:2], methods=("gae", "gradcam"))
        attribution[key] = str(out / f"{key}_attribution.npz")
        np.savez(attribution[key], image_id=np.array(image_ids[:2]), crops=crops[:2], target=attributed.target, **attributed.maps)
        references[key] = dict(
            model=model, attentions=model.forward(x).attentions, rollout=reduced["rollout"], attribution=attributed
        )
    table = out / "mean_attention_distance.parquet"
    pd.DataFrame(distance_rows).to_parquet(table)
    page = out / "explorer.html"
    labels = {key: f"{key} (random init)" for key in MODELS}
    write_explorer(MODELS, labels, maps, str(table), [list(MODELS)], IMAGES, None, str(page), attribution)
    return page, references


@pytest.fixture
def page(browser, explorer, tmp_path_factory):
    """The page opened from disk, offline; fails the test on any console error or request."""
    path, _ = explorer
    opened = OfflinePage(browser, path, viewport={"width": 1000, "height": 1100})
    tab = opened.tab
    tab.load_seconds = opened.load_seconds
    tab.shots = tmp_path_factory.mktemp("explorer_screenshots")
    yield tab
    opened.close()


def shown(tab, key: str) -> dict:
    """What a model's panel shows: its overlay values (dequantised by the page) and state."""
    data = tab.eval_on_selector(f".panel[data-model='{key}'] canvas.map", "c => ({...c.dataset})")
    data["values"] = np.array([float(v) for v in data["values"].split(",")]) if data["values"] else None
    return data


def expected_row(reference: dict, image: int, block: int, head, query: int | None) -> tuple[np.ndarray, float]:
    """The attention row from `ProbeModel.forward` over the patch keys (query: a patch index, or
    None for the CLS row), and the bound the 8-bit codes promise: half of each head's step."""
    prefix = reference["model"].num_prefix_tokens
    token = 0 if query is None else prefix + query
    rows = reference["attentions"][block][image, :, token, prefix:].astype(np.float64)  # (heads, P)
    steps = rows.max(axis=1) / 255
    if head == "mean":
        return rows.mean(axis=0), steps.mean() / 2
    return rows[head], steps[head] / 2


def assert_row(tab, reference: dict, key: str, head, query: int | None):
    state = shown(tab, key)
    image, block = int(state["image"]), int(state["block"])
    expected, bound = expected_row(reference, image, block, head, query)
    error = np.abs(state["values"] - expected).max()
    assert error <= bound + 1e-6, f"{key} block {block} head {head} query {query}: off by {error:.3g} (bound {bound:.3g})"
    return expected


def test_page_matches_the_forward_pass(page, explorer):
    _, references = explorer
    shots = page.shots
    assert page.load_seconds < 3, f"the page took {page.load_seconds:.2f} s to load and draw"
    assert page.title() == "vitprobe attention explorer"
    # Both models side by side (the configured comparison), each with its distance chart.
    assert page.eval_on_selector_all(".panel", "ps => ps.map(p => p.dataset.model)") == list(MODELS)
    assert page.locator(".panel[data-model='vit_t'] .head-point").count() == 2 * 3
    page.screenshot(path=shots / "0_loaded.png")

    page.select_option("#image", "2")
    page.select_option("#block", "1")
    page.select_option("#head", "1")
    settled(page)
    page.focus(".panel[data-model='vit_t'] canvas.map")
    start = int(shown(page, "vit_t")["query"])
    assert start == 7 * 14 + 7  # the centre patch of the 14 x 14 grid
    for key in ("ArrowRight", "ArrowRight", "ArrowDown", "ArrowLeft", "ArrowDown", "ArrowDown"):
        page.keyboard.press(key)
    settled(page)
    query = (7 + 3) * 14 + (7 + 1)
    for key, reference in references.items():
        state = shown(page, key)
        assert (state["image"], state["block"], state["head"], state["layer"], int(state["query"])) == (
            "2",
            "1",
            "1",
            "query",
            query,
        )
        expected = assert_row(page, reference, key, 1, query)
        # The overlay is this query's row and no other: the neighbouring patch's row differs.
        other, bound = expected_row(reference, 2, 1, 1, query + 1)
        assert np.abs(other - expected).max() > 4 * bound
    page.screenshot(path=shots / "1_keyboard_head1.png")

    # A mouse hover over patch (row 2, col 11) of the first panel's crop.
    canvas = page.locator(".panel[data-model='vit_t'] canvas.map")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + (11 + 0.5) / 14 * box["width"], box["y"] + (2 + 0.5) / 14 * box["height"])
    settled(page)
    query = 2 * 14 + 11
    for key, reference in references.items():
        assert int(shown(page, key)["query"]) == query
        assert_row(page, reference, key, 1, query)
    page.screenshot(path=shots / "2_hover.png")

    page.select_option("#head", "mean")
    settled(page)
    for key, reference in references.items():
        assert_row(page, reference, key, "mean", query)
    page.screenshot(path=shots / "3_mean_over_heads.png")

    page.select_option("#layer", "cls")
    settled(page)
    for key, reference in references.items():
        assert shown(page, key)["layer"] == "cls"
        assert_row(page, reference, key, "mean", None)
    page.select_option("#head", "0")
    settled(page)
    for key, reference in references.items():
        assert_row(page, reference, key, 0, None)
    page.screenshot(path=shots / "4_cls_head0.png")

    page.select_option("#layer", "rollout")
    settled(page)
    for key, reference in references.items():
        np.testing.assert_allclose(shown(page, key)["values"], reference["rollout"][2].ravel(), rtol=1e-5, atol=1e-8)
    page.screenshot(path=shots / "5_rollout.png")

    # Clicking a head's point in the distance chart selects its block and head.
    page.click(".panel[data-model='deit_t_dist'] .head-point[data-block='0'][data-head='2']")
    settled(page)
    assert (page.input_value("#block"), page.input_value("#head"), page.input_value("#layer")) == ("0", "2", "query")
    for key, reference in references.items():
        assert_row(page, reference, key, 2, query)
    assert page.locator(".panel[data-model='deit_t_dist'] .head-point.selected").count() == 1
    page.screenshot(path=shots / "6_chart_click.png")
    # The colour scale is labelled with numbers up to the row's maximum.
    ticks = page.eval_on_selector_all(".panel[data-model='vit_t'] .ticks span", "s => s.map(t => t.textContent)")
    assert ticks[0] == "0" and float(ticks[-1]) == pytest.approx(float(shown(page, "vit_t")["max"]), rel=5e-3)


def test_attribution_maps_are_layers(page, explorer):
    """Each attribution method is a layer showing the stage's map; an image beyond
    attribution.images says it has none."""
    _, references = explorer
    layers = page.eval_on_selector_all("#layer option", "os => os.map(o => o.value)")
    assert layers[-2:] == ["attribution:gae", "attribution:gradcam"]
    page.select_option("#image", "1")
    page.select_option("#layer", "attribution:gradcam")
    settled(page)
    for key, reference in references.items():
        np.testing.assert_allclose(
            shown(page, key)["values"], reference["attribution"].maps["gradcam"][1].ravel(), rtol=1e-5, atol=1e-8
        )
        status = page.text_content(f".panel[data-model='{key}'] .status")
        assert f"gradcam attribution map of the class {reference['attribution'].target[1]}" in status
    page.select_option("#image", "2")
    settled(page)
    assert shown(page, "vit_t")["values"] is None
    assert "no attribution maps for this image" in page.text_content(".panel[data-model='vit_t'] .status")
    page.screenshot(path=page.shots / "7_attribution.png")


def test_panels_align_and_grey_points_are_explained(browser, explorer, tmp_path):
    """A model name that wraps moves every panel's map down alike, and a page that leaves blocks
    out says under each chart what its grey points are."""
    folder = explorer[0].parent
    long_name = "a checkpoint label long enough to wrap over three lines of a panel heading " * 2
    labels = {key: (long_name if i == 0 else key) for i, key in enumerate(MODELS)}
    maps = {key: str(folder / f"{key}.npz") for key in MODELS}
    path = tmp_path / "explorer.html"
    write_explorer(MODELS, labels, maps, str(folder / "mean_attention_distance.parquet"), [list(MODELS)], IMAGES, [-1], str(path))
    opened = OfflinePage(browser, path, viewport={"width": 1000, "height": 1100})
    text_heights = """hs => hs.map(h => { const r = document.createRange(); r.selectNodeContents(h);
        return r.getBoundingClientRect().height; })"""
    heading_heights = opened.tab.eval_on_selector_all(".panel h2", text_heights)  # of the text, not the grid cell
    map_tops = opened.tab.eval_on_selector_all(".panel canvas.map", "cs => cs.map(c => c.getBoundingClientRect().top)")
    notes = opened.tab.eval_on_selector_all(".panel .chart-note", "ps => ps.map(p => p.textContent)")
    grey = opened.tab.eval_on_selector_all(".head-point.missing", "ps => ps.length")
    opened.close()
    assert len(map_tops) == 2 and heading_heights[0] > 2 * heading_heights[1]  # the first name wraps
    assert map_tops[0] == map_tops[1]
    assert grey > 0 and len(notes) == 2
    assert all(note.startswith("Grey points: 1 of the 2 blocks are not in this page (explorer.blocks)") for note in notes)
