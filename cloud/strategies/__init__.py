"""Aggregation strategies, chosen by name in the cloud config.

Importing this package registers every unit in `STRATEGIES`.
"""

from fedstream.cloud.strategies import (  # noqa: F401  (importing registers them)
    fedadagrad,
    fedadam,
    fedavg,
    fedavgm,
    fedyogi,
    krum,
    median,
    trimmed_mean,
)
from fedstream.cloud.strategies._clip import clip_to_norm
from fedstream.cloud.strategies.base import STRATEGIES, Aggregator, ServerState, Strategy, flat_norm

__all__ = ["STRATEGIES", "Aggregator", "ServerState", "Strategy", "clip_to_norm", "flat_norm"]
