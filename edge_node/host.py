"""Many edge daemons in one process, driven by one thread: a share of the simulated fleet of
`fedstream sim`.

Each edge is the real `EdgeDaemon` with its own MQTT client (session, last will), identity,
outbox directory and data shard; what the edges of a host share is the process: torch and
the data set are loaded once, and training runs on the host's one driving thread, one edge at
a time (a few hosts train in parallel; more driving threads per host measured slower on two
cores: their GIL hand-offs cost more than the waits they overlap). Each MQTT client keeps its
own network thread, so keepalives and acks go on while the host trains another edge; the
per-edge loop threads of `fedstream edge run` are what the host saves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from fedstream.edge_node.config import EdgeConfig, SourceConfig
from fedstream.edge_node.daemon import EdgeDaemon
from fedstream.edge_node.host_report import HostReport, sim_edge_id
from fedstream.edge_node.wiring import open_edge
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.protocol.mqtt import Inbound

log = structlog.get_logger(__name__)

# How often every edge gets a pass for what is due without a message (probes, status).
TICK_S = 1.0
# Edges connecting (or stopping) at once: a bound, so the broker sees no connect storm.
PARALLEL_STARTS = 8


def edge_config(base: EdgeConfig, index: int, *, edges: int, root: Path) -> EdgeConfig:
    """Edge `index` of a simulated fleet of `edges`: `base` with its own id, seed, data
    directory (`root/<id>`) and data shard (part `index` of `edges` of `base`'s source)."""
    edge_id = sim_edge_id(index)
    params = {**base.source.params, "partitions": edges, "partition": index}
    return base.model_copy(update={
        "edge_id": edge_id, "seed": base.seed + index, "data_dir": root / edge_id,
        "source": SourceConfig(name=base.source.name, params=params)})


class _Signalled(queue.Queue[Inbound]):
    """One edge's inbox that also tells the host which edge has work."""

    def __init__(self, index: int, ready: queue.SimpleQueue[int]) -> None:
        super().__init__()
        self._index, self._ready = index, ready

    def put(self, item: Inbound, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._ready.put(self._index)


class EdgeHost:
    """Runs the daemons `configs` describe until told to stop.

    Args:
        configs: One config per edge (`edge_config`).
    """

    def __init__(self, configs: Iterable[EdgeConfig]) -> None:
        self._configs = list(configs)
        self._ready: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.daemons: list[EdgeDaemon] = []
        self._failed: set[int] = set()

    def start(self) -> None:
        """Open every edge (data shard, outbox), then connect them, `PARALLEL_STARTS` at a
        time.

        Raises:
            FedstreamError: an edge that cannot be opened or connected (the ones started
                are stopped again).
        """
        began = time.monotonic()
        self.daemons = [open_edge(cfg, _Signalled(i, self._ready))
                        for i, cfg in enumerate(self._configs)]
        try:
            with ThreadPoolExecutor(PARALLEL_STARTS, thread_name_prefix="edge-start") as pool:
                list(pool.map(lambda d: d.start(), self.daemons))
        except BaseException:
            self.shut_down()
            raise
        log.info("host_started", edges=len(self.daemons),
                 seconds=round(time.monotonic() - began, 3))

    def serve(self, stop: threading.Event) -> None:
        """Hand each message to its edge, and every edge a pass each `TICK_S`, until `stop`."""
        next_tick = time.monotonic() + TICK_S
        while not stop.is_set():
            with contextlib.suppress(queue.Empty):
                index = self._ready.get(timeout=TICK_S / 4)
                self._turn(index)
            if time.monotonic() >= next_tick:
                for index in range(len(self.daemons)):
                    self._turn(index)
                next_tick = time.monotonic() + TICK_S

    def shut_down(self) -> None:
        """Stop every edge (offline status, disconnect), `PARALLEL_STARTS` at a time."""
        with ThreadPoolExecutor(PARALLEL_STARTS, thread_name_prefix="edge-stop") as pool:
            list(pool.map(lambda d: d.shut_down(), self._running()))
        log.info("host_stopped", **dataclasses.asdict(self.report()))

    def report(self) -> HostReport:
        """Counts over the host's edges (see `HostReport`), from their metrics."""
        def total(name: str, **labels: str) -> int:
            return sum(int(d.metrics.registry.get_sample_value(name, labels) or 0)
                       for d in self.daemons)

        verdicts = [(sample.labels["verdict"], sample.labels["reason"], int(sample.value))
                    for d in self.daemons for metric in d.metrics.receipts.collect()
                    for sample in metric.samples if sample.name.endswith("_total")]

        def receipts(verdict: str, reason: str | None = None) -> int:
            return sum(n for v, r, n in verdicts
                       if v == verdict and (reason is None or r == reason))

        duplicates = receipts("rejected", str(Reason.DUPLICATE_UPDATE))
        return HostReport(
            edges=len(self.daemons), sent=total("fedstream_edge_updates_sent_total"),
            samples=total("fedstream_edge_trained_samples_total"),
            accepted=receipts("accepted"), duplicates=duplicates,
            rejected=receipts("rejected") - duplicates,
            unanswered=sum(len(d.outbox) for d in self.daemons), failed=len(self._failed))

    def _running(self) -> Iterator[EdgeDaemon]:
        return (d for i, d in enumerate(self.daemons) if i not in self._failed)

    def _turn(self, index: int) -> None:
        if index in self._failed:
            return
        daemon = self.daemons[index]
        try:
            daemon.turn(timeout_s=0)
        except Exception as err:
            # One edge's failure is that edge's: logged, counted, closed (its last will says
            # it is offline, so the cloud stops selecting it); the others go on.
            self._failed.add(index)
            reason = err.reason if isinstance(err, FedstreamError) else "internal"
            log.exception("edge_failed", edge_id=daemon.cfg.edge_id, reason=str(reason),
                          detail=getattr(err, "detail", repr(err)))
            daemon.mqtt.close(will=True)
