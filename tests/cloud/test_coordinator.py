"""The coordinator's round lifecycle, driven directly with hand-made updates and a fake clock."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fedstream.cloud import rounds
from fedstream.cloud.config import ArchitectureConfig, CloudConfig
from fedstream.cloud.coordinator import Coordinator, ModelVersion
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.store import CloudStore
from fedstream.shared.errors import (
    ConfigError,
    FedstreamError,
    ProtocolError,
    Reason,
    StoreError,
)
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.control import EdgeStatus, RoundMode, RoundProgress, RoundState
from fedstream.shared.protocol.messages import UpdateMeta

ARCH = Architecture.mlp((4, 3, 2))
ARCH_CFG = ArchitectureConfig.of(ARCH)


class Harness:
    """A coordinator over a real store in a temp dir; published models and rounds recorded."""

    def __init__(self, data_dir: Path, **cfg: object) -> None:
        # The arithmetic of weighted means is checked here without the defences (they have
        # tests of their own below and in test_defences.py).
        cfg.setdefault("defences", {"sample_cap": 0, "clip": 0})
        cfg.setdefault("architecture", ARCH_CFG)
        self.models: list[ModelVersion] = []
        self.rounds: list[RoundState] = []
        self.store = CloudStore.open(data_dir)
        self.coord = Coordinator.open(cfg=CloudConfig(**cfg),  # type: ignore[arg-type]
                                      store=self.store,
                                      evaluate=lambda ts: {
                                          "accuracy": float(sum(t.sum() for t in ts))},
                                      publish_model=self._publish_model,
                                      publish_round=self.rounds.append)
        self.coord.recover(now=0.0)

    def _publish_model(self, version: ModelVersion) -> int:
        self.models.append(version)
        return 4 * sum(t.numel() for t in version.tensors)

    def online(self, *edges: str) -> None:
        for e in edges:
            self.coord.on_status(EdgeStatus(edge_id=e, online=True), 0.0)

    def update(self, edge: str, value: float, samples: int, base: int | None = None,
               ) -> UpdateRow:
        """Spool and record an accepted update of `value` everywhere, trained on `base` (the
        round's base version unless given), as the receiver does."""
        state = self.coord.round
        assert state is not None
        base = state.base_version if base is None else base
        delta = [torch.full(t.shape, value) for t in self.coord.current.tensors]
        blob = CODECS.build("f32").encode(delta)
        update_id = f"u-{edge}-{state.round_id}-v{base}"
        row = UpdateRow(update_id=update_id, round_id=state.round_id, edge_id=edge,
                        status="accepted", samples=samples, bytes=len(blob), codec="f32",
                        spool=self.store.spool.put(state.round_id, update_id, blob), base=base)
        self.store.journal.record_update(row)
        return row

    def check(self, edge: str, base: int) -> None:
        """The receiver's admission check of an update from `edge` on `base`, now."""
        state = self.coord.round
        assert state is not None
        rounds.check_update(state, UpdateMeta(edge_id=edge, round_id=state.round_id,
                                              base_version=base, samples=1, loss=0.1),
                            self.coord.counted)


def _moved(tensors: list[torch.Tensor], base: list[torch.Tensor], by: float) -> bool:
    """Every weight of `tensors` is the one of `base` plus `by`."""
    return all(torch.allclose(t, b + by, atol=1e-6) for t, b in zip(tensors, base, strict=True))


def test_round_waits_for_every_edge_then_publishes_the_weighted_mean(tmp_path: Path) -> None:
    """Two edges with 1 and 3 samples sending +1 and +5 move every weight by +4 (FedAvg)."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a", "b")
    base = [t.clone() for t in h.coord.current.tensors]
    h.coord.start_round(now=0.0)

    # Execute
    h.coord.on_update(h.update("a", 1.0, 1), now=1.0)
    after_one = h.coord.round
    h.coord.on_update(h.update("b", 5.0, 3), now=2.0)

    # Assert
    assert after_one is not None and after_one.status == "collecting"
    assert [r.status for r in h.rounds] == ["open", "collecting", "aggregating", "published"]
    assert h.models[-1].version == 1 and h.models[-1].parent == 0
    assert all(torch.allclose(n, b + 4.0) for n, b in zip(h.models[-1].tensors, base,
                                                            strict=True))
    assert h.rounds[-1].result["updates"] == 2


def test_progress_goes_out_as_a_count_and_the_state_on_changes_of_status(
        tmp_path: Path) -> None:
    """Each accepted update is announced as a `RoundProgress` count and saved in the journal
    at once; the round state (it goes to every edge) is announced on changes of status only:
    the first update (open -> collecting), then aggregating and published, with the count."""
    # Prepare
    h = Harness(tmp_path)
    progress: list[RoundProgress] = []
    h.coord._publish_progress = progress.append
    h.online("a", "b", "c")
    opened = h.coord.start_round(now=0.0)

    # Execute
    h.coord.on_update(h.update("a", 1.0, 1), now=1.0)
    h.coord.on_update(h.update("b", 1.0, 1), now=1.1)
    saved = h.store.journal.last_round()
    states_before_last = [(r.status, r.received) for r in h.rounds]
    h.coord.on_update(h.update("c", 1.0, 1), now=1.2)

    # Assert
    assert [(p.round_id, p.received, p.expected) for p in progress] == [
        (opened.round_id, n, 3) for n in (2, 3)]
    assert saved is not None and saved.received == 2
    assert states_before_last == [("open", 0), ("collecting", 1)]
    assert [(r.status, r.received) for r in h.rounds][2:] == [("aggregating", 3),
                                                              ("published", 3)]


def test_an_update_taken_as_it_arrived_is_folded_without_reading_its_spool(
        tmp_path: Path) -> None:
    """An update handed over decoded on acceptance (as the receiver does) is folded from
    memory: its spooled copy may be gone; one handed over without its delta is read from the
    spool. The weighted mean is the same (+1 x1 and +5 x3 move every weight by +4)."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a", "b")
    base = [t.clone() for t in h.coord.current.tensors]
    h.coord.start_round(now=0.0)
    row = h.update("a", 1.0, 1)
    delta = [torch.full(t.shape, 1.0) for t in h.coord.current.tensors]

    # Execute
    h.coord.on_update(row, now=1.0, delta=delta)
    (h.store.spool.root / row.spool).unlink()
    h.coord.on_update(h.update("b", 5.0, 3), now=2.0)

    # Assert
    assert h.rounds[-1].status == "published"
    assert _moved(h.models[-1].tensors, base, 4.0)


