"""The hand-off from paho's thread to the store writer: bounded by readings, dropping the
oldest when full and counting every drop, and a writer that flushes and prunes on stop."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from fedstream.edge_node.sensors.intake_queue import ReadingQueue, StoreWriter, WriterParams
from fedstream.edge_node.sensors.reading import Reading
from fedstream.edge_node.sensors.store import SampleStore, StoreParams


def _r(t: float, channel: str = "temp", value: float = 1.0) -> Reading:
    return Reading(channel=channel, t=t, value=value, unit=None)


def _ts(readings: list[Reading]) -> list[float]:
    return [r.t for r in readings]


class _CountingStore(SampleStore):
    """A real store that remembers the most rows it ever held after an `add`."""

    most = 0

    def add(self, readings: Sequence[Reading]) -> int:
        new = super().add(readings)
        self.most = max(self.most, self.count())
        return new


def test_readings_come_out_in_arrival_order_at_most_max_items_at_a_time() -> None:
    """Two offers of 2 and 3 readings drain as 4 then 1, oldest first."""
    # Prepare
    queue = ReadingQueue(10)
    queue.offer([_r(1), _r(2)])
    queue.offer([_r(3), _r(4), _r(5)])

    # Execute
    first, second = queue.drain(4, 0.0), queue.drain(4, 0.0)

    # Assert
    assert (_ts(first), _ts(second)) == ([1, 2, 3, 4], [5])
    assert queue.dropped() == {}


def test_a_full_queue_drops_the_oldest_readings_and_counts_them() -> None:
    """Capacity 3 holding 1, 2 takes 3, 4, 5 by dropping 1 and 2 as queue_full."""
    # Prepare
    queue = ReadingQueue(3)
    queue.offer([_r(1), _r(2)])

    # Execute
    accepted = queue.offer([_r(3), _r(4), _r(5)])

    # Assert
    assert accepted == 3 and len(queue) == 3
    assert _ts(queue.drain(10, 0.0)) == [3, 4, 5]
    assert queue.dropped() == {"queue_full": 2}


def test_a_batch_larger_than_the_queue_keeps_its_newest_readings() -> None:
    """A batch of 5 into an empty queue of 2 keeps its last 2 and counts 3 drops."""
    # Prepare
    queue = ReadingQueue(2)

    # Execute
    accepted = queue.offer([_r(t) for t in range(5)])

    # Assert
    assert accepted == 2 and queue.peak == 2
    assert _ts(queue.drain(10, 0.0)) == [3, 4]
    assert queue.dropped() == {"queue_full": 3}


def test_interrupt_ends_a_waiting_drain_at_once() -> None:
    """A drain waiting an hour returns empty as soon as the queue is interrupted."""
    # Prepare
    queue = ReadingQueue(4)
    got: list[list[Reading]] = []
    waiter = threading.Thread(target=lambda: got.append(queue.drain(10, 3600.0)))
    waiter.start()

    # Execute
    queue.interrupt()
    waiter.join(10.0)

    # Assert
    assert not waiter.is_alive() and got == [[]]


def test_a_flood_stays_within_the_queue_capacity_and_the_row_cap(tmp_path: Path) -> None:
    """10^5 readings offered 100 at a time never queue more than 1000 nor store more than 500
    rows; each is stored or counted as dropped, and the newest 500 are what the store keeps."""
    # Prepare
    store = _CountingStore.open(tmp_path / "samples.db", StoreParams(max_rows=500))
    queue = ReadingQueue(1000)
    writer = StoreWriter(queue, store, WriterParams(batch_size=300, prune_every_s=0.0),
                         clock=lambda: 1e5)
    writer.start()

    # Execute
    for start in range(0, 100_000, 100):
        queue.offer([_r(float(t), channel=f"c{t % 3}") for t in range(start, start + 100)])
    writer.stop(timeout_s=60.0)

    # Assert
    assert queue.peak <= 1000 and len(queue) == 0
    assert writer.written + queue.dropped().get("queue_full", 0) == 100_000
    # The last 1000 offered can never be evicted from the queue, so at least they are written,
    # and the cap keeps the 500 newest of them.
    assert writer.written >= 1000
    assert store.most <= 500 and store.count() == 500
    assert store.span() == (99_500.0, 99_999.0)
    store.close()


def test_stop_writes_what_is_queued_and_prunes_by_age(tmp_path: Path) -> None:
    """Readings queued before start are all stored by stop; ones older than max_age_s at the
    writer's clock are pruned."""
    # Prepare
    store = SampleStore.open(tmp_path / "samples.db", StoreParams(max_age_s=10.0))
    store.add([_r(80.0), _r(89.0)])
    queue = ReadingQueue(100)
    queue.offer([_r(float(t)) for t in range(90, 100)])
    writer = StoreWriter(queue, store, WriterParams(), clock=lambda: 100.0)

    # Execute
    writer.start()
    writer.stop(timeout_s=60.0)

    # Assert
    assert writer.written == 10 and len(queue) == 0
    assert store.count() == 10 and store.span() == (90.0, 99.0)
    store.close()


def test_readings_the_store_refuses_are_counted_by_reason(tmp_path: Path) -> None:
    """A NaN reading is dropped alone as non_finite; a failing store drops the batch as
    store_failed, logged once as readings_dropped, and the writer keeps going."""
    # Prepare
    store = SampleStore.open(tmp_path / "samples.db", StoreParams())
    queue = ReadingQueue(100)
    queue.offer([_r(1.0), _r(2.0, value=math.nan), _r(3.0)])
    store.close()
    writer = StoreWriter(queue, store, WriterParams())

    # Execute
    with capture_logs() as logs:
        writer.start()
        writer.stop(timeout_s=60.0)

    # Assert
    assert queue.dropped() == {"non_finite": 1, "store_failed": 2}
    dropped = {e["reason"]: e["count"] for e in logs if e["event"] == "readings_dropped"}
    assert dropped == {"non_finite": 1, "store_failed": 2}
    assert any(e["event"] == "store_prune_failed" for e in logs)


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"batch_size": 2.0},
                                 {"drain_timeout_s": 0.0}, {"prune_every_s": -1.0}])
def test_nonsense_writer_params_are_refused(bad: dict[str, object]) -> None:
    """An empty batch, a float batch size, a zero drain timeout or a negative prune interval."""
    # Prepare / Execute / Assert
    with pytest.raises(ValueError):
        WriterParams(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("capacity", [0, -1, 2.5])
def test_a_queue_needs_a_positive_int_capacity(capacity: object) -> None:
    """Capacity 0, a negative one, or a float is refused."""
    # Prepare / Execute / Assert
    with pytest.raises(ValueError):
        ReadingQueue(capacity)  # type: ignore[arg-type]
