"""The figures of the later families where they differ from a 2020 ViT's.

- BEiT has no absolute position embedding: its position figures show its relative position bias
  (the parameters stage exports it, the figure rule plots it under the same file names). The values
  are checked against the checkpoint's own tables gathered by the relative position index (the index
  the attention parity with timm already judges), and the rule runs in a real snakemake run.
- SigLIP has no class token: its per-head maps and rollout row are the attention-pooling head's
  probe query's, and the titles say so (read back from the SVG text).
"""

import json
import re

import matplotlib
import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from helpers import copy_workflow, run_reference, snakemake
from vitprobe.metrics.parameters import relative_bias_rows, relative_bias_similarity
from vitprobe.models.pos_embed import relative_position_index
from vitprobe.pipeline.config import validated_entries
from vitprobe.pipeline.figures.maps import cls_heads, rollout
from vitprobe.pipeline.figures.parameters import position_similarity
from vitprobe.pipeline.parameters import export_parameters

# A BEiT v2 made small (the hub file's names, fewer blocks and a narrower width): 14x14 patches.
BEIT = "beitv2_base_patch16_224"
BEIT_SPEC = dict(depth=2, embed_dim=192, num_heads=3)
GRID = 14


@pytest.fixture(scope="module")
def beit_weights(tmp_path_factory):
    """A safetensors file with timm's BEiT v2 key names and shapes (read from timm's state_dict) and random
    values, the relative position bias tables among them."""
    out = tmp_path_factory.mktemp("beit")
    (out / "job.json").write_text(json.dumps([dict(id="beit", model=BEIT, kwargs=BEIT_SPEC)]))
    run_reference("timm_state_keys.py", out / "job.json", out / "keys.json")
    layout = json.loads((out / "keys.json").read_text())["beit"]["state"]
    rng = np.random.default_rng(0)
    state = {key: rng.normal(0, 0.5, shape).astype(np.float32) for key, shape in layout.items()}
    save_file(state, str(out / "beit.safetensors"))
    return out / "beit.safetensors", state


def _svg_text(path) -> str:
    """The text of an SVG written with text kept as text, whitespace removed (titles are wrapped)."""
    return "".join("".join(re.findall(r">([^<]*)</text>", path.read_text())).split())


def test_beit_parameters_are_its_relative_bias(beit_weights, tmp_path):
    weights, state = beit_weights
    entry = validated_entries({"beit": {"arch": BEIT, "weights": str(weights), "spec": BEIT_SPEC}})["beit"]
    export_parameters(entry, str(tmp_path / "beit.npz"))
    data = np.load(tmp_path / "beit.npz", allow_pickle=False)
    assert "pos_embed" not in data and int(data["grid_size"]) == GRID
    maps = data["rel_pos_bias"]
    assert maps.shape == (2, 3, 2 * GRID - 1, 2 * GRID - 1)
    index = relative_position_index(GRID)[1:, 1:]  # patch query i, patch key j
    for block in range(2):
        table = state[f"blocks.{block}.attn.relative_position_bias_table"]
        # What the block adds to the logit of query i and key j, for every head: (heads, P, P).
        added = np.moveaxis(table[index], -1, 0)
        np.testing.assert_array_equal(relative_bias_rows(maps[block]), added)
        # The map's axes are the query-minus-key offset: query (3, 5) and key (1, 0) are 2 rows, 5 columns apart.
        query, key = 3 * GRID + 5, 1 * GRID + 0
        np.testing.assert_array_equal(maps[block][:, GRID - 1 + 2, GRID - 1 + 5], table[index[query, key]])
        np.testing.assert_array_equal(maps[block][:, GRID - 1, GRID - 1], table[index[0, 0]])  # zero offset

    # The cosine grid: each patch's bias row over every key patch, all blocks and heads, against every other.
    rows = np.concatenate(
        [state[f"blocks.{b}.attn.relative_position_bias_table"][index].reshape(GRID * GRID, -1) for b in range(2)], 1
    ).astype(np.float64)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    cosine, _ = relative_bias_similarity(maps)
    np.testing.assert_allclose(cosine.reshape(GRID * GRID, -1), unit @ unit.T, rtol=0, atol=1e-6)

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        position_similarity(str(tmp_path / "beit.npz"), "beit (tiny BEiT v2)", tmp_path / "cos.svg", tmp_path / "dot.svg")
    assert "Relativepositionbiassimilarity" in _svg_text(tmp_path / "cos.svg")
    dot = _svg_text(tmp_path / "dot.svg")
    assert "Relativepositionbiasperheadoverthepatchoffset" in dot and "block1,head2" in dot and "block0,head0" in dot


