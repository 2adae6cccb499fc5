"""The environment variables vitprobe reads, with their defaults: one table, read only here.

Machine concerns (where the cache lives, which lock file pins the weights, how bfloat16 is
multiplied) belong to the machine a job runs on, not to an experiment, so they are environment
variables rather than config keys. Keeping them apart from the code that uses them means no
pipeline rule depends on the downloader just to find the cache folder. docs/configuration.md's
table of them is generated from `VARIABLES`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class Variable(NamedTuple):
    name: str
    default: str  # as the documentation shows it
    description: str


VARIABLES = (
    Variable(
        "VITPROBE_CACHE",
        "~/.cache/vitprobe",
        "folder for downloaded weights (URL sources), the per-machine calibration records "
        "(`calibration/<cpu>/`) and jax's compiled programs (`xla/<cpu>/`)",
    ),
    Variable(
        "VITPROBE_WEIGHTS_LOCK",
        "weights.lock.json",
        "the sha256 lock file downloads are checked against (relative to the working directory); "
        "the first download of a source records its checksum",
    ),
    Variable(
        "VITPROBE_BFLOAT16_MATMUL",
        "(unset: from the hardware)",
        "`bfloat16` or `float32`: the dtype the bfloat16 projections multiply in. Unset, it is "
        "bfloat16 where the CPU has `amx_bf16` or `avx512_bf16` or a GPU runs the job, else float32 "
        "on the bfloat16-rounded operands; set it to compare both paths on one machine",
    ),
    Variable(
        "KERAS_BACKEND",
        "tensorflow",
        "the Keras backend every job runs on: `tensorflow`, `jax` or `torch` (read by Keras)",
    ),
    Variable(
        "HF_HUB_OFFLINE",
        "(unset)",
        "`1`: `hf-hub:` weights must already be in the Hugging Face cache; the config check says "
        "which are not, before any job (read by huggingface_hub)",
    ),
    Variable(
        "TFDS_DATA_DIR",
        "~/tensorflow_datasets",
        "where tensorflow-datasets keeps `imagenet_v2` (`images.source: imagenet_v2`)",
    ),
)


def cache_dir() -> Path:
    """The cache folder (``VITPROBE_CACHE``)."""
    return Path(os.environ.get("VITPROBE_CACHE", Path.home() / ".cache" / "vitprobe"))


def lock_path() -> Path:
    """The weights lock file (``VITPROBE_WEIGHTS_LOCK``)."""
    return Path(os.environ.get("VITPROBE_WEIGHTS_LOCK", "weights.lock.json"))


def keras_backend() -> str:
    """The Keras backend jobs run on (``KERAS_BACKEND``)."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE=1`` forbids hub downloads."""
    return os.environ.get("HF_HUB_OFFLINE") == "1"


def tfds_data_dir() -> Path:
    """Where tensorflow-datasets keeps its data (``TFDS_DATA_DIR``)."""
    return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def bfloat16_matmul_override() -> str | None:
    """``VITPROBE_BFLOAT16_MATMUL`` when set (``bfloat16`` or ``float32``), else None."""
    forced = os.environ.get("VITPROBE_BFLOAT16_MATMUL")
    if forced and forced not in ("bfloat16", "float32"):
        raise ValueError(f"VITPROBE_BFLOAT16_MATMUL must be bfloat16 or float32, got {forced!r}")
    return forced or None
