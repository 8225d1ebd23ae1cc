"""The promotion gate inside the coordinator: real journal, replay buffer, evaluation windows
and digits data; candidates made by hand-made updates, so each verdict is known in advance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from fedstream.cloud import rounds
from fedstream.cloud.config import ArchitectureConfig, CloudConfig
from fedstream.cloud.continual_stage import ContinualStage
from fedstream.cloud.coordinator import Coordinator
from fedstream.cloud.data_intake import DataIntake
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.store import CloudStore
from fedstream.cloud.versions import ModelVersion
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.control import EdgeStatus, RoundMode, RoundState

ARCH = Architecture.mlp((64, 32, 10))
ARCH_CFG = ArchitectureConfig.of(ARCH)


def _half_accuracy(_tensors: list[torch.Tensor]) -> dict[str, float]:
    return {"accuracy": 0.5}


def _trained() -> list[torch.Tensor]:
    """A digits MLP trained for a few seeded epochs (about 90% accurate)."""
    data = SOURCES.build("digits").load()
    x, y = torch.tensor(data.features), torch.tensor(data.labels)
    model = build_model(ARCH, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        for idx in torch.randperm(len(y), generator=gen).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return tensors_of(model)


TRAINED = _trained()


class Cloud:
    """A coordinator with the continual stage (gate on, no fine-tuning) over a real store."""

    def __init__(self, data_dir: Path, **gate: float) -> None:
        self.models: list[ModelVersion] = []
        self.rounds: list[RoundState] = []
        self.cfg = CloudConfig(architecture=ARCH_CFG, data_dir=data_dir,
                               continual={"enabled": True, "gate": gate})  # type: ignore[arg-type]
        self.store = CloudStore.open(data_dir)
        self.data = DataIntake.open(self.cfg, self.store)
        stage = ContinualStage(data=self.data, arch=ARCH, cfg=self.cfg.continual, tuner=None)
        self.coord = Coordinator.open(cfg=self.cfg, store=self.store, evaluate=_half_accuracy,
                                      publish_model=self._publish, publish_round=self.rounds.append,
                                      stage=stage)
        self.coord.recover(now=0.0)
        self.coord.on_status(EdgeStatus(edge_id="e1", online=True), 0.0)

    def _publish(self, version: ModelVersion) -> int:
        self.models.append(version)
        return 1

    def close(self) -> None:
        self.data.windows.close()
        self.data.replay.close()
        self.store.close()

    def add_windows(self, *names: str) -> None:
        """One evaluation window per name, each a disjoint slice of the digits test split."""
        test = SOURCES.build("digits", split="test").load()
        for i, name in enumerate(names):
            part = slice(i * 100, (i + 1) * 100)
            self.data.add(test.features[part], test.labels[part], now=float(i), window=name)

    def round_towards(self, target: list[torch.Tensor]) -> RoundState:
        """One round whose only update moves the served model onto `target`."""
        self.coord.start_round(now=0.0)
        final = self.update_towards(target)
        assert final.terminal
        return final

    def update_towards(self, target: list[torch.Tensor]) -> RoundState:
        """Send the open round or session one update moving the served model onto `target`."""
        state = self.coord.round
        assert state is not None
        delta = [t - c for t, c in zip(target, self.coord.current.tensors, strict=True)]
        blob = CODECS.build("f32").encode(delta)
        uid = f"u-{state.round_id}-{state.base_version}"
        row = UpdateRow(update_id=uid, round_id=state.round_id, edge_id="e1", status="accepted",
                        samples=10, bytes=len(blob), codec="f32",
                        spool=self.store.spool.put(state.round_id, uid, blob),
                        base=state.base_version)
        self.store.journal.record_update(row)
        self.coord.on_update(row, now=1.0)
        after = self.coord.round
        assert after is not None
        return after


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    """A cloud with three evaluation windows and tolerances of 2 points."""
    opened = Cloud(tmp_path / "cloud", tolerance_newest=0.02, tolerance_past=0.02)
    opened.add_windows("w1", "w2", "w3")
    yield opened
    opened.close()


def _zeroed() -> list[torch.Tensor]:
    """A damaged model: every weight 0, so it predicts class 0 for everything."""
    return [torch.zeros_like(t) for t in TRAINED]


def test_good_candidate_is_promoted_and_scored_on_every_window(cloud: Cloud) -> None:
    """A trained candidate beats the random initial model everywhere: served, with its row
    in the accuracy matrix and its metrics in the registry."""
    # Prepare / Execute
    final = cloud.round_towards(TRAINED)

    # Assert
    assert final.status == "published" and final.result["candidate"] == 1
    assert cloud.coord.current.version == 1 and cloud.models[-1].version == 1
    evals = cloud.store.journal.evals()
    assert list(evals[1]) == ["w1", "w2", "w3"] and min(evals[1].values()) > 0.8
    row = cloud.store.journal.versions()[-1]
    assert row.promoted and row.lineage["metrics"]["windows"] == 3
    assert row.lineage["metrics"]["avg_accuracy"] == pytest.approx(
        sum(evals[1].values()) / 3, abs=1e-4)


def test_damaged_candidate_is_rejected_kept_and_not_served(cloud: Cloud) -> None:
    """After a good version, a zeroed candidate loses ~80 points on the newest window: the
    round fails with regressed_newest, the candidate is kept as rejected, v1 stays served."""
    # Prepare
    cloud.round_towards(TRAINED)
    published = len(cloud.models)

    # Execute
    final = cloud.round_towards(_zeroed())

    # Assert
    assert final.status == "failed" and final.reason == Reason.REGRESSED_NEWEST
    assert final.result["candidate"] == 2 and final.result["version"] == 1
    assert "w3" in str(final.result["detail"])
    assert cloud.coord.current.version == 1 and len(cloud.models) == published
    rejected = cloud.store.journal.versions()[-1]
    assert (rejected.version, rejected.status, rejected.reason) == (2, "rejected",
                                                                   "regressed_newest")
    assert rejected.lineage["metrics"]["forgetting"] > 0.5


def test_forgetting_only_the_past_is_rejected_as_regressed_past(tmp_path: Path) -> None:
    """With a loose tolerance on the newest window, the zeroed candidate still fails on the
    mean of the past windows."""
    # Prepare
    cloud = Cloud(tmp_path / "c", tolerance_newest=1.0, tolerance_past=0.02)
    cloud.add_windows("w1", "w2", "w3")
    try:
        cloud.round_towards(TRAINED)

        # Execute
        final = cloud.round_towards(_zeroed())
        served = cloud.coord.current.version
    finally:
        cloud.close()

    # Assert
    assert final.status == "failed" and final.reason == Reason.REGRESSED_PAST
    assert "past windows" in str(final.result["detail"]) and served == 1


def test_promote_by_hand_serves_the_rejected_candidate(cloud: Cloud) -> None:
    """`model promote 2` serves the rejected v2 itself (it is newer than v1); promoting a
    promoted version is refused with not_candidate."""
    # Prepare
    cloud.round_towards(TRAINED)
    cloud.round_towards(_zeroed())

    # Execute
    served = cloud.coord.promote(2)
    with pytest.raises(FedstreamError) as again:
        cloud.coord.promote(2)

    # Assert
    assert served.version == 2 and cloud.coord.current.version == 2
    assert cloud.models[-1].version == 2
    assert all(t.abs().max() < 1e-6 for t in cloud.models[-1].tensors)
    row = cloud.store.journal.versions()[-1]
    assert (row.status, row.reason) == ("promoted", "regressed_newest")  # the audit trail
    assert row.lineage["promoted_by"] == "hand"
    assert again.value.reason is Reason.NOT_CANDIDATE


def test_restart_serves_the_last_promoted_version_not_the_rejected_one(tmp_path: Path) -> None:
    """The served model survives a restart; a rejected candidate never becomes it, and the
    next candidate takes the next number."""
    # Prepare
    first = Cloud(tmp_path / "c", tolerance_newest=0.02, tolerance_past=0.02)
    first.add_windows("w1", "w2", "w3")
    first.round_towards(TRAINED)
    first.round_towards(_zeroed())
    first.close()

    # Execute
    again = Cloud(tmp_path / "c", tolerance_newest=0.02, tolerance_past=0.02)
    try:
        served = again.coord.current
        final = again.round_towards(TRAINED)
    finally:
        again.close()

    # Assert
    assert served.version == 1
    assert all(torch.allclose(a, b, atol=1e-6)
               for a, b in zip(served.tensors, TRAINED, strict=True))
    assert final.result["candidate"] == 3


def test_async_session_ends_when_the_gate_refuses_a_candidate(cloud: Cloud) -> None:
    """An async session publishes a good version, then ends failed on a refused one: its edges
    already trained on the served version and would wait forever for a new one."""
    # Prepare
    cloud.coord.start_round(now=0.0, request=RoundStart(mode=RoundMode.ASYNC, buffer=1,
                                                        max_staleness=1))

    # Execute
    moved = cloud.update_towards(TRAINED)
    ended = cloud.update_towards(_zeroed())

    # Assert
    assert moved.status == "collecting" and moved.base_version == 1
    assert ended.status == "failed" and ended.reason == Reason.REGRESSED_NEWEST
    assert ended.result["versions"] == 1 and ended.result["candidate"] == 2
    assert cloud.coord.current.version == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_restart_after_a_refused_candidate_ends_the_round_with_the_gates_reason(
        tmp_path: Path, mode: str) -> None:
    """The cloud dies after saving a rejected candidate, before saving the round's end: the
    restarted cloud ends the round failed with the gate's reason and still serves v1."""
    # Prepare
    first = Cloud(tmp_path / "c", tolerance_newest=0.02, tolerance_past=0.02)
    first.add_windows("w1", "w2", "w3")
    first.round_towards(TRAINED)
    first.coord.start_round(now=0.0, request=RoundStart(mode=RoundMode.ASYNC, buffer=1)
                            if mode == "async" else None)
    cut = first.coord.round
    assert cut is not None
    first.update_towards(_zeroed())
    # What the journal holds if the process died right after the candidate was saved.
    first.store.journal.save_round(cut if mode == "async" else rounds.to_aggregating(cut))
    first.close()

    # Execute
    again = Cloud(tmp_path / "c", tolerance_newest=0.02, tolerance_past=0.02)
    try:
        final = again.coord.round
        served = again.coord.current.version
        versions = again.store.journal.versions()
    finally:
        again.close()

    # Assert
    assert final is not None and final.status == "failed"
    assert final.reason == Reason.REGRESSED_NEWEST and final.result["candidate"] == 2
    assert served == 1 and len(versions) == 3  # v0, v1 and the one rejected candidate


def test_promoting_an_older_candidate_republishes_it_as_a_new_version(cloud: Cloud) -> None:
    """A rejected v2 promoted after v3 was served comes back as v4 with v2's weights, scored
    on the windows, its lineage naming where it came from."""
    # Prepare
    cloud.round_towards(TRAINED)
    cloud.round_towards(_zeroed())
    cloud.round_towards(TRAINED)

    # Execute
    served = cloud.coord.promote(2)

    # Assert
    row = cloud.store.journal.versions()[-1]
    assert served.version == 4 and served.parent == 2 and row.lineage["promoted_from"] == 2
    assert all(t.abs().max() < 1e-6 for t in served.tensors)
    assert list(cloud.store.journal.evals()[4]) == ["w1", "w2", "w3"]
