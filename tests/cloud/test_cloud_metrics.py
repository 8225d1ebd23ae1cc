"""The cloud's metric set: verdicts, rounds (each counted once), published bytes, and the
gauges and tallies read at scrape time; the endpoint serving them over HTTP."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedstream.cloud.inference._tally import Tally
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.metrics import CloudMetrics, Live
from fedstream.shared.config import MetricsConfig
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.metrics import MetricsEndpoint
from fedstream.shared.protocol.control import ReceiptStatus, RoundState, RoundStatus, TrainParams

TRAIN = TrainParams(epochs=1, lr=0.1, momentum=0.0, batch_size=8)


def _samples(metrics: CloudMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _round(status: RoundStatus, *, reason: str = "") -> RoundState:
    return RoundState(round_id="r1", model="m", status=status, base_version=2, deadline=9.0,
                      train=TRAIN, codec="f32", selection=("a",), quorum=1, opened=100.0,
                      reason=reason)


def _live(**changes: object) -> Live:
    values: dict[str, object] = {"model_version": 3, "scores": {"accuracy": 0.9},
                                 "edges_online": 2, "intake_bytes": 64, "round_open": True,
                                 "rejections": {"bad_hash": 2}}
    values.update(changes)
    return Live(**values)  # type: ignore[arg-type]


def test_verdicts_count_by_reason_and_accepted_ones_add_bytes_and_staleness() -> None:
    """Two accepted (one a version stale) and one rejected update."""
    # Prepare
    metrics = CloudMetrics()
    rows = [UpdateRow(update_id="u1", round_id="r1", edge_id="a",
                      status=ReceiptStatus.ACCEPTED, bytes=100, base=3),
            UpdateRow(update_id="u2", round_id="r1", edge_id="b",
                      status=ReceiptStatus.ACCEPTED, bytes=50, base=2),
            UpdateRow(update_id="u3", round_id="r1", edge_id="c",
                      status=ReceiptStatus.REJECTED, reason="bad_signature")]

    # Execute
    for row in rows:
        metrics.verdict(row, current_version=3)
    got = _samples(metrics)

    # Assert
    assert got[("fedstream_updates_total", (("reason", "none"), ("verdict", "accepted")))] == 2
    assert got[("fedstream_updates_total",
                (("reason", "bad_signature"), ("verdict", "rejected")))] == 1
    assert got[("fedstream_update_received_bytes_total", ())] == 150
    assert got[("fedstream_update_staleness_versions_count", ())] == 2
    assert got[("fedstream_update_staleness_versions_sum", ())] == 1


def test_a_round_counts_once_when_it_ends_and_only_if_it_was_seen_open() -> None:
    """Open then published (republished twice): one published round, whose opening-to-end
    span by the given clock (100 -> 120) lands in the 30 s bucket, not the 10 s one; a failed
    round this process never saw open (a restart's republished last round) is not counted."""
    # Prepare
    metrics = CloudMetrics()

    # Execute
    metrics.round_state(_round(RoundStatus.COLLECTING), now=101.0)
    for _ in range(3):
        metrics.round_state(_round(RoundStatus.PUBLISHED), now=120.0)
    other = RoundState(round_id="r0", model="m", status=RoundStatus.FAILED, base_version=1,
                       deadline=1.0, train=TRAIN, codec="f32", selection=("a",), quorum=1,
                       reason="no_quorum")
    metrics.round_state(other, now=130.0)
    got = _samples(metrics)

    # Assert
    assert got[("fedstream_rounds_total", (("outcome", "published"),))] == 1
    assert ("fedstream_rounds_total", (("outcome", "no_quorum"),)) not in got
    histogram = "fedstream_round_duration_seconds"
    observed = got[(f"{histogram}_count", ())]
    in_buckets = (got[(f"{histogram}_bucket", (("le", "10.0"),))],
                  got[(f"{histogram}_bucket", (("le", "30.0"),))])
    assert observed == 1  # one round published: one observation
    assert in_buckets == (0, 1)


def test_the_live_view_is_read_at_every_scrape() -> None:
    """Gauges, rejection tallies, inference requests by door and outcome, and a latency
    histogram whose buckets are cumulative."""
    # Prepare
    metrics, tally = CloudMetrics(), Tally()
    tally.served("http", 0.003)
    tally.served("http", 0.2)
    tally.rejected("mqtt", "overloaded")
    views = iter([_live(), _live(model_version=4, inference=tally.snapshot(),
                                 latency=tally.latencies())])
    metrics.watch(lambda: next(views))

    # Execute
    first, second = _samples(metrics), _samples(metrics)

    # Assert
    assert first[("fedstream_model_version", ())] == 3
    assert second[("fedstream_model_version", ())] == 4
    assert first[("fedstream_model_score", (("metric", "accuracy"),))] == 0.9
    assert first[("fedstream_rejected_messages_total", (("reason", "bad_hash"),))] == 2
    assert first[("fedstream_round_open", ())] == 1 and first[("fedstream_edges_online", ())] == 2
    assert second[("fedstream_inference_requests_total",
                   (("outcome", "served"), ("via", "http")))] == 2
    assert second[("fedstream_inference_requests_total",
                   (("outcome", "rejected"), ("via", "mqtt")))] == 1
    bucket = "fedstream_inference_request_duration_seconds_bucket"
    assert second[(bucket, (("le", "0.005"), ("via", "http")))] == 1
    assert second[(bucket, (("le", "0.25"), ("via", "http")))] == 2
    assert second[(bucket, (("le", "+Inf"), ("via", "http")))] == 2


def test_the_endpoint_serves_the_registry_and_refuses_a_taken_port() -> None:
    """Port 0 binds a free port and /metrics answers in the text format; a port in use is a
    clear bad_config; no port configured means no endpoint."""
    # Prepare
    metrics = CloudMetrics()
    metrics.published_bytes.inc(7)
    endpoint = MetricsEndpoint(MetricsConfig(port=0), metrics.registry)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()

    # Execute
    endpoint.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics",
                                    timeout=10) as answer:
            text = answer.read().decode()
    finally:
        endpoint.stop()
    clash = MetricsEndpoint(MetricsConfig(port=taken.getsockname()[1]), metrics.registry)
    with pytest.raises(ConfigError) as info:
        clash.start()
    taken.close()
    off = MetricsEndpoint(MetricsConfig(), metrics.registry)
    off.start()

    # Assert
    assert "fedstream_model_published_bytes_total 7.0" in text
    assert info.value.reason is Reason.BAD_CONFIG and "metrics" in info.value.detail
    assert off.port is None
