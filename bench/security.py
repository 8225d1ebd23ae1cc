"""What TLS to the broker and signed updates cost, against plain TCP and a real round, in one run.

    .venv/bin/python bench/security.py [--runs 3] [--updates 500] [--rounds 3]

Starts its own Mosquitto (the project's config) with its plain loopback listener and its TLS
listener (client certificates from a CA made for the run, no ACL, no CRL), and measures:

- `tls_transfer`: bench/transport.py's `fedstream` path, run as it is (the same 16M seeded
  float32 weights in 64 KiB chunks at QoS 1, `publish_many` from this process to an
  `MqttClient` receiver with manual acks + `Reassembler` + `decode_blob` in a spawned child),
  once through the plain listener and once through the TLS one, where the publisher connects
  as edge `e1` and the receiver as `cloud`, each with its certificate. Only the `Connection`
  the two clients are built from differs. Paths alternate, `--runs` times each; the best run
  of each is reported. `tls_vs_plain` = TLS MB/s / plain MB/s; `tls` names the version and
  cipher suite our clients' context negotiates with the broker (the listener's `tls_version
  tlsv1.2` is a minimum in Mosquitto 2.0, so it is TLS 1.3 where both ends speak it).
- `signing`: over `--updates` updates with distinct sequence numbers and blob ids, the median
  of the edge's cost (`update_statement` + Ed25519 sign + the signed meta, as
  `edge_node/daemon.py` builds it) and of the cloud's (`UpdateSignatures.check` at the first
  chunk + `.claim` at completion, as `cloud/intake.py` calls them: keyring reads and the
  sequence number's write in a WAL SQLite file with `synchronous=NORMAL`, the default).
  The denominator is a real round measured afterwards on the same broker's plain listener:
  `fedstream.demo`'s cloud + 2 edge processes on the digits data, unsigned, `--rounds` rounds
  at the cloud's default settings; the first is a warm-up and `round_s` is the shortest of
  the others, as the cloud clocks it (open to close). `share_of_round` = (sign + verify) x
  the round's updates / `round_s`: an upper bound, since edges sign in parallel while the
  cloud checks one update after another.

Prints JSON lines; nothing asserts a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import json
import socket
import statistics
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import torch

from fedstream.broker import BrokerParams, BrokerTls, Mosquitto
from fedstream.client import FleetAddress
from fedstream.cloud.keyring import Keyring
from fedstream.cloud.signatures import UpdateSignatures
from fedstream.demo import MODEL, Processes, wait_ready, write_configs
from fedstream.operator import start_round
from fedstream.shared.protocol._sockets import tls_context
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.chunks import DEFAULT_CHUNK_SIZE
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.connection import ClientTls, Connection
from fedstream.shared.protocol.messages import BlobHeader, TensorSpec, UpdateMeta
from fedstream.shared.protocol.statements import update_statement
from fedstream.shared.security.pki import Role, init_ca, issue
from fedstream.shared.security.signing import make_key

# bench/ is no package: its sibling is found beside this file, also under `python -P`.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import transport

EDGES = 2
EDGE_ID = "edge-0001"


class Listener(NamedTuple):
    """One listener of the broker, as `transport.run_fedstream` reads a `Mosquitto` (only
    its `host` and `port`)."""

    host: str
    port: int


def _receiver(job: transport.Job, pipe: Pipe, *, tls: ClientTls | None) -> None:
    """Child process: transport.py's receiver, connecting with `tls`."""
    with mock.patch.object(transport, "BrokerConnection",
                           functools.partial(Connection, tls=tls)):
        transport._fedstream_receiver(job, pipe)


# transport.py builds its clients' `Connection`s from host and port alone; giving it, for one
# call, a `Connection` that adds `tls` runs its code unchanged, so the two paths differ in
# nothing else.
def run_transfer(listener: Listener, tensors: list[torch.Tensor], *, sender: ClientTls | None,
                 receiver: ClientTls | None) -> float:
    """`transport.run_fedstream` on `listener`, its clients connecting with these TLS settings
    (None: plain TCP); seconds from the first publish to the decoded, verified blob."""
    with mock.patch.object(transport, "BrokerConnection",
                           functools.partial(Connection, tls=sender)), \
            mock.patch.object(transport, "_fedstream_receiver",
                              functools.partial(_receiver, tls=receiver)):
        return transport.run_fedstream(listener, tensors)  # type: ignore[arg-type]


def negotiated(listener: Listener, tls: ClientTls) -> str:
    """The TLS version and cipher suite the broker agrees on with `MqttClient`'s context."""
    with socket.create_connection(listener) as raw, \
            tls_context(tls).wrap_socket(raw, server_hostname=listener.host) as sock:
        cipher = sock.cipher()
        return f"{sock.version()} {cipher[0] if cipher else '?'}"


