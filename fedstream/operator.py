"""The operator commands: drive rounds, show the fleet, its rounds and the registry."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pydantic_settings import SettingsConfigDict

from fedstream import describe, documents, tables
from fedstream.client import FleetAddress, FleetClient
from fedstream.console import console_for, emit, print_json, say
from fedstream.failures import failure_view, round_error
from fedstream.predict import predict_csv
from fedstream.progress import follow_round
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
    ModelInfo,
    RoundState,
    RoundStatus,
    VersionStatus,
)
from fedstream.shared.protocol.history import RoundList, RoundListReply


class CliConfig(ServiceConfig):
    """The CLI needs only the broker, the federation and the model name; it reads a service's
    config file and ignores that service's own keys."""

    model_config = SettingsConfigDict(**{**ServiceConfig.model_config, "extra": "ignore"})


def start_round(address: FleetAddress, request: RoundStart, *, wait: bool,
                out: TextIO) -> RoundState:
    """Ask the cloud for a round (or, with `mode` async, a session); with `wait`, follow it to
    its end: a live bar of updates against the deadline on a terminal, a line per change
    otherwise (a session: each version it publishes). A round that fails is told as such: its
    reason, what that means and what to do.

    Raises:
        FedstreamError: the cloud refused (round_in_progress, no_edges), or the round failed
            (round_failed; its own reason for round_stopped, regressed_newest and
            regressed_past).
    """
    console = console_for(out)
    with FleetClient(address) as fleet:
        state = fleet.command(request, RoundReply).round
        assert state is not None
        codec = f"codec {state.codec} {dict(state.codec_params) or ''}".rstrip()
        if state.is_async:
            say(console, f"session {state.round_id} open on v{state.base_version} (async, "
                         f"buffer {state.buffer}, max staleness {state.max_staleness}, "
                         f"{state.deadline - state.opened:.0f} s): {state.expected} edge(s) "
                         f"online ({_names(state.selection)}), any may join, {codec}")
        else:
            say(console, f"round {state.round_id} open on v{state.base_version}: "
                         f"{state.expected} edge(s) selected ({_names(state.selection)}), "
                         f"{codec}")
        if not wait:
            return state
        with follow_round(console) as progress:
            progress(state)
            final = fleet.wait_round(state.round_id, on_change=progress)
    if final.status is RoundStatus.FAILED:
        emit(console, failure_view(final))
        raise round_error(final)
    r = final.result
    if final.is_async:
        say(console, f"session {final.round_id} ended: {r.get('versions')} version(s) up to "
                     f"v{r.get('version')}, {describe.scores(r)}, {r.get('updates')} updates, "
                     f"{r.get('seconds')} s, {r.get('bytes_in')} update bytes", "green")
        return final
    say(console, f"round {final.round_id} published v{r.get('version')}: "
                 f"{describe.scores(r)}, {r.get('seconds')} s, {r.get('bytes_in')} update bytes",
        "green")
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
           f"{describe.scores(r)}" if state.status is RoundStatus.PUBLISHED else
           f"{state.reason} {r.get('detail', '')}".rstrip())
    print(f"{'session' if state.is_async else 'round'} {state.round_id} {state.status}: {how}",
          file=out)
    return state


def fleet_status(address: FleetAddress) -> StatusReply:
    """The cloud's view of the fleet."""
    with FleetClient(address) as fleet:
        return fleet.command(StatusQuery(), StatusReply)


def show_status(address: FleetAddress, *, out: TextIO, as_json: bool = False) -> StatusReply:
    """`fedstream status`: the served model, the last round, edges online, rejections and
    serving, as a summary (or, `as_json`, one document)."""
    reply = fleet_status(address)
    if as_json:
        print_json(documents.status_doc(reply), out)
    else:
        emit(console_for(out), tables.status_view(reply, now=time.time()))
    return reply


def show_edges(address: FleetAddress, *, out: TextIO, as_json: bool = False) -> StatusReply:
    """`fedstream edges`: one row per edge the cloud has seen (or, `as_json`, a document)."""
    reply = fleet_status(address)
    if as_json:
        print_json(documents.edges_doc(reply.edges), out)
    else:
        emit(console_for(out), tables.edges_table(reply.edges))
    return reply


def show_rounds(address: FleetAddress, *, limit: int, out: TextIO,
                as_json: bool = False) -> RoundListReply:
    """`fedstream rounds`: the newest `limit` rounds the cloud's journal holds, newest first
    (or, `as_json`, a document)."""
    with FleetClient(address) as fleet:
        reply = fleet.command(RoundList(limit=limit), RoundListReply)
    if as_json:
        print_json(documents.rounds_doc(reply.rounds), out)
    else:
        emit(console_for(out), tables.rounds_table(reply.rounds))
    return reply


def model_command(address: FleetAddress, *, action: str, version: int | None, out: TextIO,
                  as_json: bool = False) -> ModelListReply | ModelVersionReply:
    """`fedstream model list|show V|rollback V|promote V`; list and show print a table (or,
    `as_json`, a document), show adds the version's metrics, score matrix and lineage.

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
    if as_json:
        print_json(documents.models_doc(reply, rows), out)
        return reply
    emit(console_for(out), tables.models_table(reply, rows))
    if action == "show":
        _print_detail(rows[0], reply.versions, out)
    return reply


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


def predict(address: FleetAddress, *, csv: Path, batch_rows: int, out: TextIO) -> None:
    """`fedstream predict --csv FILE`: one line per row, with the version that answered."""
    for row in predict_csv(csv, address, batch_rows=batch_rows):
        print(f"{row.row}\t{row.prediction}\tv{row.version}", file=out)


def _names(edges: tuple[str, ...], shown: int = 8) -> str:
    """Edge ids for a line: all of a small fleet, the first few of a large one."""
    more = f", ... (+{len(edges) - shown})" if len(edges) > shown else ""
    return ", ".join(edges[:shown]) + more
