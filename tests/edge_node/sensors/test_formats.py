"""Tests for edge_node/sensors/formats/: SenML (RFC 8428 examples and base rules), JSON fields,
bare numbers, msgpack maps, the drop reasons, random bytes, and the FORMATS registry."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import UTC, datetime

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstream.edge_node.sensors.formats import FORMATS, Parsed
from fedstream.edge_node.sensors.reading import Channel, DropReason, Reading
from fedstream.shared.errors import ConfigError, Reason

NOW = 1_800_000_000.0  # the fixed arrival time
D = DropReason
OW = "urn:dev:ow:10e2073a01080063"


def _ch(fmt: str, name: str = "c", **kw: object) -> Channel:
    return Channel(name=name, topic="s/#", format=fmt, **kw)  # type: ignore[arg-type]


def _parse(fmt: str, payload: bytes | str | list[object] | dict[str, object], *channels: Channel,
           **params: object) -> Parsed:
    """Parse `payload` (JSON-encoded when not bytes or str) with a freshly built format."""
    if isinstance(payload, list | dict):
        payload = json.dumps(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return FORMATS.build(fmt, **params).parse(data, channels=channels, arrived=NOW)


def _pairs(parsed: Parsed) -> list[tuple[str, float, float, str | None]]:
    return [(r.channel, r.t, r.value, r.unit) for r in parsed.readings]


# --- the registry ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS.names())
def test_every_format_builds_with_defaults(name: str) -> None:
    """Every registered format builds with no params, has a summary and knows its name."""
    # Prepare / Execute
    fmt = FORMATS.build(name)

    # Assert
    assert FORMATS.summary(name).strip()
    assert fmt.name == name


def test_all_formats_are_registered() -> None:
    """Importing the package registers the four formats devices send."""
    # Prepare / Execute / Assert
    assert set(FORMATS.names()) == {"senml", "json", "bare", "msgpack"}


@pytest.mark.parametrize(("name", "params"), [
    ("json", {"max_bytes": 0}), ("senml", {"max_records": 0}), ("bare", {"max_bytes": 1 << 20}),
    ("msgpack", {"naive_time_utc": "yes"}), ("json", {"no_such_param": 1}),
])
def test_bad_params_are_config_errors(name: str, params: dict[str, object]) -> None:
    """An unknown or out-of-range format param is a BAD_CONFIG error."""
    # Execute
    with pytest.raises(ConfigError) as info:
        FORMATS.build(name, **params)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG


# --- SenML: the RFC 8428 examples ------------------------------------------------------------

# §5.1.2, second example: current now and each second for the previous 5 seconds.
RFC_5_1_2B = [
    {"bn": "urn:dev:ow:10e2073a0108006:", "bt": 1.276020076001e09, "bu": "A", "bver": 5,
     "n": "voltage", "u": "V", "v": 120.1},
    {"n": "current", "t": -5, "v": 1.2}, {"n": "current", "t": -4, "v": 1.3},
    {"n": "current", "t": -3, "v": 1.4}, {"n": "current", "t": -2, "v": 1.5},
    {"n": "current", "t": -1, "v": 1.6}, {"n": "current", "v": 1.7},
]
# §5.1.3: humidity plus position and battery under one name, told apart by unit.
RFC_5_1_3 = [
    {"bn": OW, "bt": 1.320067464e09, "bu": "%RH", "v": 20},
    {"u": "lon", "v": 24.30621}, {"u": "lat", "v": 60.07965},
    {"t": 60, "v": 20.3}, {"u": "lon", "t": 60, "v": 24.30622},
    {"u": "lat", "t": 60, "v": 60.07965},
    {"t": 120, "v": 20.7}, {"u": "lon", "t": 120, "v": 24.30623},
    {"u": "lat", "t": 120, "v": 60.07966}, {"u": "%EL", "t": 150, "v": 98},
    {"t": 180, "v": 21.2}, {"u": "lon", "t": 180, "v": 24.30628},
    {"u": "lat", "t": 180, "v": 60.07967},
]
# §5.1.4: the same data resolved (no base fields, absolute times).
RFC_5_1_4 = [
    {"n": OW, "u": u, "t": 1.320067464e09 + dt, "v": v} for u, dt, v in [
        ("%RH", 0, 20), ("lon", 0, 24.30621), ("lat", 0, 60.07965), ("%RH", 60, 20.3),
        ("lon", 60, 24.30622), ("lat", 60, 60.07965), ("%RH", 120, 20.7),
        ("lon", 120, 24.30623), ("lat", 120, 60.07966), ("%EL", 150, 98), ("%RH", 180, 21.2),
        ("lon", 180, 24.30628), ("lat", 180, 60.07967)]
]


def test_rfc_single_datapoint() -> None:
    """§5.1.1: one temperature "now" is one reading at the arrival time in Cel."""
    # Prepare
    pack = [{"n": OW, "u": "Cel", "v": 23.1}]

    # Execute
    got = _parse("senml", pack, _ch("senml", "temp", senml_name=OW, unit="Cel"))

    # Assert
    assert got.readings == [Reading(channel="temp", t=NOW, value=23.1, unit="Cel")]
    assert got.drops == Counter()


def test_rfc_multiple_datapoints_with_base_name() -> None:
    """§5.1.2: the base name is prepended to each record's name; no time means now."""
    # Prepare
    pack = [{"bn": f"{OW}:", "n": "voltage", "u": "V", "v": 120.1},
            {"n": "current", "u": "A", "v": 1.2}]
    volts = _ch("senml", "volts", senml_name=f"{OW}:voltage", unit="V")
    amps = _ch("senml", "amps", senml_name=f"{OW}:current", unit="A")

    # Execute
    got = _parse("senml", pack, volts, amps)

    # Assert
    assert _pairs(got) == [("volts", NOW, 120.1, "V"), ("amps", NOW, 1.2, "A")]


