"""Reloading a broker that runs in another process: where `fedstream broker run --pki` keeps
its pid file, and SIGHUP to it, which makes Mosquitto read its ACL and CRL again (what that does
to sessions: see the comment at the top of `launcher.py`)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import structlog

from fedstream.shared.errors import Reason, TransportError

log = structlog.get_logger(__name__)

# `fedstream broker run --pki DIR` keeps its pid file beside the ACL and CRL it serves, so
# whatever rewrites them (`fedstream edge revoke`) finds the broker to reload.
_PKI_PID_FILE = "broker.pid"


def broker_pid_file(pki_root: Path) -> Path:
    """Where `fedstream broker run --pki pki_root` has Mosquitto write its process id."""
    return pki_root / _PKI_PID_FILE


def reload_broker(pid_file: Path) -> bool:
    """Make the Mosquitto whose process id `pid_file` holds read its ACL and CRL again (SIGHUP).

    Only a process that is Mosquitto is signalled: a stale pid file may name a pid that now
    belongs to something else. The broker reloads within milliseconds, asynchronously.

    Returns:
        True once signalled; False if there is no pid file, it holds no pid, or its process is
        gone or not Mosquitto.

    Raises:
        TransportError: BROKER_FAILED if the broker runs as a user we may not signal.
    """
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        # A pidfd pins the process: if the pid is reused after this, signalling fails instead
        # of reaching the newcomer.
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if not _is_mosquitto(pid):
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGHUP)
    except ProcessLookupError:
        return False
    except PermissionError as err:
        raise TransportError(Reason.BROKER_FAILED, f"cannot signal pid {pid} from {pid_file}: "
                                                   "run as the broker's user") from err
    finally:
        os.close(pidfd)
    log.info("broker_reload_signalled", pid=pid, pid_file=str(pid_file))
    return True


def _is_mosquitto(pid: int) -> bool:
    proc = Path("/proc") / str(pid)
    try:
        comm = (proc / "comm").read_text().strip()
        argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return False
    return "mosquitto" in (comm, Path(argv0).name)
