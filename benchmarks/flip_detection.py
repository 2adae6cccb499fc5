"""How many single-bit flips in a per-shard file pass the reading stage's checks as other data.

Bit 0 of every byte is flipped in turn, in (a) a per-shard .npz (`vitprobe.shards.write_shard_npz`:
the zip's CRC-32 of each member, checked by `load_shard_npz`), (b) a per-shard Parquet table
(`write_shard_table`: a digest of its content in its metadata, checked by `read_shard_table`), and
(c) the same table written with Parquet's optional page checksums instead, read with their
verification on. Each flip is counted as refused (the read raises), as the same data (nothing that
is read changed), or as other data read without an error: the one outcome that must be 0.

Writes benchmarks/records/<date>-<cpu model>-<flags hash>-flip-detection.json and .md.

Usage: python benchmarks/flip_detection.py [--out benchmarks/records]
"""

from __future__ import annotations

import argparse
import datetime
import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from record import RECORDS, cpu_info, describe_cpu, record

from vitprobe.hardware import machine_key
from vitprobe.shards import ShardIdentity, images_digest, load_shard_npz, read_shard_table, write_shard_npz, write_shard_table

IMAGES = [f"img{i}.jpg" for i in range(8)]
IDENTITY = ShardIdentity("vit", "0" * 64, images_digest(IMAGES))


def _table() -> pd.DataFrame:
    """A distance table of 8 images, 12 blocks, 3 heads (the per-image reductions' columns)."""
    rng = np.random.default_rng(0)
    n = len(IMAGES) * 12 * 3
    return pd.DataFrame(
        {
            "model": "vit",
            "image_id": np.repeat(IMAGES, 36),
            "block": np.tile(np.repeat(np.arange(12), 3), len(IMAGES)),
            "head": np.tile(np.arange(3), 12 * len(IMAGES)),
            "distance_px": rng.random(n) * 100,
            "prefix_mass": rng.random(n),
        }
    )


def _count(data: bytes, read: Callable[[bytes], object], same: Callable[[object], bool]) -> dict:
    counts = {"bytes": len(data), "refused": 0, "same data": 0, "other data": 0}
    for at in range(len(data)):
        flipped = bytearray(data)
        flipped[at] ^= 0x01
        try:
            got = read(bytes(flipped))
        except Exception:
            counts["refused"] += 1
            continue
        counts["same data" if same(got) else "other data"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RECORDS))
    args = parser.parse_args()
    frame = _table()
    arrays = {"image_ids": np.array(IMAGES), "rollout": np.random.default_rng(1).random((8, 14, 14)).astype(np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "maps_0.npz"

        def via_file(data: bytes, reader: Callable[[Path], object]) -> object:
            path.write_bytes(data)
            return reader(path)

        write_shard_npz(path, IDENTITY, **arrays)
        npz = _count(
            path.read_bytes(),
            lambda data: via_file(data, lambda p: load_shard_npz(p, IDENTITY, "maps shard")),
            lambda got: got.keys() == arrays.keys() and all(np.array_equal(got[k], v) for k, v in arrays.items()),
        )
        table_path = Path(tmp) / "distance_0.parquet"
        write_shard_table(frame, table_path, IDENTITY)
        digest = _count(
            table_path.read_bytes(),
            lambda data: via_file(data, lambda p: read_shard_table(p, IDENTITY, "distance shard")),
            lambda got: got.equals(frame),
        )
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, write_page_checksum=True)
    pages = _count(
        buffer.getvalue(),
        lambda data: pq.read_table(io.BytesIO(data), page_checksum_verification=True).to_pandas(),
        lambda got: got.equals(frame),
    )
    results = {
        ".npz, zip CRC-32 of every member": npz,
        "Parquet, content digest in its metadata": digest,
        "Parquet, page checksums only": pages,
    }
    cpu = cpu_info()
    lines = [
        f"Single-bit flips in per-shard files ({describe_cpu(cpu)})",
        "",
        "| file and check | bytes | refused | same data | other data |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {name} | {c['bytes']} | {c['refused']} | {c['same data']} | {c['other data']} |" for name, c in results.items()]
    record(args.out, f"{datetime.date.today()}-{machine_key()}-flip-detection", "\n".join(lines), {**cpu, "results": results})


if __name__ == "__main__":
    main()
