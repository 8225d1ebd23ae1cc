"""Label payloads on the label topic: JSON and msgpack spans, and every bad one counted by
reason instead of raised."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgpack
import pytest

from fedstream.edge_node.sensors.label_spans import SpanDrop, parse_span
from fedstream.shared.learning.series.windows import LabelSpan


@pytest.mark.parametrize("payload", [
    b'{"label": 2, "from": 100, "to": 160.5}',
    b'  \n{"to": 160.5, "from": 100.0, "label": 2.0, "by": "operator"}',
    msgpack.packb({"label": 2, "from": 100, "to": 160.5}),
    msgpack.packb({"label": 2, "from": datetime.fromtimestamp(100, UTC),
                   "to": datetime.fromtimestamp(160.5, UTC)}, datetime=True),
    json.dumps({"label": 2, "from": "1970-01-01T00:01:40+00:00",
                "to": "1970-01-01T00:02:40.5Z"}).encode(),
])
def test_a_span_reads_the_same_from_json_msgpack_numbers_and_times(payload: bytes) -> None:
    """JSON, msgpack, integral-float labels, extra keys, msgpack timestamps and ISO strings
    all give label 2 over [100, 160.5)."""
    # Execute
    span = parse_span(payload)

    # Assert
    assert span == LabelSpan(label=2, start=100.0, end=160.5)


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", SpanDrop.MALFORMED),
    (b"not json", SpanDrop.MALFORMED),
    (b'{"label": 1, "from": 1', SpanDrop.MALFORMED),
    (b"[1, 2, 3]", SpanDrop.MALFORMED),
    (msgpack.packb([1, 2, 3]), SpanDrop.MALFORMED),
    (b'{"label": 1, "from": 1}', SpanDrop.MALFORMED),
    (b'{"label": -1, "from": 1, "to": 2}', SpanDrop.MALFORMED),
    (b'{"label": 1.5, "from": 1, "to": 2}', SpanDrop.MALFORMED),
    (b'{"label": true, "from": 1, "to": 2}', SpanDrop.MALFORMED),
    (b'{"label": "walk", "from": 1, "to": 2}', SpanDrop.MALFORMED),
    (b'{"label": 1048576, "from": 1, "to": 2}', SpanDrop.MALFORMED),
    (b'{"label": 1, "from": NaN, "to": 2}', SpanDrop.MALFORMED),  # not JSON at all
    (b'{"label": 1, "from": 1e999, "to": 2}', SpanDrop.NON_FINITE),
    (msgpack.packb({"label": 1, "from": float("nan"), "to": 2}), SpanDrop.NON_FINITE),
    (msgpack.packb({"label": float("inf"), "from": 1, "to": 2}), SpanDrop.NON_FINITE),
    (b'{"label": 1, "from": "yesterday", "to": 2}', SpanDrop.NO_TIME),
    (b'{"label": 1, "from": "2026-01-01T00:00:00", "to": 2}', SpanDrop.NO_TIME),
    (b'{"label": 1, "from": null, "to": 2}', SpanDrop.NO_TIME),
    (b'{"label": 1, "from": 5, "to": 5}', SpanDrop.EMPTY_SPAN),
    (b'{"label": 1, "from": 6, "to": 5}', SpanDrop.EMPTY_SPAN),
    (b'{"label": 1, "from": 1, "to": 2, "pad": "' + b"x" * 5000 + b'"}', SpanDrop.MALFORMED),
    (b"[" * 100_000, SpanDrop.MALFORMED),
    (b"\x91" * 100_000, SpanDrop.MALFORMED),
    (b"\xc1", SpanDrop.MALFORMED),
])
def test_a_bad_label_payload_is_a_counted_reason_never_an_exception(
        payload: bytes, reason: SpanDrop) -> None:
    """Unreadable, incomplete, mistyped, out-of-range, non-finite, unzoned, empty, oversized
    and deeply nested payloads each give their reason."""
    # Execute
    got = parse_span(payload)

    # Assert
    assert got is reason
