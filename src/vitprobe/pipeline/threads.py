"""Keep a job to the cores Snakemake gave it (on a cluster node, and for `--cores 1`)."""

from __future__ import annotations

import os
import sys

# The numerical libraries read these once, when they are first imported.
_RUNTIMES = ("tensorflow", "keras", "jax", "torch")
# What they read: OpenMP (torch, oneDNN), MKL, OpenBLAS (numpy), and TensorFlow's own pools.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)


def limit_threads(n: int) -> None:
    """Limit the numerical libraries to ``n`` threads. Raises RuntimeError when one of them is
    already imported, since it would ignore the limit."""
    loaded = [name for name in _RUNTIMES if name in sys.modules]
    if loaded:
        raise RuntimeError(f"limit_threads({n}) called after {', '.join(loaded)} was imported; call it first")
    n = max(1, int(n))
    for var in THREAD_VARIABLES:
        # TensorFlow's inter-op pool runs one graph at a time here; its ops share the intra-op pool.
        os.environ[var] = "1" if var == "TF_NUM_INTEROP_THREADS" else str(n)
