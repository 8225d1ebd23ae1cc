"""Sensor intake: channels, the payload formats devices publish, routing a message to readings."""

from fedstream.edge_node.sensors.channels import Router, build_router
from fedstream.edge_node.sensors.formats import FORMATS, Parsed
from fedstream.edge_node.sensors.reading import Channel, DropReason, Reading

__all__ = ["FORMATS", "Channel", "DropReason", "Parsed", "Reading", "Router", "build_router"]