def test_an_update_over_the_kept_budget_is_read_from_the_spool(tmp_path: Path) -> None:
    """Deltas kept for the fold have a budget (`intake.max_total_bytes`): one that does not
    fit is not kept, so the fold reads its spooled copy (here removed: the fold fails on it
    rather than use a delta it was not allowed to keep)."""
    # Prepare: 306 float32 weights, 1,224 bytes a delta, over a 1,024-byte budget
    h = Harness(tmp_path, intake={"max_total_bytes": 1024},
                architecture=ArchitectureConfig.of(Architecture.mlp((16, 16, 2))))
    h.online("a")
    h.coord.start_round(now=0.0)
    row = h.update("a", 1.0, 1)
    (h.store.spool.root / row.spool).unlink()

    # Execute
    with pytest.raises(StoreError) as caught:
        h.coord.on_update(row, now=1.0,
                          delta=[torch.full(t.shape, 1.0) for t in h.coord.current.tensors])

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED


def test_deadline_without_quorum_fails_and_the_next_round_can_start(tmp_path: Path) -> None:
    """A round whose deadline passes with fewer than quorum updates fails with no_quorum."""
    # Prepare
    h = Harness(tmp_path, rounds={"quorum": 2, "deadline_s": 10})
    h.online("a", "b")
    h.coord.start_round(now=0.0)
    h.coord.on_update(h.update("a", 1.0, 1), now=1.0)

    # Execute
    h.coord.tick(now=5.0)
    still_open = h.coord.round
    h.coord.tick(now=11.0)
    failed = h.coord.round
    again = h.coord.start_round(now=12.0)

    # Assert
    assert still_open is not None and still_open.status == "collecting"
    assert failed is not None and failed.status == "failed" and failed.reason == "no_quorum"
    assert [m.version for m in h.models] == [0]
    assert again.status == "open" and again.base_version == 0


