"""`fedstream edge enrol|revoke`: an edge's identity from end to end.

Enrolling gives the gateway a TLS certificate from the federation's CA (its MQTT username and
ACL entries), an Ed25519 signing key, and the cloud's public key to pin, all in one bundle
directory with the config lines that use them; the broker reloads its ACL, and the cloud
registers the public key (audited in its journal). Revoking puts the certificate on the CRL,
drops the identity from the ACL, reloads the broker, and makes the cloud refuse whatever the
edge sends from now on. Both are idempotent: run again after a failure, they finish the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from fedstream.broker import broker_pid_file, reload_broker
from fedstream.client import FleetAddress, FleetClient
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.files import write_atomic
from fedstream.shared.protocol.commands import Reply
from fedstream.shared.protocol.enrolment import EdgeEnrol, EdgeRevoke
from fedstream.shared.security import pki
from fedstream.shared.security.pki import Role
from fedstream.shared.security.signing import make_key, public_path

CLOUD_KEY = "cloud.sign.key"


def cloud_key_path(root: Path) -> Path:
    """The cloud's signing key in the federation directory (`fedstream pki init` makes it)."""
    return root / CLOUD_KEY


@dataclass(frozen=True, slots=True)
class Bundle:
    """What a gateway needs, in one directory: copy it to the gateway."""

    directory: Path
    config: Path


def enrol_edge(root: Path, edge_id: str, *, address: FleetAddress, out: TextIO) -> Bundle:
    """Issue `edge_id`'s certificate and signing key, write its bundle, reload the broker's
    ACL and register the key with the cloud.

    Raises:
        ConfigError: no CA or cloud key in `root`, a bad or revoked name.
        FedstreamError: the cloud refused the key (revoked, another key) or did not answer
            (no_reply: the local part is done; run again to register).
    """
    cloud_public = public_path(cloud_key_path(root))
    if not cloud_public.exists():
        raise ConfigError(Reason.BAD_CONFIG, f"{root}: no cloud signing key; run "
                                             "`fedstream pki init` first")
    issued = pki.issue(root, edge_id, Role.EDGE)
    signer = make_key(root / f"{edge_id}.sign.key")
    bundle = _write_bundle(root / "gateways" / edge_id, issued, cloud_public, edge_id)
    print(f"edge {edge_id}: certificate and signing key in {bundle.directory}", file=out)
    _reload(root, out)
    with FleetClient(address) as fleet:
        reply = fleet.command(EdgeEnrol(edge=edge_id, key=signer.public), Reply)
    print(f"cloud: {reply.detail}", file=out)
    return bundle


def revoke_edge(root: Path, edge_id: str, *, address: FleetAddress, out: TextIO) -> None:
    """Revoke `edge_id` in the CA (CRL and ACL), reload the broker, tell the cloud.

    Raises:
        ConfigError: no such identity in `root`.
        FedstreamError: the cloud refused (never enrolled there) or did not answer (run
            again: the local part is done and stays done).
    """
    fresh = pki.revoke(root, edge_id)
    print(f"edge {edge_id}: {'revoked' if fresh else 'was revoked already'} in {root}",
          file=out)
    _reload(root, out)
    with FleetClient(address) as fleet:
        reply = fleet.command(EdgeRevoke(edge=edge_id), Reply)
    print(f"cloud: {reply.detail}", file=out)


def _reload(root: Path, out: TextIO) -> None:
    if reload_broker(broker_pid_file(root)):
        print("broker: ACL and CRL reloaded", file=out)
    else:
        print("broker: not running here (`fedstream broker run --pki` reads the new ACL "
              "when it starts)", file=out)


def _write_bundle(directory: Path, issued: pki.Issued, cloud_public: Path,
                  edge_id: str) -> Bundle:
    """Copy the gateway's files into `directory` (keys 0600) with a config fragment."""
    directory.mkdir(parents=True, exist_ok=True)
    names = {"ca.crt": issued.ca, f"{edge_id}.crt": issued.cert,
             f"{edge_id}.key": issued.key, "cloud.sign.key.pub": cloud_public,
             f"{edge_id}.sign.key": issued.key.with_name(f"{edge_id}.sign.key")}
    for name, source in names.items():
        private = name.endswith(".key")
        write_atomic(directory / name, source.read_bytes(), mode=0o600 if private else 0o644)
    config = directory / "edge-security.toml"
    d = directory.resolve()
    write_atomic(config, (
        f"# Paste into edge {edge_id}'s config (paths as on this machine: adjust them to "
        "where the bundle lands).\n"
        f"[broker.tls]\nca = \"{d / 'ca.crt'}\"\ncert = \"{d / f'{edge_id}.crt'}\"\n"
        f"key = \"{d / f'{edge_id}.key'}\"\n\n"
        f"[security]\nsigning_key = \"{d / f'{edge_id}.sign.key'}\"\n"
        f"cloud_key = \"{d / 'cloud.sign.key.pub'}\"\n").encode(), mode=0o644)
    return Bundle(directory=directory, config=config)
