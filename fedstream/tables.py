"""The operator's tables: the fleet summary, the edges, the rounds, the model registry.

Pure functions of a reply: each returns a rich renderable, borderless so that its plain form
(`console.emit` off a terminal) reads like `ps` output, one row per record, columns
separated by two blanks. Styles show only on a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Column, Table
from rich.text import Text

from fedstream import describe
from fedstream.shared.protocol.commands import ModelListReply, StatusReply
from fedstream.shared.protocol.control import (
    EdgeStatus,
    ModelInfo,
    RoundState,
    RoundStatus,
    VersionStatus,
)

_ROUND_STYLES = {RoundStatus.PUBLISHED: "green", RoundStatus.FAILED: "bold red"}


def _table(*columns: str | Column) -> Table:
    return Table(*columns, box=None, pad_edge=False, padding=(0, 2, 0, 0),
                 header_style="bold", show_edge=False)


def _right(header: str) -> Column:
    return Column(header, justify="right")


def _cell(value: object, style: str = "") -> Text:
    """A cell as plain text: ids and reasons are never read as markup."""
    return Text(str(value), style=style)


def status_view(reply: StatusReply, *, now: float) -> Table:
    """`fedstream status`: the served model, the last round, the fleet's counts."""
    online = sum(e.online for e in reply.edges)
    srv = reply.serving
    serving = (f"{describe.version(srv.get('version'))} {srv.get('backend')}/"
               f"{srv.get('precision')}, http port {srv.get('http_port')}, "
               f"{srv.get('served')} answered, {srv.get('rejected')} refused" if srv else "off")
    r = reply.round
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value, style in (
            ("model", f"v{reply.model_version}  {describe.scores(reply.model_metrics)}", ""),
            ("round", "none" if r is None else describe.round_line(r, now=now),
             "" if r is None else _ROUND_STYLES.get(r.status, "yellow")),
            ("edges", f"{online} online of {len(reply.edges)}",
             "" if online == len(reply.edges) else "yellow"),
            ("rejections", describe.counts(reply.rejections),
             "red" if reply.rejections else ""),
            ("intake", f"{reply.intake_bytes} bytes held", ""),
            ("serving", serving, "")):
        grid.add_row(key, _cell(value, style))
    return grid


def edges_table(edges: Sequence[EdgeStatus]) -> Table:
    """`fedstream edges`: one row per edge seen, by id."""
    table = _table("edge", "online", "version", "backend", _right("samples"), "data",
                   "last round", "declined")
    for e in sorted(edges, key=lambda e: e.edge_id):
        table.add_row(_cell(e.edge_id),
                      _cell("online" if e.online else "offline", "green" if e.online else "red"),
                      _cell(describe.version(e.version)), _cell(describe.backend(e)),
                      _cell(e.samples), _cell(describe.data(e)),
                      _cell(e.last_round or describe.NONE),
                      _cell(describe.declined(e), "yellow" if e.declined else ""))
    return table


def rounds_table(rounds: Sequence[RoundState]) -> Table:
    """`fedstream rounds`: one row per round or session, as given (newest first)."""
    table = _table("round", "mode", "status", "base", _right("updates"), "metric", "version",
                   _right("seconds"), "reason")
    for r in rounds:
        published = r.status is RoundStatus.PUBLISHED
        table.add_row(_cell(r.round_id), _cell(r.mode),
                      _cell(r.status, _ROUND_STYLES.get(r.status, "yellow")),
                      _cell(f"v{r.base_version}"), _cell(describe.updates(r)),
                      _cell(describe.scores(r.result) if published else describe.NONE),
                      _cell(describe.version(r.result.get("version")) if published
                            else describe.NONE),
                      _cell(r.result.get("seconds", describe.NONE) if r.terminal
                            else describe.NONE),
                      _cell(describe.outcome(r),
                            "red" if r.status is RoundStatus.FAILED else ""))
    return table


def models_table(reply: ModelListReply, versions: Sequence[ModelInfo] | None = None) -> Table:
    """`fedstream model list`: every version (or `versions`), `*` marking the served one."""
    table = _table("", "version", "parent", "status", "metrics", _right("forgetting"),
                   "origin")
    for v in reply.versions if versions is None else versions:
        served = v.version == reply.model_version
        rejected = v.status is VersionStatus.REJECTED
        table.add_row(_cell("*" if served else "", "bold green"),
                      _cell(f"v{v.version}", "bold" if served else ""),
                      _cell(describe.version(v.parent)),
                      _cell(describe.version_state(v), "red" if rejected else ""),
                      _cell(describe.scores(v.lineage, prefix="metrics.")),
                      _cell(v.lineage.get("metrics.forgetting", describe.NONE)),
                      _cell(describe.origin(v)))
    return table
