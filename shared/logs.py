"""structlog set-up, called once by each entry point (daemon, service, CLI)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_logging(*, json: bool | None = None, level: str = "info",
                      stream: TextIO | None = None) -> None:
    """Configure structlog for this process.

    Args:
        json: JSON lines (for journald) when True, a console renderer when False; None picks
            JSON unless the stream is a TTY.
        level: Minimum level name ("debug", "info", "warning", "error").
        stream: Where log lines go; services use stdout, the CLI stderr.
    """
    out = stream if stream is not None else sys.stdout
    use_json = not out.isatty() if json is None else json
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
