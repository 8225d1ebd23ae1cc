"""Local Mosquitto broker: config template, launcher, reload, and the `fedstream broker run`
entry."""

from fedstream.broker.launcher import BrokerParams, BrokerTls, Mosquitto, find_free_port
from fedstream.broker.reload import broker_pid_file, reload_broker
from fedstream.broker.run import run_broker

__all__ = ["BrokerParams", "BrokerTls", "Mosquitto", "broker_pid_file", "find_free_port",
           "reload_broker", "run_broker"]
