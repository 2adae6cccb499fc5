"""Attention shards: exact round trip through the memory map, every field readable with np.load
alone, incomplete writes refused, damaged files named (and deleted when asked)."""

import zipfile

import numpy as np
import pytest

import vitprobe
from vitprobe.shards import (
    METADATA,
    ShardError,
    ShardIdentity,
    ShardInfo,
    ShardWriter,
    load_shard_npz,
    open_attention,
    open_crops,
    read_shard_table,
)

INFO = ShardInfo("deit_dist", "deit_tiny_distilled_patch16_224.fb_in1k", ["i0", "i1", "i2"], ("cls", "distillation"), 2, 16)


def write_shard(path, blocks=2, dtype="float32", info=INFO):
    rng = np.random.default_rng(0)
    tokens = info.num_prefix_tokens + info.grid_size**2
    data = rng.random((len(info.image_ids), blocks, 3, tokens, tokens)).astype(np.float32)
    with ShardWriter(path, info, data.shape[1:], dtype) as writer:
        for start in (0, 2):  # two batches, given per block as the model returns them
            writer.write_blocks([data[start : start + 2, b] for b in range(blocks)])
    return data


def test_round_trip_is_exact_and_memory_mapped(tmp_path):
    data = write_shard(tmp_path / "s.npz")
    shard = vitprobe.open_attention(tmp_path / "s.npz")
    assert isinstance(shard.attention, np.memmap) and shard.attention.dtype == np.float32
    np.testing.assert_array_equal(shard.attention, data)
    assert shard.image_ids == ["i0", "i1", "i2"] and shard.model == "deit_dist"
    assert shard.checkpoint == INFO.checkpoint and shard.prefix_tokens == ("cls", "distillation")
    assert (shard.num_prefix_tokens, shard.grid_size, shard.patch_size, shard.num_blocks, shard.num_heads) == (2, 2, 16, 2, 3)
    assert list(tmp_path.iterdir()) == [tmp_path / "s.npz"]  # no temporary file left


