"""Keep a job to the cores Snakemake gave it (on a cluster node, and for `--cores 1`)."""

from __future__ import annotations

import os


def limit_threads(n: int) -> None:
    """Call before Keras/TensorFlow/PyTorch are imported."""
    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[var] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
