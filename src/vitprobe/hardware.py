"""What the CPU can do, read from /proc/cpuinfo (Linux): whether bfloat16 has native support.

``precision="bfloat16"`` is fast only where the CPU multiplies bfloat16 natively (x86:
AVX512_BF16 or AMX-BF16). Elsewhere the libraries emulate it: TensorFlow's oneDNN kernels
(AVX-512 CPUs) at a quarter to half of float32's speed, its Eigen kernels (AVX2-only CPUs) with
the product truncated to bfloat16. vitprobe then multiplies the bfloat16-rounded operands in
float32 instead (`bfloat16_matmul_dtype`): the same products, no speed gain over float32.
Measured: benchmarks/records/2026-11-25-icelake-avx512-no-bf16.json.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import re
from pathlib import Path

from .environment import bfloat16_matmul_override

log = logging.getLogger("vitprobe")

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Measured: bfloat16 img/s over float32 img/s without either flag (Ice Lake Xeon, AVX-512, DINOv2-S/14,
# batch 8, 2 and 1 threads, 2 shared cores), with float32 products (emulated bfloat16 kernels: 0.43x and 0.24x).
SPEED_WITHOUT_BF16 = "0.75-1.04x"


@functools.lru_cache(maxsize=1)
def _proc_cpuinfo() -> str:
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


def _cpuinfo(text: str | None) -> str:
    return _proc_cpuinfo() if text is None else text


def _field(text: str, name: str) -> str | None:
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def cpu_model(cpuinfo: str | None = None) -> str:
    """The first CPU's model name ("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"), else platform's guess."""
    return _field(_cpuinfo(cpuinfo), "model name") or platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The first CPU's feature flags (x86 ``flags``, ARM ``Features``); empty where unknown."""
    text = _cpuinfo(cpuinfo)
    value = _field(text, "flags") or _field(text, "Features") or ""
    return set(value.split())


def machine_key(cpuinfo: str | None = None) -> str:
    """The CPU model as a file name plus a hash of its feature flags, for what is only valid on
    one kind of CPU (speed calibrations, compiled code): two machines with the same model name
    but different features (a VM that hides AMX) get different keys."""
    model = re.sub(r"[^A-Za-z0-9]+", "-", cpu_model(cpuinfo)).strip("-").lower()
    flags = hashlib.sha256(" ".join(sorted(cpu_flags(cpuinfo))).encode()).hexdigest()[:8]
    return f"{model}-{flags}"


def native_bfloat16(cpuinfo: str | None = None) -> bool | None:
    """True where the CPU multiplies bfloat16 natively (x86: avx512_bf16 or amx_bf16; ARM: bf16),
    False where it reports flags without them, None where it reports none (not Linux)."""
    flags = cpu_flags(cpuinfo)
    if not flags:
        return None
    return bool(flags & {*BF16_FLAGS, "bf16"})


def accelerator() -> bool:
    """Whether the Keras backend runs on a GPU or TPU by default (where bfloat16 is native)."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
        if backend == "jax":
            import jax

            return jax.default_backend() != "cpu"
        if backend == "torch":
            import torch

            return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a device query that fails means no usable accelerator
        return False
    return False


def bfloat16_matmul_dtype() -> str:
    """The dtype the bfloat16 projections multiply in: "bfloat16" where the hardware has it (or
    where the CPU is unknown), else "float32" on the bfloat16-rounded operands (exact products,
    float32 sums: the result native hardware gives, before its output rounding). Forced by
    VITPROBE_BFLOAT16_MATMUL=bfloat16|float32 (benchmarks and tests of both paths)."""
    forced = bfloat16_matmul_override()
    if forced:
        return forced
    return "float32" if native_bfloat16() is False and not accelerator() else "bfloat16"


def warn_if_slow_bfloat16(cpuinfo: str | None = None) -> str | None:
    """Log (and return) a warning when bfloat16 will run on a CPU without native support;
    none on GPUs and TPUs."""
    if native_bfloat16(cpuinfo) is not False or accelerator():
        return None
    message = (
        f'precision="bfloat16" on {cpu_model(cpuinfo)}: the CPU has neither of {", ".join(BF16_FLAGS)}, '
        f"so the bfloat16-rounded projections are multiplied in float32: no faster and likely slower than "
        f"float32 (measured {SPEED_WITHOUT_BF16} float32's speed on such a CPU), for bfloat16's rounding error; "
        'use precision="float32" here'
    )
    log.warning(message)
    return message
