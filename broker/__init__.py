"""Local Mosquitto broker: config template, launcher and the `fedstream broker run` entry."""

from fedstream.broker.launcher import BrokerParams, BrokerTls, Mosquitto, find_free_port
from fedstream.broker.run import run_broker

__all__ = ["BrokerParams", "BrokerTls", "Mosquitto", "find_free_port", "run_broker"]
