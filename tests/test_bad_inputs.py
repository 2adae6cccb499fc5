"""Bad inputs found before any job or by the job that meets them, with a message naming the
file, row or key; nothing analysed twice, nothing silently wrong (issue 13)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import REPO
from vitprobe.data import manifest as mf
from vitprobe.data import sources
from vitprobe.data.preprocess import MAX_RESIZED_CROPS, Preprocess, crop
from vitprobe.pipeline.config import ConfigError, load_config_file
from vitprobe.pipeline.outputs import quarantine, stale_outputs, write_outputs

SRC = Path(__file__).resolve().parents[1] / "src"


# ---------------------------------------------------------------- image geometry and modes


def test_extreme_aspect_ratio_crops_in_bounded_memory(tmp_path):
    """A 1 x 60000 PNG (a few hundred bytes) would resize to 248 x 14.9 million pixels (11 GB)
    before the crop; under a 1 GiB data limit the crop still succeeds, and shows the source's
    middle rows."""
    values = (np.arange(60000) * 255 // 59999).astype(np.uint8).reshape(60000, 1)
    Image.fromarray(values).save(tmp_path / "thin.png")
    assert (tmp_path / "thin.png").stat().st_size < 1000
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))
        import numpy as np
        from PIL import Image
        from vitprobe.data.preprocess import Preprocess, crop
        out = crop(Image.open({str(tmp_path / "thin.png")!r}), 224, Preprocess())
        np.save({str(tmp_path / "crop.npy")!r}, out)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)})
    assert result.returncode == 0, result.stderr[-2000:]
    out = np.load(tmp_path / "crop.npy")
    assert out.shape == (224, 224, 3)
    assert np.abs(out.astype(int) - 127).max() <= 1  # the middle of a 0..255 ramp, the same in every pixel


def _resize_then_crop(image: Image.Image, size: int, new: tuple[int, int], interpolation) -> np.ndarray:
    left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
    return np.asarray(image.resize(new, interpolation).crop((left, top, left + size, top + size)))


def test_wide_images_are_exactly_resize_then_crop_and_extreme_ones_within_one_level():
    rng = np.random.default_rng(0)
    # 32 px high, cropped to 16: the resized image is (w/2) x 16. 10:1 stays on the exact path
    # (timm's order: resize, then crop); 125:1 is past MAX_RESIZED_CROPS and resamples the crop's box.
    for w, exact in ((320, True), (4000, False)):
        assert (w // 2 * 16 <= MAX_RESIZED_CROPS * 16**2) == exact
        image = Image.fromarray(rng.integers(0, 256, (32, w, 3), dtype=np.uint8))
        reference = _resize_then_crop(image, 16, (w // 2, 16), Image.Resampling.BICUBIC)
        got = crop(image, 16, Preprocess(crop_fraction=1.0))
        if exact:
            np.testing.assert_array_equal(got, reference)
        else:
            assert np.abs(got.astype(int) - reference).max() <= 1


def _encode_frames(path: Path, colours, **kwargs) -> None:
    frames = [Image.new("RGB", (40, 30), colour) for colour in colours]
    frames[0].save(path, save_all=True, append_images=frames[1:], **kwargs)


def test_multi_frame_files_give_their_first_frame_noted_in_the_manifest(tmp_path):
    _encode_frames(tmp_path / "anim.gif", [(255, 0, 0), (0, 0, 255), (0, 255, 0)], duration=100)
    _encode_frames(tmp_path / "pages.tif", [(0, 0, 255), (255, 0, 0)])
    Image.new("RGB", (40, 30), (9, 9, 9)).save(tmp_path / "plain.png")
    manifest, rejected = mf.build_manifest(sources.folder(tmp_path))
    assert rejected.empty
    notes = dict(zip(manifest.image_id, manifest.note))
    assert notes == {"anim.gif": "first of 3 frames", "pages.tif": "first of 2 frames", "plain.png": ""}
    crops = np.load(mf.prepare_crops(manifest, 16, Preprocess(crop_fraction=1.0), tmp_path / "crops.npy"))
    first = dict(zip(manifest.image_id, crops[:, 8, 8]))
    assert tuple(first["anim.gif"]) == (255, 0, 0) and tuple(first["pages.tif"]) == (0, 0, 255)


@pytest.mark.parametrize(
    "mode,values,expected",
    [
        ("F", np.linspace(0.0, 1.0, 40), np.linspace(0, 255, 40)),  # 0..1 float: x 255 (was clipped: black)
        ("F", np.linspace(-1000.0, 3000.0, 40), np.linspace(0, 255, 40)),  # other floats: their own range
        ("I", np.linspace(0, 10**6, 40), np.linspace(0, 255, 40)),  # 32-bit beyond 16 bits: own range (was white)
        ("I", np.linspace(0, 65535, 40), np.linspace(0, 255, 40)),  # 16-bit data: the 16-bit range
        ("I;16", np.linspace(0, 65535, 40), np.linspace(0, 255, 40)),
    ],
)
def test_deep_modes_scale_to_eight_bits(tmp_path, mode, values, expected):
    array = np.tile(values, (30, 1))
    dtype = {"F": np.float32, "I": np.int32, "I;16": np.uint16}[mode]
    image = Image.fromarray(array.astype(dtype), mode=None if mode == "I;16" else mode)
    assert image.mode == mode
    image.save(tmp_path / "deep.tif")
    manifest, rejected = mf.build_manifest(sources.folder(tmp_path))
    assert rejected.empty and manifest.note[0] == f"mode {Image.open(tmp_path / 'deep.tif').mode} scaled to 8 bits"
    out = crop(Image.open(tmp_path / "deep.tif"), 30, Preprocess(crop_fraction=1.0, interpolation="nearest"))
    row = out[15, :, 0].astype(float)
    assert np.abs(row - expected[5:35]).max() <= 1.0  # the centre 30 of 40 columns


def test_float_image_with_nan_is_rejected_naming_why(tmp_path):
    array = np.ones((20, 20), np.float32)
    array[3, 3] = np.nan
    Image.fromarray(array, mode="F").save(tmp_path / "nan.tif")
    manifest, rejected = mf.build_manifest(sources.folder(tmp_path))
    assert manifest.empty and "NaN" in rejected.reason[0]


# ---------------------------------------------------------------- duplicates and labels


def test_byte_identical_images_are_analysed_once(tmp_path):
    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "a.png")
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
    Image.new("RGB", (20, 20), (3, 2, 1)).save(tmp_path / "c.png")
    manifest, rejected = mf.build_manifest(sources.folder(tmp_path))
    assert manifest.image_id.tolist() == ["a.png", "c.png"]
    assert rejected.to_dict("records") == [
        {"image_id": "copy/b.png", "source": f"file:{tmp_path / 'copy/b.png'}", "reason": "duplicate of a.png"}
    ]


@pytest.mark.parametrize(
    "rows,words",
    [
        ("a.png,3\nmissing.png,4\n", ["line 3", "'missing.png' is not an image file"]),
        ("a.png,cat\n", ["line 2", "label 'cat' of 'a.png'", "0 to 999"]),
        ("a.png,3.0\n", ["line 2", "label '3.0'"]),
        ("a.png,1000\n", ["line 2", "label '1000'"]),
        ("a.png,-2\n", ["line 2", "label '-2'"]),
        ("a.png,\n", ["line 2", "label ''"]),
        ("a.png,1\na.png,2\n", ["line 3", "listed twice"]),
    ],
)
def test_bad_labels_csv_names_the_file_and_row(tmp_path, rows, words):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("filename,label\n" + rows)
    with pytest.raises(ValueError) as error:
        sources.folder(tmp_path)
    for word in [str(tmp_path / "labels.csv"), *words]:
        assert word in str(error.value)


def test_good_labels_csv(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_text("filename,label\na.png,999\nb.png,-1\n")
    assert [r.label for r in sources.folder(tmp_path)] == [999, -1]


def test_rejections_below_map_images_stop_the_run_before_the_map_jobs(tmp_path):
    """The config check passes (the folder holds 2 files for 2 map images); one of them cannot be
    decoded, so the manifest holds 1: once the sample job has written it, the run stops naming
    analysis.map_images and the count, before any job that would read the maps."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (20, 20)).save(photos / "good.png")
    (photos / "bad.png").write_bytes(b"not a png")
    config = {
        "experiment": "rej",
        "images": {"source": "folder", "path": str(photos)},
        "models": {"m": {"arch": "vit_tiny_patch16_224", "weights": "random", "spec": {"depth": 1}}},
        "analysis": {"map_images": 2},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)]
    result = subprocess.run([*command, "--configfile", str(tmp_path / "c.yaml")], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "analysis.map_images: 2 map images but the manifest's usable images are 1" in output, output[-3000:]
    assert (tmp_path / "results" / "rej" / "manifest.parquet").exists()  # the sample job ran
    assert not (tmp_path / "results" / "rej" / "maps").exists() and not (tmp_path / "results" / "rej" / "crops").exists()


# ---------------------------------------------------------------- config files and stale outputs


def test_duplicate_yaml_keys_are_refused_naming_key_and_lines(tmp_path):
    (tmp_path / "c.yaml").write_text("experiment: a\nmodels:\n  m: {arch: x, weights: random}\nmodels:\n  n: {}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'models' appears twice in one mapping \(lines 2 and 4\)"):
        load_config_file(tmp_path / "c.yaml")
    (tmp_path / "nested.yaml").write_text("images:\n  source: bundled\n  count: 2\n  count: 3\n")
    with pytest.raises(ConfigError, match=r"key 'count' .*lines 3 and 4"):
        load_config_file(tmp_path / "nested.yaml")
    (tmp_path / "ok.yaml").write_text("a: {x: 1}\nb: {x: 2}\n")
    assert load_config_file(tmp_path / "ok.yaml") == {"a": {"x": 1}, "b": {"x": 2}}


def test_stale_outputs_are_moved_never_deleted(tmp_path):
    files = [
        "figures/keep.png",
        "figures/old_model.png",
        "shards/m/distance_0.parquet",
        "shards/gone/distance_0.parquet",
        "shards/m/distance_7.parquet",
        "logs/x.log",
        "manifest.parquet",
    ]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    stale = stale_outputs(tmp_path, ["figures/keep.png"], owned=["shards/m"])
    assert [p.relative_to(tmp_path).as_posix() for p in stale] == ["figures/old_model.png", "shards/gone/distance_0.parquet"]
    target = quarantine(tmp_path, stale, stamp="T")
    assert (target / "figures/old_model.png").read_text() == "figures/old_model.png"
    assert not (tmp_path / "figures/old_model.png").exists() and (tmp_path / "logs/x.log").exists()
    # after the run, the exact list: shard 7 of an earlier, larger sample goes too
    write_outputs(tmp_path, ["figures/keep.png", "shards/m/distance_0.parquet", "manifest.parquet"], tmp_path / "outputs.json")
    assert (tmp_path / "stale").glob("*/shards/m/distance_7.parquet")
    assert not (tmp_path / "shards/m/distance_7.parquet").exists()
    assert '"manifest.parquet": 16' in (tmp_path / "outputs.json").read_text()
