"""Process lifecycle: turn SIGINT/SIGTERM into a stop event for a service loop."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Yield an event set by SIGINT or SIGTERM; previous handlers come back on exit.

    Must be entered on the main thread (Python installs signal handlers only there).
    """
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # The handler runs on the main thread, possibly while it holds the Event's lock inside
        # stopping.wait(); setting it from another thread cannot deadlock on that lock.
        threading.Thread(target=stopping.set, name="stop-signal").start()

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield stopping
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
