"""A bare number per topic, as UTF-8 text (the Homie convention: `21.5`), timed on arrival."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from fedstream.edge_node.sensors.formats.base import (
    FORMATS,
    Parsed,
    accept,
    check_max_bytes,
    make_params,
    refuse,
    unreadable,
)
from fedstream.edge_node.sensors.reading import Channel, DropReason

# Decimal syntax only: Python's float() would also take "1_000", "infinity" and "nan".
# Written without nested repeats, so a failed match cannot backtrack for long.
_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_NON_FINITE = re.compile(r"[-+]?(?:nan|inf|infinity)", re.IGNORECASE)
_SPACE = " \t\r\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class BareParams:
    """Limits for bare numbers.

    Args:
        max_bytes: Longest payload read; a number needs few bytes, so the cap is small.
    """

    max_bytes: int = 256

    def __post_init__(self) -> None:
        check_max_bytes(self.max_bytes, "bare")


class BareFormat:
    """The whole payload is one number; every channel on the topic takes it."""

    name = "bare"

    def __init__(self, params: BareParams) -> None:
        self.params = params

    def check(self, channel: Channel) -> None:
        """A bare channel has no field, time field or SenML name: the topic is the field."""
        for label in ("field", "time_field", "senml_name"):
            if getattr(channel, label) is not None:
                raise refuse(channel, f"{label} does not apply to bare numbers")

    def parse(self, payload: bytes, *, channels: Sequence[Channel], arrived: float) -> Parsed:
        """One reading per channel; outer whitespace is ignored, `nan`/`inf` are NON_FINITE."""
        if len(payload) > self.params.max_bytes:
            return unreadable(channels)
        try:
            text = payload.decode("utf-8").strip(_SPACE)
        except UnicodeDecodeError:
            return unreadable(channels)
        if _NON_FINITE.fullmatch(text):
            return Parsed(drops=Counter({DropReason.NON_FINITE: len(channels)}))
        if not _DECIMAL.fullmatch(text):
            return unreadable(channels)
        out = Parsed()
        for channel in channels:
            out.keep(accept(channel, float(text), None, arrived))
        return out


@FORMATS.add("bare", "one number as UTF-8 text per topic (Homie), arrival time")
def build_bare(**params: object) -> BareFormat:
    """Build the bare-number format (see `BareParams`)."""
    return BareFormat(make_params(BareParams, params, "bare"))
