"""Tests for fedstream/describe.py::backend: what the CLI says of an edge's training backend,
readiness included."""

from __future__ import annotations

import pytest

from fedstream.describe import backend
from fedstream.shared.protocol.control import EdgeStatus


@pytest.mark.parametrize(("fields", "shown"), [
    ({}, "pending"),
    ({"state": "tuning", "tuning": "mlp(...), batch 32: torch/fp32, torch/bf16"}, "tuning"),
    ({"backend": "ipex", "precision": "bf16", "state": "ready"}, "ipex/bf16"),
    ({"backend": "torch", "precision": "fp32", "state": "tuning"}, "torch/fp32 (tuning)"),
    ({"backend": "torch", "precision": "fp32"}, "torch/fp32"),  # an edge from before states
])
def test_the_backend_column_says_whether_the_edge_is_ready(fields: dict[str, str],
                                                           shown: str) -> None:
    """Before a model, while measuring the first choice, ready, re-measuring, and old edges."""
    # Execute / Assert
    assert backend(EdgeStatus(edge_id="e1", online=True, backend=fields)) == shown
