"""Tests for edge_node/status_line.py: the line `systemctl status` shows for an edge."""

from __future__ import annotations

from typing import Any

import pytest

from fedstream.edge_node.status_line import edge_status_line

TORCH = {"backend": "torch", "precision": "fp32", "reason": "auto"}


NONE = ("", "")


def _edge(connected: bool, version: int | None, trained: str = "",
          declined: tuple[str, str] = NONE,
          backend: dict[str, str] | None = None) -> dict[str, object]:
    return {"connected": connected, "version": version, "trained": trained,
            "declined": declined, "backend": backend or {}}


@pytest.mark.parametrize(("edge", "line"), [
    (_edge(True, None), "waiting for a model"),
    (_edge(False, None), "broker unreachable, retrying"),
    (_edge(True, 3, "r-ab12", backend=TORCH),
     "model v3, round r-ab12 trained, outbox 0, backend torch fp32"),
    (_edge(True, 0), "model v0, no round trained yet, outbox 0, backend not chosen yet"),
    (_edge(True, 4, "r-ab12", ("r-cd34", "too_little_data"), TORCH),
     "model v4, round r-ab12 trained, round r-cd34 declined (too_little_data), outbox 0, "
     "backend torch fp32"),
    (_edge(True, 4, "r-cd34", ("r-cd34", "too_little_data"), TORCH),
     "model v4, round r-cd34 trained, outbox 0, backend torch fp32"),
    (_edge(False, 3, "r-ab12", backend=TORCH),
     "broker unreachable, retrying; model v3, round r-ab12 trained, outbox 0, "
     "backend torch fp32"),
])
def test_status_line(edge: dict[str, Any], line: str) -> None:
    """Each state of the edge reads as one short line."""
    # Execute
    got = edge_status_line(outbox=0, **edge)

    # Assert
    assert got == line


def test_outbox_count_is_shown() -> None:
    """Updates waiting for their receipt are counted."""
    # Execute
    got = edge_status_line(connected=True, version=1, trained="r1", declined=("", ""),
                           outbox=2, backend={"backend": "ipex", "precision": "bf16"})

    # Assert
    assert got == "model v1, round r1 trained, outbox 2, backend ipex bf16"