def test_rfc_multiple_datapoints_with_base_time_and_unit() -> None:
    """§5.1.2: bt plus negative t gives absolute times; bu applies where u is absent."""
    # Prepare
    amps = _ch("senml", "amps", senml_name="urn:dev:ow:10e2073a0108006:current", unit="A")

    # Execute
    got = _parse("senml", RFC_5_1_2B, amps)

    # Assert
    bt = 1.276020076001e09
    assert [(r.t, r.value, r.unit) for r in got.readings] == [
        (bt - 5, 1.2, "A"), (bt - 4, 1.3, "A"), (bt - 3, 1.4, "A"), (bt - 2, 1.5, "A"),
        (bt - 1, 1.6, "A"), (bt, 1.7, "A")]
    assert got.drops == Counter({D.UNKNOWN_CHANNEL: 1})  # the voltage record


def test_rfc_multiple_measurements_split_by_unit() -> None:
    """§5.1.3: records of one name go to the channel of their unit, at bt + t."""
    # Prepare
    channels = [_ch("senml", n, senml_name=OW, unit=u) for n, u in
                [("rh", "%RH"), ("lon", "lon"), ("lat", "lat"), ("battery", "%EL")]]

    # Execute
    got = _parse("senml", RFC_5_1_3, *channels)

    # Assert
    bt = 1.320067464e09
    rh = [(r.t, r.value) for r in got.readings if r.channel == "rh"]
    assert rh == [(bt, 20), (bt + 60, 20.3), (bt + 120, 20.7), (bt + 180, 21.2)]
    assert [(r.t, r.value) for r in got.readings if r.channel == "battery"] == [(bt + 150, 98)]
    assert len(got.readings) == 13
    assert got.drops == Counter()


