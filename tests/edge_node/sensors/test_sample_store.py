"""The edge's sample store: persistence across restarts, retention by age and row cap, the
duplicate policy, window queries, and failures that name their path."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedstream.edge_node.sensors.reading import Reading
from fedstream.edge_node.sensors.store import SampleStore, StoreParams, Synchronous
from fedstream.shared.errors import Reason, StoreError


def _r(channel: str, t: float, value: float = 0.0) -> Reading:
    return Reading(channel=channel, t=t, value=value, unit=None)


def _rows(store: SampleStore, channel: str) -> list[tuple[float, float]]:
    t, v = store.window([channel], -math.inf, math.inf)[channel]
    return list(zip(t.tolist(), v.tolist(), strict=True))


def _open(tmp_path: Path, **params: Any) -> SampleStore:
    return SampleStore.open(tmp_path / "samples.db", StoreParams(**params))


def test_readings_survive_a_close_and_reopen(tmp_path: Path) -> None:
    """What one process stored, the next one opening the same file reads back."""
    # Prepare
    store = _open(tmp_path)
    store.add([_r("temp", 1.0, 20.5), _r("temp", 2.0, 21.0), _r("hum", 1.5, 40.0)])
    store.close()

    # Execute
    again = _open(tmp_path)

    # Assert
    assert again.count() == 3
    assert _rows(again, "temp") == [(1.0, 20.5), (2.0, 21.0)]
    assert _rows(again, "hum") == [(1.5, 40.0)]
    again.close()


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    """The store's file is a WAL database, so a reader never waits for the writer."""
    # Prepare
    _open(tmp_path, synchronous=Synchronous.FULL).close()

    # Execute
    mode = sqlite3.connect(tmp_path / "samples.db").execute("PRAGMA journal_mode").fetchone()

    # Assert
    assert mode == ("wal",)


def test_a_duplicate_channel_and_time_keeps_the_first_value(tmp_path: Path) -> None:
    """A second reading of a stored (channel, t) is ignored, within a batch and across them."""
    # Prepare
    store = _open(tmp_path)

    # Execute
    first = store.add([_r("temp", 1.0, 20.0), _r("temp", 1.0, 99.0), _r("hum", 1.0, 40.0)])
    second = store.add([_r("temp", 1.0, 77.0), _r("temp", 2.0, 21.0)])

    # Assert
    assert (first, second) == (2, 1)
    assert _rows(store, "temp") == [(1.0, 20.0), (2.0, 21.0)]
    assert store.count() == 3
    store.close()


def test_a_large_batch_keeps_the_first_of_a_repeated_key_and_counts_new_rows(
        tmp_path: Path) -> None:
    """A batch of 341 readings (several rows per INSERT) with t=5 given twice, the second
    with another value, stores 340 rows and the first value; the same batch again adds none."""
    # Prepare
    store = _open(tmp_path)
    batch = [_r("a", float(t), 1.0) for t in range(340)]
    batch.insert(200, _r("a", 5.0, 99.0))

    # Execute
    first, again = store.add(batch), store.add(batch)

    # Assert
    assert (first, again, store.count()) == (340, 0, 340)
    assert _rows(store, "a")[5] == (5.0, 1.0)
    store.close()


def test_a_window_is_time_ordered_half_open_and_per_channel(tmp_path: Path) -> None:
    """A window holds since <= t < until, sorted by t, and an empty pair for a silent channel."""
    # Prepare
    store = _open(tmp_path)
    store.add([_r("a", t, t * 10) for t in (5.0, 1.0, 3.0, 2.0, 4.0)] + [_r("b", 2.5, -1.0)])

    # Execute
    got = store.window(["a", "b", "silent"], 2.0, 5.0)

    # Assert
    t, v = got["a"]
    assert t.dtype == np.float64 and v.dtype == np.float64
    assert t.tolist() == [2.0, 3.0, 4.0] and v.tolist() == [20.0, 30.0, 40.0]
    assert [x.tolist() for x in got["b"]] == [[2.5], [-1.0]]
    assert [x.shape for x in got["silent"]] == [(0,), (0,)]
    store.close()


