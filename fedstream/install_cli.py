"""`fedstream install cloud|edge`: this venv's fedstream as enabled systemd services."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fedstream.install import ROLES, Outcome, enable, install

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _install(args: argparse.Namespace) -> int:
    placed = install(args.roles, root=args.root)
    for item in placed:
        note = " (already there: left as it is)" if item.outcome is Outcome.KEPT else ""
        print(f"{item.outcome:5}  {item.path}{note}")
    units = [ROLES[name].unit for name in dict.fromkeys(args.roles)]
    if args.enable:
        enable(args.roles, root=args.root)
        print(f"enabled {', '.join(units)} (started at boot)")
    configs = [str(p.path) for p in placed if p.path.suffix == ".toml"]
    print(f"next: edit {' and '.join(configs)} (broker, data source, edge_id), then "
          f"`systemctl start {' '.join(u.removesuffix('.service') for u in units)}`")
    return 0


def add_install_parser(sub: SubParsers) -> None:
    """Register `fedstream install` on the CLI's subcommands."""
    parser = sub.add_parser(
        "install", help="write the systemd units (running this venv's fedstream) and the "
                        "configs in /etc/fedstream, and enable the units")
    parser.add_argument("roles", nargs="+", choices=sorted(ROLES), metavar="ROLE",
                        help="cloud, edge, or both")
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="install under this directory as if it were / (an image being "
                             "built; the venv must be inside it)")
    parser.add_argument("--no-enable", dest="enable", action="store_false",
                        help="write the files only; `systemctl enable` later")
    parser.set_defaults(handler=_install)
