"""The CLI's words for the cloud's records: scores, a version's origin, an edge's data, a
round's progress. Pure functions of a reply (and the clock, where a deadline is counted
down), shared by the tables and the progress bars."""

from __future__ import annotations

from collections.abc import Mapping

from fedstream.shared.learning.metrics import METRICS
from fedstream.shared.protocol.control import (
    EdgeStatus,
    ModelInfo,
    RoundState,
    RoundStatus,
    VersionStatus,
)

NONE = "-"
# Lineage keys that say a version was not trained but copied, and how.
_ORIGINS = (("rollback_of", "rollback of"), ("promoted_from", "promoted by hand from"))


def scores(metrics: Mapping[str, object], *, prefix: str = "") -> str:
    """The task metrics among `metrics` ("accuracy 0.93", "mae 0.41 rmse 0.55"), or "-"."""
    found = [f"{name} {metrics[prefix + name]}" for name in METRICS if prefix + name in metrics]
    return " ".join(found) or NONE


def version(number: object) -> str:
    """"v3", or "-" for none."""
    return NONE if number is None or number == "" else f"v{number}"


def origin(v: ModelInfo) -> str:
    """Where a version came from: a round (strategy, codec), a rollback, a hand promotion."""
    copied = next((f"{how} v{v.lineage[key]}" for key, how in _ORIGINS if key in v.lineage),
                  None)
    if copied is not None:
        return copied
    if not v.round_id:
        return "initial"
    how = " ".join(str(v.lineage[k]) for k in ("strategy", "codec") if k in v.lineage)
    return f"round {v.round_id} {how}".rstrip()


def version_state(v: ModelInfo) -> str:
    """"promoted", "rejected: <gate reason>" or "promoted by hand over <gate reason>"."""
    if v.status is VersionStatus.REJECTED:
        return f"rejected: {v.reason}"
    return f"promoted by hand over {v.reason}" if v.reason else "promoted"


def backend(edge: EdgeStatus) -> str:
    """"torch/fp32"; "tuning" while the edge measures its first one ("torch/fp32 (tuning)"
    when it measures for a new model or batch size and trains with the old choice
    meanwhile); "pending" before it has a model."""
    be = edge.backend
    tuning = be.get("state") == "tuning"
    if "backend" not in be:
        return "tuning" if tuning else "pending"
    chosen = f"{be.get('backend')}/{be.get('precision', '?')}"
    return f"{chosen} (tuning)" if tuning else chosen


def data(edge: EdgeStatus) -> str:
    """What an edge's data source holds and its drops by reason, or "-"."""
    d = edge.data
    if not d:
        return NONE
    held = (f"{d.get('readings', 0)} readings, {d.get('spans', 0)} label spans, "
            f"{d.get('windows_trained', 0)} windows last trained"
            if d.get("source") == "sensors" else f"source {d.get('source')}")
    drops = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(d.items())
                      if k.startswith(("dropped.", "labels_dropped.")))
    return f"{held}; dropped: {drops}" if drops else held


def declined(edge: EdgeStatus) -> str:
    """"<round>: <reason>" for the round an edge declined, or "-"."""
    return f"{edge.declined}: {edge.decline_reason}" if edge.declined else NONE


def updates(r: RoundState) -> str:
    """"2/3" updates of a sync round; an async session's count alone."""
    return str(r.received) if r.is_async else f"{r.received}/{r.expected}"


def outcome(r: RoundState) -> str:
    """A failed round's reason with its detail ("no_quorum: 1 of 3 updates"), or "-"."""
    if r.status is not RoundStatus.FAILED:
        return NONE
    detail = r.result.get("detail", "")
    return f"{r.reason}: {detail}" if detail else r.reason


def round_line(r: RoundState, *, now: float) -> str:
    """One line on a round: its status, progress or result, and time to its deadline."""
    head = f"{r.round_id} {'async ' if r.is_async else ''}{r.status}"
    if r.status is RoundStatus.FAILED:
        return f"{head}: {outcome(r)}"
    if r.is_async:
        body = (f"{r.received} updates, {r.result.get('versions', 0)} version(s), "
                f"on v{r.base_version}")
    else:
        body = f"{updates(r)} updates on v{r.base_version}"
    if r.status is RoundStatus.PUBLISHED:
        return f"{head}: {body} -> {version(r.result.get('version'))} ({scores(r.result)})"
    return f"{head}: {body}, {until(r.deadline, now=now)}"


def until(deadline: float, *, now: float) -> str:
    """"41 s to deadline", or "past deadline"."""
    left = deadline - now
    return f"{left:.0f} s to deadline" if left >= 0 else "past deadline"


def counts(values: Mapping[str, object]) -> str:
    """"bad_hash 2, stale_round 1" in name order, or "none"."""
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "none"
