"""A job's start: jax's compilation cache goes under the vitprobe cache, one folder per CPU kind and
jax version (compiled CPU code must not cross machines), and a folder the user chose is kept."""

import jax  # the test extra installs it: a missing jax fails, never skips

from vitprobe.hardware import machine_key
from vitprobe.pipeline.runlog import persistent_compile_cache


def test_jax_compilation_cache_per_cpu_and_version(tmp_path, monkeypatch):
    monkeypatch.setenv("VITPROBE_CACHE", str(tmp_path))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "recorded, so that the test's own setting is undone")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    folder = persistent_compile_cache()
    assert folder == str(tmp_path / "xla" / machine_key() / f"jax-{jax.__version__}")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert persistent_compile_cache() == str(tmp_path / "mine")