def test_deadline_with_quorum_aggregates_what_arrived(tmp_path: Path) -> None:
    """At the deadline, quorum reached, the round publishes with the updates it has."""
    # Prepare
    h = Harness(tmp_path, rounds={"quorum": 1, "deadline_s": 10})
    h.online("a", "b")
    h.coord.start_round(now=0.0)
    h.coord.on_update(h.update("a", 2.0, 1), now=1.0)

    # Execute
    h.coord.tick(now=10.0)

    # Assert
    assert h.coord.round is not None and h.coord.round.status == "published"
    assert h.coord.round.result["updates"] == 1


@pytest.mark.parametrize(("request_", "error", "reason"), [
    (RoundStart(codec="zip"), ConfigError, Reason.UNKNOWN_NAME),
    (RoundStart(codec="topk", codec_params={"density": 2.0}), ConfigError, Reason.BAD_CONFIG),
    (RoundStart(epochs=0), FedstreamError, Reason.BAD_CONFIG),
])
def test_bad_round_overrides_are_refused(request_: RoundStart, error: type,
                                         reason: Reason, tmp_path: Path) -> None:
    """An unknown codec, bad codec params or bad training params open no round."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a")

    # Execute
    with pytest.raises(error) as caught:
        h.coord.start_round(now=0.0, request=request_)

    # Assert
    assert caught.value.reason is reason
    assert h.coord.round is None


def test_second_round_while_one_is_open_and_no_edges_are_refused(tmp_path: Path) -> None:
    """round_in_progress while a round collects; no_edges when nobody is online."""
    # Prepare
    empty, busy = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    busy.online("a")
    busy.coord.start_round(now=0.0)

    # Execute
    reasons = []
    for h in (empty, busy):
        with pytest.raises(FedstreamError) as caught:
            h.coord.start_round(now=1.0)
        reasons.append(caught.value.reason)

    # Assert
    assert reasons == [Reason.NO_EDGES, Reason.ROUND_IN_PROGRESS]


def test_round_carries_the_chosen_codec_and_params(tmp_path: Path) -> None:
    """A codec override with its params reaches the announced round state."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a")

    # Execute
    state = h.coord.start_round(now=0.0, request=RoundStart(codec="topk",
                                                             codec_params={"density": 0.05}))

    # Assert
    assert state.codec == "topk" and dict(state.codec_params) == {"density": 0.05}


def test_async_session_publishes_a_version_every_buffer_of_updates(tmp_path: Path) -> None:
    """With buffer 2: +1 and +3 (one sample each) publish v1 = v0 + 2; then +2 and +4 on v1
    (one and three samples) publish v2 = v1 + 3.5, and the session still collects on v2."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a", "b")
    v0 = [t.clone() for t in h.coord.current.tensors]
    opened = h.coord.start_round(now=0.0, request=RoundStart(mode=RoundMode.ASYNC, buffer=2,
                                                             max_staleness=1))

    # Execute
    h.coord.on_update(h.update("a", 1.0, 1), now=1.0)
    after_one = [m.version for m in h.models]
    h.coord.on_update(h.update("b", 3.0, 1), now=2.0)
    h.coord.on_update(h.update("a", 2.0, 1), now=3.0)
    h.coord.on_update(h.update("b", 4.0, 3), now=4.0)

    # Assert
    assert (opened.status, opened.mode, opened.buffer, opened.base_version) == (
        "collecting", "async", 2, 0)
    assert after_one == [0]
    assert [m.version for m in h.models] == [0, 1, 2]
    assert _moved(h.models[1].tensors, v0, 2.0)
    assert _moved(h.models[2].tensors, v0, 2.0 + 3.5)
    state = h.coord.round
    assert state is not None and (state.status, state.base_version, state.received) == (
        "collecting", 2, 4)
    assert (state.result["versions"], state.result["updates"], state.result["version"]) == (
        2, 4, 2)
    # Announced at the open and at each version, not at each update (counts go as progress).
    assert [r.base_version for r in h.rounds] == [0, 1, 2]
    assert h.store.journal.pending(state.round_id) == []
    lineage = h.store.journal.versions()[2].lineage
    assert (lineage["mode"], lineage["edges"], lineage["staleness_max"]) == (
        "async", ["a", "b"], 0)


def test_stale_update_is_weighted_by_one_over_sqrt_two(tmp_path: Path) -> None:
    """v1 = v0 + 2 (+1 and +3, one sample each). Then c sends +4 with 2 samples on v0, one
    version behind (weight 2/sqrt(2) = sqrt(2)), and a sends +1 with 1 sample on v1 (weight
    1): v2 = v1 + (4*sqrt(2) + 1)/(sqrt(2) + 1) = v1 + 7 - 3*sqrt(2) (about 2.757), not the
    sample-weighted v1 + 3."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a", "b", "c")
    v0 = [t.clone() for t in h.coord.current.tensors]
    h.coord.start_round(now=0.0, request=RoundStart(mode=RoundMode.ASYNC, buffer=2,
                                                    max_staleness=1))
    h.coord.on_update(h.update("a", 1.0, 1), now=1.0)
    h.coord.on_update(h.update("b", 3.0, 1), now=2.0)

    # Execute
    h.check("c", base=0)
    h.coord.on_update(h.update("c", 4.0, 2, base=0), now=3.0)
    h.coord.on_update(h.update("a", 1.0, 1, base=1), now=4.0)

    # Assert
    assert [m.version for m in h.models] == [0, 1, 2]
    assert _moved(h.models[2].tensors, v0, 2.0 + 7 - 3 * math.sqrt(2))
    assert h.store.journal.versions()[2].lineage["staleness_max"] == 1


