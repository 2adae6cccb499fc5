"""What every benchmark script shares: the machine its numbers were measured on, and how a
result is recorded (the table printed first, then the JSON and Markdown files written
atomically into ``--out``, which is created with its parents; by default `RECORDS`, the
folder docs/performance.md cites)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vitprobe.atomic import write_text
from vitprobe.hardware import cpu_flags, cpu_model

# Where every script writes its records unless told otherwise (--out).
RECORDS = Path(__file__).resolve().parent / "records"

# The CPU flags that decide which kernels run: AVX2-only AMD EPYCs against Intel Xeons with
# AVX-512 and AMX (bfloat16 is fast only with avx512_bf16 / amx_bf16).
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info() -> dict:
    """CPU model, the `FLAGS` it has, and its core count."""
    flags = cpu_flags()
    return {"cpu_model": cpu_model(), "cpu_flags": [f for f in FLAGS if f in flags], "cpu_count": os.cpu_count()}


def describe_cpu(cpu: dict) -> str:
    """One line naming the CPU, e.g. ``Intel(R) Xeon(R) ... (2 cores; avx2 avx512f amx_bf16 amx_tile)``."""
    return f"{cpu['cpu_model']} ({cpu['cpu_count']} cores; {' '.join(cpu['cpu_flags']) or 'none of ' + ' '.join(FLAGS)})"


def record(out: str | os.PathLike, stem: str, markdown: str, data: dict) -> list[Path]:
    """Print ``markdown`` (the result table), then write ``<out>/<stem>.md`` and ``<stem>.json``.

    Printing comes first so that a failure to write still leaves the numbers on the console.

    Args:
        out: the folder, created with its parents when missing.
        stem: the file name without its suffix.
        markdown: the result table with its header (which names the CPU).
        data: the JSON record; it should carry `cpu_info()` so every number names its CPU.
    Returns:
        The two paths written.
    """
    print(markdown, flush=True)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.md", folder / f"{stem}.json"]
    write_text(paths[0], markdown.rstrip("\n") + "\n")
    write_text(paths[1], json.dumps(data, indent=2) + "\n")
    return paths
