"""What the operator commands print: round progress and the fleet view."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from pydantic_settings import SettingsConfigDict

from fedstream.client import FleetAddress, FleetClient
from fedstream.predict import predict_csv
from fedstream.shared.config import ServiceConfig
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.learning.metrics import METRICS
from fedstream.shared.protocol.commands import (
    ModelList,
    ModelListReply,
    ModelPromote,
    ModelRollback,
    ModelVersionReply,
    RoundReply,
    RoundStart,
    RoundStop,
    StatusQuery,
    StatusReply,
)
from fedstream.shared.protocol.control import (
    EdgeStatus,
    ModelInfo,
    RoundState,
    RoundStatus,
    VersionStatus,
)


class CliConfig(ServiceConfig):
    """The CLI needs only the broker, the federation and the model name; it reads a service's
    config file and ignores that service's own keys."""

    model_config = SettingsConfigDict(**{**ServiceConfig.model_config, "extra": "ignore"})


# Round failures whose reason is its own exit code; the rest exit as round_failed.
_OWN_EXIT_CODES = {Reason.ROUND_STOPPED, Reason.REGRESSED_NEWEST, Reason.REGRESSED_PAST}


def start_round(address: FleetAddress, request: RoundStart, *, wait: bool,
                out: TextIO) -> RoundState:
    """Ask the cloud for a round (or, with `mode` async, a session); with `wait`, print
    progress (for a session: each version it publishes) until it ends.

    Raises:
        FedstreamError: the cloud refused (round_in_progress, no_edges), or the round failed
            (round_failed; round_stopped when the operator stopped it).
    """
    with FleetClient(address) as fleet:
        state = fleet.command(request, RoundReply).round
        assert state is not None
        codec = f"codec {state.codec} {dict(state.codec_params) or ''}".rstrip()
        if state.is_async:
            print(f"session {state.round_id} open on v{state.base_version} (async, buffer "
                  f"{state.buffer}, max staleness {state.max_staleness}, "
                  f"{state.deadline - state.opened:.0f} s): {state.expected} edge(s) online "
                  f"({', '.join(state.selection)}), any may join, {codec}", file=out)
        else:
            print(f"round {state.round_id} open on v{state.base_version}: "
                  f"{state.expected} edge(s) selected ({', '.join(state.selection)}), {codec}",
                  file=out)
        if not wait:
            return state
        seen: list[tuple[str, int]] = []

        def progress(s: RoundState) -> None:
            if s.is_async:
                version = s.result.get("version")
                if isinstance(version, int) and ("v", version) not in seen:
                    seen.append(("v", version))
                    print(f"  published v{version}: {_scores(s.result)}, "
                          f"{s.received} updates received", file=out, flush=True)
            elif (s.status, s.received) not in seen:
                seen.append((s.status, s.received))
                print(f"  {s.status:<11} {s.received}/{s.expected} updates", file=out,
                      flush=True)

        final = fleet.wait_round(state.round_id, on_change=progress)
    if final.status is RoundStatus.FAILED:
        reason = Reason(final.reason) if final.reason in _OWN_EXIT_CODES else Reason.ROUND_FAILED
        raise FedstreamError(reason, f"{final.reason} {dict(final.result)}")
    r = final.result
    if final.is_async:
        print(f"session {final.round_id} ended: {r.get('versions')} version(s) up to "
              f"v{r.get('version')}, {_scores(r)}, {r.get('updates')} updates, "
              f"{r.get('seconds')} s, {r.get('bytes_in')} update bytes", file=out)
        return final
    print(f"round {final.round_id} published v{r.get('version')}: "
          f"{_scores(r)}, {r.get('seconds')} s, {r.get('bytes_in')} update bytes",
          file=out)
    return final


def stop_round(address: FleetAddress, *, out: TextIO) -> RoundState | None:
    """End the open round now: a session folds its pending updates and ends, a sync round
    fails with round_stopped. Print how it ended (or the last round, if none was open)."""
    with FleetClient(address) as fleet:
        state = fleet.command(RoundStop(), RoundReply).round
    if state is None:
        print("no round to stop", file=out)
        return None
    r = state.result
    how = (f"{r.get('versions')} version(s) up to v{r.get('version')}, "
           f"{_scores(r)}" if state.status is RoundStatus.PUBLISHED else
           f"{state.reason} {r.get('detail', '')}".rstrip())
    print(f"{'session' if state.is_async else 'round'} {state.round_id} {state.status}: {how}",
          file=out)
    return state


def fleet_status(address: FleetAddress) -> StatusReply:
    """The cloud's view of the fleet."""
    with FleetClient(address) as fleet:
        return fleet.command(StatusQuery(), StatusReply)


def show_status(address: FleetAddress, *, out: TextIO) -> StatusReply:
    """Print edges, their backend, the model version and the last round."""
    reply = fleet_status(address)
    metrics = ", ".join(f"{k} {v}" for k, v in reply.model_metrics.items())
    print(f"model version: v{reply.model_version} ({metrics})", file=out)
    online = [e for e in reply.edges if e.online]
    print(f"edges: {len(online)} online of {len(reply.edges)} seen", file=out)
    for e in sorted(reply.edges, key=lambda e: e.edge_id):
        be = e.backend
        backend = f"{be.get('backend', '?')}/{be.get('precision', '?')}" if be else "pending"
        print(f"  {e.edge_id:<16} {'online' if e.online else 'offline':<8} "
              f"v{e.version if e.version is not None else '-':<4} {e.samples:>7} samples  "
              f"{backend}  cpu: {be.get('model_name', '?')}", file=out)
        if e.data:
            print(f"    {_data_line(e)}", file=out)
    if reply.rejections:
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(reply.rejections.items()))
        print(f"rejected messages: {rejected}", file=out)
    if reply.serving:
        srv = reply.serving
        print(f"serving: v{srv.get('version')} {srv.get('backend')}/{srv.get('precision')}, "
              f"http port {srv.get('http_port')}, {srv.get('served')} requests answered, "
              f"{srv.get('rejected')} refused", file=out)
    r = reply.round
    if r is None:
        print("last round: none", file=out)
    else:
        detail = r.reason or ", ".join(f"{k}={v}" for k, v in r.result.items())
        progress = (f"async on v{r.base_version} (buffer {r.buffer}, max staleness "
                    f"{r.max_staleness}), {r.received} updates" if r.is_async
                    else f"{r.received}/{r.expected}")
        print(f"last round: {r.round_id} {r.status} {progress} {detail}", file=out)
    return reply


