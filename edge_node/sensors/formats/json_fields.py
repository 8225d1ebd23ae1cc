"""JSON objects with the value at a field path (the zigbee2mqtt / Tasmota style).

`{"temperature": 21.4, "humidity": 40}` with field `temperature`, or
`{"AM2301": {"Temperature": 21.4}, "Time": "2026-01-01T12:00:00"}` with field
`AM2301.Temperature`. A JSON value carries no unit: the reading takes the channel's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fedstream.edge_node.sensors.formats.base import (
    FORMATS,
    MAX_PAYLOAD,
    Parsed,
    accept,
    check_max_bytes,
    load_json,
    make_params,
    refuse,
    unreadable,
)
from fedstream.edge_node.sensors.reading import Channel, DropReason
from fedstream.shared.errors import ConfigError, Reason

_MISSING = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonParams:
    """Limits and time rules for JSON objects.

    Args:
        max_bytes: Largest payload read; a larger one is MALFORMED for every channel.
        naive_time_utc: Take an ISO time without a zone as UTC. Off by default, so such a
            reading is dropped as NO_TIME rather than shifted by the device's zone offset.
    """

    max_bytes: int = MAX_PAYLOAD
    naive_time_utc: bool = False

    def __post_init__(self) -> None:
        check_max_bytes(self.max_bytes, "json")
        if type(self.naive_time_utc) is not bool:
            raise ConfigError(Reason.BAD_CONFIG, "json: naive_time_utc must be true or false")


class JsonFieldsFormat:
    """One JSON object per payload; each channel reads its own field."""

    name = "json"

    def __init__(self, params: JsonParams) -> None:
        self.params = params

    def check(self, channel: Channel) -> None:
        """A JSON channel needs a field path and takes no SenML name."""
        check_map_channel(channel)

    def parse(self, payload: bytes, *, channels: Sequence[Channel], arrived: float) -> Parsed:
        """Readings from the object's fields; anything but an object is MALFORMED."""
        obj = load_json(payload, self.params.max_bytes)
        if not isinstance(obj, dict):
            return unreadable(channels)
        return read_fields(obj, channels, arrived, naive_utc=self.params.naive_time_utc)


def check_map_channel(channel: Channel) -> None:
    """Raise BAD_CONFIG unless a map-format channel has a field and no SenML name."""
    if channel.field is None:
        raise refuse(channel, "needs a field path")
    if channel.senml_name is not None:
        raise refuse(channel, "senml_name applies to SenML channels only")


def read_fields(obj: Mapping[object, object], channels: Sequence[Channel], arrived: float, *,
                naive_utc: bool) -> Parsed:
    """For each channel, the value at its field path, timed by its time field or `arrived`."""
    out = Parsed()
    for channel in channels:
        raw = lookup(obj, channel.field or "")
        if raw is _MISSING:
            out.keep(DropReason.MISSING_FIELD)
            continue
        t: float | None = arrived
        if channel.time_field is not None:
            t = to_time(lookup(obj, channel.time_field), naive_utc=naive_utc)
        out.keep(accept(channel, raw, None, t))
    return out


def lookup(obj: Mapping[object, object], path: str) -> object:
    """The value at a dotted path of string keys, or a private MISSING marker."""
    node: object = obj
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def to_time(raw: object, *, naive_utc: bool) -> float | None:
    """Seconds since the epoch from a number, an ISO 8601 string or a datetime; else None.

    Numbers are Unix seconds (not milliseconds). A string or datetime without a zone is UTC
    only when `naive_utc` is set.
    """
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        try:
            t = float(raw)
        except OverflowError:
            return None
        return t if math.isfinite(t) else None
    if isinstance(raw, str) and len(raw) <= 64:
        try:
            raw = datetime.fromisoformat(raw)
        except ValueError:
            return None
    if not isinstance(raw, datetime):
        return None
    if raw.tzinfo is None:
        if not naive_utc:
            return None
        raw = raw.replace(tzinfo=UTC)
    return raw.timestamp()


@FORMATS.add("json", "JSON object, value at a dotted field path (zigbee2mqtt, Tasmota)")
def build_json(**params: object) -> JsonFieldsFormat:
    """Build the JSON-fields format (see `JsonParams`)."""
    return JsonFieldsFormat(make_params(JsonParams, params, "json"))
