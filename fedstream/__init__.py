"""fedstream: federated + continual learning for IoT fleets over MQTT."""

__all__ = ["__version__"]

__version__ = "0.1.0"
