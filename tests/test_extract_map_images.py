"""The map images' share of an extract job (`run_extract`): their PCA features and explorer rows
come out of the extract program itself, equal to separate forward passes, and only the batches
that hold map images run the program that returns them."""

import numpy as np
import pandas as pd
import pytest

from vitprobe.api import ProbeModel
from vitprobe.data.preprocess import normalize
from vitprobe.pipeline.config import model_entry
from vitprobe.pipeline.extract import run_extract
from vitprobe.pipeline.map_images import dequantise_rows, query_rows
from vitprobe.pipeline.model import build_model

KEY = "vit_t"
SETTINGS = {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 4, "spec": {"depth": 2, "num_classes": 10}}
ANALYSIS = {"renormalize": False, "head_fusion": "mean", "discard_ratio": 0.0}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Shard 0 (five images, two of them map images) extracted one image per batch, with the
    ``map_images`` argument of every program call."""
    folder = tmp_path_factory.mktemp("extract_map_images")
    crops = np.random.default_rng(1).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    ids = [f"img{k}.jpg" for k in range(5)]
    pd.DataFrame({"image_id": ids, "label": -1}).to_parquet(folder / "manifest.parquet")
    np.save(folder / "shard_0.npy", crops)
    calls = []
    real = ProbeModel.forward_reduced

    def recorded(self, x, *args, map_images=0, **kwargs):
        calls.append(map_images)
        return real(self, x, *args, map_images=map_images, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ProbeModel, "forward_reduced", recorded)
        run_extract(
            KEY,
            SETTINGS,
            str(folder / "shard_0.npy"),
            str(folder / "manifest.parquet"),
            0,
            1,
            5,
            **{name: str(folder / f"{name}.{suffix}") for name, suffix in OUTPUTS.items()},
            batch_size=1,
            precision="float32",
            group_size=None,
            analysis=ANALYSIS,
            attention_kernel="auto",
            compile_mode="auto",
            threads=1,
            map_rows=2,
        )
    return folder, crops, ids, calls


OUTPUTS = {"predictions": "parquet", "per_image": "parquet", "maps": "npz", "representations": "npz", "map_images": "npz"}


def test_only_the_batches_with_map_images_return_them(job):
    _, _, _, calls = job
    assert calls == [1, 1, 0, 0, 0]


def test_map_images_equal_separate_forward_passes(job):
    folder, crops, ids, _ = job
    model = build_model(model_entry(KEY, SETTINGS))
    x = normalize(crops[:2], model.preprocessing)
    with np.load(folder / "map_images.npz") as kept:
        assert kept["image_ids"].tolist() == ids[:2]
        # one image per batch here against two at once: equal to float32 rounding
        np.testing.assert_allclose(kept["features"], model.patch_features(x), rtol=0, atol=1e-4)
        attention = np.stack(model.forward(x).attentions, axis=1)  # (images, blocks, heads, N, N)
        rows = query_rows(attention.reshape(-1, *attention.shape[2:]), model.num_prefix_tokens)
        expected = rows.reshape(*attention.shape[:3], *rows.shape[2:])
        values = dequantise_rows(kept["codes"], kept["scales"])
        step = kept["scales"].astype(np.float64)[..., None] / 255
    assert np.all(np.abs(values - expected) <= step / 2 + 1e-6)
