"""Aggregation strategies, chosen by name in the cloud config."""

from fedstream.cloud.strategies import fedavg as _fedavg  # noqa: F401  (importing registers it)
from fedstream.cloud.strategies.base import STRATEGIES, Aggregator

__all__ = ["STRATEGIES", "Aggregator"]
