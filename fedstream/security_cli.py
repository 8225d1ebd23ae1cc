"""`fedstream pki init|issue` and `fedstream edge enrol|revoke`: the federation's identities."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fedstream.cli_client import client_address

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _pki_init(args: argparse.Namespace) -> int:
    from fedstream.enrolment import cloud_key_path
    from fedstream.shared.security.pki import Role, init_ca, issue
    from fedstream.shared.security.signing import make_key, public_path

    hosts = tuple(args.host or ("127.0.0.1", "localhost"))
    ca = init_ca(args.dir, args.federation)
    broker = issue(args.dir, "broker", Role.BROKER, hosts=hosts)
    make_key(cloud_key_path(args.dir))
    print(f"CA {ca}; broker certificate {broker.cert} for {', '.join(hosts)}; the cloud's "
          f"signing key {cloud_key_path(args.dir)} (edges pin "
          f"{public_path(cloud_key_path(args.dir))})")
    return 0


def _pki_issue(args: argparse.Namespace) -> int:
    from fedstream.shared.security.pki import Role, issue

    issued = issue(args.dir, args.name, Role(args.role))
    print(f"{issued.role} {issued.name}: certificate {issued.cert}, key {issued.key}, "
          f"CA {issued.ca}")
    return 0


def _edge_enrol(args: argparse.Namespace) -> int:
    from fedstream.enrolment import enrol_edge

    bundle = enrol_edge(args.dir, args.edge_id, address=client_address(args), out=sys.stdout)
    print(f"copy {bundle.directory} to the gateway; its config lines are in {bundle.config}")
    return 0


def _edge_revoke(args: argparse.Namespace) -> int:
    from fedstream.enrolment import revoke_edge

    revoke_edge(args.dir, args.edge_id, address=client_address(args), out=sys.stdout)
    return 0


def add_pki_parser(sub: SubParsers) -> None:
    """`fedstream pki init|issue`."""
    pki = sub.add_parser("pki", help="the federation's own CA, certificates and signing key")
    actions = pki.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="make the CA, the broker's certificate and the "
                                           "cloud's signing key (once; existing ones are kept)")
    init.add_argument("--dir", type=Path, required=True, help="where the CA and certs live")
    init.add_argument("--federation", default="default")
    init.add_argument("--host", action="append", default=None,
                      help="a name or address clients reach the broker by (repeatable; "
                           "default 127.0.0.1 and localhost)")
    init.set_defaults(handler=_pki_init)
    issue = actions.add_parser("issue", help="a key and certificate for one identity (its "
                                             "name is its MQTT username)")
    issue.add_argument("name")
    issue.add_argument("--role", required=True,
                       choices=["cloud", "edge", "operator", "producer"])
    issue.add_argument("--dir", type=Path, required=True)
    issue.set_defaults(handler=_pki_issue)


def add_edge_identity_parsers(actions: SubParsers,
                              client_options: Callable[[argparse.ArgumentParser], None],
                              ) -> None:
    """`fedstream edge enrol|revoke` beside `edge run`; `client_options` adds the flags that
    reach the cloud (the operator's broker connection)."""
    enrol = actions.add_parser("enrol", help="certificate, signing key and bundle for a "
                                             "gateway; the broker's ACL and the cloud learn "
                                             "of it (idempotent)")
    revoke = actions.add_parser("revoke", help="CRL and ACL drop it, the broker reloads, the "
                                               "cloud refuses it from now on (idempotent)")
    for parser, handler in ((enrol, _edge_enrol), (revoke, _edge_revoke)):
        parser.add_argument("edge_id")
        parser.add_argument("--dir", type=Path, required=True,
                            help="the `fedstream pki init` directory")
        client_options(parser)
        parser.set_defaults(handler=handler)
