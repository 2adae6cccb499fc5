"""Memory bounded by what the output needs (issue 23 item 3): peak memory measured in a process of
its own (`helpers.peak_memory_mb`) on files made here. The zip bomb and the 3 GB non-image are in test_trust.py
and test_accepted_nonsense.py."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import peak_memory_mb
from vitprobe.data import manifest as mf
from vitprobe.data import sources
from vitprobe.pipeline.extract import fitted_batch_size


def _animation(path: Path, frames: int, side: int = 6000) -> None:
    images = [Image.new("RGB", (side, side), (20 * k, 100, 200 - 15 * k)) for k in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100)


def test_video_frames_are_cropped_one_at_a_time(tmp_path):
    """An animated PNG of 6000 x 6000 frames (108 MB each decoded, a few hundred KB as a file): 5
    frames cost what 2 do (with every frame kept, 3 more frames took 324 MB more)."""
    peaks = {}
    for frames in (2, 5):
        _animation(tmp_path / f"clip{frames}.png", frames)
        peaks[frames] = peak_memory_mb(f"""
            from vitprobe.data.preprocess import Preprocess, crop
            from vitprobe.pipeline.video import read_frames
            crops = [crop(f, 224, Preprocess()) for f in read_frames({str(tmp_path / f"clip{frames}.png")!r}, 64)]
            assert len(crops) == {frames}
        """)
    assert peaks[5] - peaks[2] < 60, peaks


def _jpeg(path: Path, side: int) -> bytes:
    ramp = (np.arange(side) * 255 // (side - 1)).astype(np.uint8)
    Image.fromarray(np.broadcast_to(ramp[None, :, None], (side, side, 3)).copy()).save(path, quality=85)
    return path.read_bytes()


def test_sample_checks_a_large_jpeg_at_an_eighth_of_its_size(tmp_path):
    """A 36 MP JPEG (108 MB decoded) is checked whole (every byte decoded at 1/8 scale, its size the
    file's) within a few MB; a truncated copy is still rejected."""
    data = _jpeg(tmp_path / "big.jpg", 6000)
    baseline = peak_memory_mb("from vitprobe.data import manifest, sources")
    checked = peak_memory_mb(f"""
        from vitprobe.data import manifest, sources
        rows, rejected = manifest.build_manifest(sources.folder({str(tmp_path)!r}))
        assert rejected.empty and (rows.width[0], rows.height[0]) == (6000, 6000), rows
    """)
    assert checked - baseline < 50, (baseline, checked)
    (tmp_path / "big.jpg").write_bytes(data[: len(data) * 2 // 3])
    manifest, rejected = mf.build_manifest(sources.folder(tmp_path))
    assert manifest.empty and "truncated" in rejected.reason[0]


def test_prepare_holds_a_196_megapixel_jpeg_once(tmp_path):
    """A 14000 x 14000 JPEG (under the 200 MP limit; 784 MB decoded, Pillow keeps RGB in 4 bytes a
    pixel) is cropped by the prepare stage holding the decoded image once: 764 MB above the
    interpreter (2.25 GB when EXIF orientation and the RGB conversion each copied it)."""
    _jpeg(tmp_path / "huge.jpg", 14000)
    code = f"""
        from vitprobe.data import manifest, sources
        rows, rejected = manifest.build_manifest(sources.folder({str(tmp_path)!r}))
        assert rejected.empty, rejected.reason.tolist()
        {{}}
    """
    baseline = peak_memory_mb(code.format("pass"))
    prepared = peak_memory_mb(
        code.format(f"manifest.prepare_crops(rows, 224, manifest.Preprocess(), {str(tmp_path / 'crops.npy')!r})")
    )
    assert 700 < prepared - baseline < 1000, (baseline, prepared)
    assert np.load(tmp_path / "crops.npy").shape == (1, 224, 224, 3)


def test_deep_grey_images_scale_to_eight_bits_without_float_copies(tmp_path):
    """A 64 MP 16-bit scan is scaled to 8 bits a block of rows at a time: a fraction of one float64
    copy (512 MB), where the whole-image arithmetic peaked at 1.6 GB above the decoded image."""
    ramp = (np.arange(8000, dtype=np.uint32) * 65535 // 7999).astype(np.uint16)
    Image.fromarray(np.broadcast_to(ramp[None, :], (8000, 8000)).copy()).save(tmp_path / "deep.png")
    code = f"""
        from PIL import Image
        from vitprobe.data.preprocess import Preprocess, crop
        image = Image.open({str(tmp_path / "deep.png")!r})
        image.load()
        {{}}
    """
    baseline = peak_memory_mb(code.format("assert image.mode == 'I;16'"))
    cropped = peak_memory_mb(code.format("assert crop(image, 224, Preprocess())[112, 200, 0] > 200"))
    assert cropped - baseline < 400, (baseline, cropped)


@pytest.mark.parametrize(
    "batch,images,group,fitted", [(512, 4, None, 4), (512, 4, 8, 8), (8, 20, 8, 8), (16, 12, 8, 16), (512, 1000, 8, 512)]
)
def test_batches_are_never_padded_beyond_the_shard(batch, images, group, fitted):
    """At most the shard's images, rounded up to a whole CKA group (groups never span batches)."""
    assert fitted_batch_size(batch, images, group) == fitted