def test_prune_deletes_readings_older_than_max_age(tmp_path: Path) -> None:
    """With max_age_s=10 at now=15, readings with t < 5 go and t >= 5 stay."""
    # Prepare
    store = _open(tmp_path, max_age_s=10.0)
    store.add([_r("a", 3.0), _r("a", 4.9), _r("b", 5.0), _r("a", 12.0)])

    # Execute
    gone = store.prune(15.0)

    # Assert
    assert gone == 2
    assert store.count() == 2 and store.span() == (5.0, 12.0)
    store.close()


def test_the_row_cap_evicts_the_oldest_rows_across_channels(tmp_path: Path) -> None:
    """With max_rows=3, adding a@1, b@2, b@3, a@4, b@5 keeps b@3, a@4 and b@5."""
    # Prepare
    store = _open(tmp_path, max_rows=3)
    store.add([_r("a", 1.0), _r("b", 2.0)])

    # Execute
    new = store.add([_r("b", 3.0), _r("a", 4.0), _r("b", 5.0)])

    # Assert
    assert new == 3 and store.count() == 3
    assert [t for t, _ in _rows(store, "a")] == [4.0]
    assert [t for t, _ in _rows(store, "b")] == [3.0, 5.0]
    store.close()


def test_prune_applies_a_smaller_cap_to_a_reopened_store(tmp_path: Path) -> None:
    """A store reopened with max_rows=2 keeps only its 2 newest rows after `prune`."""
    # Prepare
    _open(tmp_path).add([_r("a", float(t)) for t in range(5)])
    store = _open(tmp_path, max_rows=2)

    # Execute
    gone = store.prune(4.0)

    # Assert
    assert gone == 3 and store.count() == 2 and store.span() == (3.0, 4.0)
    store.close()


def test_an_empty_store_has_no_span_and_no_rows(tmp_path: Path) -> None:
    """A new store counts 0 rows and has no span; prune on it deletes nothing."""
    # Prepare
    store = _open(tmp_path)

    # Execute
    gone = store.prune(1e9)

    # Assert
    assert (store.count(), store.span(), gone) == (0, None, 0)
    store.close()


def test_a_non_finite_reading_fails_its_batch_before_anything_is_written(tmp_path: Path) -> None:
    """A NaN value is a caller's error: ValueError, and none of the batch is stored."""
    # Prepare
    store = _open(tmp_path)

    # Execute / Assert
    with pytest.raises(ValueError, match="not finite"):
        store.add([_r("a", 1.0), _r("a", 2.0, math.nan)])
    assert store.count() == 0
    store.close()


@pytest.mark.parametrize("make_bad", ["directory", "parent_is_file", "not_a_database"])
def test_an_unusable_path_is_a_store_error_naming_it(tmp_path: Path, make_bad: str) -> None:
    """A directory at the file's path, a regular file as its parent, or garbage bytes in the
    file each raise StoreError(store_failed) with the path in the message."""
    # Prepare
    path = tmp_path / "samples.db"
    if make_bad == "directory":
        path.mkdir()
    elif make_bad == "parent_is_file":
        (tmp_path / "plain").write_text("x")
        path = tmp_path / "plain" / "samples.db"
    else:
        path.write_bytes(b"this is not an sqlite file, just some bytes" * 100)

    # Execute
    with pytest.raises(StoreError) as caught:
        SampleStore.open(path, StoreParams())

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert str(path) in str(caught.value)


def test_a_closed_store_raises_store_error(tmp_path: Path) -> None:
    """Writing after `close` is a StoreError, not a bare sqlite3 error."""
    # Prepare
    store = _open(tmp_path)
    store.close()

    # Execute / Assert
    with pytest.raises(StoreError, match=r"samples\.db"):
        store.add([_r("a", 1.0)])


@pytest.mark.parametrize("bad", [{"max_rows": 0}, {"max_rows": True}, {"max_rows": 1.5},
                                 {"max_age_s": 0.0}, {"max_age_s": -1.0},
                                 {"max_age_s": math.nan}, {"synchronous": "OFF"}])
def test_nonsense_params_are_refused(bad: dict[str, object]) -> None:
    """A cap below 1, a non-int cap, a non-positive or NaN age, or an unknown sync mode."""
    # Prepare / Execute / Assert
    with pytest.raises(ValueError):
        StoreParams(**bad)  # type: ignore[arg-type]
