"""msgpack maps from devices, read with the same field-path rules as JSON objects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# shared/protocol/wire.py is the only module that speaks *our* wire protocol in msgpack.
# A device's msgpack map is a foreign sensor payload, not that protocol, so it is decoded
# here, in this one file, with its own limits; nothing else in sensors/ imports msgpack.
import msgpack

from fedstream.edge_node.sensors.formats.base import (
    FORMATS,
    MAX_PAYLOAD,
    Parsed,
    check_max_bytes,
    make_params,
    unreadable,
)
from fedstream.edge_node.sensors.formats.json_fields import check_map_channel, read_fields
from fedstream.edge_node.sensors.reading import Channel
from fedstream.shared.errors import ConfigError, Reason

# Per-object caps inside a payload that is already at most max_bytes long: they bound the
# work one rogue message can ask for before any value is looked at.
_MAX_LEN = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgpackParams:
    """Limits and time rules for msgpack maps.

    Args:
        max_bytes: Largest payload read; a larger one is MALFORMED for every channel.
        naive_time_utc: Take an ISO time string without a zone as UTC (see `JsonParams`).
            A msgpack timestamp (ext -1) is always UTC.
    """

    max_bytes: int = MAX_PAYLOAD
    naive_time_utc: bool = False

    def __post_init__(self) -> None:
        check_max_bytes(self.max_bytes, "msgpack")
        if type(self.naive_time_utc) is not bool:
            raise ConfigError(Reason.BAD_CONFIG, "msgpack: naive_time_utc must be true or false")


class MsgpackMapFormat:
    """One msgpack map per payload; each channel reads its own field."""

    name = "msgpack"

    def __init__(self, params: MsgpackParams) -> None:
        self.params = params

    def check(self, channel: Channel) -> None:
        """A msgpack channel needs a field path and takes no SenML name."""
        check_map_channel(channel)

    def parse(self, payload: bytes, *, channels: Sequence[Channel], arrived: float) -> Parsed:
        """Readings from the map's fields; anything but one map with string keys is MALFORMED."""
        if len(payload) > self.params.max_bytes:
            return unreadable(channels)
        try:
            obj = msgpack.unpackb(payload, raw=False, timestamp=3, strict_map_key=True,
                                  max_str_len=_MAX_LEN, max_bin_len=_MAX_LEN,
                                  max_array_len=_MAX_LEN, max_map_len=_MAX_LEN,
                                  max_ext_len=_MAX_LEN)
        # Bad bytes, trailing data, too deep, non-string keys, invalid UTF-8 (ValueError and
        # its msgpack subclasses); truncated input (UnpackException); timestamps out of range.
        except (ValueError, msgpack.UnpackException, OverflowError):
            return unreadable(channels)
        if not isinstance(obj, dict):
            return unreadable(channels)
        return read_fields(obj, channels, arrived, naive_utc=self.params.naive_time_utc)


@FORMATS.add("msgpack", "msgpack map, value at a dotted field path")
def build_msgpack(**params: object) -> MsgpackMapFormat:
    """Build the msgpack-map format (see `MsgpackParams`)."""
    return MsgpackMapFormat(make_params(MsgpackParams, params, "msgpack"))
