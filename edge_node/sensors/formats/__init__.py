"""Payload formats of sensor readings, looked up by the name a channel's config gives."""

# Importing each unit registers it in FORMATS.
from fedstream.edge_node.sensors.formats import bare as _bare  # noqa: F401
from fedstream.edge_node.sensors.formats import json_fields as _json_fields  # noqa: F401
from fedstream.edge_node.sensors.formats import msgpack_map as _msgpack_map  # noqa: F401
from fedstream.edge_node.sensors.formats import senml as _senml  # noqa: F401
from fedstream.edge_node.sensors.formats.base import FORMATS, Parsed, PayloadFormat

__all__ = ["FORMATS", "Parsed", "PayloadFormat"]
