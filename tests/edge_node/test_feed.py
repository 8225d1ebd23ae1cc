"""Where a round's data comes from: the limits a round sets, and the edge declining a round
it has too little data for (in-process, against a real broker)."""

from __future__ import annotations

import queue
from collections.abc import Callable

import numpy as np
import pytest

from fedstream.edge_node.daemon import EdgeDaemon
from fedstream.edge_node.feed import DatasetFeed
from fedstream.edge_node.model_sync import HeldModel
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.backends import select_backend
from fedstream.shared.learning.model import spec_of, tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.sources import Dataset
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.control import (
    EdgeStatus,
    RoundMode,
    RoundState,
    RoundStatus,
    TrainParams,
)
from fedstream.shared.protocol.mqtt import Inbound
from fedstream.shared.protocol.topics import Topics

ARCH = Architecture.mlp((64, 16, 10))
Spy = Callable[..., "queue.Queue[Inbound]"]  # the `spy` fixture of tests/edge_node/conftest.py


def _feed(rows: int = 10) -> DatasetFeed:
    features = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    return DatasetFeed(Dataset(features=features, labels=np.arange(rows) % 3, num_classes=3),
                       "table")


def _train(**limits: int | float) -> TrainParams:
    return TrainParams(epochs=1, lr=0.1, momentum=0.0, batch_size=4, **limits)  # type: ignore[arg-type]


def test_a_data_set_gives_its_newest_rows_under_max_windows() -> None:
    """`max_windows` keeps the last rows of a data set; 0 keeps all; age does not apply."""
    # Prepare
    feed = _feed()

    # Execute
    newest = feed.round_data(_train(max_windows=3))
    every = feed.round_data(_train(max_age_s=5.0))

    # Assert
    assert newest.features[:, 0].tolist() == [28.0, 32.0, 36.0]
    assert newest.labels is not None and newest.labels.tolist() == [1, 2, 0]
    assert len(every) == 10


def test_fewer_samples_than_the_round_needs_is_too_little_data() -> None:
    """A round asking for more samples than the limits leave gets too_little_data."""
    # Prepare
    feed = _feed()

    # Execute
    with pytest.raises(ConfigError) as info:
        feed.round_data(_train(max_windows=4, min_samples=5))

    # Assert
    assert info.value.reason is Reason.TOO_LITTLE_DATA
    assert "4 samples, the round needs 5" in info.value.detail


def test_a_model_that_does_not_fit_the_data_is_a_config_error() -> None:
    """The feed refuses a model whose input width differs from the data's."""
    # Prepare / Execute / Assert
    with pytest.raises(ConfigError, match="4 features"):
        _feed().check(ARCH)


@pytest.fixture
def edge(connected_edge: EdgeDaemon) -> EdgeDaemon:
    """The connected edge with its backend chosen (stock torch, fp32)."""
    connected_edge.backend = select_backend(preference="torch", precision="fp32")
    return connected_edge


@pytest.fixture
def statuses(edge: EdgeDaemon, spy: Spy) -> queue.Queue[Inbound]:
    """What the edge publishes on its status topic and its update topic."""
    topics = Topics(edge.cfg.federation)
    return spy(topics.status("e1"), topics.update(edge.cfg.model, "e1"))


def test_an_edge_with_too_little_data_declines_instead_of_sending(
    edge: EdgeDaemon, statuses: queue.Queue[Inbound],
) -> None:
    """A round needing more samples than the edge holds is answered by a status naming the
    round and too_little_data; no update is kept or sent."""
    # Prepare
    model = build_model(ARCH, seed=0)
    held = HeldModel(version=0, arch=ARCH, spec=spec_of(model), tensors=tensors_of(model))
    state = RoundState(round_id="r9", model=edge.cfg.model, status=RoundStatus.OPEN,
                       base_version=0, deadline=1e12, train=_train(min_samples=100_000),
                       codec="f32", selection=("e1",), quorum=1)

    # Execute
    edge._train_and_send(state, held)
    got = wire.unpack(statuses.get(timeout=10).payload)

    # Assert
    assert isinstance(got, EdgeStatus)
    assert (got.declined, got.decline_reason) == ("r9", "too_little_data")
    assert got.data["source"] == "digits" and int(got.data["samples"]) > 0
    assert edge.outbox.pending() == []
    assert statuses.empty()


def _held(arch: Architecture = ARCH) -> HeldModel:
    model = build_model(ARCH, seed=0)
    return HeldModel(version=0, arch=arch, spec=spec_of(model), tensors=tensors_of(model))


def _session(train: TrainParams, model: str) -> RoundState:
    return RoundState(round_id="s1", model=model, status=RoundStatus.COLLECTING,
                      base_version=0, deadline=1e12, train=train, codec="f32", selection=(),
                      quorum=1, mode=RoundMode.ASYNC, buffer=1, max_staleness=1)


def test_a_declined_session_is_trained_once_the_data_is_there(
    edge: EdgeDaemon, statuses: queue.Queue[Inbound],
) -> None:
    """An async session an edge declined for too little data is tried again on the next
    pass, and trains and sends its update once the feed holds enough."""
    # Prepare
    edge.sync.current = _held()
    digits = edge.feed
    assert isinstance(digits, DatasetFeed)
    edge.feed = DatasetFeed(digits.data.take(np.arange(10)), "digits")
    session = _session(_train(min_samples=50), edge.cfg.model)

    # Execute
    edge._on_round(session)
    declined = wire.unpack(statuses.get(timeout=10).payload)
    edge.feed = digits  # the store filled meanwhile
    edge._maybe_train()

    # Assert
    assert isinstance(declined, EdgeStatus) and declined.declined == "s1"
    assert len(edge.outbox.pending()) == 1
    assert edge._last_trained == "s1"


def test_a_model_the_edge_cannot_build_is_declined_with_its_reason(
    edge: EdgeDaemon, statuses: queue.Queue[Inbound],
) -> None:
    """A manifest naming a family this edge lacks (a plug-in not installed here) declines
    the round with unknown_name instead of leaving it unanswered."""
    # Prepare
    missing = Architecture(family="not_installed", input_shape=(64,), outputs=10,
                           task=ARCH.task)
    state = RoundState(round_id="r7", model=edge.cfg.model, status=RoundStatus.OPEN,
                       base_version=0, deadline=1e12, train=_train(), codec="f32",
                       selection=("e1",), quorum=1)

    # Execute
    declined = edge._train_and_send(state, _held(missing))
    got = wire.unpack(statuses.get(timeout=10).payload)

    # Assert
    assert declined is False
    assert isinstance(got, EdgeStatus)
    assert (got.declined, got.decline_reason) == ("r7", "unknown_name")
    assert edge.outbox.pending() == []
