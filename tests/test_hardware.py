"""CPU-feature detection from /proc/cpuinfo text, and the bfloat16 warning."""

import logging

import pytest

from vitprobe import hardware

HEADER = "processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: {name}\n"
BASE = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2"
CPUS = {  # fake cpuinfo of the three x86 classes (AMX, AVX-512 without bf16, AVX2 only); names illustrative
    "sapphire_rapids": (
        "GenuineIntel",
        6,
        143,
        "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
        BASE + " avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8",
    ),
    "ice_lake": ("GenuineIntel", 6, 106, "Intel(R) Xeon(R) Processor @ 2.80GHz", BASE + " avx512f avx512bw avx512_vnni"),
    "epyc_avx2": ("AuthenticAMD", 23, 49, "AMD EPYC 7B12", BASE),
}


def cpuinfo(key: str, cores: int = 2) -> str:
    vendor, family, model, name, flags = CPUS[key]
    core = HEADER.format(vendor=vendor, family=family, model=model, name=name) + f"flags\t\t: {flags}\n"
    return "\n".join([core] * cores)


ARM = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16 i8mm\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize("key, native", [("sapphire_rapids", True), ("ice_lake", False), ("epyc_avx2", False)])
def test_native_bfloat16(key, native):
    text = cpuinfo(key)
    assert hardware.cpu_model(text) == CPUS[key][3]
    assert "avx2" in hardware.cpu_flags(text)
    assert hardware.native_bfloat16(text) is native


def test_arm_and_unknown():
    assert hardware.native_bfloat16(ARM) is True
    assert "bf16" in hardware.cpu_flags(ARM)
    assert hardware.cpu_flags("") == set() and hardware.native_bfloat16("") is None  # not Linux: unknown, no warning
    assert hardware.warn_if_slow_bfloat16("") is None


def test_warning_names_the_missing_features(caplog, monkeypatch):
    monkeypatch.setattr(hardware, "accelerator", lambda: False)
    with caplog.at_level(logging.WARNING, logger="vitprobe"):
        assert hardware.warn_if_slow_bfloat16(cpuinfo("sapphire_rapids")) is None
        message = hardware.warn_if_slow_bfloat16(cpuinfo("epyc_avx2"))
    assert message and [r.getMessage() for r in caplog.records] == [message]
    assert "AMD EPYC 7B12" in message and "avx512_bf16" in message and "amx_bf16" in message and "slower than float32" in message
    monkeypatch.setattr(hardware, "accelerator", lambda: True)  # a GPU does the work: no warning
    assert hardware.warn_if_slow_bfloat16(cpuinfo("epyc_avx2")) is None


def test_matmul_dtype(monkeypatch):
    monkeypatch.setattr(hardware, "accelerator", lambda: False)
    monkeypatch.delenv("VITPROBE_BFLOAT16_MATMUL", raising=False)
    monkeypatch.setattr(hardware, "_cpuinfo", lambda text=None: cpuinfo("ice_lake"))
    assert hardware.bfloat16_matmul_dtype() == "float32"
    monkeypatch.setattr(hardware, "_cpuinfo", lambda text=None: cpuinfo("sapphire_rapids"))
    assert hardware.bfloat16_matmul_dtype() == "bfloat16"
    monkeypatch.setattr(hardware, "_cpuinfo", lambda text=None: cpuinfo("epyc_avx2"))
    monkeypatch.setattr(hardware, "accelerator", lambda: True)
    assert hardware.bfloat16_matmul_dtype() == "bfloat16"
    monkeypatch.setenv("VITPROBE_BFLOAT16_MATMUL", "float32")
    assert hardware.bfloat16_matmul_dtype() == "float32"
    monkeypatch.setenv("VITPROBE_BFLOAT16_MATMUL", "float16")
    with pytest.raises(ValueError, match="VITPROBE_BFLOAT16_MATMUL"):
        hardware.bfloat16_matmul_dtype()