@pytest.mark.parametrize(("edge", "base", "reason"), [
    ("c", 0, Reason.STALE_ROUND),
    ("a", 1, Reason.DUPLICATE_UPDATE),
    ("a", 3, Reason.STALE_ROUND),
], ids=["two-behind", "same-edge-same-base", "future-base"])
def test_async_session_refuses_beyond_max_staleness_and_twice(
        edge: str, base: int, reason: Reason, tmp_path: Path) -> None:
    """On v2 with max_staleness 1, an update on v0 is stale_round, a second one of `a` on v1
    is duplicate_update, and one on v3 (no such version yet) is stale_round."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a", "b")
    h.coord.start_round(now=0.0, request=RoundStart(mode=RoundMode.ASYNC, buffer=2,
                                                    max_staleness=1))
    for i, (e, b) in enumerate((("a", 0), ("b", 0), ("a", 1), ("b", 1))):
        h.coord.on_update(h.update(e, 1.0, 1, base=b), now=float(i))

    # Execute
    with pytest.raises(ProtocolError) as caught:
        h.check(edge, base)

    # Assert
    assert h.coord.round is not None and h.coord.round.base_version == 2
    assert caught.value.reason is reason
    h.check("b", 2)  # while a fresh update of b is welcome
    assert h.coord.counted == {("a", 1), ("b", 1)}  # keys on v0 were dropped with the window


def test_restarted_cloud_keeps_pending_updates_and_publishes_on_the_kth(tmp_path: Path) -> None:
    """With buffer 3, two updates (+1, +4, one sample each) arrive, the cloud restarts; the
    new coordinator still holds them pending and refuses them again as duplicates, and the
    third (+7) publishes v1 = v0 + 4 from all three."""
    # Prepare
    first = Harness(tmp_path)
    first.online("a", "b", "c")
    v0 = [t.clone() for t in first.coord.current.tensors]
    session = first.coord.start_round(now=0.0, request=RoundStart(mode=RoundMode.ASYNC, buffer=3))
    first.coord.on_update(first.update("a", 1.0, 1), now=1.0)
    first.coord.on_update(first.update("b", 4.0, 1), now=2.0)
    first.store.close()

    # Execute
    again = Harness(tmp_path)
    resumed = again.coord.round
    pending = [r.edge_id for r in again.store.journal.pending(session.round_id)]
    with pytest.raises(ProtocolError) as caught:
        again.check("a", 0)
    again.coord.on_update(again.update("c", 7.0, 1), now=3.0)

    # Assert
    assert resumed is not None and (resumed.round_id, resumed.status, resumed.received) == (
        session.round_id, "collecting", 2)
    assert again.rounds[0] == resumed  # announced again on start
    assert sorted(pending) == ["a", "b"]
    assert caught.value.reason is Reason.DUPLICATE_UPDATE
    assert [m.version for m in again.models] == [0, 1]
    assert _moved(again.models[1].tensors, v0, 4.0)
    assert again.coord.round is not None and again.coord.round.base_version == 1


def test_restart_after_a_version_was_saved_but_not_announced_moves_the_session_on(
        tmp_path: Path) -> None:
    """The cloud died after saving v1 (updates marked applied) but before the session state
    moved to v1: the restarted one announces the session on v1 without aggregating again."""
    # Prepare
    first = Harness(tmp_path)
    first.online("a", "b")
    first.coord.start_round(now=0.0, request=RoundStart(mode=RoundMode.ASYNC, buffer=2))
    first.coord.on_update(first.update("a", 1.0, 1), now=1.0)
    before_version = first.coord.round
    first.coord.on_update(first.update("b", 3.0, 1), now=2.0)
    assert before_version is not None
    first.store.journal.save_round(before_version)  # as if the cloud died right there
    first.store.close()

    # Execute
    again = Harness(tmp_path)

    # Assert
    assert [m.version for m in again.models] == [1]  # the start republishes, nothing new
    state = again.coord.round
    assert state is not None and (state.status, state.base_version) == ("collecting", 1)
    assert (state.result["versions"], state.result["updates"]) == (1, 2)
    assert again.rounds[-1] == state
    assert [v.version for v in again.store.journal.versions()] == [0, 1]


def test_deadline_ends_a_session_folding_what_is_pending(tmp_path: Path) -> None:
    """With buffer 3 and a 10 s session, two updates (+1, +3) wait; at t=9 nothing happens, at
    t=10 they become v1 = v0 + 2 and the session ends published."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a", "b", "c")
    v0 = [t.clone() for t in h.coord.current.tensors]
    h.coord.start_round(now=0.0, request=RoundStart(mode=RoundMode.ASYNC, buffer=3, deadline_s=10))
    h.coord.on_update(h.update("a", 1.0, 1), now=1.0)
    h.coord.on_update(h.update("b", 3.0, 1), now=2.0)

    # Execute
    h.coord.tick(now=9.0)
    before = h.coord.round
    h.coord.tick(now=10.0)

    # Assert
    assert before is not None and before.status == "collecting"
    assert [m.version for m in h.models] == [0, 1]
    assert _moved(h.models[1].tensors, v0, 2.0)
    state = h.coord.round
    assert state is not None and state.status == "published"
    keys = ("versions", "updates", "seconds")  # seconds from the fake clock: open 0, end 10
    assert tuple(state.result[k] for k in keys) == (1, 2, 10.0)
    assert [r.status for r in h.rounds[-2:]] == ["collecting", "published"]


