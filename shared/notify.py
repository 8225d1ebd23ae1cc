"""systemd's notify protocol (sd_notify) for a service loop: readiness, a status line, watchdog
pings and stopping, each one datagram to `$NOTIFY_SOCKET`; nothing at all outside systemd.

The protocol is a few `KEY=VALUE` lines per datagram on an AF_UNIX socket (see sd_notify(3)),
so it is written here rather than pulled in as a dependency. A failure to send is logged once
and never raised: telling systemd must not be what stops a service.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyEnv:
    """What systemd handed this process in its environment.

    Attributes:
        address: Where datagrams go: a path, or a name in the Linux abstract namespace
            starting with NUL (`$NOTIFY_SOCKET`'s leading `@`); None outside systemd.
        watchdog_usec: The watchdog timeout in microseconds; None when there is none, or
            when `$WATCHDOG_PID` names another process (only that one pings).
    """

    address: str | None
    watchdog_usec: int | None

    @classmethod
    def parse(cls, environ: Mapping[str, str], pid: int) -> NotifyEnv:
        """Read `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` as sd_notify(3) and
        sd_watchdog_enabled(3) do; a malformed value means the feature is off."""
        raw = environ.get("NOTIFY_SOCKET", "")
        address = None
        if raw.startswith("@") and len(raw) > 1:
            address = "\0" + raw[1:]
        elif raw.startswith("/"):
            address = raw
        return cls(address=address, watchdog_usec=_watchdog_usec(environ, pid))


def _watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        owner = int(environ.get("WATCHDOG_PID", str(pid)))
    except ValueError:
        return None
    return usec if usec > 0 and owner == pid else None


@dataclass(slots=True)
class Pacer:
    """When the next watchdog ping is due: at most one per `every_s` (pure, clock passed in)."""

    every_s: float
    next_at: float = -math.inf

    def due(self, now: float) -> bool:
        """True, and the next one scheduled, when a ping is due at `now`."""
        if now < self.next_at:
            return False
        self.next_at = now + self.every_s
        return True


class Notifier:
    """Tells systemd how the service is doing; every method is cheap to call each loop pass.

    Build one with `from_env` (or `quiet()` for none); the constructor only assigns.

    Args:
        address: The socket address (see `NotifyEnv.address`); None makes every call a no-op.
        sock: An AF_UNIX datagram socket to send from; None with `address` None.
        watchdog_usec: The watchdog timeout (see `NotifyEnv.watchdog_usec`).
    """

    def __init__(self, *, address: str | None, sock: socket.socket | None,
                 watchdog_usec: int | None) -> None:
        self.address, self._sock, self.watchdog_usec = address, sock, watchdog_usec
        # Half the timeout between pings, as sd_watchdog_enabled(3) advises.
        self._pacer = None if watchdog_usec is None else Pacer(watchdog_usec / 2e6)
        self.is_ready = False
        self._status: str | None = None
        self._stopping = False
        self._failed = False  # logged once; later failures only retry

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 pid: int | None = None) -> Notifier:
        """The notifier this process's environment asks for (quiet outside systemd)."""
        env = NotifyEnv.parse(os.environ if environ is None else environ,
                              os.getpid() if pid is None else pid)
        if env.address is None:
            return cls.quiet()
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        except OSError as err:
            log.warning("notify_failed", socket=_shown(env.address), detail=str(err))
            return cls.quiet()
        return cls(address=env.address, sock=sock, watchdog_usec=env.watchdog_usec)

    @classmethod
    def quiet(cls) -> Notifier:
        """A notifier that sends nothing (not run by systemd, or in tests)."""
        return cls(address=None, sock=None, watchdog_usec=None)

    def ready(self, status: str | None = None) -> None:
        """READY=1 (with a status line), once: the service does what it is for now."""
        if self.is_ready or self._sock is None:
            return
        lines = ["READY=1"] + ([] if status is None else [f"STATUS={_one_line(status)}"])
        if self._send(lines):
            self.is_ready = True
            if status is not None:
                self._status = _one_line(status)

    def status(self, text: str) -> None:
        """STATUS=text, what `systemctl status` shows; sent only when the text changes."""
        text = _one_line(text)
        if text != self._status and self._send([f"STATUS={text}"]):
            self._status = text

    def pet(self, now: float) -> None:
        """Ping the watchdog if one is due at `now` (monotonic seconds): WATCHDOG=1 once
        ready; before that EXTEND_TIMEOUT_USEC, so a start that waits on purpose (an edge
        with no model yet) is not killed by `TimeoutStartSec=` while its loop is alive."""
        if self._pacer is None or not self._pacer.due(now):
            return
        if not self._send(["WATCHDOG=1" if self.is_ready
                           else f"EXTEND_TIMEOUT_USEC={self.watchdog_usec}"]):
            self._pacer.next_at = now  # try again on the next pass

    def stopping(self) -> None:
        """STOPPING=1, once: the service is on its way out."""
        if not self._stopping and self._sock is not None:
            self._stopping = self._send(["STOPPING=1"])

    def close(self) -> None:
        """Close the socket; later calls send nothing."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, lines: list[str]) -> bool:
        """One datagram; False (logged the first time) if it could not be sent. Never blocks:
        a full socket buffer drops this message, and the caller tries again."""
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as err:
            if not self._failed:
                self._failed = True
                log.warning("notify_failed", socket=_shown(self.address), detail=str(err))
            return False
        return True


def _one_line(text: str) -> str:
    """A status is one line of the datagram: a newline would start another assignment."""
    return " ".join(text.split())


def _shown(address: str) -> str:
    """The address as `$NOTIFY_SOCKET` spells it (an abstract name with its `@`)."""
    return "@" + address[1:] if address.startswith("\0") else address


class Pulse:
    """A watchdog ping for work built before the service runs and done deep inside its loop
    (the cloud's fine-tuning): calls the attached notifier's `pet`, and does nothing until
    one is attached. Cheap enough to call every training step (`pet` paces itself)."""

    def __init__(self) -> None:
        self._notify: Notifier | None = None

    def attach(self, notify: Notifier) -> None:
        """Ping through `notify` from now on."""
        self._notify = notify

    def __call__(self) -> None:
        if self._notify is not None:
            self._notify.pet(time.monotonic())
