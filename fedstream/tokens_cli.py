"""`fedstream token create|revoke|list`: the bearer tokens of the cloud's HTTP inference door."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedstream.cloud.inference.tokens import TokenStore

# The store lives in a package that imports torch; the handlers import it so that the rest of
# the CLI (`fedstream status`) does not pay for that.


def _store(config: Path) -> TokenStore:
    from fedstream.cloud.config import CloudConfig  # noqa: PLC0415 (see above)
    from fedstream.cloud.inference.tokens import TokenStore  # noqa: PLC0415
    from fedstream.shared.config import load_config  # noqa: PLC0415

    return TokenStore.open(load_config(CloudConfig, config).data_dir)


def _create(args: argparse.Namespace) -> int:
    with _store(args.config) as store:
        secret = store.create(args.name)
    print(secret)
    print(f"token {args.name} created; only its hash is stored, so this is the one time its "
          "secret is shown: send it as `Authorization: Bearer <token>`", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with _store(args.config) as store:
        revoked = store.revoke(args.name)
    print(f"token {args.name} revoked: the service refuses it from its next request" if revoked
          else f"token {args.name} was already revoked; nothing changed")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _store(args.config) as store:
        tokens = store.list()
    for token in tokens:
        revoked = "live" if token.revoked is None else f"revoked {_when(token.revoked)}"
        print(f"{token.name}\tcreated {_when(token.created)}\t{revoked}")
    if not tokens:
        print("no tokens yet (`fedstream token create NAME --config CLOUD.toml`)",
              file=sys.stderr)
    return 0


def _when(unix_s: float) -> str:
    return datetime.datetime.fromtimestamp(unix_s, datetime.UTC).isoformat(timespec="seconds")


def add_token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `fedstream token create|revoke|list` on the CLI's subcommands.

    Args:
        sub: The top-level subparsers of `fedstream.cli.build_parser`.
    """
    token = sub.add_parser("token", help="bearer tokens for HTTP inference (inference.auth = "
                                         '"token"); the running service sees changes at once')
    actions = token.add_subparsers(dest="action", required=True)
    for action, text, handler in (
            ("create", "make a token and print its secret, the only time it is shown",
             _create),
            ("revoke", "refuse a token from now on (again: no-op)", _revoke),
            ("list", "every token: name, created, revoked (never a secret)", _list)):
        p = actions.add_parser(action, help=text)
        if action != "list":
            p.add_argument("name", help="a plain word: letters, digits, '_', '.', '-'")
        p.add_argument("--config", type=Path, required=True,
                       help="the cloud's TOML config (its data_dir holds tokens.sqlite)")
        p.set_defaults(handler=handler)