def test_rfc_resolved_records_give_the_same_readings() -> None:
    """§5.1.4: the resolved form of §5.1.3 parses to exactly the same readings."""
    # Prepare
    channels = [_ch("senml", n, senml_name=OW, unit=u) for n, u in
                [("rh", "%RH"), ("lon", "lon"), ("lat", "lat"), ("battery", "%EL")]]

    # Execute
    base = _parse("senml", RFC_5_1_3, *channels)
    resolved = _parse("senml", RFC_5_1_4, *channels)

    # Assert
    assert resolved.readings == base.readings


def test_one_expected_unit_drops_the_others_as_wrong_unit() -> None:
    """§5.1.3 with only a humidity channel: the 9 lon/lat/battery records are WRONG_UNIT."""
    # Prepare / Execute
    got = _parse("senml", RFC_5_1_3, _ch("senml", "rh", senml_name=OW, unit="%RH"))

    # Assert
    assert len(got.readings) == 4
    assert got.drops == Counter({D.WRONG_UNIT: 9})


# --- SenML: each base-field rule --------------------------------------------------------------


@pytest.mark.parametrize(("pack", "want"), [
    # bn is prepended, and applies to later records until redefined
    ([{"bn": "a/", "n": "x", "v": 1}, {"n": "x", "v": 2}, {"bn": "b/", "n": "x", "v": 3}],
     [("a/x", NOW, 1.0), ("a/x", NOW, 2.0), ("b/x", NOW, 3.0)]),
    # a name alone is enough, and bn alone is enough
    ([{"bn": "a/x", "v": 4}], [("a/x", NOW, 4.0)]),
    # bt is added to t; an absolute time stays absolute
    ([{"bn": "a/", "bt": 1.7e9, "n": "x", "t": 10, "v": 1}, {"n": "x", "v": 2}],
     [("a/x", 1.7e9 + 10, 1.0), ("a/x", 1.7e9, 2.0)]),
    # a later bt overrides the earlier one
    ([{"bn": "a/", "bt": 1.7e9, "n": "x", "v": 1}, {"bt": 1.8e9, "n": "x", "v": 2}],
     [("a/x", 1.7e9, 1.0), ("a/x", 1.8e9, 2.0)]),
    # bv is added to v, and a missing v counts as zero
    ([{"bn": "a/", "bv": 100, "n": "x", "v": 1.5}, {"n": "x", "v": -2}, {"n": "x"}],
     [("a/x", NOW, 101.5), ("a/x", NOW, 98.0), ("a/x", NOW, 100.0)]),
    # a record of base fields only is context, not a reading
    ([{"bn": "a/", "bt": 1.7e9, "bver": 10}, {"n": "x", "v": 1}], [("a/x", 1.7e9, 1.0)]),
    # an unknown field is ignored (§4.4)
    ([{"n": "a/x", "v": 1, "foo": [1, 2]}], [("a/x", NOW, 1.0)]),
])
def test_base_fields(pack: list[object], want: list[tuple[str, float, float]]) -> None:
    """bn, bt and bv apply to their record and all later ones until redefined."""
    # Prepare
    channels = [_ch("senml", n.replace("/", "_"), senml_name=n) for n in ("a/x", "b/x")]

    # Execute
    got = _parse("senml", pack, *channels)

    # Assert
    assert [(r.channel.replace("_", "/"), r.t, r.value) for r in got.readings] == want


@pytest.mark.parametrize(("pack", "units"), [
    ([{"bn": "a/x", "bu": "Cel", "v": 1}, {"n": "", "v": 2}], ["Cel", "Cel"]),
    ([{"bn": "a/x", "bu": "Cel", "v": 1}, {"u": "K", "v": 2}, {"v": 3}], ["Cel", "K", "Cel"]),
    ([{"bn": "a/x", "bu": "Cel", "v": 1}, {"bu": "K", "v": 2}], ["Cel", "K"]),
    ([{"n": "a/x", "v": 1}], [None]),
])
def test_base_unit_is_the_default_unit(pack: list[object], units: list[str | None]) -> None:
    """bu is each later record's unit unless the record names its own or bu is redefined."""
    # Prepare / Execute
    got = _parse("senml", pack, _ch("senml", senml_name="a/x"))

    # Assert
    assert [r.unit for r in got.readings] == units


