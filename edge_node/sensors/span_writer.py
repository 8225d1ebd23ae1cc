"""The label spans' hand-off from paho's thread to the sample store, beside the readings' writer.

Spans are few (one per annotated activity), but paho's thread still must not touch SQLite:
`offer` appends to a bounded deque and returns. A thread writes what is queued in one
transaction per wake-up. A flood of spans (a rogue labeller) drops the oldest queued ones,
counted; drops and parse failures are logged as one summary line per interval, not per span.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import structlog

from fedstream.edge_node.sensors.label_spans import SpanDrop
from fedstream.edge_node.sensors.store import SampleStore
from fedstream.shared.errors import StoreError
from fedstream.shared.learning.series.windows import LabelSpan

log = structlog.get_logger(__name__)


class SpanWriter:
    """A bounded queue of label spans and the thread that stores them.

    Args:
        store: Where the spans go.
        capacity: Spans queued at most; the oldest are dropped beyond it.
        report_every_s: Seconds between drop summaries in the log.
    """

    def __init__(self, store: SampleStore, capacity: int = 10_000,
                 report_every_s: float = 60.0) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1; got {capacity!r}")
        self.store, self.capacity, self.report_every_s = store, capacity, report_every_s
        self.written = 0  # spans new to the store
        self._items: deque[LabelSpan] = deque(maxlen=capacity)
        self._drops: Counter[SpanDrop] = Counter()
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="label-span-writer", daemon=True)

    def offer(self, span: LabelSpan | SpanDrop) -> None:
        """Queue a span (dropping the oldest when full), or count why a payload gave none."""
        with self._ready:
            if isinstance(span, SpanDrop):
                self._drops[span] += 1
                return
            if len(self._items) == self.capacity:
                self._drops[SpanDrop.QUEUE_FULL] += 1
            self._items.append(span)
            self._ready.notify()

    def dropped(self) -> dict[str, int]:
        """Label payloads and spans dropped so far, by reason."""
        with self._ready:
            return {reason: n for reason, n in self._drops.items() if n}

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Write what is queued and end the thread (waiting up to `timeout_s`)."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        reported: dict[str, int] = {}
        last_report = time.monotonic()
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._items or self._stopping,
                                     self.report_every_s)
                batch = list(self._items)
                self._items.clear()
                stopping = self._stopping
            if batch:
                self._write(batch)
            if stopping or time.monotonic() - last_report >= self.report_every_s:
                reported, last_report = self._report(reported), time.monotonic()
            if stopping:
                return

    def _write(self, batch: list[LabelSpan]) -> None:
        try:
            self.written += self.store.add_spans(batch)
        except StoreError:  # counted; the next report names it, the next batch may succeed
            with self._ready:
                self._drops[SpanDrop.STORE_FAILED] += len(batch)

    def _report(self, before: dict[str, int]) -> dict[str, int]:
        now = self.dropped()
        for reason, n in now.items():
            if n > before.get(reason, 0):
                log.warning("label_spans_dropped", reason=reason,
                            count=n - before.get(reason, 0), total=n)
        return now
