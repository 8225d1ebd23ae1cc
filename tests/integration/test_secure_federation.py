"""A federation with identities end to end, in real processes: `fedstream pki init`, a
Mosquitto TLS listener with the generated ACL and CRL, `fedstream edge enrol` for two edges,
a round of signed updates on signed models, forgeries injected through the anonymous
development listener refused by signature, then `fedstream edge revoke` holding at the
broker and the cloud."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedstream.broker import BrokerParams, BrokerTls, Mosquitto, broker_pid_file
from fedstream.client import FleetAddress
from fedstream.cloud.keyring import Keyring
from fedstream.demo import MODEL, Processes, wait_ready, write_configs
from fedstream.operator import CliConfig, fleet_status, start_round
from fedstream.shared.config import load_config
from fedstream.shared.errors import Reason, TransportError
from fedstream.shared.learning.model import spec_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.connection import ClientTls, Connection
from fedstream.shared.protocol.messages import Manifest, UpdateChunk, UpdateMeta
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.statements import manifest_statement, update_statement
from fedstream.shared.protocol.topics import Topics
from fedstream.shared.security.pki import acl_path, crl_path
from fedstream.shared.security.signing import make_key

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

ARCH = Architecture.mlp((64, 100, 100, 10))  # the demo's digits MLP
LOG_WAIT_S = 30.0


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "fedstream", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done


def _tls_table(pki: Path, name: str) -> str:
    return (f'\n[broker.tls]\nca = "{pki / "ca.crt"}"\ncert = "{pki / f"{name}.crt"}"\n'
            f'key = "{pki / f"{name}.key"}"\n')


def _logged(path: Path, **fields: str) -> bool:
    """Waits until a JSON log line of `path` holds `fields`."""
    give_up = time.monotonic() + LOG_WAIT_S
    while time.monotonic() < give_up:
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if all(event.get(k) == v for k, v in fields.items()):
                return True
        time.sleep(0.2)
    return False


def _forgeries(federation: str, plain_port: int, rogue: Path) -> None:
    """Through the anonymous loopback listener (development only: no identities, no ACL),
    publish a retained manifest v99 and an update as edge-0, both signed by a rogue key."""
    topics, signer = Topics(federation), make_key(rogue)
    spec = spec_of(build_model(ARCH))
    enc = encode_blob([torch.zeros(t.shape) for t in spec], spec, codec="f32",
                      chunk_size=1 << 20)
    manifest = Manifest(model=MODEL, version=99, parent=1, header=enc.header, arch=ARCH)
    manifest = dataclasses.replace(manifest, sig=signer.sign(
        manifest_statement(federation=federation, manifest=manifest)))
    meta = UpdateMeta(edge_id="edge-0", round_id="any", base_version=1, samples=10**9,
                      loss=0.0, seq=10**6)
    meta = dataclasses.replace(meta, sig=signer.sign(update_statement(
        federation=federation, model=MODEL, meta=meta, header=enc.header)))
    intruder = MqttClient(client_id=f"{federation}-intruder",
                          conn=Connection(host="127.0.0.1", port=plain_port))
    intruder.connect(10)
    try:
        intruder.publish(topics.manifest(MODEL), wire.pack(manifest), retain=True)
        intruder.publish(topics.update(MODEL, "edge-0"), wire.pack(
            UpdateChunk(header=enc.header, meta=meta, index=0, data=enc.chunks[0])))
    finally:
        intruder.close()


def test_enrolled_edges_federate_over_tls_forgeries_fail_and_revocation_holds(
    tmp_path: Path, federation: str,
) -> None:
    """Two enrolled edges train a round over TLS with signed updates on a signed model. A
    manifest and an update forged with another key, injected through the plain listener,
    are refused (the edges keep their model; the cloud counts a bad_signature). After
    `fedstream edge revoke edge-1`, the next round counts edge-0 alone, edge-1's certificate
    no longer connects, and the cloud's journal audits both enrolments and the revocation.
    Enrolling again changes nothing."""
    # Prepare
    pki = tmp_path / "pki"
    _cli("pki", "init", "--dir", pki, "--federation", federation)
    _cli("pki", "issue", "cloud", "--role", "cloud", "--dir", pki)
    _cli("pki", "issue", "ops", "--role", "operator", "--dir", pki)
    tls = BrokerTls(ca=pki / "ca.crt", cert=pki / "broker.crt", key=pki / "broker.key",
                    acl=acl_path(pki), crl=crl_path(pki))
    procs = Processes(tmp_path)
    with Mosquitto(BrokerParams(data_dir=tmp_path / "broker", tls=tls,
                                pid_file=broker_pid_file(pki))) as broker:
        cloud_cfg, edge_cfgs = write_configs(
            tmp_path, port=broker.tls_port, federation=federation, edges=2,
            dirichlet_alpha=5.0, cloud_tables=_tls_table(pki, "cloud") + (
                f'\n[security]\nrequire_signed_updates = true\n'
                f'signing_key = "{pki / "cloud.sign.key"}"\n'))
        ops = tmp_path / "ops.toml"
        ops.write_text(f'federation = "{federation}"\nmodel = "{MODEL}"\n\n[broker]\n'
                       f'host = "127.0.0.1"\nport = {broker.tls_port}\n'
                       + _tls_table(pki, "ops"))
        address = FleetAddress.from_config(load_config(CliConfig, ops), timeout_s=10.0)
        try:
            procs.spawn("cloud", "cloud", cloud_cfg)
            wait_ready(address, edges=0, procs=procs)
            enrolled = [_cli("edge", "enrol", f"edge-{i}", "--dir", pki, "--config", ops)
                        for i in range(2)]
            again = _cli("edge", "enrol", "edge-0", "--dir", pki, "--config", ops)
            for i, path in enumerate(edge_cfgs):
                bundle = pki / "gateways" / f"edge-{i}" / "edge-security.toml"
                path.write_text(path.read_text() + "\n" + bundle.read_text())
                procs.spawn(f"edge-{i}", "edge", path)
            wait_ready(address, edges=2, procs=procs)

            # Execute
            first = start_round(address, RoundStart(epochs=2), wait=True, out=io.StringIO())
            _forgeries(federation, broker.port, tmp_path / "rogue.key")
            refused_model = [_logged(tmp_path / f"edge-{i}.log", event="message_rejected",
                                     reason="bad_signature") for i in range(2)]
            refused_update = _logged(tmp_path / "cloud.log", event="message_rejected",
                                     reason="bad_signature")
            status = fleet_status(address)
            revoked = _cli("edge", "revoke", "edge-1", "--dir", pki, "--config", ops)
            second = start_round(address, RoundStart(epochs=1), wait=True, out=io.StringIO())
            comeback = MqttClient(client_id=f"{federation}-edge-1-again", conn=Connection(
                host="127.0.0.1", port=broker.tls_port, connect_timeout_s=5.0,
                tls=ClientTls(ca=pki / "ca.crt", cert=pki / "edge-1.crt",
                              key=pki / "edge-1.key")))
            with pytest.raises(TransportError) as refused_tls:
                comeback.connect()
        finally:
            procs.stop()
    keys = Keyring(tmp_path / "cloud-data" / "journal.db")
    audit = [(e.action, e.subject) for e in keys.audit()]
    keys.close()

    # Assert
    assert all("cloud: edge edge-" in e.stdout and " enrolled" in e.stdout for e in enrolled)
    assert "broker: ACL and CRL reloaded" in enrolled[0].stdout
    assert "was enrolled with this key already" in again.stdout
    assert first.status == "published" and first.result["updates"] == 2
    assert refused_model == [True, True]
    assert refused_update and status.rejections.get("bad_signature", 0) >= 1
    assert [e.version for e in status.edges] == [1, 1]  # not the forged v99
    assert "cloud: edge edge-1 revoked" in revoked.stdout
    assert "broker: ACL and CRL reloaded" in revoked.stdout
    assert second.status == "published" and second.result["updates"] == 1
    assert refused_tls.value.reason is Reason.BROKER_REFUSED
    assert audit == [("enrolled", "edge-0"), ("enrolled", "edge-1"), ("revoked", "edge-1")]