def test_session_that_never_published_fails_at_its_deadline(tmp_path: Path) -> None:
    """A session with no update by its deadline ends failed with no_quorum."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a")
    h.coord.start_round(now=0.0, request=RoundStart(mode=RoundMode.ASYNC, deadline_s=10))

    # Execute
    h.coord.tick(now=10.0)

    # Assert
    assert h.coord.round is not None
    assert (h.coord.round.status, h.coord.round.reason) == ("failed", "no_quorum")
    assert [m.version for m in h.models] == [0]


def test_stop_folds_a_sessions_pending_updates_and_fails_a_sync_round(tmp_path: Path) -> None:
    """Stopping a session with one pending +2 publishes v1 = v0 + 2 and ends it published;
    stopping a sync round fails it with round_stopped; stopping nothing returns the last."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a", "b")
    v0 = [t.clone() for t in h.coord.current.tensors]
    h.coord.start_round(now=0.0, request=RoundStart(mode=RoundMode.ASYNC, buffer=2))
    h.coord.on_update(h.update("a", 2.0, 1), now=1.0)

    # Execute
    session = h.coord.stop_round(now=2.0)
    again = h.coord.stop_round(now=3.0)
    h.coord.start_round(now=4.0)
    h.coord.on_update(h.update("a", 1.0, 1), now=5.0)
    sync = h.coord.stop_round(now=6.0)

    # Assert
    assert session is not None and session.status == "published"
    assert session.result["versions"] == 1 and again == session
    assert _moved(h.models[1].tensors, v0, 2.0)
    assert sync is not None and (sync.status, sync.reason) == ("failed", "round_stopped")
    assert [m.version for m in h.models] == [0, 1]


