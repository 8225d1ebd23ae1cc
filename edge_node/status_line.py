"""The edge daemon's one-line status for `systemctl status` (sd_notify `STATUS=`): pure text
from what the loop holds."""

from __future__ import annotations

from collections.abc import Mapping


def edge_status_line(*, connected: bool, version: int | None, trained: str,
                     declined: tuple[str, str], outbox: int,
                     backend: Mapping[str, object]) -> str:
    """What the edge is doing, e.g. "model v3, round r-ab12 trained, outbox 0, backend torch
    fp32", "waiting for a model" or "broker unreachable, retrying".

    Args:
        connected: The broker holds the session now (False while paho reconnects).
        version: The model version held; None before the first one arrives.
        trained: The round (or session) last trained for; "" before any.
        declined: (round id, reason) of the last decline; ("", "") before any.
        outbox: Updates still waiting for their receipt.
        backend: The chosen backend as `BackendChoice.describe()` gives it; empty until one
            is chosen.
    """
    if version is None:
        return "waiting for a model" if connected else "broker unreachable, retrying"
    parts = [f"model v{version}", f"round {trained} trained" if trained
             else "no round trained yet"]
    if declined[0] and declined[0] != trained:
        parts.append(f"round {declined[0]} declined ({declined[1]})")
    parts.append(f"outbox {outbox}")
    name = backend.get("backend")
    parts.append(f"backend {name} {backend.get('precision')}" if name
                 else "backend not chosen yet")
    line = ", ".join(parts)
    return line if connected else f"broker unreachable, retrying; {line}"
