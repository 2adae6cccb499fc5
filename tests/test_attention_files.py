"""Attention as users get it: the kept shards that extraction writes, memory-mapped back, and the
long-format Parquet export read with pandas and pyarrow, both equal to the model's forward pass."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import vitprobe
from vitprobe.data.preprocess import normalize
from vitprobe.pipeline.config import ConfigError, model_entry
from vitprobe.pipeline.export import export_attention
from vitprobe.pipeline.extract import run_extract_attention
from vitprobe.pipeline.model import build_model

KEY = "deit_dist"
SETTINGS = {"arch": "deit_tiny_distilled_patch16_224", "weights": "random", "seed": 3, "spec": {"depth": 2, "num_classes": 10}}
SHARD_SIZE = 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Five images in two crop shards, their manifest, and the model's attention on them."""
    folder = tmp_path_factory.mktemp("attention_files")
    crops = np.random.default_rng(0).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    ids = [f"img{k}.jpg" for k in range(5)]
    pd.DataFrame({"image_id": ids, "label": -1}).to_parquet(folder / "manifest.parquet")
    for shard in range(2):
        np.save(folder / f"shard_{shard}.npy", crops[shard * SHARD_SIZE : (shard + 1) * SHARD_SIZE])
    model = build_model(model_entry(KEY, SETTINGS))
    attention = np.stack(model.forward(normalize(crops, model.preprocessing)).attentions, axis=1)
    return folder, ids, attention


def test_kept_shard_equals_the_forward_pass(shards, tmp_path):
    folder, ids, attention = shards
    run_extract_attention(
        KEY,
        SETTINGS,
        str(folder / "shard_1.npy"),
        str(folder / "manifest.parquet"),
        1,
        2,
        SHARD_SIZE,
        predictions=str(tmp_path / "predictions.parquet"),
        attention=str(tmp_path / "shard_1.npz"),
        representations=str(tmp_path / "representations_1.npz"),
        map_images=str(tmp_path / "map_images_1.npz"),
        batch_size=1,
        precision="float32",
        group_size=None,
        dtype="float32",
        compile_mode="auto",
        threads=1,
        map_rows=0,
    )
    shard = vitprobe.open_attention(tmp_path / "shard_1.npz")
    assert isinstance(shard.attention, np.memmap)
    assert shard.image_ids == ids[3:] and shard.model == KEY
    assert shard.checkpoint == "deit_tiny_distilled_patch16_224, random init seed 3"
    assert shard.prefix_tokens == ("cls", "distillation") and (shard.grid_size, shard.patch_size) == (14, 16)
    assert (shard.num_blocks, shard.num_heads) == (2, 3)
    # batch size 1 here against 5 at once in the fixture: equal to float32 rounding
    np.testing.assert_allclose(shard.attention, attention[3:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("selection", [["img4.jpg", "img1.jpg"], 2])
def test_parquet_export_equals_the_forward_pass(shards, tmp_path, selection):
    folder, ids, attention = shards
    rows = [ids.index(i) for i in selection] if isinstance(selection, list) else list(range(selection))
    crop_paths = [str(folder / f"shard_{s}.npy") for s in sorted({r // SHARD_SIZE for r in rows})]
    out = tmp_path / "attention.parquet"
    export_attention(KEY, SETTINGS, str(folder / "manifest.parquet"), crop_paths, SHARD_SIZE, selection, str(out), batch_size=2)

    table = pq.read_table(out)
    assert [(f.name, str(f.type)) for f in table.schema] == [
        ("image_id", "string"),
        ("block", "int16"),
        ("head", "int16"),
        ("query", "int16"),
        ("key", "int16"),
        ("weight", "halffloat"),
    ]
    frame = pd.read_parquet(out)
    assert frame["weight"].dtype == np.float16 and len(frame) == table.num_rows == len(rows) * attention[0].size
    assert frame["image_id"].unique().tolist() == [ids[r] for r in rows]
    # Put every row back at (image, block, head, query, key): each cell exactly once.
    back = np.full((len(rows), *attention.shape[1:]), np.nan, np.float32)
    image = frame["image_id"].map({ids[r]: k for k, r in enumerate(rows)}).to_numpy()
    back[image, frame["block"], frame["head"], frame["query"], frame["key"]] = frame["weight"]
    # float16 keeps 11 significant bits (relative error <= 2**-11); the batches differ from the
    # fixture's, which moves float32 attention by rounding only.
    np.testing.assert_allclose(back, attention[rows], rtol=6e-4, atol=1e-7)
    np.testing.assert_array_equal(table.column("weight").to_numpy(), back.reshape(-1).astype(np.float16))  # pyarrow == pandas


def test_unknown_export_id_names_the_key(shards, tmp_path):
    folder, _, _ = shards
    with pytest.raises(ConfigError, match=r"export\.attention_parquet: \['nope.jpg'\] not in the manifest.*img0\.jpg"):
        export_attention(
            KEY, SETTINGS, str(folder / "manifest.parquet"), [], SHARD_SIZE, ["nope.jpg"], str(tmp_path / "x.parquet")
        )
    assert not list(tmp_path.iterdir())
