"""Tests for fedstream/tables.py and fedstream/describe.py: the operator's tables, in the plain
text a pipe or a file gets (fedstream/console.py), from fixed replies."""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING

import pytest
from rich.console import RenderableType

from fedstream import describe, tables
from fedstream.console import console_for, emit
from fedstream.shared.protocol.commands import StatusReply
from fedstream.shared.protocol.control import EdgeStatus, RoundState

if TYPE_CHECKING:
    from conftest import Replies  # this folder's: the fixed replies


def _plain(renderable: RenderableType) -> str:
    """What `renderable` prints on a stream that is not a terminal."""
    out = io.StringIO()
    emit(console_for(out), renderable)
    return out.getvalue()


def test_status_summary_names_model_round_edges_rejections_and_serving(
        replies: Replies) -> None:
    """The summary has one line per subject, the open round with its progress and deadline."""
    # Execute
    text = _plain(tables.status_view(replies.status, now=300.0))

    # Assert
    assert text == (
        "model       v2  accuracy 0.9415\n"
        "round       r3 collecting: 1/2 updates on v2, 41 s to deadline\n"
        "edges       2 online of 3\n"
        "rejections  bad_hash 2\n"
        "intake      0 bytes held\n"
        "serving     v2 torch/fp32, http port 8080, 12 answered, 0 refused\n")


def test_status_summary_of_a_fresh_cloud() -> None:
    """No round, no edges, no rejections and no serving each say so."""
    # Prepare
    reply = StatusReply(round=None, edges=(), model_version=0, model_metrics={"accuracy": 0.1})

    # Execute
    text = _plain(tables.status_view(reply, now=0.0))

    # Assert
    assert text.splitlines() == ["model       v0  accuracy 0.1", "round       none",
                                 "edges       0 online of 0", "rejections  none",
                                 "intake      0 bytes held", "serving     off"]


def test_edges_table_has_one_row_per_edge_by_id(replies: Replies) -> None:
    """Edges sort by id; each row shows online, version, backend, samples, data, last round
    and a decline with its reason."""
    # Execute
    text = _plain(tables.edges_table(replies.edges))

    # Assert
    lines = text.splitlines()
    assert [re.split(r"\s{2,}", line) for line in lines] == [
        ["edge", "online", "version", "backend", "samples", "data", "last round", "declined"],
        ["edge-0", "online", "v2", "ipex/bf16", "598",
         "1200 readings, 5 label spans, 118 windows last trained; dropped: malformed 3", "r1",
         "-"],
        ["edge-1", "online", "v2", "torch/fp32", "600", "-", "r1", "-"],
        ["edge-2", "offline", "v1", "pending", "12", "-", "r1", "r2: too_little_data"],
    ]
    column = lines[0].index("last round")
    assert all(line[column:column + 2] == "r1" for line in lines[1:])


def test_rounds_table_shows_result_of_a_published_round_and_reason_of_a_failed_one(
        replies: Replies) -> None:
    """A published round shows its metric, version and seconds; a failed one its reason and
    detail and no version; an open one neither."""
    # Execute
    text = _plain(tables.rounds_table((replies.open, replies.failed, replies.published)))

    # Assert
    assert text.splitlines() == [
        "round  mode  status      base  updates  metric           version  seconds  reason",
        "r3     sync  collecting  v2        1/2  -                -              -  -",
        "r2     sync  failed      v2        1/2  -                -              -  "
        "no_quorum: 1 of 2 updates",
        "r1     sync  published   v1        3/3  accuracy 0.9415  v2           4.2  -",
    ]


def test_models_table_marks_the_served_version_and_says_where_each_came_from(
        replies: Replies) -> None:
    """`*` marks the served version; status carries the gate's reason; origin names the
    round, strategy and codec, or the version a rollback copied."""
    # Execute
    text = _plain(tables.models_table(replies.models))

    # Assert
    assert text.splitlines() == [
        "   version  parent  status                    metrics       forgetting  origin",
        "   v0       -       promoted                  accuracy 0.1           -  initial",
        "   v1       v0      promoted                  accuracy 0.9         0.0  "
        "round r1 fedavg f32",
        "   v2       v1      rejected: regressed_past  accuracy 0.5           -  "
        "round r2 fedavg int8",
        "*  v3       v1      promoted                  accuracy 0.9           -  "
        "rollback of v1",
    ]


def test_text_that_looks_like_markup_is_printed_as_it_is() -> None:
    """An id or reason holding brackets is shown verbatim, never eaten as rich markup."""
    # Prepare
    edge = EdgeStatus(edge_id="gw[bold]1", online=True, declined="r9",
                      decline_reason="[red]odd")

    # Execute
    text = _plain(tables.edges_table((edge,)))

    # Assert
    assert "gw[bold]1" in text and "r9: [red]odd" in text


@pytest.mark.parametrize(("which", "line"), [
    ("open", "r3 collecting: 1/2 updates on v2, 41 s to deadline"),
    ("published", "r1 published: 3/3 updates on v1 -> v2 (accuracy 0.9415)"),
    ("failed", "r2 failed: no_quorum: 1 of 2 updates"),
    ("session", "s4 async collecting: 7 updates, 2 version(s), on v5, 41 s to deadline"),
], ids=["open", "published", "failed", "session"])
def test_round_line_tells_progress_result_or_reason(replies: Replies, which: str,
                                                    line: str) -> None:
    """One line per round: progress against the deadline, the version it made, or why not."""
    # Prepare
    state: RoundState = getattr(replies, which)

    # Execute / Assert
    assert describe.round_line(state, now=state.deadline - 41) == line