def test_np_load_alone_reads_every_field(tmp_path):
    """What a notebook does without vitprobe: np.load, no pickles."""
    data = write_shard(tmp_path / "s.npz", dtype="float16")
    with np.load(tmp_path / "s.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"attention", *METADATA}
        fields = {name: npz[name] for name in npz.files}
    assert all(value.dtype != object for value in fields.values())
    assert fields["attention"].dtype == np.float16 and fields["attention"].shape == (3, 2, 3, 6, 6)
    np.testing.assert_allclose(fields["attention"], data, atol=1e-3)
    assert fields["image_ids"].tolist() == ["i0", "i1", "i2"]
    assert fields["model"].item() == "deit_dist" and fields["checkpoint"].item() == INFO.checkpoint
    assert fields["prefix_tokens"].tolist() == ["cls", "distillation"]
    for name, value in {"num_prefix_tokens": 2, "grid_size": 2, "patch_size": 16, "num_blocks": 2, "num_heads": 3}.items():
        assert fields[name].dtype == np.int64 and fields[name].shape == () and fields[name] == value, name
    assert fields["dtype"].item() == "float16"
    assert fields["axes"].tolist() == ["image", "block", "head", "query", "key"]


def test_archive_is_a_valid_stored_zip(tmp_path):
    """Python's zipfile (an independent reader) finds every member stored, and its CRCs right."""
    write_shard(tmp_path / "s.npz")
    with zipfile.ZipFile(tmp_path / "s.npz") as archive:
        assert archive.testzip() is None
        assert {m.compress_type for m in archive.infolist()} == {zipfile.ZIP_STORED}


def test_images_of_a_real_grid(tmp_path):
    """Images of a 14 x 14 grid (470 KiB per block), written into reserved space: zipfile's CRC
    (zlib's) agrees, the file ends where the archive does, and the data reads back exact."""
    info = ShardInfo("vit", "vit_base_patch16_224", ["i0", "i1", "i2"], ("cls", "distillation"), 14, 16)
    data = write_shard(tmp_path / "s.npz", blocks=1, info=info)
    with zipfile.ZipFile(tmp_path / "s.npz") as archive:
        assert archive.getinfo("attention.npy").file_size > 3 * 470_000
        assert archive.testzip() is None
    assert (tmp_path / "s.npz").read_bytes()[-22:-18] == b"PK\x05\x06"  # ends with the end record: no space reserved beyond
    np.testing.assert_array_equal(open_attention(tmp_path / "s.npz").attention, data)


def test_rewriting_gives_identical_bytes(tmp_path):
    write_shard(tmp_path / "a.npz")
    write_shard(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_no_prefix_tokens(tmp_path):
    info = ShardInfo("m", "c", ["a"], (), 2, 16)
    tokens = 4
    data = np.random.default_rng(1).random((1, 1, 1, tokens, tokens)).astype(np.float32)
    with ShardWriter(tmp_path / "s.npz", info, data.shape[1:], "float32") as writer:
        writer.write_blocks([data[:, 0]])
    shard = open_attention(tmp_path / "s.npz")
    assert shard.prefix_tokens == () and shard.num_prefix_tokens == 0
    np.testing.assert_array_equal(shard.attention, data)


def test_incomplete_shard_is_not_renamed_into_place(tmp_path):
    with pytest.raises(ShardError, match="1 of 2 images written"):
        with ShardWriter(tmp_path / "s.npz", ShardInfo("m", "c", ["a", "b"], ("cls",), 2, 16), (1, 1, 5, 5), "float32") as writer:
            writer.write_blocks([np.zeros((1, 1, 5, 5), np.float32)])
    assert list(tmp_path.iterdir()) == []  # neither the shard nor a temporary file


def test_extra_images_are_refused(tmp_path):
    with pytest.raises(ShardError, match="more than its 1 images written"):
        with ShardWriter(tmp_path / "s.npz", ShardInfo("m", "c", ["a"], ("cls",), 2, 16), (1, 1, 5, 5), "float32") as writer:
            writer.write_blocks([np.zeros((2, 1, 5, 5), np.float32)])
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="the model failed"):
        with ShardWriter(tmp_path / "s.npz", ShardInfo("m", "c", ["a"], ("cls",), 2, 16), (1, 1, 5, 5), "float32") as writer:
            writer.write_blocks([np.zeros((1, 1, 5, 5), np.float32)])
            raise RuntimeError("the model failed")
    assert list(tmp_path.iterdir()) == []


def _inconsistent(path):
    """A well-formed archive whose metadata contradicts its attention: 2 image ids, 3 images."""
    with np.load(path, allow_pickle=False) as npz:
        fields = {name: npz[name] for name in npz.files}
    fields["image_ids"] = fields["image_ids"][:2]
    np.savez(path, **fields)


@pytest.mark.parametrize("damage", ["truncate", "halve", "flip_metadata", "inconsistent", "old_npy"])
def test_damaged_shard_is_reported_and_deleted(tmp_path, damage):
    path = tmp_path / "s.npz"
    data = write_shard(path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[:-100])
    elif damage == "halve":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip_metadata":  # a byte of the image ids (the first member) changed: its CRC fails
        at = raw.index(b"i\x00\x00\x001")
        path.write_bytes(raw[:at] + b"j" + raw[at + 1 :])
    elif damage == "inconsistent":
        _inconsistent(path)
    else:  # a shard from before the .npz format, renamed
        np.save(tmp_path / "old.npy", data)
        (tmp_path / "old.npy").rename(path)
    with pytest.raises(ShardError, match=r"s\.npz: attention shard is truncated or corrupt.*delete it and rerun"):
        open_attention(path)
    assert path.exists()  # a reader never deletes what it was not asked to
    with pytest.raises(ShardError, match=r"s\.npz: attention shard is truncated or corrupt.*deleted it, rerun to rebuild it"):
        open_attention(path, delete_if_damaged=True)
    assert not path.exists()


def test_truncated_crop_shard_is_reported_and_deleted(tmp_path):
    path = tmp_path / "crops.npy"
    np.save(path, np.zeros((4, 8, 8, 3), np.uint8))
    assert open_crops(path).shape == (4, 8, 8, 3)
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ShardError, match=r"crops\.npy: crop shard is truncated or corrupt.*rerun to rebuild it"):
        open_crops(path)
    assert not path.exists()


def test_a_reader_failure_is_not_taken_for_damage(tmp_path):
    """A missing file says nothing of a file's content: it is raised as it is, not reported as a
    corrupt shard (whose file would be deleted)."""
    identity = ShardIdentity("vit", "0" * 64, "1" * 64)
    with pytest.raises(FileNotFoundError):
        load_shard_npz(tmp_path / "maps_0.npz", identity, "maps shard")
    with pytest.raises(FileNotFoundError):
        read_shard_table(tmp_path / "distance_0.parquet", identity, "distance shard")