@pytest.mark.parametrize(("request_", "detail"), [
    (RoundStart(mode=RoundMode.ASYNC, fraction=0.5),
     "mode 'async' (one of ('sync', 'async')) does not take ['fraction']"),
    (RoundStart(mode=RoundMode.ASYNC, edges=("a",)),
     "mode 'async' (one of ('sync', 'async')) does not take ['edges']"),
    (RoundStart(buffer=2), "mode 'sync' (one of ('sync', 'async')) does not take ['buffer']"),
    (RoundStart(mode=RoundMode.SYNC, buffer=2, max_staleness=1),
     "does not take ['buffer', 'max_staleness']"),
    (RoundStart(mode=RoundMode.ASYNC, max_staleness=-1), "max_staleness >= 0"),
])
def test_mode_specific_overrides_are_refused_in_the_other_mode(
        request_: RoundStart, detail: str, tmp_path: Path) -> None:
    """A selection for a session, a buffer for a sync round or a negative staleness are
    bad_config, and open nothing (an unknown mode cannot be sent: its frame is refused,
    tests/shared/protocol/test_wire.py)."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a")

    # Execute
    with pytest.raises(FedstreamError) as caught:
        h.coord.start_round(now=0.0, request=request_)

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert detail in caught.value.detail
    assert h.coord.round is None


def test_buffer_zero_means_the_edges_online(tmp_path: Path) -> None:
    """A session opened with the default buffer (0) aggregates every 3 updates with 3 online."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a", "b", "c")

    # Execute
    state = h.coord.start_round(now=0.0, request=RoundStart(mode=RoundMode.ASYNC))

    # Assert
    assert (state.buffer, state.max_staleness, state.deadline) == (3, 1, 3600.0)


def test_restart_counts_the_verdicts_the_saved_round_had_not_counted_yet(
        tmp_path: Path) -> None:
    """A cloud killed after an update's verdict but before saving the round that counts it
    comes back counting it from the journal: the round still closes when both edges are in."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a", "b")
    h.coord.start_round(now=0.0)
    h.update("a", 1.0, 1)  # the verdict is recorded; the crash comes before on_update
    h.store.close()

    # Execute
    again = Harness(tmp_path)
    resumed = again.coord.round
    again.coord.on_update(again.update("b", 5.0, 3), now=2.0)

    # Assert
    assert resumed is not None and resumed.received == 1
    assert again.coord.counted >= {("a", 0)}
    final = again.coord.round
    assert final is not None and final.status == "published" and final.received == 2


def test_a_declining_edge_is_not_waited_for(tmp_path: Path) -> None:
    """A selected edge that declines (too little data) no longer holds the round open: the
    other edge's update closes it at once, and the decline is on the round."""
    # Prepare
    h = Harness(tmp_path, rounds={"deadline_s": 100})
    h.online("a", "b")
    state = h.coord.start_round(now=0.0)

    # Execute
    h.coord.on_status(EdgeStatus(edge_id="b", online=True, declined=state.round_id,
                                 decline_reason="too_little_data"), 1.0)
    declined = h.coord.round
    h.coord.on_update(h.update("a", 1.0, 1), now=2.0)

    # Assert
    assert declined is not None and declined.expected == 1
    assert dict(declined.declined) == {"b": "too_little_data"}
    assert h.rounds[-1].status == "published" and h.rounds[-1].result["updates"] == 1


