"""The payload-format contract (bytes -> readings, counted drops) and the checks formats share."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol, TypeVar

from fedstream.edge_node.sensors.reading import Channel, DropReason, Reading
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.registry import Registry

MAX_PAYLOAD = 64 * 1024
P = TypeVar("P")


@dataclass(frozen=True, slots=True, kw_only=True)
class Parsed:
    """What one payload gave: the accepted readings and the drops counted by reason."""

    readings: list[Reading] = field(default_factory=list)
    drops: Counter[DropReason] = field(default_factory=Counter)

    def keep(self, result: Reading | DropReason) -> None:
        """Add one reading or count one drop."""
        if isinstance(result, Reading):
            self.readings.append(result)
        else:
            self.drops[result] += 1

    @classmethod
    def merge(cls, parts: Iterable[Parsed]) -> Parsed:
        """One result holding every part's readings (in order) and the sum of their drops."""
        out = cls()
        for part in parts:
            out.readings.extend(part.readings)
            out.drops.update(part.drops)
        return out


class PayloadFormat(Protocol):
    """Turns one payload into readings for the channels that subscribed to its topic."""

    name: str

    def check(self, channel: Channel) -> None:
        """Raise ConfigError(BAD_CONFIG) unless `channel` names what this format needs."""
        ...

    def parse(self, payload: bytes, *, channels: Sequence[Channel], arrived: float) -> Parsed:
        """Readings and drops for `channels` (all of this format, all matching the topic).

        Never raises for any payload: an unreadable one is one MALFORMED drop per channel.
        `arrived` (seconds since the epoch) stands in for a missing or relative time.
        """
        ...


FORMATS: Registry[PayloadFormat] = Registry("payload format")


def make_params(cls: type[P], params: Mapping[str, object], fmt: str) -> P:
    """Build a format's `Params` from config keywords; the dataclass holds the defaults.

    Raises:
        ConfigError: BAD_CONFIG for an unknown key (naming the known ones) or a bad value.
    """
    known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(Reason.BAD_CONFIG, f"{fmt}: unknown param(s) {', '.join(unknown)}; "
                                             f"known: {', '.join(known)}")
    return cls(**params)


def check_max_bytes(value: object, fmt: str) -> None:
    """Raise BAD_CONFIG unless a payload cap is an int in [1, MAX_PAYLOAD]."""
    if type(value) is not int or not 1 <= value <= MAX_PAYLOAD:
        raise ConfigError(Reason.BAD_CONFIG, f"{fmt}: max_bytes must be an int in "
                                             f"[1, {MAX_PAYLOAD}]; got {value!r}")


def refuse(channel: Channel, detail: str) -> ConfigError:
    """The error for a channel that lacks (or sets) a field its format needs (or ignores)."""
    return ConfigError(Reason.BAD_CONFIG, f"channel {channel.name!r} ({channel.format}): {detail}")


def unreadable(channels: Sequence[Channel]) -> Parsed:
    """One MALFORMED drop for each channel the payload was meant for."""
    return Parsed(drops=Counter({DropReason.MALFORMED: len(channels)}))


def load_json(payload: bytes, max_bytes: int) -> object:
    """The decoded UTF-8 JSON document, or None if it is too large or unreadable.

    NaN/Infinity literals are refused, and a nesting deep enough to exhaust the parser's
    recursion (RecursionError) counts as unreadable, not as a crash.
    """
    if len(payload) > max_bytes:
        return None
    try:
        return json.loads(payload.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def accept(channel: Channel, raw: object, unit: str | None,
           t: float | None) -> Reading | DropReason:
    """Check one value for `channel`: a finite number (not a bool), in its unit and range, timed.

    A unit of None (the payload states none) is taken as the channel's.
    """
    value = _finite(raw)
    if isinstance(value, DropReason):
        return value
    if channel.unit is not None and unit is not None and unit != channel.unit:
        return DropReason.WRONG_UNIT
    if not channel.in_range(value):
        return DropReason.OUT_OF_RANGE
    if t is None or not math.isfinite(t):
        return DropReason.NO_TIME
    return Reading(channel=channel.name, t=t, value=value, unit=unit or channel.unit)


def _finite(raw: object) -> float | DropReason:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return DropReason.MALFORMED
    try:
        value = float(raw)
    except OverflowError:  # an int too large for a double
        return DropReason.NON_FINITE
    return value if math.isfinite(value) else DropReason.NON_FINITE


def _refuse_constant(literal: str) -> float:
    raise ValueError(f"{literal} is not a JSON number")