@pytest.mark.parametrize(("bt", "t", "want"), [
    (0, 0, NOW), (0, -5, NOW - 5), (0, 20, NOW + 20), (10, -30, NOW - 20),
    (0, 2**28 - 1, NOW + 2**28 - 1), (0, 2**28, 2.0**28), (2**28, -1, NOW + 2**28 - 1),
    (1.7e9, -60, 1.7e9 - 60),
])
def test_times_below_2_pow_28_are_relative_to_arrival(bt: float, t: float, want: float) -> None:
    """bt + t below 2**28 is seconds from the arrival time; from 2**28 on it is absolute."""
    # Prepare / Execute
    got = _parse("senml", [{"n": "a/x", "bt": bt, "t": t, "v": 1}], _ch("senml", senml_name="a/x"))

    # Assert
    assert [r.t for r in got.readings] == [want]


# --- SenML: drops ------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "drops"), [
    ("not json", {D.MALFORMED: 1}),
    ('{"n": "a/x", "v": 1}', {D.MALFORMED: 1}),  # an object, not a pack
    ('[{"n": "a/x", "v": NaN}]', {D.MALFORMED: 1}),  # NaN literal refused by the parser
    ('[{"n": "a/x", "v": 1e999}]', {D.NON_FINITE: 1}),
    ('[{"n": "a/x", "v": 1' + "0" * 400 + "}]", {D.NON_FINITE: 1}),  # int beyond a double
    ('[{"n": "a/x", "v": "21"}]', {D.MALFORMED: 1}),  # mistyped field: the whole pack
    ('[{"n": "a/x", "v": true}]', {D.MALFORMED: 1}),
    ('[{"n": "a/x", "vb": true}]', {D.MALFORMED: 1}),  # not a number
    ('[{"n": "a/x", "vs": "on"}]', {D.MALFORMED: 1}),
    ('[{"n": "a/x", "vd": "AQI"}]', {D.MALFORMED: 1}),
    ('[{"n": "a/x", "s": 5}]', {D.MALFORMED: 1}),  # a sum, no value
    ('[{"n": "a/x", "v": 1, "crit_": 1}]', {D.MALFORMED: 1}),  # must-understand field
    ('[{"n": "a/x", "v": 1, "bver": 0}]', {D.MALFORMED: 1}),
    ('[{"n": "a/x", "v": 1}, 7]', {D.MALFORMED: 1}),
    ('[{"n": "-a/x", "v": 1}, {"n": "a/y", "v": 1}]', {D.MALFORMED: 1, D.UNKNOWN_CHANNEL: 1,
                                                     D.MISSING_FIELD: 1}),  # bad name (§4.5.1)
    ('[{"n": "a/x", "v": 1, "u": "K"}]', {D.WRONG_UNIT: 1}),
    ('[{"n": "a/x", "v": 99}]', {D.OUT_OF_RANGE: 1}),
    ('[{"n": "a/x", "v": 1, "bt": 1e999}]', {D.NO_TIME: 1}),
    ('[{"n": "a/y", "v": 1}]', {D.UNKNOWN_CHANNEL: 1, D.MISSING_FIELD: 1}),
    ("[]", {D.MISSING_FIELD: 1}),
    ("[" * 100_000 + "]" * 100_000, {D.MALFORMED: 1}),  # too deep (and too large)
    ("[" * 5000 + "]" * 5000, {D.MALFORMED: 1}),  # under the size cap, over the recursion limit
])
def test_senml_drops(payload: str, drops: dict[DropReason, int]) -> None:
    """Each kind of bad SenML is counted under its reason; nothing raises."""
    # Prepare
    channel = _ch("senml", senml_name="a/x", unit="Cel", min_value=-40, max_value=60)

    # Execute
    got = _parse("senml", payload, channel)

    # Assert
    assert got.drops == Counter(drops)
    assert got.readings == []


