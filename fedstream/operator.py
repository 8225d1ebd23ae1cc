"""What the operator commands print: round progress and the fleet view."""

from __future__ import annotations

from typing import Any, TextIO

from pydantic_settings import SettingsConfigDict

from fedstream.client import FleetClient
from fedstream.shared.config import ServiceConfig
from fedstream.shared.control import CommandReply, RoundState
from fedstream.shared.errors import FedstreamError, Reason


class CliConfig(ServiceConfig):
    """The CLI needs only the broker, the federation and the model name; it reads a service's
    config file and ignores that service's own keys."""

    model_config = SettingsConfigDict(**{**ServiceConfig.model_config, "extra": "ignore"})


def start_round(conn: dict[str, Any], *, wait: bool,
                overrides: dict[str, float | int | str | bool],
                out: TextIO) -> RoundState:
    """Ask the cloud for a round (or, with `mode="async"`, a session); with `wait`, print
    progress (for a session: each version it publishes) until it ends.

    Raises:
        FedstreamError: the cloud refused (round_in_progress, no_edges), or the round failed
            (round_failed; round_stopped when the operator stopped it).
    """
    with FleetClient(**conn) as fleet:
        reply = fleet.command("round_start", **overrides)
        assert reply.round is not None
        state = reply.round
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
                    print(f"  published v{version}: accuracy {s.result.get('accuracy')}, "
                          f"{s.received} updates received", file=out, flush=True)
            elif (s.status, s.received) not in seen:
                seen.append((s.status, s.received))
                print(f"  {s.status:<11} {s.received}/{s.expected} updates", file=out,
                      flush=True)

        final = fleet.wait_round(state.round_id, on_change=progress)
    if final.status == "failed":
        reason = (Reason.ROUND_STOPPED if final.reason == Reason.ROUND_STOPPED
                  else Reason.ROUND_FAILED)
        raise FedstreamError(reason, f"{final.reason} {dict(final.result)}")
    r = final.result
    if final.is_async:
        print(f"session {final.round_id} ended: {r.get('versions')} version(s) up to "
              f"v{r.get('version')}, accuracy {r.get('accuracy')}, {r.get('updates')} updates, "
              f"{r.get('seconds')} s, {r.get('bytes_in')} update bytes", file=out)
        return final
    print(f"round {final.round_id} published v{r.get('version')}: accuracy "
          f"{r.get('accuracy')}, {r.get('seconds')} s, {r.get('bytes_in')} update bytes",
          file=out)
    return final


def stop_round(conn: dict[str, Any], *, out: TextIO) -> RoundState | None:
    """End the open round now: a session folds its pending updates and ends, a sync round
    fails with round_stopped. Print how it ended (or the last round, if none was open)."""
    with FleetClient(**conn) as fleet:
        state = fleet.command("round_stop").round
    if state is None:
        print("no round to stop", file=out)
        return None
    r = state.result
    how = (f"{r.get('versions')} version(s) up to v{r.get('version')}, accuracy "
           f"{r.get('accuracy')}" if state.status == "published" else
           f"{state.reason} {r.get('detail', '')}".rstrip())
    print(f"{'session' if state.is_async else 'round'} {state.round_id} {state.status}: {how}",
          file=out)
    return state


def fleet_status(conn: dict[str, Any]) -> CommandReply:
    """The cloud's view of the fleet."""
    with FleetClient(**conn) as fleet:
        return fleet.command("status")


def show_status(conn: dict[str, Any], *, out: TextIO) -> CommandReply:
    """Print edges, their backend, the model version and the last round."""
    reply = fleet_status(conn)
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
    if reply.rejections:
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(reply.rejections.items()))
        print(f"rejected messages: {rejected}", file=out)
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


def model_command(conn: dict[str, Any], *, action: str, version: int | None,
                  out: TextIO) -> CommandReply:
    """`fedstream model list|show V|rollback V`.

    Raises:
        FedstreamError: an unknown version (bad_config), or round_in_progress on rollback.
    """
    with FleetClient(**conn) as fleet:
        if action == "rollback":
            reply = fleet.command("model_rollback", version=int(version or 0))
            print(f"v{version} republished as v{reply.model_version}", file=out)
            return reply
        reply = fleet.command("model_list")
    rows = [v for v in reply.versions if action == "list" or v.version == version]
    if action == "show" and not rows:
        raise FedstreamError(Reason.BAD_CONFIG, f"no version {version}")
    for v in rows:
        mark = "*" if v.version == reply.model_version else " "
        acc = v.lineage.get("metrics.accuracy", "-")
        origin = v.lineage.get("rollback_of")
        how = f"rollback of v{origin}" if origin is not None else (
            f"round {v.round_id} {v.lineage.get('strategy', '')} {v.lineage.get('codec', '')}"
            if v.round_id else "initial")
        print(f"{mark} v{v.version:<4} parent {'-' if v.parent is None else v.parent:<4} "
              f"accuracy {acc:<7} {how}", file=out)
        if action == "show":
            for key, value in sorted(v.lineage.items()):
                print(f"    {key}: {value}", file=out)
    return reply
