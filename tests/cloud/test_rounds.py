"""Tests for cloud/rounds.py."""

from __future__ import annotations

import dataclasses
import math

import pytest

from fedstream.cloud import rounds
from fedstream.shared.errors import FedstreamError, ProtocolError, Reason
from fedstream.shared.protocol.control import RoundState, TrainParams
from fedstream.shared.protocol.messages import UpdateMeta

_TRAIN = TrainParams(epochs=1, lr=0.1, momentum=0.0, batch_size=8)


def _open(selection: tuple[str, ...] = ("e3", "e1", "e2"), quorum: int = 2) -> RoundState:
    """Round r1 on base v4, opened at t=100 with a 10 s deadline (so it ends at t=110)."""
    return rounds.open_round(round_id="r1", model="mlp", base_version=4, now=100.0,
                             deadline_s=10.0, train=_TRAIN, codec="f32", codec_params={},
                             selection=selection,
                             quorum=quorum)


def _meta(edge_id: str = "e1", round_id: str = "r1", base_version: int = 4) -> UpdateMeta:
    return UpdateMeta(edge_id=edge_id, round_id=round_id, base_version=base_version,
                      samples=10, loss=0.5)


def test_open_round() -> None:
    """A new round is open, sorted by edge id, with its deadline `now + deadline_s`."""
    # Prepare / Execute
    state = _open()

    # Assert
    assert state.status == "open"
    assert state.selection == ("e1", "e2", "e3")
    assert state.deadline == 110.0
    assert state.received == 0
    assert state.expected == 3
    assert state.quorum == 2
    assert not state.terminal


def test_open_round_with_empty_selection_is_no_edges() -> None:
    """A round with nobody to ask is refused with no_edges."""
    # Prepare / Execute
    with pytest.raises(FedstreamError) as info:
        _open(selection=())

    # Assert
    assert info.value.reason is Reason.NO_EDGES


@pytest.mark.parametrize(
    ("quorum", "size", "expected"),
    [(5, 3, 3), (3, 3, 3), (2, 3, 2), (1, 1, 1), (0, 2, 0)],
)
def test_quorum_is_capped_at_selection_size(quorum: int, size: int, expected: int) -> None:
    """The quorum never asks for more updates than there are selected edges."""
    # Prepare
    selection = tuple(f"e{i}" for i in range(size))

    # Execute
    state = _open(selection=selection, quorum=quorum)

    # Assert
    assert state.quorum == expected


def test_check_update_accepts_a_fresh_update() -> None:
    """An update from a selected edge, for the open round and base, passes."""
    # Prepare
    state = _open()

    # Execute / Assert
    rounds.check_update(state, _meta("e2"), counted={("e1", 4)})
    rounds.check_update(rounds.record_update(state), _meta("e3"), counted={("e1", 4)})


@pytest.mark.parametrize(
    ("meta", "counted", "reason"),
    [
        (_meta(round_id="r0"), set(), Reason.STALE_ROUND),
        (_meta(base_version=3), set(), Reason.STALE_ROUND),
        (_meta(base_version=5), set(), Reason.STALE_ROUND),
        (_meta(edge_id="e9"), set(), Reason.UNKNOWN_EDGE),
        (_meta(edge_id="e1"), {("e1", 4)}, Reason.DUPLICATE_UPDATE),
    ],
    ids=["stale-round-id", "stale-base", "future-base", "unselected-edge", "duplicate"],
)
def test_check_update_rejects(meta: UpdateMeta, counted: set[tuple[str, int]],
                              reason: Reason) -> None:
    """An update for another round or base, from an unselected edge, or twice, is refused."""
    # Prepare
    state = _open()

    # Execute
    with pytest.raises(ProtocolError) as info:
        rounds.check_update(state, meta, counted)

    # Assert
    assert info.value.reason is reason