@pytest.mark.slow
def test_beit_runs_through_the_position_figure_rule(beit_weights, tmp_path):
    """A config with BEiT passes the checks before any job, and the real rules write both position figures
    from its relative bias (a targeted run: its attention figures are those of any model with a class token)."""
    workdir = copy_workflow(tmp_path)
    config = {
        "experiment": "beit",
        "images": {"source": "bundled", "count": 2, "seed": 0},
        "models": {"beit": {"arch": BEIT, "weights": str(beit_weights[0]), "spec": BEIT_SPEC}},
        "analysis": {"map_images": 1},
    }
    (workdir / "beit.yaml").write_text(yaml.safe_dump(config))
    figures = ["results/beit/figures/position_embedding_cosine_beit.png", "results/beit/figures/position_embedding_dot_beit.png"]
    snakemake(workdir, *figures, "--configfile", "beit.yaml")  # targets first: --configfile takes several values
    for figure in figures:
        assert (workdir / figure).stat().st_size > 10_000
    data = np.load(workdir / "results/beit/parameters/beit.npz", allow_pickle=False)
    assert sorted(data) == ["grid_size", "patch_kernel", "rel_pos_bias"]


def _maps_file(path, heads: int):
    rng = np.random.default_rng(1)
    np.savez(
        path,
        image_ids=np.array(["img_a"]),
        crops=rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8),
        rollout=rng.random((1, 4, 4)),
        cls=rng.random((1, heads, 4, 4)),
    )
    return str(path)


def test_map_figures_name_the_query(tmp_path):
    """Without a class token (SigLIP) the per-head maps and the rollout row are the MAP head's probe's: no "CLS"."""
    maps = _maps_file(tmp_path / "m.npz", heads=3)
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        cls_heads(maps, "siglip (a tower)", [tmp_path / "probe.svg"], "MAP-head probe")
        cls_heads(maps, "vit (a ViT)", [tmp_path / "cls.svg"], "CLS")
        rollout({"siglip": maps}, {"siglip": "siglip (a tower)"}, tmp_path / "rollout_probe.svg", {"siglip": "MAP-head probe"})
        rollout({"vit": maps}, {"vit": "vit (a ViT)"}, tmp_path / "rollout_cls.svg", {"vit": "CLS"})
        rollout(
            {"vit": maps, "siglip": maps},
            {"vit": "vit (a ViT)", "siglip": "siglip (a tower)"},
            tmp_path / "rollout_mixed.svg",
            {"vit": "CLS", "siglip": "MAP-head probe"},
        )
    probe = _svg_text(tmp_path / "probe.svg")
    assert "MAP-headprobeattentionperhead,imageimg_a" in probe and "CLS" not in probe
    assert "Last-blockCLSattentionperhead,imageimg_a" in _svg_text(tmp_path / "cls.svg")
    probe_rollout = _svg_text(tmp_path / "rollout_probe.svg")
    assert "Attentionrollout(MAP-headprobeattentionrowoverthepatches)" in probe_rollout and "CLS" not in probe_rollout
    assert "Attentionrollout(CLSrowoverthepatches)" in _svg_text(tmp_path / "rollout_cls.svg")
    mixed = _svg_text(tmp_path / "rollout_mixed.svg")
    assert "theCLSrow,orthe[MAP-headprobe]attentionrowwheremarked" in mixed
    assert "siglip(atower)[MAP-headprobe]" in mixed and "vit(aViT)[" not in mixed
