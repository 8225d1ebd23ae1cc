"""Which backend x precision pairs can train on this machine: what the autotuner measures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.backends.base import BACKENDS, PRECISIONS, Precision, check_precision
from fedstream.shared.learning.backends.ipex import ipex_status
from fedstream.shared.learning.cpu import CpuCaps

# Stock torch first: it is the reference every other candidate's loss is held against.
_ORDER = ("torch", "ipex")


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """One way to train: a registered backend and a compute precision.

    Attributes:
        backend: A `BACKENDS` name ("torch", "ipex").
        precision: "fp32" or "bf16".
    """

    backend: str
    precision: Precision

    @property
    def label(self) -> str:
        """`backend/precision`, e.g. "ipex/bf16": the form logs, status and the cache use."""
        return f"{self.backend}/{self.precision}"

    @classmethod
    def parse(cls, label: str) -> Self:
        """The candidate a `label` names.

        Raises:
            ValueError: Not `backend/precision` with a known precision.
        """
        backend, sep, precision = label.partition("/")
        for known in PRECISIONS:
            if sep and backend and precision == known:
                return cls(backend=backend, precision=known)
        raise ValueError(f"{label!r} is not backend/fp32 or backend/bf16")


def candidates_here(*, preference: str, precision: str,
                    cpu: CpuCaps) -> tuple[tuple[Candidate, ...], str]:
    """The candidates that can run here, stock torch first, and what was left out and why.

    IPEX is a candidate only where its version matches torch's (read from package metadata,
    never by importing it); bf16 only where the CPU computes it natively, unless asked for.

    Args:
        preference: "auto" (every usable backend) or a registered backend name.
        precision: "auto" (fp32, and bf16 where native), "fp32" or "bf16".
        cpu: This machine's capabilities.

    Returns:
        (candidates, notes); notes is "" when nothing was left out.

    Raises:
        ConfigError: BACKEND_UNAVAILABLE when "ipex" is forced but cannot load here;
            UNKNOWN_NAME for an unknown preference; BAD_CONFIG for an unknown precision.
    """
    notes: list[str] = []
    usable, why = ipex_status()
    if preference == "auto":
        names = [n for n in _ORDER if n in BACKENDS.names() and (n != "ipex" or usable)]
        if not usable:
            notes.append(f"ipex left out: {why}")
    else:
        BACKENDS.summary(preference)  # raises UNKNOWN_NAME listing the known names
        if preference == "ipex" and not usable:
            raise ConfigError(Reason.BACKEND_UNAVAILABLE, why)
        names = [preference]
    if precision == "auto":
        precisions: list[Precision] = ["fp32", "bf16"] if cpu.has_bf16 else ["fp32"]
        if not cpu.has_bf16:
            notes.append("bf16 left out: cpu has neither avx512_bf16 nor amx_bf16")
    else:
        precisions = [check_precision(precision)]
    found = tuple(Candidate(backend=n, precision=p) for n in names for p in precisions)
    return found, "; ".join(notes)
