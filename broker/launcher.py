"""Start, stop and restart a local Mosquitto broker rendered from the project's config template."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from types import TracebackType
from typing import IO, Self

import structlog

from fedstream.shared.errors import ConfigError, Reason, TransportError

log = structlog.get_logger(__name__)

_FALLBACK_BINARY = "/usr/sbin/mosquitto"
_LOG_TAIL_LINES = 20
_PROBE_INTERVAL_S = 0.02
_RELOADED = b"Reloading config."

# What a reload (SIGHUP: `Mosquitto.reload`, or `reload.reload_broker` from another process)
# does in Mosquitto 2.0.11, as tests/broker/test_broker_acl.py shows:
# - The ACL is read again and applies at once, to sessions already open too: a revoked
#   identity's next QoS 1 publish gets PUBACK 0x87 (not authorized), and nothing more is
#   delivered to its subscriptions (read access is checked per message, not at SUBSCRIBE).
# - The CRL is read again (with the listener's certificates): a new connection with a revoked
#   certificate is refused. In TLS 1.2 the handshake fails with alert "certificate revoked"; in
#   TLS 1.3 (what clients negotiate: Mosquitto 2.0's `tls_version` is a minimum) the client's
#   side of the handshake completes and the broker closes the connection before any CONNACK.
# - A session already open stays open: TLS checked its certificate at the handshake only. With
#   no ACL lines it can do nothing, and once it drops it cannot come back.
# Without a SIGHUP, Mosquitto keeps the ACL and the CRL it read at start.


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now (the OS picks it).

    Raises:
        TransportError: BROKER_FAILED if `host` cannot be bound.
    """
    return _try_bind(host, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerTls:
    """A TLS listener that requires a client certificate from the federation's CA and takes
    the certificate's common name as the MQTT username (`shared/security/pki.py` issues them).

    Args:
        ca: The federation CA's certificate.
        cert: The broker's certificate (valid for the host clients connect to).
        key: The broker's private key.
        host: Listener bind address.
        port: Listener port; 0 picks a free one at the first start.
        acl: The listener's `acl_file` (`pki.write_acl` writes it from the identities); None:
            every client with a certificate may read and write every topic.
        crl: The CA's revocation list (`crlfile`): a revoked certificate is refused.
    """

    ca: Path
    cert: Path
    key: Path
    host: str = "127.0.0.1"
    port: int = 0
    acl: Path | None = None
    crl: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerParams:
    """Where a local Mosquitto listens and keeps its data.

    Args:
        data_dir: Holds the rendered config, the persistence database and the broker log.
        host: Listener bind address; loopback by default because the dev config is anonymous.
        port: Listener port; 0 picks a free port at the first start and keeps it across restarts.
        mosquitto: Binary name or path.
        tls: A second, TLS listener with client certificates; None: the plain one only.
        pid_file: Where Mosquitto writes its process id (`reload.reload_broker` reads it); None:
            `data_dir/mosquitto.pid`.

    Raises:
        ConfigError: A value is out of range or empty.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    mosquitto: str = "mosquitto"
    tls: BrokerTls | None = None
    pid_file: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if not self.host:
            raise ConfigError(Reason.BAD_CONFIG, "broker host must not be empty")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ConfigError(Reason.BAD_CONFIG, f"broker port must be an int, got {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(Reason.BAD_CONFIG, f"broker port {self.port} is not in 0..65535")
        if not self.mosquitto:
            raise ConfigError(Reason.BAD_CONFIG, "mosquitto binary must not be empty")


class Mosquitto:
    """One Mosquitto process; a context manager that starts on enter and stops on exit.

    Args:
        params: Listener and data directory settings.
    """

    def __init__(self, params: BrokerParams) -> None:
        self._params = params
        self._port = params.port
        self._tls_port = params.tls.port if params.tls else 0
        self._log_path = params.data_dir.resolve() / "mosquitto.log"
        self._pid_file = (params.pid_file or params.data_dir / "mosquitto.pid").resolve()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def host(self) -> str:
        """Listener bind address."""
        return self._params.host

    @property
    def port(self) -> int:
        """Listener port (0 until the first start when a free port was asked for)."""
        return self._port

    @property
    def tls_port(self) -> int:
        """The TLS listener's port (0 without one, or before the first start)."""
        return self._tls_port

    @property
    def url(self) -> str:
        """Broker address as `mqtt://host:port`."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id while running, else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def pid_file(self) -> Path:
        """Where Mosquitto writes its process id while it runs."""
        return self._pid_file

    def start(self, timeout: float = 10.0) -> None:
        """Render the config, spawn Mosquitto and wait until it accepts TCP connections.

        Args:
            timeout: Seconds to wait for the listener before giving up.

        Raises:
            TransportError: BROKER_FAILED if the binary is missing, exits early or never listens.
        """
        if self._proc is not None:
            return
        binary = _find_binary(self._params.mosquitto)
        data_dir = self._log_path.parent
        data_dir.mkdir(parents=True, exist_ok=True)
        # Also refuses a port someone already listens on: the probe below would take it for ours.
        self._port = _try_bind(self.host, self._port)
        tls = self._params.tls
        if tls is not None:
            _check_files(tls)
            self._tls_port = _try_bind(tls.host, self._tls_port)
        conf = data_dir / "mosquitto.conf"
        conf.write_text(_render(host=self.host, port=self._port, data_dir=data_dir,
                                pid_file=self._pid_file, tls=_tls_block(tls, self._tls_port)))
        # Config errors are printed to stderr before the log file opens: keep them in the same log.
        self._log_file = self._log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=self._log_file,
            )
        except OSError as err:
            self._reap()
            raise TransportError(Reason.BROKER_FAILED, f"cannot run {binary}: {err}") from err
        self._wait_listening(self._proc, time.monotonic() + timeout)
        log.info("broker_started", host=self.host, port=self._port, pid=self._proc.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop with SIGTERM (Mosquitto saves its database), SIGKILL if it hangs; idempotent."""
        proc = self._proc
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._reap()
        log.info("broker_stopped", port=self._port, pid=proc.pid, returncode=proc.returncode)

    def kill(self) -> None:
        """Kill with SIGKILL, losing whatever was not autosaved (for chaos tests)."""
        proc = self._proc
        if proc is None:
            return
        proc.kill()
        proc.wait()
        self._reap()
        log.info("broker_killed", port=self._port, pid=proc.pid)

    def reload(self, timeout: float = 10.0) -> None:
        """Make the running broker read its ACL, CRL and certificates again (SIGHUP), and
        return once it has: every packet it handles after this returns meets the new rules.

        Raises:
            TransportError: BROKER_FAILED if it is not running or does not reload in time.
        """
        proc = self._proc
        if proc is None:
            raise TransportError(Reason.BROKER_FAILED, "mosquitto is not running")
        seen = self._log_path.stat().st_size
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        # Mosquitto logs this line in its single-threaded main loop and then reloads before
        # it reads another packet.
        while _RELOADED not in self._log_since(seen):
            try:
                proc.wait(_PROBE_INTERVAL_S)
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                raise TransportError(Reason.BROKER_FAILED,
                                     f"mosquitto did not reload in {timeout:g}s") from None
            self._reap()
            raise TransportError(Reason.BROKER_FAILED, f"mosquitto exited on reload with code "
                                 f"{proc.returncode}; log tail:\n{self._log_tail()}")
        log.info("broker_reloaded", port=self._port, pid=proc.pid)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop, then start on the same port and data dir; persistence keeps sessions."""
        self.stop(timeout)
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_listening(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        while True:
            try:
                with socket.create_connection((self.host, self._port), timeout=1.0):
                    return
            except OSError:
                pass
            try:
                # Paces the probe and returns at once if the broker dies while we wait.
                proc.wait(_PROBE_INTERVAL_S)
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                self.kill()
                detail = f"mosquitto not listening on {self.host}:{self._port} in time"
            else:
                self._reap()
                detail = f"mosquitto exited with code {proc.returncode}"
            raise TransportError(Reason.BROKER_FAILED, f"{detail}; log tail:\n{self._log_tail()}")

    def _reap(self) -> None:
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _log_since(self, offset: int) -> bytes:
        with self._log_path.open("rb") as fh:
            fh.seek(offset)
            return fh.read()

    def _log_tail(self) -> str:
        try:
            lines = self._log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def _find_binary(name: str) -> str:
    found = shutil.which(name) or (shutil.which(_FALLBACK_BINARY) if name == "mosquitto" else None)
    if found is None:
        raise TransportError(
            Reason.BROKER_FAILED,
            f"mosquitto binary {name!r} not found; install it with `apt-get install mosquitto`",
        )
    return found


def _try_bind(host: str, port: int) -> int:
    """Bind and release `host:port` (0 = any free port); return the port that was bound."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # Mosquitto sets SO_REUSEADDR too, so TIME_WAIT leftovers do not count as busy.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            return int(sock.getsockname()[1])
    except OSError as err:
        raise TransportError(
            Reason.BROKER_FAILED, f"cannot listen on {host}:{port}: {err}"
        ) from err


def _render(*, host: str, port: int, data_dir: Path, pid_file: Path, tls: str) -> str:
    template = resources.files("fedstream.broker").joinpath("mosquitto.conf.in").read_text()
    user = pwd.getpwuid(os.geteuid()).pw_name
    return Template(template).substitute(host=host, port=port, data_dir=data_dir, user=user,
                                         pid_file=pid_file, tls=tls)


def _check_files(tls: BrokerTls) -> None:
    """Name a missing ACL or CRL here: Mosquitto would only exit with its code."""
    for what, path in (("ACL", tls.acl), ("CRL", tls.crl)):
        if path is not None and not path.is_file():
            raise ConfigError(Reason.BAD_CONFIG, f"the TLS listener's {what} {path} does not "
                                                 "exist (`fedstream pki init` writes it)")


def _tls_block(tls: BrokerTls | None, port: int) -> str:
    """The TLS listener's lines: client certificates required, their CN the username, and
    (when given) the ACL and the CRL, both read again on SIGHUP (see `reload_broker`)."""
    if tls is None:
        return ""
    lines = [f"listener {port} {tls.host}", "allow_anonymous false", "require_certificate true",
             "use_identity_as_username true", "tls_version tlsv1.2",
             f"cafile {tls.ca.resolve()}", f"certfile {tls.cert.resolve()}",
             f"keyfile {tls.key.resolve()}"]
    if tls.acl is not None:
        lines.append(f"acl_file {tls.acl.resolve()}")
    if tls.crl is not None:
        lines.append(f"crlfile {tls.crl.resolve()}")
    return "\n".join(lines) + "\n"
