"""Label spans in the sample store: stored once, read in arrival order by overlap, kept across
a restart, and pruned with the readings they label."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fedstream.edge_node.sensors.reading import Reading
from fedstream.edge_node.sensors.store import SampleStore, StoreParams
from fedstream.shared.learning.series.windows import LabelSpan


def _r(channel: str, t: float, value: float = 0.0) -> Reading:
    return Reading(channel=channel, t=t, value=value, unit=None)


def _s(label: int, start: float, end: float) -> LabelSpan:
    return LabelSpan(label=label, start=start, end=end)


def _open(tmp_path: Path, **params: Any) -> SampleStore:
    return SampleStore.open(tmp_path / "samples.db", StoreParams(**params))


def test_spans_survive_a_restart_and_a_resend_changes_nothing(tmp_path: Path) -> None:
    """Spans stored before a close read back after reopening; storing one again is ignored."""
    # Prepare
    store = _open(tmp_path)
    first = store.add_spans([_s(1, 0.0, 10.0), _s(2, 10.0, 20.0), _s(1, 0.0, 10.0)])
    store.close()

    # Execute
    again = _open(tmp_path)
    resent = again.add_spans([_s(2, 10.0, 20.0)])

    # Assert
    assert (first, resent) == (2, 0)
    assert again.span_count() == 2
    assert again.spans(-math.inf, math.inf) == [_s(1, 0.0, 10.0), _s(2, 10.0, 20.0)]
    again.close()


def test_spans_read_by_overlap_in_the_order_first_stored(tmp_path: Path) -> None:
    """Of [0,10) [20,30) [5,25) (stored in that order), [10, 20) overlaps the last only and
    [9, 21) all three, returned in storage order, not by time."""
    # Prepare
    store = _open(tmp_path)
    store.add_spans([_s(1, 0.0, 10.0), _s(2, 20.0, 30.0), _s(3, 5.0, 25.0)])

    # Execute
    middle, wide = store.spans(10.0, 20.0), store.spans(9.0, 21.0)

    # Assert
    assert middle == [_s(3, 5.0, 25.0)]
    assert [s.label for s in wide] == [1, 2, 3]
    store.close()


def test_prune_drops_spans_ending_at_or_before_the_oldest_reading_kept(tmp_path: Path) -> None:
    """Readings at 10..14 with max_age_s=3 pruned at 15 keep t >= 12; of spans ending at 11,
    12 and 13 only the last stays."""
    # Prepare
    store = _open(tmp_path, max_age_s=3.0)
    store.add([_r("a", float(t)) for t in range(10, 15)])
    store.add_spans([_s(0, 0.0, 11.0), _s(1, 11.0, 12.0), _s(2, 12.0, 13.0)])

    # Execute
    gone = store.prune(15.0)

    # Assert
    assert gone == 2 and store.span() == (12.0, 14.0)
    assert store.spans(-math.inf, math.inf) == [_s(2, 12.0, 13.0)]
    assert store.span_count() == 1
    store.close()


def test_spans_go_with_readings_the_row_cap_evicted(tmp_path: Path) -> None:
    """With max_rows=2, readings 0..4 keep 3 and 4; after prune a span ending at 3 goes and
    one ending at 4 stays."""
    # Prepare
    store = _open(tmp_path, max_rows=2)
    store.add([_r("a", float(t)) for t in range(5)])
    store.add_spans([_s(0, 0.0, 3.0), _s(1, 3.0, 4.0)])

    # Execute
    store.prune(5.0)

    # Assert
    assert store.spans(-math.inf, math.inf) == [_s(1, 3.0, 4.0)]
    store.close()


def test_spans_without_readings_are_kept_until_their_age_passes(tmp_path: Path) -> None:
    """An empty store keeps a span ending at 10 at now=15 (max age 10) and drops it at 21."""
    # Prepare
    store = _open(tmp_path, max_age_s=10.0)
    store.add_spans([_s(0, 0.0, 10.0)])

    # Execute
    store.prune(15.0)
    kept = store.span_count()
    store.prune(21.0)

    # Assert
    assert (kept, store.span_count()) == (1, 0)
    store.close()


def test_the_span_cap_evicts_the_earliest_ending_spans(tmp_path: Path) -> None:
    """With max_spans=2, spans ending at 3, 1 and 2 leave those ending at 2 and 3."""
    # Prepare
    store = _open(tmp_path, max_spans=2)

    # Execute
    store.add_spans([_s(0, 0.0, 3.0), _s(1, 0.0, 1.0)])
    store.add_spans([_s(2, 0.0, 2.0)])

    # Assert
    assert store.spans(-math.inf, math.inf) == [_s(0, 0.0, 3.0), _s(2, 0.0, 2.0)]
    assert store.span_count() == 2
    store.close()


def test_span_and_neighbours_read_only_the_channels_asked(tmp_path: Path) -> None:
    """The span of channel a ignores b; a window of [2, 4) with neighbours adds a@1 and a@4,
    the readings just outside it."""
    # Prepare
    store = _open(tmp_path)
    store.add([_r("a", float(t), t * 10.0) for t in range(1, 6)] + [_r("b", 100.0)])

    # Execute
    span = store.span(["a", "silent"])
    got = store.window(["a", "silent"], 2.0, 4.0, neighbours=True)

    # Assert
    assert span == (1.0, 5.0) and store.span(["silent"]) is None
    assert got["a"][0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert got["a"][1].tolist() == [10.0, 20.0, 30.0, 40.0]
    assert all(np.size(x) == 0 for x in got["silent"])
    store.close()
