"""Label payloads from the label topic: `{"label": k, "from": t0, "to": t1}` to a `LabelSpan`.

A payload is JSON when its first non-blank byte is `{`, else msgpack (a msgpack map never
starts with that byte: 0x7b is the positive int 123). `label` is an int in [0, 2**20) (an integral
float such as `2.0` is taken as `2`; a bool is not a label). `from` and `to` are Unix seconds,
ISO 8601 strings with a zone, or msgpack timestamps; the span is `[from, to)`. Other keys are
ignored, so a labeller may add its own (who, why). Nothing here raises for any payload: a bad
one is a `SpanDrop` the caller counts.
"""

from __future__ import annotations

import math
from enum import StrEnum

# A labeller's msgpack map is a foreign payload, not our wire protocol (shared/protocol/wire.py),
# so it is decoded here with its own limits, as sensors/formats/msgpack_map.py does for readings.
import msgpack

from fedstream.edge_node.sensors.formats.base import load_json
from fedstream.edge_node.sensors.formats.json_fields import to_time
from fedstream.shared.learning.series.windows import LabelSpan

MAX_LABEL_BYTES = 4096
MAX_LABEL = 1 << 20  # as many classes as a model may have outputs (shared/protocol/arch.py)
_MAX_LEN = 256  # per string, map, array: a label payload is a handful of short fields
_BLANK = b" \t\r\n"


class SpanDrop(StrEnum):
    """Why a label payload gave no span: counted on the edge, never sent on the wire."""

    MALFORMED = "malformed"  # not one JSON/msgpack map, a missing key, no label in range
    NON_FINITE = "non_finite"  # a NaN or infinite label or time
    NO_TIME = "no_time"  # a time that is not a number, nor ISO 8601 with a zone
    EMPTY_SPAN = "empty_span"  # from >= to
    QUEUE_FULL = "queue_full"  # the span queue was full: the oldest spans made room
    STORE_FAILED = "store_failed"  # the sample store could not write the spans


def parse_span(payload: bytes) -> LabelSpan | SpanDrop:
    """The span a label payload describes, or why it describes none."""
    obj = _decode(payload)
    if not isinstance(obj, dict) or not {"label", "from", "to"} <= obj.keys():
        return SpanDrop.MALFORMED
    label = _label(obj["label"])
    if isinstance(label, SpanDrop):
        return label
    bounds = [_time(obj[key]) for key in ("from", "to")]
    for bound in bounds:
        if isinstance(bound, SpanDrop):
            return bound
    start, end = bounds
    assert isinstance(start, float) and isinstance(end, float)
    if not start < end:
        return SpanDrop.EMPTY_SPAN
    return LabelSpan(label=label, start=start, end=end)


def _decode(payload: bytes) -> object:
    if len(payload) > MAX_LABEL_BYTES:
        return None
    if payload.lstrip(_BLANK)[:1] == b"{":
        return load_json(payload, MAX_LABEL_BYTES)
    try:
        return msgpack.unpackb(payload, raw=False, timestamp=3, strict_map_key=True,
                               max_str_len=_MAX_LEN, max_bin_len=_MAX_LEN,
                               max_array_len=_MAX_LEN, max_map_len=_MAX_LEN,
                               max_ext_len=_MAX_LEN)
    # Bad bytes, trailing data, non-string keys, bad UTF-8, truncation, timestamps out of range.
    except (ValueError, msgpack.UnpackException, OverflowError):
        return None


def _label(raw: object) -> int | SpanDrop:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return SpanDrop.MALFORMED
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return SpanDrop.NON_FINITE
        if not raw.is_integer():
            return SpanDrop.MALFORMED
        raw = int(raw)
    return raw if 0 <= raw < MAX_LABEL else SpanDrop.MALFORMED


def _time(raw: object) -> float | SpanDrop:
    if isinstance(raw, float) and not math.isfinite(raw):
        return SpanDrop.NON_FINITE
    t = to_time(raw, naive_utc=False)
    if t is None:
        # An int too large for a float is as unusable as an infinite one.
        return SpanDrop.NON_FINITE if isinstance(raw, int) and not isinstance(raw, bool) \
            else SpanDrop.NO_TIME
    return t
