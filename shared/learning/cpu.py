"""What the CPU can do for training: the instruction-set flags that decide bf16 and IPEX speed."""

from __future__ import annotations

import functools
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuCaps:
    """The CPU features that matter for choosing a training backend and precision.

    Attributes:
        model_name: The "model name" line of /proc/cpuinfo, or "unknown".
        avx512f: AVX-512 foundation instructions.
        avx512_vnni: AVX-512 int8 dot products.
        avx512_bf16: AVX-512 bf16 conversions and dot products (e.g. AMD Zen 4, Cooper Lake).
        amx_bf16: AMX bf16 tile matrix multiply (Sapphire Rapids and later).
        amx_tile: AMX tile registers.
    """

    model_name: str
    avx512f: bool
    avx512_vnni: bool
    avx512_bf16: bool
    amx_bf16: bool
    amx_tile: bool

    @property
    def has_bf16(self) -> bool:
        """True when bf16 math runs natively rather than emulated in fp32."""
        return self.avx512_bf16 or self.amx_bf16

    def to_dict(self) -> dict[str, object]:
        """Plain dict for status messages and log fields."""
        return asdict(self)


UNKNOWN_CPU = CpuCaps(
    model_name="unknown",
    avx512f=False,
    avx512_vnni=False,
    avx512_bf16=False,
    amx_bf16=False,
    amx_tile=False,
)


def parse_cpuinfo(text: str) -> CpuCaps:
    """Read CPU capabilities from the text of /proc/cpuinfo.

    Only the first processor block is read: every core of one machine reports the same flags.

    Args:
        text: Contents of /proc/cpuinfo.

    Returns:
        The capabilities; flags that are absent are False.
    """
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return CpuCaps(
        model_name=model or "unknown",
        avx512f="avx512f" in flags,
        avx512_vnni="avx512_vnni" in flags,
        avx512_bf16="avx512_bf16" in flags,
        amx_bf16="amx_bf16" in flags,
        amx_tile="amx_tile" in flags,
    )


@functools.cache
def detect_cpu() -> CpuCaps:
    """Capabilities of the CPU this process runs on, read once per process.

    Returns:
        Parsed /proc/cpuinfo on Linux; all False with model "unknown" elsewhere or when the
        file cannot be read (some sandboxes hide /proc), so callers fall back to fp32.
    """
    if not sys.platform.startswith("linux"):
        return UNKNOWN_CPU
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return UNKNOWN_CPU
    return parse_cpuinfo(text)
