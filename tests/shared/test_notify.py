"""Tests for shared/notify.py: the environment, the ping pace, and datagrams on a real socket."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from fedstream.shared.notify import Notifier, NotifyEnv, Pacer, Pulse

PID = 4242


@pytest.mark.parametrize(("environ", "address", "usec"), [
    ({}, None, None),
    ({"NOTIFY_SOCKET": "/run/systemd/notify"}, "/run/systemd/notify", None),
    ({"NOTIFY_SOCKET": "@sd-notify"}, "\0sd-notify", None),
    ({"NOTIFY_SOCKET": "@"}, None, None),
    ({"NOTIFY_SOCKET": "relative/path"}, None, None),
    ({"WATCHDOG_USEC": "2000000"}, None, 2_000_000),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(PID)}, None, 2_000_000),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None, None),
    ({"WATCHDOG_USEC": "0"}, None, None),
    ({"WATCHDOG_USEC": "soon"}, None, None),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "me"}, None, None),
])
def test_environment_is_read_as_sd_notify_does(environ: dict[str, str], address: str | None,
                                               usec: int | None) -> None:
    """The socket address (`@` is the abstract namespace) and the watchdog, only for its pid."""
    # Execute
    env = NotifyEnv.parse(environ, PID)

    # Assert
    assert (env.address, env.watchdog_usec) == (address, usec)


def test_pacer_allows_one_ping_per_interval() -> None:
    """A ping is due at once, then again only a full interval after the last one."""
    # Prepare
    pacer = Pacer(1.0)

    # Execute
    due = [pacer.due(t) for t in (10.0, 10.5, 10.99, 11.0, 11.2, 12.5)]

    # Assert
    assert due == [True, False, False, True, False, True]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in tmp_path, standing in for systemd's, with its path."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5.0)
    yield sock, path
    sock.close()


@pytest.fixture
def make() -> Iterator[Callable[..., Notifier]]:
    """Builds notifiers for a socket path (and a watchdog), closing them after the test."""
    made: list[Notifier] = []

    def build(path: str, usec: int | None = None) -> Notifier:
        environ = {"NOTIFY_SOCKET": path}
        if usec is not None:
            environ["WATCHDOG_USEC"] = str(usec)
        made.append(Notifier.from_env(environ, PID))
        return made[-1]

    yield build
    for notify in made:
        notify.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_ready_is_sent_once_with_its_status(listener: tuple[socket.socket, str],
                                            make: Callable[..., Notifier]) -> None:
    """READY=1 goes out with the status once; a second call sends nothing (the next datagram
    is the one after it)."""
    # Prepare
    sock, path = listener
    notify = make(path)

    # Execute
    notify.ready("model v3")
    notify.ready("model v3")
    notify.status("marker")

    # Assert
    assert _recv(sock) == "READY=1\nSTATUS=model v3"
    assert _recv(sock) == "STATUS=marker"
    assert notify.is_ready


def test_status_is_sent_only_when_it_changes(listener: tuple[socket.socket, str],
                                             make: Callable[..., Notifier]) -> None:
    """The same text twice is one datagram; a newline in the text cannot start a new key."""
    # Prepare
    sock, path = listener
    notify = make(path)

    # Execute
    for text in ("waiting for a model", "waiting for a model", "model v1\nREADY=1"):
        notify.status(text)

    # Assert
    assert [_recv(sock), _recv(sock)] == ["STATUS=waiting for a model",
                                          "STATUS=model v1 READY=1"]


def test_watchdog_pings_at_half_the_interval(listener: tuple[socket.socket, str],
                                             make: Callable[..., Notifier]) -> None:
    """Before READY a ping extends the start timeout; after it, WATCHDOG=1 at most every
    half interval (1 s of a 2 s watchdog)."""
    # Prepare
    sock, path = listener
    notify = make(path, usec=2_000_000)

    # Execute
    notify.pet(100.0)
    notify.ready()
    for now in (100.5, 101.0, 101.4, 102.0):
        notify.pet(now)
    notify.stopping()
    notify.stopping()
    notify.status("marker")

    # Assert
    got = [_recv(sock) for _ in range(6)]
    assert got == ["EXTEND_TIMEOUT_USEC=2000000", "READY=1", "WATCHDOG=1", "WATCHDOG=1",
                   "STOPPING=1", "STATUS=marker"]


def test_no_watchdog_means_no_pings(listener: tuple[socket.socket, str],
                                    make: Callable[..., Notifier]) -> None:
    """Without $WATCHDOG_USEC `pet` sends nothing."""
    # Prepare
    sock, path = listener
    notify = make(path)

    # Execute
    notify.pet(0.0)
    notify.status("marker")

    # Assert
    assert _recv(sock) == "STATUS=marker"


def test_abstract_namespace_socket() -> None:
    """`@name` reaches a socket bound to that name in the abstract namespace."""
    # Prepare
    name = f"fedstream-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        notify = Notifier.from_env({"NOTIFY_SOCKET": "@" + name}, PID)

        # Execute
        notify.ready()

        # Assert
        assert _recv(sock) == "READY=1"
        notify.close()


def test_a_failing_socket_is_logged_once_and_never_raises(
        tmp_path: Path, make: Callable[..., Notifier]) -> None:
    """Nobody listening: every call returns, one notify_failed is logged, READY is retried."""
    # Prepare
    notify = make(str(tmp_path / "nobody.sock"), usec=2_000_000)

    # Execute
    with capture_logs() as logs:
        for now in (0.0, 1.0, 2.0):
            notify.ready("x")
            notify.status("y")
            notify.pet(now)
        notify.stopping()

    # Assert
    assert [e["event"] for e in logs] == ["notify_failed"]
    assert logs[0]["socket"].endswith("nobody.sock")
    assert not notify.is_ready


def test_outside_systemd_nothing_is_sent() -> None:
    """No $NOTIFY_SOCKET: a quiet notifier that never logs or fails."""
    # Prepare
    notify = Notifier.from_env({"WATCHDOG_USEC": "1000000"}, PID)

    # Execute
    with capture_logs() as logs:
        notify.ready("x")
        notify.pet(0.0)
        notify.stopping()
        notify.close()

    # Assert
    assert (notify.address, notify.is_ready, logs) == (None, False, [])


def test_a_pulse_pings_only_once_attached(listener: tuple[socket.socket, str],
                                          make: Callable[..., Notifier]) -> None:
    """A pulse built before the service runs does nothing until `attach`, then pings the
    watchdog through the notifier (which paces it)."""
    # Prepare
    sock, path = listener
    notify = make(path, usec=2_000_000)
    notify.ready()
    pulse = Pulse()

    # Execute
    pulse()
    pulse.attach(notify)
    pulse()
    pulse()  # within the same half interval: paced away
    notify.status("marker")

    # Assert
    got = [_recv(sock) for _ in range(3)]
    assert got == ["READY=1", "WATCHDOG=1", "STATUS=marker"]
