"""SenML JSON packs (RFC 8428 §4-5): base fields, resolved names and times, relative to now.

A base field (`bn`, `bt`, `bu`, `bv`) applies to its record and every later one until redefined.
Name = bn + n; time = bt + t, relative to arrival when below 2**28 (§4.5.3); value = bv + v.
`vs`/`vb`/`vd` values are not numbers: MALFORMED for a channel's record. A record of base
fields only is context, not a reading. A mistyped field or a must-understand label (ending in
`_`, §4.4) makes the whole pack unreadable, since later records depend on its base fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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

RELATIVE_BELOW = 2**28
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9:./_-]*")  # §4.5.1
_REGULAR = frozenset({"n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"})


def _any(value: object) -> bool:  # fields not in the table are ignored (§4.4)
    return True


_FIELD_TYPES: dict[str, Callable[[object], bool]] = {
    **dict.fromkeys(("bn", "bu", "n", "u", "vs", "vd"), lambda v: isinstance(v, str)),
    **dict.fromkeys(("bt", "bv", "bs", "v", "s", "t", "ut"),
                    lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "vb": lambda v: isinstance(v, bool),
    "bver": lambda v: type(v) is int and v >= 1,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SenmlParams:
    """Limits on one pack, so a rogue device cannot make parsing expensive.

    Args:
        max_bytes: Largest payload read; a larger one is MALFORMED for every channel.
        max_records: Most records in a pack, in [1, 10000]; a longer pack is MALFORMED.
    """

    max_bytes: int = MAX_PAYLOAD
    max_records: int = 1000

    def __post_init__(self) -> None:
        check_max_bytes(self.max_bytes, "senml")
        if type(self.max_records) is not int or not 1 <= self.max_records <= 10_000:
            raise ConfigError(Reason.BAD_CONFIG, "senml: max_records must be an int in "
                                                 f"[1, 10000]; got {self.max_records!r}")


class SenmlFormat:
    """A SenML pack per payload; each record goes to the channels of its resolved name."""

    name = "senml"

    def __init__(self, params: SenmlParams) -> None:
        self.params = params

    def check(self, channel: Channel) -> None:
        """A SenML channel names its record by `senml_name`; fields do not apply."""
        if channel.senml_name is None:
            raise refuse(channel, "needs senml_name (the resolved name bn + n)")
        for label in ("field", "time_field"):
            if getattr(channel, label) is not None:
                raise refuse(channel, f"{label} does not apply to SenML (the pack has names)")

    def parse(self, payload: bytes, *, channels: Sequence[Channel], arrived: float) -> Parsed:
        """Resolve every record and give each to the channels of its name.

        The channels of a record's name whose unit fits (the same, none expected, or none
        stated) each get a reading or a drop; if none fits, the record is one WRONG_UNIT. A
        record of no channel's name is one UNKNOWN_CHANNEL; a channel never named, MISSING_FIELD.
        """
        pack = load_json(payload, self.params.max_bytes)
        if (not isinstance(pack, list) or len(pack) > self.params.max_records
                or not all(_well_typed(r) for r in pack)):
            return unreadable(channels)
        by_name: dict[str, list[Channel]] = {}
        for channel in channels:
            by_name.setdefault(channel.senml_name or "", []).append(channel)
        out, named = Parsed(), set[str]()
        base: dict[str, object] = {"bn": "", "bt": 0}
        for record in pack:
            base.update((k, record[k]) for k in ("bn", "bt", "bu", "bv") if k in record)
            if not _REGULAR & record.keys():
                continue
            name = f"{base['bn']}{record.get('n', '')}"
            if not _NAME.fullmatch(name):
                out.keep(DropReason.MALFORMED)
                continue
            targets = by_name.get(name)
            if not targets:
                out.keep(DropReason.UNKNOWN_CHANNEL)
                continue
            named.add(name)
            unit = record.get("u", base.get("bu"))
            fits = [c for c in targets if unit is None or c.unit in (None, unit)]
            if not fits:
                out.keep(DropReason.WRONG_UNIT)
                continue
            value = _value(record, base.get("bv"))
            t = _time(base["bt"], record.get("t", 0), arrived)
            for channel in fits:
                out.keep(accept(channel, value, unit, t) if value is not None
                         else DropReason.MALFORMED)
        for name in by_name.keys() - named:
            out.drops[DropReason.MISSING_FIELD] += len(by_name[name])
        return out


def _well_typed(record: object) -> bool:
    """True for a JSON object whose known fields have their RFC 8428 types."""
    return isinstance(record, dict) and all(
        not key.endswith("_") and _FIELD_TYPES.get(key, _any)(value)
        for key, value in record.items())


def _value(record: Mapping[str, object], bv: object) -> float | None:
    """bv + v (a missing one counts as zero, §4.6); None for a non-numeric or absent value."""
    if any(k in record for k in ("vs", "vb", "vd")) or ("v" not in record and bv is None):
        return None
    try:
        return float(bv or 0) + float(record.get("v", 0))  # type: ignore[arg-type]
    except OverflowError:
        return float("inf")


def _time(bt: object, t: object, arrived: float) -> float:
    """bt + t, taken relative to `arrived` when below 2**28 (§4.5.3)."""
    try:
        total = float(bt) + float(t)  # type: ignore[arg-type]
    except OverflowError:
        return float("nan")
    return arrived + total if total < RELATIVE_BELOW else total


@FORMATS.add("senml", "SenML JSON pack (RFC 8428) with base name, time, unit and value")
def build_senml(**params: object) -> SenmlFormat:
    """Build the SenML format (see `SenmlParams`)."""
    return SenmlFormat(make_params(SenmlParams, params, "senml"))
