"""Routing one sensor message to its channels: match the topic, parse once per format, merge."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from fedstream.edge_node.sensors.formats import FORMATS, Parsed, PayloadFormat
from fedstream.edge_node.sensors.reading import Channel, DropReason
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.protocol.topics import Topic


class Router:
    """Maps (topic, payload) to readings for the configured channels; pure, no I/O.

    Build it with `build_router`, which checks every channel against its format.

    Args:
        channels: The configured channels, in config order.
        formats: A built format for every format name the channels use.
    """

    def __init__(self, channels: Sequence[Channel], formats: Mapping[str, PayloadFormat]) -> None:
        self._channels = [(Topic(c.topic), c) for c in channels]
        self._formats = formats

    def route(self, topic: str, payload: bytes, arrived: float) -> Parsed:
        """Readings and drops for one message.

        The channels whose filter matches `topic` (MQTT `+`/`#` rules) are grouped by
        format; each format parses the payload once for its group. A topic no channel
        matches is one UNKNOWN_CHANNEL drop.

        Args:
            topic: The concrete topic the message arrived on.
            payload: Its bytes, as the device sent them.
            arrived: Arrival time, seconds since the epoch; used for missing/relative times.
        """
        groups: dict[str, list[Channel]] = {}
        for filt, channel in self._channels:
            if filt.matches(topic):
                groups.setdefault(channel.format, []).append(channel)
        if not groups:
            return Parsed(drops=Counter({DropReason.UNKNOWN_CHANNEL: 1}))
        return Parsed.merge(self._formats[name].parse(payload, channels=group, arrived=arrived)
                            for name, group in groups.items())


def build_router(channels: Sequence[Channel], *,
                 format_params: Mapping[str, Mapping[str, object]] | None = None) -> Router:
    """Build each format the channels name and check every channel against it.

    Args:
        channels: The configured channels; names must be unique.
        format_params: Keyword params per format name (e.g. `{"json": {"naive_time_utc":
            True}}`); formats not listed use their defaults.

    Raises:
        ConfigError: UNKNOWN_NAME for an unknown format; BAD_CONFIG for a repeated channel
            name, a bad format param, or a channel that lacks what its format needs.
    """
    params = format_params or {}
    names = [c.name for c in channels]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(Reason.BAD_CONFIG, f"channel name(s) repeated: {', '.join(repeated)}")
    formats: dict[str, PayloadFormat] = {}
    for name in sorted({c.format for c in channels} | set(params)):
        formats[name] = FORMATS.build(name, **params.get(name, {}))
    for channel in channels:
        formats[channel.format].check(channel)
    return Router(channels, formats)