def test_every_edge_declining_fails_the_round_naming_why(tmp_path: Path) -> None:
    """When every selected edge declines, the round ends at once with no_quorum, and the
    detail names each edge's reason; a decline of another round changes nothing."""
    # Prepare
    h = Harness(tmp_path, rounds={"deadline_s": 100})
    h.online("a", "b")
    state = h.coord.start_round(now=0.0)

    # Execute
    h.coord.on_status(EdgeStatus(edge_id="a", online=True, declined="another-round",
                                 decline_reason="too_little_data"), 1.0)
    unchanged = h.coord.round
    for edge in ("a", "b"):
        h.coord.on_status(EdgeStatus(edge_id=edge, online=True, declined=state.round_id,
                                     decline_reason="too_little_data"), 1.0)

    # Assert
    assert unchanged is not None and unchanged.declined == {}
    final = h.rounds[-1]
    assert final.status == "failed" and final.reason == "no_quorum"
    assert "a declined: too_little_data" in str(final.result["detail"])
    assert "b declined: too_little_data" in str(final.result["detail"])


def test_round_limits_reach_the_edges(tmp_path: Path) -> None:
    """Round limits on the data (newest N windows, last T seconds, a minimum) come from the
    config unless the request overrides them, and travel in the round's training params."""
    # Prepare
    h = Harness(tmp_path, rounds={"max_windows": 50, "min_samples": 8})
    h.online("a")

    # Execute
    state = h.coord.start_round(now=0.0, request=RoundStart(max_age_s=600.0, min_samples=4))

    # Assert
    assert (state.train.max_windows, state.train.max_age_s, state.train.min_samples) == (
        50, 600.0, 4)


def test_an_edge_that_declined_then_sends_is_waited_for_with_the_others(tmp_path: Path) -> None:
    """An edge that declined and later sends its update anyway (it restarted with more data)
    counts as answering: the round still waits for the third edge, and a decline after an
    edge's update is ignored."""
    # Prepare
    h = Harness(tmp_path, rounds={"deadline_s": 100})
    h.online("a", "b", "c")
    state = h.coord.start_round(now=0.0)

    # Execute
    h.coord.on_status(EdgeStatus(edge_id="a", online=True, declined=state.round_id,
                                 decline_reason="too_little_data"), 1.0)
    h.coord.on_update(h.update("a", 1.0, 1), now=2.0)
    h.coord.on_update(h.update("b", 1.0, 1), now=3.0)
    after_two = h.coord.round
    h.coord.on_status(EdgeStatus(edge_id="b", online=True, declined=state.round_id,
                                 decline_reason="too_little_data"), 4.0)

    # Assert
    assert after_two is not None and after_two.status == "collecting"
    assert after_two.declined == {} and after_two.expected == 3
    final = h.coord.round
    assert final is not None and final.status == "collecting" and final.declined == {}


# The round's deltas fit in what the intake may hold (each update decoded once), or do not
# (three 928-byte deltas of a 20-10-2 MLP over a 1 KiB bound: read again for the second pass).
@pytest.mark.parametrize(("arch", "max_total_bytes"), [
    (ARCH, 1 << 30), (Architecture.mlp((20, 10, 2)), 1024)], ids=["held", "read_twice"])
def test_by_default_an_inflated_claim_and_a_blown_up_update_count_as_a_typical_one(
        tmp_path: Path, arch: Architecture, max_total_bytes: int) -> None:
    """With the default defences, an edge claiming 10⁹ samples and sending its delta x100
    moves the model no more than the median edge: three edges sending +1, +1 and +100 with
    10, 10 and 10⁹ samples move every weight by +1, and the lineage says what was bounded."""
    # Prepare
    h = Harness(tmp_path, defences={}, intake={"max_total_bytes": max_total_bytes},
                architecture=ArchitectureConfig.of(arch))
    h.online("a", "b", "c")
    base = [t.clone() for t in h.coord.current.tensors]
    h.coord.start_round(now=0.0)

    # Execute
    h.coord.on_update(h.update("a", 1.0, 10), now=1.0)
    h.coord.on_update(h.update("b", 1.0, 10), now=2.0)
    h.coord.on_update(h.update("c", 100.0, 10**9), now=3.0)

    # Assert
    assert h.rounds[-1].status == "published"
    assert _moved(h.models[-1].tensors, base, 1.0)
    lineage = h.store.journal.versions()[-1].lineage
    assert (lineage["defence_capped"], lineage["defence_clipped"]) == (1, 1)