def model_command(address: FleetAddress, *, action: str, version: int | None,
                  out: TextIO) -> ModelListReply | ModelVersionReply:
    """`fedstream model list|show V|rollback V|promote V`.

    Returns:
        The version now served (rollback, promote), or every version (list, show).

    Raises:
        FedstreamError: an unknown version (bad_config), round_in_progress on rollback or
            promote, not_candidate when promoting a version the gate did not reject.
    """
    with FleetClient(address) as fleet:
        if action in ("rollback", "promote"):
            target = int(version or 0)
            cmd = ModelRollback(version=target) if action == "rollback" else ModelPromote(
                version=target)
            moved = fleet.command(cmd, ModelVersionReply)
            done = ("republished as" if action == "rollback" or moved.model_version != version
                    else "promoted: now serving")
            print(f"v{version} {done} v{moved.model_version}", file=out)
            return moved
        reply = fleet.command(ModelList(), ModelListReply)
    rows = [v for v in reply.versions if action == "list" or v.version == version]
    if action == "show" and not rows:
        raise FedstreamError(Reason.BAD_CONFIG, f"no version {version}")
    for v in rows:
        print(_summary_line(v, serving=reply.model_version), file=out)
        if action == "show":
            _print_detail(v, reply.versions, out)
    return reply


def _summary_line(v: ModelInfo, *, serving: int | None) -> str:
    mark = "*" if v.version == serving else " "
    scores = _scores(v.lineage, prefix="metrics.")
    origin = next((f"{how} v{v.lineage[key]}" for key, how in _ORIGINS if key in v.lineage),
                  None)
    how = origin or (
        f"round {v.round_id} {v.lineage.get('strategy', '')} {v.lineage.get('codec', '')}"
        if v.round_id else "initial")
    state = (f"  [{v.status}: {v.reason}]" if v.status is not VersionStatus.PROMOTED
             else f"  [promoted by hand over {v.reason}]" if v.reason else "")
    return (f"{mark} v{v.version:<4} parent {'-' if v.parent is None else v.parent:<4} "
            f"{scores:<16} {how}{state}")


_ORIGINS = (("rollback_of", "rollback of"), ("promoted_from", "promoted by hand from"))


def _print_detail(v: ModelInfo, versions: Sequence[ModelInfo], out: TextIO) -> None:
    """Continual-learning metrics, the score matrix up to `v`, then the lineage."""
    lin = v.lineage
    metric = next((m for m in METRICS if f"metrics.avg_{m}" in lin), None)
    if metric is not None:
        print(f"    average {metric} {lin[f'metrics.avg_{metric}']}, forgetting "
              f"{lin.get('metrics.forgetting')}, backward transfer {lin.get('metrics.bwt')} "
              f"over {lin.get('metrics.windows')} window(s)", file=out)
    windows = list(v.evals)
    if windows:
        # Rows: every served version up to this one (the history it is measured against).
        matrix = [w for w in versions if w.evals and w.version <= v.version
                  and (w.status is VersionStatus.PROMOTED or w.version == v.version)]
        print(f"    {metric or 'score'} matrix (rows: versions, columns: evaluation windows)",
              file=out)
        print("          " + "".join(f"{name:>9}" for name in windows), file=out)
        for row in matrix:
            cells = "".join(f"{row.evals[n]:>9.4f}" if n in row.evals else f"{'-':>9}"
                            for n in windows)
            print(f"    v{row.version:<5}{cells}", file=out)
    for key, value in sorted(lin.items()):
        print(f"    {key}: {value}", file=out)


def _data_line(edge: EdgeStatus) -> str:
    """What an edge's data source holds, its drops by reason, and a decline with its reason."""
    d = edge.data
    held = (f"{d.get('readings', 0)} readings, {d.get('spans', 0)} label spans, "
            f"{d.get('windows_trained', 0)} windows last trained"
            if d.get("source") == "sensors" else f"source {d.get('source')}")
    drops = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(d.items())
                      if k.startswith(("dropped.", "labels_dropped.")))
    declined = (f"; declined {edge.declined}: {edge.decline_reason}" if edge.declined else "")
    return f"{held}{'; dropped: ' + drops if drops else ''}{declined}"


def _scores(metrics: Mapping[str, object], *, prefix: str = "") -> str:
    """The task metrics among `metrics` ("accuracy 0.93", "mae 0.41 rmse 0.55"), or "-"."""
    found = [f"{name} {metrics[prefix + name]}" for name in METRICS if prefix + name in metrics]
    return " ".join(found) or "-"


def predict(address: FleetAddress, *, csv: Path, batch_rows: int, out: TextIO) -> None:
    """`fedstream predict --csv FILE`: one line per row, with the version that answered."""
    for row in predict_csv(csv, address, batch_rows=batch_rows):
        print(f"{row.row}\t{row.prediction}\tv{row.version}", file=out)