@pytest.mark.parametrize("status", ["aggregating", "published", "failed", None])
def test_check_update_rejects_when_not_collecting(status: str | None) -> None:
    """With no round, or one aggregating or ended, every update is stale_round."""
    # Prepare
    state = None if status is None else dataclasses.replace(_open(), status=status)

    # Execute
    with pytest.raises(ProtocolError) as info:
        rounds.check_update(state, _meta(), set())

    # Assert
    assert info.value.reason is Reason.STALE_ROUND


def test_record_update_moves_open_to_collecting_and_counts() -> None:
    """Each accepted update bumps `received`; the first moves the round to collecting."""
    # Prepare
    state = _open()

    # Execute
    one = rounds.record_update(state)
    two = rounds.record_update(one)

    # Assert
    assert (state.status, state.received) == ("open", 0)
    assert (one.status, one.received) == ("collecting", 1)
    assert (two.status, two.received) == ("collecting", 2)


@pytest.mark.parametrize(
    ("received", "status", "now", "expected"),
    [
        (3, "collecting", 101.0, True),
        (1, "collecting", 110.0, True),
        (1, "collecting", 200.0, True),
        (0, "open", 110.0, True),
        (2, "collecting", 109.9, False),
        (0, "open", 100.0, False),
        (3, "aggregating", 200.0, False),
        (3, "published", 200.0, False),
        (1, "failed", 200.0, False),
    ],
    ids=["all-in", "at-deadline", "after-deadline", "empty-at-deadline", "before-deadline",
         "just-opened", "aggregating", "published", "failed"],
)
def test_should_close(received: int, status: str, now: float, expected: bool) -> None:
    """A collecting round closes when every edge answered or the deadline passed, not before."""
    # Prepare
    state = dataclasses.replace(_open(), received=received, status=status)

    # Execute
    got = rounds.should_close(state, now)

    # Assert
    assert got is expected


@pytest.mark.parametrize(
    ("quorum", "received", "expected"),
    [(2, 1, False), (2, 2, True), (2, 3, True), (0, 0, False), (0, 1, True), (1, 0, False)],
)
def test_has_quorum(quorum: int, received: int, expected: bool) -> None:
    """Quorum needs `max(1, quorum)` updates: a round never aggregates nothing."""
    # Prepare
    state = dataclasses.replace(_open(), quorum=quorum, received=received)

    # Execute
    got = rounds.has_quorum(state)

    # Assert
    assert got is expected


def test_to_aggregating_stops_collection() -> None:
    """An aggregating round takes no updates and does not close again."""
    # Prepare
    state = rounds.record_update(_open())

    # Execute
    aggregating = rounds.to_aggregating(state)

    # Assert
    assert aggregating.status == "aggregating"
    assert not aggregating.terminal
    assert not rounds.should_close(aggregating, 1e9)


def test_to_published_is_terminal() -> None:
    """A published round is terminal and carries its result."""
    # Prepare
    state = rounds.to_aggregating(rounds.record_update(_open()))

    # Execute
    published = rounds.to_published(state, {"version": 5, "accuracy": 0.93})

    # Assert
    assert published.status == "published"
    assert published.terminal
    assert dict(published.result) == {"version": 5, "accuracy": 0.93}
    assert not rounds.should_close(published, 1e9)


@pytest.mark.parametrize(
    ("detail", "result"),
    [("1 of 2 updates", {"detail": "1 of 2 updates"}), ("", {})],
)
def test_to_failed_is_terminal(detail: str, result: dict[str, str]) -> None:
    """A failed round is terminal and keeps the reason string and any detail."""
    # Prepare
    state = _open()

    # Execute
    failed = rounds.to_failed(state, Reason.NO_QUORUM, detail)

    # Assert
    assert failed.status == "failed"
    assert failed.terminal
    assert failed.reason == "no_quorum"
    assert dict(failed.result) == result


