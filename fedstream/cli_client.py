"""What every CLI verb that talks to the cloud shares: its flags and the address they name."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedstream.client import DEFAULT_TIMEOUT_S, FleetAddress
from fedstream.operator import CliConfig
from fedstream.shared.config import load_config


def client_address(args: argparse.Namespace) -> FleetAddress:
    """The broker, federation and model the flags (or their --config file) name.

    Raises:
        ConfigError: a missing or invalid config file.
    """
    overrides: dict[str, object] = {"broker": {"host": args.host, "port": args.port}} if \
        args.port else {}
    if args.federation:
        overrides["federation"] = args.federation
    cfg = load_config(CliConfig, args.config, **overrides)
    return FleetAddress.from_config(cfg, timeout_s=args.timeout)


def add_client_options(p: argparse.ArgumentParser) -> None:
    """--config, --host/--port, --federation and --timeout."""
    p.add_argument("--config", type=Path, help="TOML with [broker], federation and model")
    p.add_argument("--host", default="127.0.0.1", help="broker host (with --port)")
    p.add_argument("--port", type=int, help="broker port (overrides the config)")
    p.add_argument("--federation", help="federation name (overrides the config)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="seconds to wait for the cloud")
