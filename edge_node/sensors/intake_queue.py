"""The bounded hand-off from paho's network thread to the thread that writes the sample store.

paho's thread only calls `ReadingQueue.offer`, which never blocks on disk: it holds a lock for
an append. The queue holds at most `capacity` readings (not messages), so a flood cannot grow
memory. When full it drops the *oldest* queued readings: a gateway's newest readings are the
ones a forecast or a drift check needs, and the store falls behind only while the disk is
slow, so the readings lost are the ones that would be stale soonest anyway. Every drop is
counted by reason; the writer logs one summary line per prune interval, never one per drop.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from fedstream.edge_node.sensors.reading import DropReason, Reading
from fedstream.edge_node.sensors.store import SampleStore
from fedstream.shared.errors import StoreError

log = structlog.get_logger(__name__)



class ReadingQueue:
    """At most `capacity` readings waiting for the writer; the oldest are dropped when full."""

    def __init__(self, capacity: int) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1; got {capacity!r}")
        self.capacity = capacity
        self._drops: Counter[DropReason] = Counter()
        self._items: deque[Reading] = deque(maxlen=capacity)
        self._ready = threading.Condition()
        self._interrupted = False
        self._peak = 0

    def offer(self, readings: Sequence[Reading]) -> int:
        """Queue a batch without blocking, evicting the oldest readings beyond `capacity`.

        Returns:
            How many of `readings` are now queued (the last `capacity` of a larger batch).
        """
        if not readings:
            return 0
        with self._ready:
            overflow = max(0, len(self._items) + len(readings) - self.capacity)
            self._items.extend(readings)  # maxlen evicts from the left, oldest first
            self._peak = max(self._peak, len(self._items))
            self._drops[DropReason.QUEUE_FULL] += overflow
            self._ready.notify()
        return min(len(readings), self.capacity)

    def drain(self, max_items: int, timeout_s: float) -> list[Reading]:
        """Take up to `max_items` oldest readings, waiting up to `timeout_s` for the first.

        Returns:
            The readings in arrival order; empty on timeout or after `interrupt`.
        """
        with self._ready:
            self._ready.wait_for(lambda: self._items or self._interrupted, timeout_s)
            self._interrupted = False
            return [self._items.popleft() for _ in range(min(max_items, len(self._items)))]

    def interrupt(self) -> None:
        """Make the current (or next) `drain` return at once, so a stopping writer need not
        wait out its timeout."""
        with self._ready:
            self._interrupted = True
            self._ready.notify_all()

    def count_dropped(self, reason: DropReason, n: int) -> None:
        """Count `n` readings dropped for `reason` after they left the queue (the writer's)."""
        with self._ready:
            self._drops[reason] += n

    def dropped(self) -> dict[str, int]:
        """Readings dropped so far, by reason (reasons with none left out)."""
        with self._ready:
            return {reason: n for reason, n in self._drops.items() if n}

    def __len__(self) -> int:
        return len(self._items)

    @property
    def peak(self) -> int:
        """The most readings queued at once so far."""
        return self._peak


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterParams:
    """How the writer batches and prunes.

    Args:
        batch_size: Readings per store transaction at most, an int >= 1.
        drain_timeout_s: Longest wait for readings before checking for stop and prune, > 0.
        prune_every_s: Seconds between `prune` calls, >= 0 (0: after every batch).

    Raises:
        ValueError: a value out of range.
    """

    batch_size: int = 2000
    drain_timeout_s: float = 0.5
    prune_every_s: float = 60.0

    def __post_init__(self) -> None:
        if type(self.batch_size) is not int or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {self.batch_size!r}")
        if not self.drain_timeout_s > 0 or not self.prune_every_s >= 0:
            raise ValueError("drain_timeout_s must be > 0 and prune_every_s >= 0; got "
                             f"{self.drain_timeout_s!r}, {self.prune_every_s!r}")


class StoreWriter:
    """A thread that drains `queue` into `store` in batches and prunes it now and then.

    It prunes once when it starts (old readings from before a restart) and once when it stops,
    after writing what is still queued. A batch the store refuses is counted as dropped, by
    the error's reason, and the writer goes on: the next batch may succeed (a full disk).

    Args:
        queue: Where readings wait.
        store: Where they go; `prune` gets `clock()`, a wall-clock time like a reading's t.
        params: Batching and pruning.
        clock: Wall-clock seconds, `time.time` by default.
    """

    def __init__(self, queue: ReadingQueue, store: SampleStore, params: WriterParams,
                 clock: Callable[[], float] = time.time) -> None:
        self.queue, self.store, self.params, self.clock = queue, store, params, clock
        self.written = 0  # rows new to the store, read by tests and status after `stop`
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sample-store-writer",
                                        daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Write what is queued, prune, and end the thread (waiting up to `timeout_s`)."""
        self._stop.set()
        self.queue.interrupt()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        last_prune = -float("inf")
        reported: dict[str, int] = {}
        while True:
            stopping = self._stop.is_set()
            batch = self.queue.drain(self.params.batch_size,
                                     0.0 if stopping else self.params.drain_timeout_s)
            if batch:
                self._write(batch)
            if stopping and not batch:
                break
            if time.monotonic() - last_prune >= self.params.prune_every_s:
                self._prune()
                reported = self._report(reported)
                last_prune = time.monotonic()
        self._prune()
        self._report(reported)

    def _write(self, batch: list[Reading]) -> None:
        # One non-finite reading would fail its whole batch in the store: drop just that one.
        finite = [r for r in batch if math.isfinite(r.t) and math.isfinite(r.value)]
        self.queue.count_dropped(DropReason.NON_FINITE, len(batch) - len(finite))
        try:
            self.written += self.store.add(finite)
        except StoreError:
            self.queue.count_dropped(DropReason.STORE_FAILED, len(finite))
        except Exception:  # a bug must not end the writer: later batches still get stored
            log.exception("readings_write_failed", readings=len(finite))
            self.queue.count_dropped(DropReason.STORE_FAILED, len(finite))

    def _prune(self) -> None:
        try:
            self.store.prune(self.clock())
        except StoreError as err:
            log.error("store_prune_failed", path=str(self.store.path), detail=err.detail)

    def _report(self, before: dict[str, int]) -> dict[str, int]:
        now = self.queue.dropped()
        for reason, n in now.items():
            if n > before.get(reason, 0):
                log.warning("readings_dropped", reason=reason, count=n - before.get(reason, 0),
                            total=n)
        return now