def signing_costs(workdir: Path, updates: int) -> tuple[float, float]:
    """Median seconds per update: the edge's signing, the cloud's check + claim."""
    signer = make_key(workdir / f"{EDGE_ID}.sign.key")
    keyring = Keyring(workdir / "journal.db")
    federation = "bench"
    spec = (TensorSpec(name="w", shape=(64, 32)),)
    header: BlobHeader = encode_blob([torch.zeros(64, 32)], spec, codec="f32",
                                     chunk_size=DEFAULT_CHUNK_SIZE).header
    signs, checks = [], []
    try:
        keyring.enrol(EDGE_ID, signer.public, time.time())
        signatures = UpdateSignatures(keyring=keyring, federation=federation, model=MODEL,
                                      required=True)
        for seq in range(1, updates + 1):
            head = dataclasses.replace(header, blob_id=uuid.uuid4().hex,
                                       sha256=hashlib.sha256(seq.to_bytes(8, "big")).digest())
            meta = UpdateMeta(edge_id=EDGE_ID, round_id="r-000042", base_version=41,
                              samples=1200, loss=0.3125, seq=seq)
            began = time.perf_counter()
            meta = dataclasses.replace(meta, sig=signer.sign(update_statement(
                federation=federation, model=MODEL, meta=meta, header=head)))
            signed = time.perf_counter()
            signatures.check(meta, head)
            signatures.claim(meta, head)
            checks.append(time.perf_counter() - signed)
            signs.append(signed - began)
    finally:
        keyring.close()
    return statistics.median(signs), statistics.median(checks)


def fleet_rounds(listener: Listener, workdir: Path, rounds: int) -> list[tuple[float, int]]:
    """Each round's seconds (the cloud's clock) and updates, over cloud + EDGES processes."""
    federation = f"b{uuid.uuid4().hex[:10]}"
    cloud_cfg, edge_cfgs = write_configs(workdir, port=listener.port, federation=federation,
                                         edges=EDGES, dirichlet_alpha=0.5)
    procs = Processes(workdir)
    address = FleetAddress.local(host=listener.host, port=listener.port,
                                 federation=federation, model=MODEL, timeout_s=10.0)
    try:
        procs.spawn("cloud", "cloud", cloud_cfg)
        for i, path in enumerate(edge_cfgs):
            procs.spawn(f"edge-{i}", "edge", path)
        wait_ready(address, edges=EDGES, procs=procs, timeout_s=120.0)
        finals = [start_round(address, RoundStart(), wait=True, out=io.StringIO())
                  for _ in range(rounds)]
    finally:
        procs.stop()
    return [(float(f.result["seconds"]), int(f.result["updates"])) for f in finals]


def _pki(root: Path) -> tuple[BrokerTls, ClientTls, ClientTls]:
    """A CA for the run; the broker's listener settings, the sender's and the receiver's."""
    init_ca(root, "bench")
    broker = issue(root, "broker", Role.BROKER, hosts=("127.0.0.1", "localhost"))
    edge, cloud = issue(root, "e1", Role.EDGE), issue(root, "cloud", Role.CLOUD)
    return (BrokerTls(ca=broker.ca, cert=broker.cert, key=broker.key),
            ClientTls(ca=edge.ca, cert=edge.cert, key=edge.key),
            ClientTls(ca=cloud.ca, cert=cloud.cert, key=cloud.key))


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be 2 or more: the first round is a warm-up")
    transport._quiet()
    tensors = transport.update()
    size = sum(t.numel() * t.element_size() for t in tensors)
    best = dict.fromkeys(("plain", "tls"), float("inf"))
    with tempfile.TemporaryDirectory(prefix="fedstream-bench-") as tmp:
        work = Path(tmp)
        broker_tls, sender, receiver = _pki(work / "pki")
        sign_s, verify_s = signing_costs(work, args.updates)
        with Mosquitto(BrokerParams(data_dir=work / "broker", tls=broker_tls)) as broker:
            plain = Listener(broker.host, broker.port)
            secure = Listener(broker.host, broker.tls_port)
            paths = {"plain": (plain, None, None), "tls": (secure, sender, receiver)}
            for run in range(args.runs):
                for path, (listener, tls_out, tls_in) in paths.items():
                    took = run_transfer(listener, tensors, sender=tls_out, receiver=tls_in)
                    best[path] = min(best[path], took)
                    print(json.dumps({"run": run, "path": path, "s": round(took, 3)}),
                          flush=True)
            cipher = negotiated(secure, sender)
            fleet = work / "fleet"
            fleet.mkdir()
            rounds = fleet_rounds(plain, fleet, args.rounds)
    for i, (seconds, count) in enumerate(rounds):
        print(json.dumps({"round": i, "s": seconds, "updates": count,
                          "warm_up": i == 0}), flush=True)
    mb = size / transport.MIB
    plain_mb_s, tls_mb_s = mb / best["plain"], mb / best["tls"]
    print(json.dumps({"bench": "tls_transfer", "plain_mb_s": round(plain_mb_s, 1),
                      "tls_mb_s": round(tls_mb_s, 1),
                      "tls_vs_plain": round(tls_mb_s / plain_mb_s, 3), "tls": cipher,
                      "bytes": size, "chunk": DEFAULT_CHUNK_SIZE, "runs": args.runs}))
    round_s, updates = min(rounds[1:])
    print(json.dumps({"bench": "signing", "sign_us": round(sign_s * 1e6, 1),
                      "verify_us": round(verify_s * 1e6, 1), "round_s": round_s,
                      "updates_per_round": updates,
                      "share_of_round": round((sign_s + verify_s) * updates / round_s, 5),
                      "updates_timed": args.updates}))


if __name__ == "__main__":
    main()
