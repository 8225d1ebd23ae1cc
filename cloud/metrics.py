"""The cloud's Prometheus metrics: events counted as they happen (verdicts, rounds ending,
models published), the rest read from the service's state at scrape time.

Names follow Prometheus' conventions: the `fedstream_` prefix, base units (seconds, bytes),
`_total` on counters. `deploy/monitoring/grafana-dashboard.json` draws them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from fedstream.cloud.inference import Latency
from fedstream.cloud.journal import UpdateRow
from fedstream.shared.metrics import counts, gauge, gauges
from fedstream.shared.protocol.control import ReceiptStatus, RoundState

ROUND_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
STALENESS_BUCKETS = (0, 1, 2, 3, 5, 8)


@dataclass(frozen=True, slots=True)
class Live:
    """What the service holds right now, read on the service's state at scrape time."""

    model_version: int
    scores: Mapping[str, float]
    edges_online: int
    intake_bytes: int
    round_open: bool
    rejections: Mapping[str, int]
    inference: Mapping[str, int] = field(default_factory=dict)
    latency: Mapping[str, Latency] = field(default_factory=dict)


class CloudMetrics:
    """The cloud service's metric set in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rounds = Counter("fedstream_rounds", "Rounds and async sessions ended, by outcome "
                              "(published, or the failure reason)", ["outcome"], registry=r)
        self.round_seconds = Histogram("fedstream_round_duration_seconds",
                                       "From opening to publishing or failing",
                                       buckets=ROUND_BUCKETS_S, registry=r)
        self.updates = Counter("fedstream_updates", "Update verdicts, by verdict and reason",
                               ["verdict", "reason"], registry=r)
        self.received_bytes = Counter("fedstream_update_received_bytes",
                                      "Bytes of accepted update blobs", registry=r)
        self.published_bytes = Counter("fedstream_model_published_bytes",
                                       "Bytes of model blobs published", registry=r)
        self.staleness = Histogram("fedstream_update_staleness_versions",
                                   "Versions between an accepted update's base and the "
                                   "current model", buckets=STALENESS_BUCKETS, registry=r)
        # Round ids seen open in this process: only they count when they end, so a restart's
        # republished last round is not counted twice.
        self._open: set[str] = set()

    def watch(self, read: Callable[[], Live]) -> None:
        """Serve the gauges and tallies `read` returns at every scrape."""
        self.registry.register(_LiveCollector(read))

    def verdict(self, row: UpdateRow, current_version: int) -> None:
        """Count one recorded update verdict (accepted: its bytes and staleness too)."""
        self.updates.labels(verdict=str(row.status), reason=row.reason or "none").inc()
        if row.status is ReceiptStatus.ACCEPTED:
            self.received_bytes.inc(row.bytes)
            self.staleness.observe(max(0, current_version - row.base))

    def round_state(self, state: RoundState, now: float) -> None:
        """Note a round state published; one that ends a round seen open counts once."""
        if not state.terminal:
            self._open.add(state.round_id)
            return
        if state.round_id not in self._open:
            return
        self._open.discard(state.round_id)
        self.rounds.labels(outcome=str(state.status) if not state.reason
                           else state.reason).inc()
        if state.opened:
            self.round_seconds.observe(max(0.0, now - state.opened))

    def model_published(self, size: int) -> None:
        """Count a published model blob's bytes."""
        self.published_bytes.inc(size)


class _LiveCollector(Collector):
    def __init__(self, read: Callable[[], Live]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        live = self._read()
        yield gauge("fedstream_model_version", "The current (served) model version",
                    live.model_version)
        yield gauges("fedstream_model_score", "The current version's scores (accuracy, mae, "
                     "rmse; avg_accuracy, forgetting, bwt with the continual pipeline)",
                     "metric", live.scores)
        yield gauge("fedstream_edges_online", "Edges whose last status says online",
                    live.edges_online)
        yield gauge("fedstream_intake_held_bytes", "Bytes held by partial updates",
                    live.intake_bytes)
        yield gauge("fedstream_round_open", "1 while a round or session collects",
                    1.0 if live.round_open else 0.0)
        yield counts("fedstream_rejected_messages", "Frames and messages refused, by reason",
                     "reason", live.rejections)
        requests = CounterMetricFamily("fedstream_inference_requests",
                                       "Inference requests, by front door and outcome",
                                       labels=["via", "outcome"])
        for key, value in sorted(live.inference.items()):
            outcome, _, via = key.partition(".")
            if via and outcome in ("served", "rejected"):
                requests.add_metric([via, outcome], value)
        yield requests
        latency = HistogramMetricFamily("fedstream_inference_request_duration_seconds",
                                        "From a request's arrival to its answer",
                                        labels=["via"])
        for via, lat in sorted(live.latency.items()):
            latency.add_metric([via], lat.cumulative(), sum_value=lat.total_s)
        yield latency

