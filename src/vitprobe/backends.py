"""How each Keras backend can compile a model, without importing Keras (the config checks run in
the Snakefile, before any job).

On tensorflow: a tf.function graph (its bfloat16 matmuls use oneDNN's AMX kernels, which XLA's CPU
backend does not) or XLA (``jit_compile=True``: measured faster for float32 on an AVX2-only EPYC);
jax always jits; the torch backend runs eagerly. Which is fastest on a machine is measured
(`vitprobe.pipeline.calibration`), not assumed; the first mode of each backend is its default.
"""

from __future__ import annotations

COMPILE_MODES = {"tensorflow": ("graph", "xla"), "jax": ("jit",), "torch": ("eager",)}


def compile_modes(backend: str) -> tuple[str, ...]:
    """The compile modes of the Keras ``backend``, its default first (any other backend: eager)."""
    return COMPILE_MODES.get(backend, ("eager",))
