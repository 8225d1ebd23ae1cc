"""The coordinator's round lifecycle, driven directly with hand-made updates and a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedstream.cloud.config import CloudConfig
from fedstream.cloud.coordinator import Coordinator, ModelVersion
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.store import CloudStore
from fedstream.shared.codecs import CODECS
from fedstream.shared.control import EdgeStatus, RoundState
from fedstream.shared.errors import ConfigError, FedstreamError, Reason

LAYERS = (4, 3, 2)


class Harness:
    """A coordinator over a real store in a temp dir; published models and rounds recorded."""

    def __init__(self, data_dir: Path, **cfg: object) -> None:
        self.models: list[ModelVersion] = []
        self.rounds: list[RoundState] = []
        self.store = CloudStore.open(data_dir)
        self.coord = Coordinator(cfg=CloudConfig(layers=LAYERS, **cfg),  # type: ignore[arg-type]
                                 store=self.store,
                                 evaluate=lambda ts: float(sum(t.sum() for t in ts)),
                                 publish_model=self._publish_model,
                                 publish_round=self.rounds.append)
        self.coord.start(now=0.0)

    def _publish_model(self, version: ModelVersion) -> int:
        self.models.append(version)
        return 4 * sum(t.numel() for t in version.tensors)

    def online(self, *edges: str) -> None:
        for e in edges:
            self.coord.on_status(EdgeStatus(edge_id=e, online=True))

    def update(self, edge: str, value: float, samples: int) -> UpdateRow:
        """Spool and record an accepted update of `value` everywhere, as the receiver does."""
        state = self.coord.round
        assert state is not None
        delta = [torch.full(t.shape, value) for t in self.coord.current.tensors]
        blob = CODECS.build("f32").encode(delta)
        update_id = f"u-{edge}-{state.round_id}"
        row = UpdateRow(update_id=update_id, round_id=state.round_id, edge_id=edge,
                        status="accepted", samples=samples, bytes=len(blob), codec="f32",
                        spool=self.store.spool.put(state.round_id, update_id, blob))
        self.store.journal.record_update(row)
        return row


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
    assert [r.status for r in h.rounds] == ["open", "collecting", "collecting", "aggregating",
                                            "published"]
    assert h.models[-1].version == 1 and h.models[-1].parent == 0
    assert all(torch.allclose(n, b + 4.0) for n, b in zip(h.models[-1].tensors, base,
                                                            strict=True))
    assert h.rounds[-1].result["updates"] == 2


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


@pytest.mark.parametrize(("overrides", "error", "reason"), [
    ({"codec": "zip"}, ConfigError, Reason.UNKNOWN_NAME),
    ({"codec": "topk", "codec.density": 2.0}, ConfigError, Reason.BAD_CONFIG),
    ({"epochs": 0}, FedstreamError, Reason.BAD_CONFIG),
])
def test_bad_round_overrides_are_refused(overrides: dict[str, object], error: type,
                                         reason: Reason, tmp_path: Path) -> None:
    """An unknown codec, bad codec params or bad training params open no round."""
    # Prepare
    h = Harness(tmp_path)
    h.online("a")

    # Execute
    with pytest.raises(error) as caught:
        h.coord.start_round(now=0.0, **overrides)  # type: ignore[arg-type]

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
    state = h.coord.start_round(now=0.0, codec="topk", **{"codec.density": 0.05})

    # Assert
    assert state.codec == "topk" and dict(state.codec_params) == {"density": 0.05}