def test_senml_pack_length_is_capped() -> None:
    """A pack longer than max_records is MALFORMED for every channel, however valid."""
    # Prepare
    pack = [{"n": "a/x", "v": i} for i in range(11)]
    channels = (_ch("senml", "one", senml_name="a/x"), _ch("senml", "two", senml_name="a/x"))

    # Execute
    got = _parse("senml", pack, *channels, max_records=10)
    fits = _parse("senml", pack[:10], *channels, max_records=10)

    # Assert
    assert got.drops == Counter({D.MALFORMED: 2})
    assert len(fits.readings) == 20


@pytest.mark.parametrize("fmt", ["senml", "json", "msgpack", "bare"])
def test_payload_size_is_capped(fmt: str) -> None:
    """A payload over max_bytes is one MALFORMED per channel, without being parsed."""
    # Prepare
    payload = b" " * 1000 + b"1"
    kw = {"senml": {"senml_name": "a/x"}, "bare": {}}.get(fmt, {"field": "x"})
    channel = _ch(fmt, **kw)

    # Execute
    got = FORMATS.build(fmt, max_bytes=1000).parse(payload, channels=[channel], arrived=NOW)

    # Assert
    assert got.drops == Counter({D.MALFORMED: 1})


# --- JSON objects ------------------------------------------------------------------------------


def test_json_fields_flat_and_nested() -> None:
    """Each channel takes its own field path from one object, timed on arrival."""
    # Prepare
    payload = {"temperature": 21.4, "humidity": 40, "AM2301": {"Temperature": 19}}
    channels = (_ch("json", "t", field="temperature", unit="Cel"),
                _ch("json", "h", field="humidity"), _ch("json", "t2", field="AM2301.Temperature"))

    # Execute
    got = _parse("json", payload, *channels)

    # Assert
    assert _pairs(got) == [("t", NOW, 21.4, "Cel"), ("h", NOW, 40.0, None), ("t2", NOW, 19.0, None)]
    assert got.drops == Counter()


@pytest.mark.parametrize(("time", "naive_utc", "want"), [
    (1_700_000_000, False, 1_700_000_000.0),  # Unix seconds
    (1_700_000_000.25, False, 1_700_000_000.25),
    ("2026-01-01T12:00:00Z", False, datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp()),
    ("2026-01-01T12:00:00+01:00", False, datetime(2026, 1, 1, 11, tzinfo=UTC).timestamp()),
    ("2026-01-01T12:00:00", True, datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp()),  # Tasmota
    ("2026-01-01T12:00:00", False, None),  # no zone and no say-so: NO_TIME
    ("yesterday", False, None), (True, False, None), (None, False, None), (10**400, False, None),
])
def test_json_time_field(time: object, naive_utc: bool, want: float | None) -> None:
    """A time field gives Unix seconds or ISO 8601 with a zone; a zone-less time needs the param."""
    # Prepare
    payload = {"T": 20, "Time": time}

    # Execute
    got = _parse("json", payload, _ch("json", field="T", time_field="Time"),
                 naive_time_utc=naive_utc)

    # Assert
    assert [r.t for r in got.readings] == ([] if want is None else [want])
    assert got.drops == (Counter({D.NO_TIME: 1}) if want is None else Counter())


