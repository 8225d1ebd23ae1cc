"""The MQTT adapter's own message types (`mqtt.py` converts paho's to these at one place)."""

from __future__ import annotations

from dataclasses import dataclass

from fedstream.shared.protocol.topics import Topic


@dataclass(frozen=True, slots=True)
class Inbound:
    """A received message, converted from paho's type at exactly one place (`_on_message`)."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    mid: int
    response_topic: str | None = None
    correlation: bytes | None = None


@dataclass(frozen=True, slots=True)
class Will:
    """Last will: published by the broker if this client vanishes."""

    topic: Topic
    payload: bytes
    retain: bool = True
