"""Tests for shared/learning/cpu.py."""

from __future__ import annotations

import pytest

from fedstream.shared.learning.cpu import CpuCaps, detect_cpu, parse_cpuinfo

_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9454 48-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512dq avx512_bf16 avx512vbmi avx512_vnni avx512_bitalg

processor\t: 1
model name\t: AMD EPYC 9454 48-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512dq avx512_bf16 avx512vbmi avx512_vnni avx512_bitalg
"""

_SAPPHIRE = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
"""

_AVX2_ONLY = """processor\t: 0
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
flags\t\t: fpu sse2 avx avx2 fma
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            _EPYC,
            CpuCaps(
                model_name="AMD EPYC 9454 48-Core Processor",
                avx512f=True,
                avx512_vnni=True,
                avx512_bf16=True,
                amx_bf16=False,
                amx_tile=False,
            ),
        ),
        (
            _SAPPHIRE,
            CpuCaps(
                model_name="Intel(R) Xeon(R) Platinum 8480+",
                avx512f=True,
                avx512_vnni=True,
                avx512_bf16=True,
                amx_bf16=True,
                amx_tile=True,
            ),
        ),
        (
            _AVX2_ONLY,
            CpuCaps(
                model_name="Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz",
                avx512f=False,
                avx512_vnni=False,
                avx512_bf16=False,
                amx_bf16=False,
                amx_tile=False,
            ),
        ),
    ],
    ids=["epyc", "sapphire-rapids", "avx2-only"],
)
def test_parse_cpuinfo_reads_flags(text: str, expected: CpuCaps) -> None:
    """Each known CPU's flags line maps to exactly the expected capabilities."""
    # Execute
    caps = parse_cpuinfo(text)

    # Assert
    assert caps == expected


@pytest.mark.parametrize(
    ("text", "has_bf16"), [(_EPYC, True), (_SAPPHIRE, True), (_AVX2_ONLY, False)]
)
def test_has_bf16_needs_avx512_bf16_or_amx(text: str, has_bf16: bool) -> None:
    """Native bf16 comes from avx512_bf16 or amx_bf16 and from nothing else."""
    # Execute
    caps = parse_cpuinfo(text)

    # Assert
    assert caps.has_bf16 is has_bf16


def test_parse_cpuinfo_without_fields_is_unknown() -> None:
    """Text with no model name or flags (e.g. an ARM board) gives an unknown CPU with no flags."""
    # Prepare
    text = "processor\t: 0\nFeatures\t: fp asimd\n"

    # Execute
    caps = parse_cpuinfo(text)

    # Assert
    assert caps.model_name == "unknown"
    assert not (caps.avx512f or caps.has_bf16 or caps.amx_tile)


def test_to_dict_lists_every_field() -> None:
    """to_dict gives the model name and each flag under its own key."""
    # Prepare
    caps = parse_cpuinfo(_SAPPHIRE)

    # Execute
    fields = caps.to_dict()

    # Assert
    assert fields == {
        "model_name": "Intel(R) Xeon(R) Platinum 8480+",
        "avx512f": True,
        "avx512_vnni": True,
        "avx512_bf16": True,
        "amx_bf16": True,
        "amx_tile": True,
    }


def test_detect_cpu_is_cached_and_matches_proc() -> None:
    """detect_cpu returns one cached value that agrees with this machine's /proc/cpuinfo."""
    # Prepare
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            expected = parse_cpuinfo(f.read())
    except OSError:
        pytest.skip("no /proc/cpuinfo here")

    # Execute
    first, second = detect_cpu(), detect_cpu()

    # Assert
    assert first is second
    assert first == expected
