"""The label spans' writer thread: bounded, drop-oldest, counted, and never stopped by a
store that fails."""

from __future__ import annotations

import math
from pathlib import Path

from structlog.testing import capture_logs

from fedstream.edge_node.sensors.label_spans import SpanDrop
from fedstream.edge_node.sensors.span_writer import SpanWriter
from fedstream.edge_node.sensors.store import SampleStore, StoreParams
from fedstream.shared.learning.series.windows import LabelSpan


def _s(label: int) -> LabelSpan:
    return LabelSpan(label=label, start=float(label), end=label + 1.0)


def test_a_full_queue_drops_the_oldest_span_and_stop_writes_the_rest(tmp_path: Path) -> None:
    """Capacity 2 offered spans 0, 1, 2 and one malformed payload keeps 1 and 2, counts one
    queue_full and one malformed, and logs them once when it stops."""
    # Prepare
    store = SampleStore.open(tmp_path / "samples.db", StoreParams())
    writer = SpanWriter(store, capacity=2)
    for span in (_s(0), _s(1), _s(2), SpanDrop.MALFORMED):
        writer.offer(span)

    # Execute
    with capture_logs() as logs:
        writer.start()
        writer.stop(5.0)

    # Assert
    assert [s.label for s in store.spans(-math.inf, math.inf)] == [1, 2]
    assert writer.written == 2
    assert writer.dropped() == {SpanDrop.QUEUE_FULL: 1, SpanDrop.MALFORMED: 1}
    assert sorted((e["reason"], e["count"]) for e in logs
                  if e["event"] == "label_spans_dropped") == [("malformed", 1), ("queue_full", 1)]
    store.close()


def test_a_failing_store_counts_the_spans_and_the_writer_goes_on(tmp_path: Path) -> None:
    """Spans offered to a closed store are counted as store_failed; the thread ends cleanly."""
    # Prepare
    store = SampleStore.open(tmp_path / "samples.db", StoreParams())
    store.close()
    writer = SpanWriter(store)
    writer.start()

    # Execute
    writer.offer(_s(0))
    writer.offer(_s(1))
    writer.stop(5.0)

    # Assert
    assert writer.dropped() == {SpanDrop.STORE_FAILED: 2}
    assert writer.written == 0
