"""The values of sensor intake: a configured `Channel`, one `Reading`, and why one was dropped."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.protocol.topics import check_name


class DropReason(StrEnum):
    """Why a reading was dropped: counted on the edge, never sent on the wire."""

    MALFORMED = "malformed"  # unreadable payload, wrong type, a bool or string as a value
    NON_FINITE = "non_finite"  # NaN, +-Inf, or a number too large for a float
    OUT_OF_RANGE = "out_of_range"  # outside the channel's [min_value, max_value]
    UNKNOWN_CHANNEL = "unknown_channel"  # a topic or SenML name no channel takes
    WRONG_UNIT = "wrong_unit"  # a unit other than the channel's (never converted)
    NO_TIME = "no_time"  # the time field is missing, unreadable or has no time zone
    MISSING_FIELD = "missing_field"  # the payload lacks the channel's field or SenML name
    QUEUE_FULL = "queue_full"  # the intake queue was full: the oldest readings made room
    STORE_FAILED = "store_failed"  # the sample store could not write the batch


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One accepted measurement.

    Args:
        channel: Name of the channel it belongs to.
        t: Seconds since the Unix epoch (UTC).
        value: The finite value, in range.
        unit: The payload's unit or, if it names none, the channel's expected unit.
    """

    channel: str
    t: float
    value: float
    unit: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Channel:
    """A named stream: which topic filter, payload format and field it comes from.

    Args:
        name: Channel name (1-64 letters, digits, '_', '.', '-').
        topic: MQTT topic filter (`+` one level, `#` the rest, last only).
        format: Name of a unit in `FORMATS` ("senml", "json", "bare", "msgpack").
        field: Dotted path of the value in a JSON or msgpack map ("sensor.temp").
        senml_name: The resolved SenML name (bn + n) whose records this channel takes.
        unit: The unit the channel expects; another one is refused. None takes any.
        min_value: Smallest accepted value (inclusive), or None.
        max_value: Largest accepted value (inclusive), or None.
        time_field: Dotted path of the timestamp in a map; None means arrival time.

    Raises:
        ConfigError: BAD_CONFIG for an invalid name, filter, path, unit or range.
    """

    name: str
    topic: str
    format: str
    field: str | None = None
    senml_name: str | None = None
    unit: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    time_field: str | None = None

    def __post_init__(self) -> None:
        check_name("channel", self.name)
        _check_filter(self.name, self.topic)
        for label in ("format", "senml_name", "unit"):
            value = getattr(self, label)
            if value is not None and (not isinstance(value, str) or not value):
                _bad(self.name, f"{label} must be a non-empty string")
        for label in ("field", "time_field"):
            path = getattr(self, label)
            if path is not None and (not isinstance(path, str) or "" in path.split(".")):
                _bad(self.name, f"{label} must be a dotted path like 'sensor.temp'")
        for label in ("min_value", "max_value"):
            bound = getattr(self, label)
            if bound is not None and (type(bound) not in (int, float) or not math.isfinite(bound)):
                _bad(self.name, f"{label} must be a finite number")
        low, high = self.min_value, self.max_value
        if low is not None and high is not None and low > high:
            _bad(self.name, f"min_value {low} is above max_value {high}")

    def in_range(self, value: float) -> bool:
        """True if `value` lies within the channel's bounds (inclusive)."""
        return ((self.min_value is None or value >= self.min_value)
                and (self.max_value is None or value <= self.max_value))


def _check_filter(name: str, topic: object) -> None:
    """Refuse a topic filter MQTT would refuse (MQTT 3.1.1 §4.7)."""
    if not isinstance(topic, str) or not topic or "\0" in topic:
        _bad(name, "topic must be a non-empty topic filter")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if level in ("+", "#"):
            if level == "#" and i != len(levels) - 1:
                _bad(name, f"topic {topic!r}: '#' must be the last level")
        elif "+" in level or "#" in level:
            _bad(name, f"topic {topic!r}: a wildcard must fill a whole level")


def _bad(name: str, detail: str) -> NoReturn:
    raise ConfigError(Reason.BAD_CONFIG, f"channel {name!r}: {detail}")