def test_transitions_leave_the_input_unchanged() -> None:
    """Every transition returns a new state and never alters the one passed in."""
    # Prepare
    state = _open()
    before = dataclasses.asdict(state)

    # Execute
    rounds.record_update(state)
    rounds.to_aggregating(state)
    rounds.to_published(state, {"version": 5})
    rounds.to_failed(state, Reason.ROUND_FAILED, "x")

    # Assert
    assert dataclasses.asdict(state) == before


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, ("a", "b", "c", "d")),
    ({"edges": ["c", "a"]}, ("a", "c")),
    ({"fraction": 0.5, "seed": "0:r1"}, 2),
    ({"fraction": 0.01, "seed": "0:r1"}, 1),
])
def test_select_edges(kwargs: dict[str, object], expected: tuple[str, ...] | int) -> None:
    """All online edges by default, a named list, or a seeded share (at least one)."""
    # Execute
    picked = rounds.select_edges(["d", "b", "a", "c"], **kwargs)  # type: ignore[arg-type]

    # Assert
    if isinstance(expected, int):
        assert len(picked) == expected and set(picked) <= {"a", "b", "c", "d"}
        assert picked == rounds.select_edges(["a", "b", "c", "d"], **kwargs)  # type: ignore[arg-type]
    else:
        assert picked == expected


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"edges": ["a", "z"]}, Reason.BAD_CONFIG),
    ({"fraction": 0.0}, Reason.BAD_CONFIG),
    ({"fraction": 1.5}, Reason.BAD_CONFIG),
])
def test_select_edges_refuses_bad_requests(kwargs: dict[str, object], reason: Reason) -> None:
    """Naming an offline edge or a fraction outside (0, 1] is bad_config."""
    # Execute
    with pytest.raises(FedstreamError) as caught:
        rounds.select_edges(["a", "b"], **kwargs)  # type: ignore[arg-type]

    # Assert
    assert caught.value.reason is reason


def test_select_edges_with_nobody_online_is_no_edges() -> None:
    """An empty fleet gives no_edges."""
    # Execute
    with pytest.raises(FedstreamError) as caught:
        rounds.select_edges([])

    # Assert
    assert caught.value.reason is Reason.NO_EDGES


def _session(buffer: int = 2, max_staleness: int = 1) -> RoundState:
    """Async session r1 opened at t=100 on v4 with e1, e2 online and a 10 s deadline."""
    return rounds.open_session(round_id="r1", model="mlp", base_version=4, now=100.0,
                               deadline_s=10.0, train=_TRAIN, codec="f32", codec_params={},
                               online=("e2", "e1"), buffer=buffer, max_staleness=max_staleness)


def test_open_session_is_collecting_async_with_its_buffer() -> None:
    """A new session collects at once, in async mode, with its buffer and staleness bound."""
    # Prepare / Execute
    state = _session(buffer=3, max_staleness=2)

    # Assert
    assert (state.status, state.mode, state.is_async) == ("collecting", "async", True)
    assert (state.buffer, state.max_staleness, state.base_version) == (3, 2, 4)
    assert state.selection == ("e1", "e2") and state.deadline == 110.0


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"online": ()}, Reason.NO_EDGES),
    ({"buffer": 0}, Reason.BAD_CONFIG),
    ({"max_staleness": -1}, Reason.BAD_CONFIG),
])
def test_open_session_refuses(kwargs: dict[str, object], reason: Reason) -> None:
    """Nobody online is no_edges; a buffer below 1 or a negative staleness is bad_config."""
    # Prepare
    args: dict[str, object] = {"round_id": "r1", "model": "mlp", "base_version": 0, "now": 0.0,
                               "deadline_s": 1.0, "train": _TRAIN, "codec": "f32",
                               "codec_params": {}, "online": ("e1",), "buffer": 1,
                               "max_staleness": 0, **kwargs}

    # Execute
    with pytest.raises(FedstreamError) as caught:
        rounds.open_session(**args)  # type: ignore[arg-type]

    # Assert
    assert caught.value.reason is reason


