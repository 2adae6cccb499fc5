"""Attention shards: exact round trip, incomplete writes refused, damaged files deleted."""

import numpy as np
import pytest

from vitprobe.shards import ShardError, ShardInfo, ShardWriter, open_crops, open_shard


def write_shard(path, images=3, blocks=2, dtype="float32"):
    rng = np.random.default_rng(0)
    data = rng.random((images, blocks, 2, 5, 5)).astype(np.float32)
    with ShardWriter(path, ShardInfo("m", [f"i{k}" for k in range(images)], 1, 2, 16), data.shape[1:], dtype) as writer:
        for start in (0, 2):  # two batches, given per block as the model returns them
            writer.write_blocks([data[start:start + 2, b] for b in range(blocks)])
    return data


def test_round_trip_is_exact(tmp_path):
    data = write_shard(tmp_path / "s.npy")
    array, info = open_shard(tmp_path / "s.npy")
    np.testing.assert_array_equal(array, data)
    assert info.image_ids == ["i0", "i1", "i2"] and info.num_prefix_tokens == 1
    assert not list(tmp_path.glob("*.part"))


def test_float16_storage(tmp_path):
    data = write_shard(tmp_path / "s.npy", dtype="float16")
    array, _ = open_shard(tmp_path / "s.npy")
    assert array.dtype == np.float16
    np.testing.assert_allclose(array, data, atol=1e-3)


def test_incomplete_shard_is_not_renamed_into_place(tmp_path):
    with pytest.raises(ShardError, match="1 of 2 images written"):
        with ShardWriter(tmp_path / "s.npy", ShardInfo("m", ["a", "b"], 1, 2, 16), (1, 1, 5, 5), "float32") as writer:
            writer.write_blocks([np.zeros((1, 1, 5, 5), np.float32)])
    assert list(tmp_path.iterdir()) == []  # neither the shard, its sidecar nor a temporary file


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="the model failed"):
        with ShardWriter(tmp_path / "s.npy", ShardInfo("m", ["a"], 1, 2, 16), (1, 1, 5, 5), "float32") as writer:
            writer.write_blocks([np.zeros((1, 1, 5, 5), np.float32)])
            raise RuntimeError("the model failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "sidecar"])
def test_damaged_shard_is_reported_and_deleted(tmp_path, damage):
    path = tmp_path / "s.npy"
    write_shard(path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.with_suffix(".json").write_text("{broken")
    with pytest.raises(ShardError, match=r"s\.npy: attention shard is truncated or corrupt.*rerun to rebuild it"):
        open_shard(path)
    assert not path.exists() and not path.with_suffix(".json").exists()


def test_truncated_crop_shard_is_reported_and_deleted(tmp_path):
    path = tmp_path / "crops.npy"
    np.save(path, np.zeros((4, 8, 8, 3), np.uint8))
    assert open_crops(path).shape == (4, 8, 8, 3)
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ShardError, match=r"crops\.npy: crop shard is truncated or corrupt.*rerun to rebuild it"):
        open_crops(path)
    assert not path.exists()
