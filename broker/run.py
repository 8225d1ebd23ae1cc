"""Run a foreground Mosquitto until SIGINT or SIGTERM (backs `fedstream broker run`)."""

from __future__ import annotations

from fedstream.broker.launcher import BrokerParams, Mosquitto
from fedstream.shared.lifecycle import stop_on_signals


def run_broker(params: BrokerParams) -> int:
    """Start Mosquitto, print where it listens, and stop it cleanly on SIGINT or SIGTERM.

    Must be called from the main thread (Python only installs signal handlers there).

    Args:
        params: Listener and data directory settings.

    Returns:
        The process exit code, 0 after a clean stop.

    Raises:
        TransportError: BROKER_FAILED if Mosquitto cannot start.
    """
    with stop_on_signals() as stopping, Mosquitto(params) as broker:
        tls = (f", TLS with client certificates on {params.tls.host}:{broker.tls_port}"
               if params.tls is not None else "")
        print(f"mosquitto listening on {broker.host}:{broker.port}{tls} (data "
              f"{params.data_dir})", flush=True)
        stopping.wait()
    return 0