@pytest.mark.parametrize(("max_staleness", "base", "counted"), [
    (1, 4, set()),
    (1, 3, set()),
    (2, 2, set()),
    (0, 4, set()),
    (1, 4, {("e1", 3)}),
    (1, 3, {("e1", 4), ("e2", 3)}),
])
def test_async_check_update_accepts_within_staleness(max_staleness: int, base: int,
                                                     counted: set[tuple[str, int]]) -> None:
    """On v4, a session takes e1's update on any base in [4 - max_staleness, 4] that e1 has
    not already contributed on, even though other bases of e1 were counted."""
    # Prepare
    state = _session(max_staleness=max_staleness)

    # Execute / Assert
    rounds.check_update(state, _meta("e1", base_version=base), counted)


@pytest.mark.parametrize(("max_staleness", "base", "counted", "reason"), [
    (1, 2, set(), Reason.STALE_ROUND),
    (0, 3, set(), Reason.STALE_ROUND),
    (1, 5, set(), Reason.STALE_ROUND),
    (1, 3, {("e1", 3)}, Reason.DUPLICATE_UPDATE),
], ids=["two-behind", "one-behind-no-staleness", "future-base", "same-edge-same-base"])
def test_async_check_update_rejects_beyond_staleness_or_twice(
        max_staleness: int, base: int, counted: set[tuple[str, int]], reason: Reason) -> None:
    """On v4, a base older than 4 - max_staleness or newer than 4 is stale_round, and a
    second update of one edge on one base is duplicate_update."""
    # Prepare
    state = _session(max_staleness=max_staleness)

    # Execute
    with pytest.raises(ProtocolError) as caught:
        rounds.check_update(state, _meta("e1", base_version=base), counted)

    # Assert
    assert caught.value.reason is reason


def test_async_session_takes_an_edge_that_was_not_online_at_open() -> None:
    """Any edge may join an async session: e9 (not online at open) is accepted."""
    # Prepare
    state = _session()

    # Execute / Assert
    rounds.check_update(state, _meta("e9"), set())


@pytest.mark.parametrize(("samples", "staleness", "expected"), [
    (10, 0, 10.0),
    (10, 3, 5.0),
    (8, 1, 8 / math.sqrt(2)),
    (6, 8, 2.0),
    (1, 99, 0.1),
])
def test_staleness_weight(samples: int, staleness: int, expected: float) -> None:
    """samples / sqrt(1 + staleness): 10 fresh is 10, 10 three behind is 10/2, 6 eight behind
    is 6/3, 1 ninety-nine behind is 1/10."""
    # Execute
    got = rounds.staleness_weight(samples, staleness)

    # Assert
    assert got == pytest.approx(expected)


def test_staleness_weight_refuses_negative_staleness() -> None:
    """An update from the future has no staleness weight: ValueError."""
    # Execute / Assert
    with pytest.raises(ValueError, match="staleness"):
        rounds.staleness_weight(10, -1)


@pytest.mark.parametrize(("received", "pending", "now", "aggregate", "close"), [
    (5, 1, 101.0, False, False),
    (5, 2, 101.0, True, False),
    (5, 3, 101.0, True, False),
    (50, 0, 109.9, False, False),
    (0, 0, 110.0, False, True),
])
def test_async_session_aggregates_on_a_full_buffer_and_closes_only_at_its_deadline(
        received: int, pending: int, now: float, aggregate: bool, close: bool) -> None:
    """With buffer 2 a session aggregates at 2 or more pending updates, and closes at its
    deadline (t=110) however many updates it has received."""
    # Prepare
    state = dataclasses.replace(_session(buffer=2), received=received)

    # Execute
    got = (rounds.should_aggregate(state, pending), rounds.should_close(state, now))

    # Assert
    assert got == (aggregate, close)


def test_to_next_version_moves_the_base_and_keeps_collecting() -> None:
    """Publishing v5 moves the session's base to 5 with the new result; it still collects."""
    # Prepare
    state = rounds.record_update(_session())

    # Execute
    moved = rounds.to_next_version(state, 5, {"version": 5, "versions": 1})

    # Assert
    assert (moved.status, moved.base_version, moved.received) == ("collecting", 5, 1)
    assert dict(moved.result) == {"version": 5, "versions": 1}
    assert not rounds.should_aggregate(rounds.to_failed(moved, Reason.ROUND_STOPPED), 9)
