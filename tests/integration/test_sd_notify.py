"""End to end: the real cloud and edge processes speak systemd's notify protocol to a socket
the test binds, as they would to systemd's (READY, STATUS, WATCHDOG, STOPPING)."""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedstream.broker import Mosquitto
from fedstream.client import FleetAddress, FleetClient
from fedstream.demo import MODEL, Processes, write_configs
from fedstream.shared.protocol.commands import RoundReply, RoundStart

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

WATCHDOG_USEC = 2_000_000
START_S = 120.0  # torch (and IPEX) imports, the backend probe: slow on a loaded machine


class Notices:
    """The datagrams one process sends to its notify socket, drained as they come (as
    systemd does: a full socket would make the service drop messages).

    Args:
        sock: The bound socket; closing it ends the reader.
        alive: Raises (with the process's log) if the process is gone.
    """

    def __init__(self, sock: socket.socket, alive: Callable[[], None]) -> None:
        self.alive = alive
        self.seen: list[dict[str, str]] = []
        self._got: queue.Queue[dict[str, str]] = queue.Queue()
        threading.Thread(target=self._read, args=(sock,), daemon=True).start()

    def _read(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while raw := sock.recv(4096):
                self._got.put(dict(line.split("=", 1) for line in raw.decode().split("\n")))

    def until(self, want: Callable[[dict[str, str]], bool], timeout_s: float) -> dict[str, str]:
        """The first datagram from now on for which `want` holds, as its assignments."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                got = self._got.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.alive()
                raise AssertionError(
                    f"no such datagram in {timeout_s}s; got {self.seen}") from None
            self.seen.append(got)
            if want(got):
                return got


@pytest.fixture
def sockets(tmp_path: Path) -> Iterator[dict[str, tuple[socket.socket, Path]]]:
    """One bound datagram socket per process, standing in for systemd's."""
    made = {}
    for name in ("cloud", "edge-0"):
        path = tmp_path / f"{name}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        made[name] = (sock, path)
    yield made
    for sock, _ in made.values():
        sock.close()


def test_services_tell_systemd_ready_status_watchdog_and_stopping(
        broker: Mosquitto, federation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        sockets: dict[str, tuple[socket.socket, Path]]) -> None:
    """The cloud is READY once it serves and the edge once it holds model v0; both ping the
    watchdog at half its interval, their STATUS follows a round, and SIGTERM brings
    STOPPING=1 and a clean exit."""
    # Prepare
    cloud_cfg, (edge_cfg,) = write_configs(tmp_path, port=broker.port, federation=federation,
                                           edges=1, dirichlet_alpha=0.5)
    procs = Processes(tmp_path)
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model=MODEL, timeout_s=10.0)
    cloud, edge = (Notices(sockets[n][0], procs.check_alive) for n in ("cloud", "edge-0"))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    try:
        for name, role, config in (("cloud", "cloud", cloud_cfg), ("edge-0", "edge", edge_cfg)):
            monkeypatch.setenv("NOTIFY_SOCKET", str(sockets[name][1]))
            procs.spawn(name, role, config)

        # Execute
        cloud_ready = cloud.until(lambda d: "READY" in d, START_S)
        edge_ready = edge.until(lambda d: "READY" in d, START_S)
        cloud.until(lambda d: d.get("STATUS", "").endswith("1 edge online"), START_S)
        pings = [cloud.until(lambda d: "WATCHDOG" in d, 10.0),
                 edge.until(lambda d: "WATCHDOG" in d, 10.0)]
        with FleetClient(address) as fleet:
            opened = fleet.command(RoundStart(epochs=1), RoundReply).round
        assert opened is not None
        trained = edge.until(lambda d: "trained" in d.get("STATUS", ""), START_S)
        published = cloud.until(lambda d: "published" in d.get("STATUS", ""), START_S)
        for name in ("cloud", "edge-0"):
            procs.procs[name].send_signal(signal.SIGTERM)
        stopping = [cloud.until(lambda d: "STOPPING" in d, 30.0),
                    edge.until(lambda d: "STOPPING" in d, 30.0)]
        codes = [procs.procs[n].wait(30.0) for n in ("cloud", "edge-0")]
    finally:
        procs.stop()

    # Assert
    assert cloud.seen[0]["STATUS"].startswith("connecting to the broker at 127.0.0.1:")
    assert cloud_ready == {"READY": "1",
                           "STATUS": "no round yet, model v0, 0 edges online"}
    assert edge.seen[0]["STATUS"].startswith("connecting to the broker at 127.0.0.1:")
    assert {"EXTEND_TIMEOUT_USEC": str(WATCHDOG_USEC)} in edge.seen[:edge.seen.index(edge_ready)]
    assert edge_ready["STATUS"].startswith("model v0, no round trained yet, outbox 0, backend ")
    assert pings == [{"WATCHDOG": "1"}, {"WATCHDOG": "1"}]
    assert re.fullmatch(rf"model v[01], round {opened.round_id} trained, outbox [01], "
                        r"backend \w+ \w+", trained["STATUS"])
    assert published["STATUS"] == (f"round {opened.round_id} published, model v1, "
                                   "1 edge online")
    assert stopping == [{"STOPPING": "1"}, {"STOPPING": "1"}]
    assert codes == [0, 0]