@pytest.mark.parametrize(("payload", "drops"), [
    ('{"x": 1, "t": 1}', {}),
    ('{"y": 1}', {D.MISSING_FIELD: 1}),
    ('{"x": {"y": 1}}', {D.MALFORMED: 1}),  # a map where a number belongs
    ('{"x": "21.5"}', {D.MALFORMED: 1}),  # a string is not a number
    ('{"x": true}', {D.MALFORMED: 1}),  # true is not 1.0
    ('{"x": null}', {D.MALFORMED: 1}),
    ('{"x": 1e999}', {D.NON_FINITE: 1}),
    ('{"x": NaN}', {D.MALFORMED: 1}),  # the whole object: NaN is not JSON
    ('{"x": -Infinity}', {D.MALFORMED: 1}),
    ('{"x": 1000}', {D.OUT_OF_RANGE: 1}),
    ('[{"x": 1}]', {D.MALFORMED: 1}),  # not an object
    ('{"x": 1', {D.MALFORMED: 1}),
    (b'{"x": 1, "s": "\xff"}', {D.MALFORMED: 1}),  # not UTF-8
    ('{"x":' * 3000 + "1" + "}" * 3000, {D.MALFORMED: 1}),  # nested past the recursion limit
])
def test_json_drops(payload: str | bytes, drops: dict[DropReason, int]) -> None:
    """Each kind of bad JSON value or document is counted under its reason."""
    # Prepare
    channel = _ch("json", field="x", max_value=100)

    # Execute
    got = _parse("json", payload, channel)

    # Assert
    assert got.drops == Counter(drops)
    assert len(got.readings) == (0 if drops else 1)


# --- bare numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "want"), [
    (b"21.5", (21.5, None)), (b"-3", (-3.0, None)), (b" 1e1\n", (10.0, None)), (b".5", (0.5, None)),
    (b"+7.", (7.0, None)),
    (b"nan", D.NON_FINITE), (b"-Infinity", D.NON_FINITE), (b"1e999", D.NON_FINITE),
    (b"true", D.MALFORMED), (b"1_000", D.MALFORMED), (b"", D.MALFORMED), (b"21,5", D.MALFORMED),
    (b"0x10", D.MALFORMED), (b"\xff", D.MALFORMED), (b"1e", D.MALFORMED),
    (b"500", D.OUT_OF_RANGE),
])
def test_bare_numbers(payload: bytes, want: tuple[float, None] | DropReason) -> None:
    """A Homie payload is one decimal number as text; anything else is counted and dropped."""
    # Prepare / Execute
    got = _parse("bare", payload, _ch("bare", max_value=100))

    # Assert
    if isinstance(want, DropReason):
        assert (got.readings, got.drops) == ([], Counter({want: 1}))
    else:
        assert [(r.value, r.unit) for r in got.readings] == [want]
        assert got.readings[0].t == NOW


def test_bare_feeds_every_channel_on_the_topic() -> None:
    """Two channels on one bare topic each get the number, each under its own range."""
    # Prepare
    wide, narrow = _ch("bare", "wide"), _ch("bare", "narrow", max_value=10)

    # Execute
    got = _parse("bare", b"21.5", wide, narrow)

    # Assert
    assert _pairs(got) == [("wide", NOW, 21.5, None)]
    assert got.drops == Counter({D.OUT_OF_RANGE: 1})


# --- msgpack maps ------------------------------------------------------------------------------


def test_msgpack_map_fields_and_timestamp() -> None:
    """A msgpack map is read by field path; a msgpack timestamp (ext -1) is a UTC time."""
    # Prepare
    when = datetime(2026, 1, 1, 12, tzinfo=UTC)
    payload = msgpack.packb({"env": {"t": 21.5, "p": 1013}, "at": when}, datetime=True)
    channels = (_ch("msgpack", "t", field="env.t", time_field="at"),
                _ch("msgpack", "p", field="env.p"))

    # Execute
    got = _parse("msgpack", payload, *channels)

    # Assert
    assert _pairs(got) == [("t", when.timestamp(), 21.5, None), ("p", NOW, 1013.0, None)]


