"""The `--json` twin of each table: one document per command, for scripts.

Keys are full words and stable (a key is added, never renamed); a value the cloud does not
have is null, never a "-". Times are Unix seconds. Maps the cloud passes through (metrics,
backend, data counters, a round's result) keep the cloud's keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedstream import describe
from fedstream.shared.protocol.commands import ModelListReply, StatusReply
from fedstream.shared.protocol.control import EdgeStatus, ModelInfo, RoundState

Doc = dict[str, Any]


def round_doc(r: RoundState) -> Doc:
    """A round or session in its last state."""
    return {"id": r.round_id, "mode": str(r.mode), "status": str(r.status),
            "base_version": r.base_version, "codec": r.codec,
            "selection": list(r.selection), "declined": dict(r.declined),
            "expected": r.expected, "received": r.received, "quorum": r.quorum,
            "opened": r.opened or None, "deadline": r.deadline, "result": dict(r.result),
            "reason": r.reason or None}


def status_doc(reply: StatusReply) -> Doc:
    """`fedstream status --json`."""
    return {"model": {"version": reply.model_version, "metrics": dict(reply.model_metrics)},
            "round": None if reply.round is None else round_doc(reply.round),
            "edges": {"online": sum(e.online for e in reply.edges), "total": len(reply.edges)},
            "rejections": dict(reply.rejections), "intake_bytes": reply.intake_bytes,
            "serving": dict(reply.serving) or None}


def edges_doc(edges: Sequence[EdgeStatus]) -> Doc:
    """`fedstream edges --json`: by edge id."""
    return {"edges": [{
        "id": e.edge_id, "online": e.online, "version": e.version, "samples": e.samples,
        "backend": dict(e.backend) or None, "data": dict(e.data) or None,
        "last_round": e.last_round or None,
        "declined": {"round": e.declined, "reason": e.decline_reason} if e.declined else None,
    } for e in sorted(edges, key=lambda e: e.edge_id)]}


def rounds_doc(rounds: Sequence[RoundState]) -> Doc:
    """`fedstream rounds --json`: newest first."""
    return {"rounds": [round_doc(r) for r in rounds]}


def models_doc(reply: ModelListReply, versions: Sequence[ModelInfo] | None = None) -> Doc:
    """`fedstream model list --json` (or `model show V --json`: `versions` that one)."""
    return {"serving": reply.model_version, "versions": [{
        "version": v.version, "parent": v.parent, "round": v.round_id or None,
        "status": str(v.status), "reason": v.reason or None,
        "served": v.version == reply.model_version, "origin": describe.origin(v),
        "metrics": {k.removeprefix("metrics."): value for k, value in v.lineage.items()
                    if k.startswith("metrics.")},
        "evals": dict(v.evals), "lineage": dict(v.lineage),
    } for v in (reply.versions if versions is None else versions)]}
