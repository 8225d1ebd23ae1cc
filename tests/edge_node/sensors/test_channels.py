"""Tests for edge_node/sensors/channels.py and the Channel config value: topic matching,
grouping by format, merged results, and the config checks."""

from __future__ import annotations

import json
from collections import Counter

import msgpack
import pytest

from fedstream.edge_node.sensors.channels import build_router
from fedstream.edge_node.sensors.reading import Channel, DropReason, Reading
from fedstream.shared.errors import ConfigError, Reason

NOW = 1_800_000_000.0
D = DropReason


@pytest.mark.parametrize(("filt", "topic", "hit"), [
    ("home/kitchen/temp", "home/kitchen/temp", True),
    ("home/+/temp", "home/kitchen/temp", True),
    ("home/+/temp", "home/kitchen/fridge/temp", False),
    ("home/#", "home/kitchen/temp", True),
    ("home/#", "home", True),  # '#' also matches the parent level
    ("#", "any/topic/at/all", True),
    ("home/kitchen/temp", "home/kitchen", False),
    ("home/+", "home/kitchen/temp", False),
])
def test_topic_filters_follow_mqtt_rules(filt: str, topic: str, hit: bool) -> None:
    """`+` matches one level and `#` the rest; a miss is one UNKNOWN_CHANNEL."""
    # Prepare
    router = build_router([Channel(name="c", topic=filt, format="bare")])

    # Execute
    got = router.route(topic, b"1.5", NOW)

    # Assert
    if hit:
        assert (got.readings, got.drops) == ([Reading(channel="c", t=NOW, value=1.5, unit=None)],
                                             Counter())
    else:
        assert (got.readings, got.drops) == ([], Counter({D.UNKNOWN_CHANNEL: 1}))


def test_channels_of_one_format_share_one_parse() -> None:
    """Two JSON channels on one topic read one object; a third on another topic is not asked."""
    # Prepare
    router = build_router([
        Channel(name="temp", topic="z2m/+", format="json", field="temperature", unit="Cel"),
        Channel(name="hum", topic="z2m/sensor1", format="json", field="humidity"),
        Channel(name="other", topic="tasmota/#", format="json", field="temperature"),
    ])
    payload = json.dumps({"temperature": 21.4, "humidity": 40}).encode()

    # Execute
    got = router.route("z2m/sensor1", payload, NOW)

    # Assert
    assert got.readings == [Reading(channel="temp", t=NOW, value=21.4, unit="Cel"),
                            Reading(channel="hum", t=NOW, value=40.0, unit=None)]
    assert got.drops == Counter()


def test_formats_on_one_topic_are_merged() -> None:
    """Channels of different formats on one topic each parse the payload; results are summed."""
    # Prepare: the payload is SenML, so the JSON channel sees an array, not an object
    router = build_router([
        Channel(name="a", topic="dev/1", format="senml", senml_name="dev1/t"),
        Channel(name="b", topic="dev/#", format="senml", senml_name="dev1/h", unit="%RH"),
        Channel(name="c", topic="dev/+", format="json", field="t"),
    ])
    payload = json.dumps([{"bn": "dev1/", "n": "t", "v": 20}, {"n": "h", "u": "%RH", "v": 55},
                          {"n": "p", "v": 1}]).encode()

    # Execute
    got = router.route("dev/1", payload, NOW)

    # Assert
    assert [(r.channel, r.value) for r in got.readings] == [("a", 20.0), ("b", 55.0)]
    assert got.drops == Counter({D.UNKNOWN_CHANNEL: 1, D.MALFORMED: 1})


def test_unreadable_payload_is_one_malformed_per_channel() -> None:
    """Garbage on a topic three channels share counts one MALFORMED for each of them."""
    # Prepare
    router = build_router([
        Channel(name="a", topic="s/x", format="msgpack", field="a"),
        Channel(name="b", topic="s/x", format="msgpack", field="b"),
        Channel(name="c", topic="s/+", format="bare"),
    ])

    # Execute
    got = router.route("s/x", b"\xc1\xff garbage", NOW)
    fine = router.route("s/x", msgpack.packb({"a": 1, "b": 2}), NOW)

    # Assert
    assert got.drops == Counter({D.MALFORMED: 3})
    assert [r.value for r in fine.readings] == [1.0, 2.0]
    assert fine.drops == Counter({D.MALFORMED: 1})  # the bare channel


def test_format_params_reach_the_format() -> None:
    """`format_params` configures a format, e.g. zone-less Tasmota times taken as UTC."""
    # Prepare
    channel = Channel(name="t", topic="tele/+/SENSOR", format="json",
                      field="AM2301.Temperature", time_field="Time")
    payload = json.dumps({"Time": "1970-01-02T00:00:00", "AM2301": {"Temperature": 21}}).encode()

    # Execute
    strict = build_router([channel]).route("tele/x/SENSOR", payload, NOW)
    utc = build_router([channel], format_params={"json": {"naive_time_utc": True}}).route(
        "tele/x/SENSOR", payload, NOW)

    # Assert
    assert strict.drops == Counter({D.NO_TIME: 1})
    assert [r.t for r in utc.readings] == [86_400.0]


@pytest.mark.parametrize(("channels", "params", "reason"), [
    ([Channel(name="a", topic="x", format="csv")], None, Reason.UNKNOWN_NAME),
    ([Channel(name="a", topic="x", format="json")], None, Reason.BAD_CONFIG),  # no field
    ([Channel(name="a", topic="x", format="bare")] * 2, None, Reason.BAD_CONFIG),
    ([], {"senml": {"max_records": -1}}, Reason.BAD_CONFIG),
    ([], {"nope": {}}, Reason.UNKNOWN_NAME),
])
def test_build_router_refuses_bad_config(channels: list[Channel],
                                         params: dict[str, dict[str, object]] | None,
                                         reason: Reason) -> None:
    """Unknown formats, repeated names, bad params and incomplete channels fail at build time."""
    # Execute
    with pytest.raises(ConfigError) as info:
        build_router(channels, format_params=params)

    # Assert
    assert info.value.reason is reason


@pytest.mark.parametrize("kw", [
    {"name": "bad name"}, {"name": ""}, {"topic": ""}, {"topic": "a/#/b"}, {"topic": "a/b#"},
    {"topic": "a+/b"}, {"topic": "a\0b"}, {"field": "a..b"}, {"field": ""}, {"time_field": "."},
    {"unit": ""}, {"senml_name": ""}, {"min_value": float("nan")}, {"max_value": True},
    {"min_value": 5, "max_value": 1}, {"format": ""},
])
def test_channel_refuses_bad_values(kw: dict[str, object]) -> None:
    """A channel with a bad name, filter, path, unit or range is BAD_CONFIG."""
    # Prepare
    values: dict[str, object] = {"name": "c", "topic": "a/b", "format": "bare", **kw}

    # Execute
    with pytest.raises(ConfigError) as info:
        Channel(**values)  # type: ignore[arg-type]

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