@pytest.mark.parametrize(("payload", "drops"), [
    (msgpack.packb({"x": 1.0}), {}),
    (msgpack.packb({"x": float("nan")}), {D.NON_FINITE: 1}),
    (msgpack.packb({"x": float("inf")}), {D.NON_FINITE: 1}),
    (msgpack.packb({"x": True}), {D.MALFORMED: 1}),
    (msgpack.packb({"x": b"\x01"}), {D.MALFORMED: 1}),
    (msgpack.packb({"x": 500}), {D.OUT_OF_RANGE: 1}),
    (msgpack.packb({"y": 1}), {D.MISSING_FIELD: 1}),
    (msgpack.packb([1.0]), {D.MALFORMED: 1}),
    (msgpack.packb({1: 1.0}), {D.MALFORMED: 1}),  # keys must be strings
    (msgpack.packb({"x": 1.0}) + b"\x00", {D.MALFORMED: 1}),  # trailing bytes
    (msgpack.packb({"x": 1.0})[:-2], {D.MALFORMED: 1}),  # truncated
    (b"\xc1", {D.MALFORMED: 1}),  # a reserved byte
    (b"\x91" * 5000 + b"\x80", {D.MALFORMED: 1}),  # nested too deep
    (b"\xdf\xff\xff\xff\xff", {D.MALFORMED: 1}),  # claims 4G entries
])
def test_msgpack_drops(payload: bytes, drops: dict[DropReason, int]) -> None:
    """Each kind of bad msgpack value or document is counted under its reason."""
    # Prepare / Execute
    got = _parse("msgpack", payload, _ch("msgpack", field="x", max_value=100))

    # Assert
    assert got.drops == Counter(drops)
    assert len(got.readings) == (0 if drops else 1)


# --- config checks and random bytes ------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "kw"), [
    ("senml", {}), ("senml", {"senml_name": "a", "field": "x"}), ("json", {}),
    ("json", {"field": "x", "senml_name": "a"}), ("msgpack", {}), ("bare", {"field": "x"}),
    ("bare", {"time_field": "t"}),
])
def test_format_refuses_channels_lacking_what_it_needs(fmt: str, kw: dict[str, object]) -> None:
    """A channel without its format's field (or with one the format ignores) is BAD_CONFIG."""
    # Execute
    with pytest.raises(ConfigError) as info:
        FORMATS.build(fmt).check(_ch(fmt, **kw))

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG


_FUZZ_CHANNELS = {
    "senml": (_ch("senml", "a", senml_name="a"), _ch("senml", "b", senml_name="b", unit="Cel")),
    "json": (_ch("json", "a", field="a"), _ch("json", "b", field="b.c", time_field="t")),
    "msgpack": (_ch("msgpack", "a", field="a"), _ch("msgpack", "b", field="b", time_field="t")),
    "bare": (_ch("bare", "a"), _ch("bare", "b", min_value=0)),
}


@pytest.mark.fuzz
@pytest.mark.parametrize("fmt", sorted(_FUZZ_CHANNELS))
@settings(derandomize=True, max_examples=200, deadline=None)
@given(payload=st.one_of(
    st.binary(max_size=512),
    st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                 lambda kids: st.lists(kids, max_size=4)
                 | st.dictionaries(st.sampled_from(["a", "b", "c", "n", "v", "t", "bn", "bt", "u"]),
                                   kids, max_size=4),
                 max_leaves=12).map(lambda x: json.dumps(x).encode()),
))
def test_random_payloads_never_raise(fmt: str, payload: bytes) -> None:
    """Random bytes and random JSON give readings and drops, never an exception."""
    # Prepare
    channels = _FUZZ_CHANNELS[fmt]

    # Execute
    got = FORMATS.build(fmt).parse(payload, channels=channels, arrived=NOW)

    # Assert
    assert all(math.isfinite(r.value) and math.isfinite(r.t) for r in got.readings)
    assert all(n > 0 for n in got.drops.values())
