"""`fedstream status`, `edges` and `rounds`: the fleet's views, as tables or, with `--json`,
one JSON document each."""

from __future__ import annotations

import argparse
import sys

from fedstream.cli_client import add_client_options, client_address
from fedstream.operator import show_edges, show_rounds, show_status
from fedstream.shared.protocol.history import DEFAULT_ROUNDS, MAX_ROUNDS


def add_json_option(p: argparse.ArgumentParser) -> None:
    """--json: one machine-readable document instead of the table."""
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (stable keys, no colour) instead of a table")


def _status(args: argparse.Namespace) -> int:
    show_status(client_address(args), out=sys.stdout, as_json=args.json)
    return 0


def _edges(args: argparse.Namespace) -> int:
    show_edges(client_address(args), out=sys.stdout, as_json=args.json)
    return 0


def _rounds(args: argparse.Namespace) -> int:
    show_rounds(client_address(args), limit=args.limit, out=sys.stdout, as_json=args.json)
    return 0


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_ROUNDS:
        raise argparse.ArgumentTypeError(f"must be 1-{MAX_ROUNDS}, got {value}")
    return value


def add_fleet_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`fedstream status|edges|rounds [--json]`."""
    for name, handler, text in (
            ("status", _status, "the served model, the last round, edges online, rejections, "
                                "serving"),
            ("edges", _edges, "one row per edge: online, version, backend, data, declines"),
            ("rounds", _rounds, "the rounds the cloud's journal holds, newest first")):
        view = sub.add_parser(name, help=text)
        add_client_options(view)
        add_json_option(view)
        if name == "rounds":
            view.add_argument("--limit", type=_limit, default=DEFAULT_ROUNDS, metavar="N",
                              help=f"the newest N rounds (1-{MAX_ROUNDS}, default "
                                   f"{DEFAULT_ROUNDS})")
        view.set_defaults(handler=handler)
