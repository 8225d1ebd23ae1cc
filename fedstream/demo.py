"""`fedstream demo`: a broker, the cloud and N edge daemons as separate processes, R rounds."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.client import FleetAddress, FleetClient
from fedstream.operator import fleet_status, model_command, start_round
from fedstream.predict import predict_csv
from fedstream.progress import follow_fleet
from fedstream.shared.errors import FedstreamError, Reason, TransportError
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.data import DataBatch

FEDERATION = "demo"
MODEL = "digits-mlp"


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoParams:
    """How big a demo to run."""

    rounds: int = 5
    edges: int = 3
    workdir: Path = Path("demo-run")
    min_accuracy: float = 0.0
    dirichlet_alpha: float = 0.5
    ready_timeout_s: float = 180.0
    round_request: RoundStart = field(default_factory=RoundStart)
    continual: bool = False

    def __post_init__(self) -> None:
        if not (1 <= self.rounds <= 1000 and 1 <= self.edges <= 64):
            raise FedstreamError(Reason.BAD_CONFIG, "rounds must be 1-1000 and edges 1-64")


def write_configs(workdir: Path, *, port: int, federation: str, edges: int,
                  dirichlet_alpha: float, cloud_extra: str = "", cloud_tables: str = "",
                  edge_extra: str = "") -> tuple[Path, list[Path]]:
    """TOML files for the cloud and each edge; edges split the digits train set non-IID.

    Args:
        workdir: Where the files, and each service's data directory, go.
        port: Broker port on loopback.
        federation: Topic prefix.
        edges: How many edge configs.
        dirichlet_alpha: Non-IID skew of the digits split (smaller is more skewed).
        cloud_extra: Top-level TOML lines added to the cloud config.
        cloud_tables: TOML tables (e.g. `[rounds]`) appended to the cloud config.
        edge_extra: Top-level TOML lines added to every edge config.
    """
    common = (f'federation = "{federation}"\nmodel = "{MODEL}"\nthreads = 1\n\n'
              f'[broker]\nhost = "127.0.0.1"\nport = {port}\n\n[log]\njson_lines = true\n')
    cloud = workdir / "cloud.toml"
    cloud.write_text(f'data_dir = "{workdir / "cloud-data"}"\n{cloud_extra}\n{common}\n'
                     f'{cloud_tables}')
    paths = []
    for i in range(edges):
        path = workdir / f"edge-{i}.toml"
        path.write_text(
            f'edge_id = "edge-{i}"\nseed = {i}\ndata_dir = "{workdir / f"edge-{i}-data"}"\n'
            f'{edge_extra}\n{common}\n[source]\nname = "digits"\n\n'
            f"[source.params]\npartitions = {edges}\npartition = {i}\n"
            f"alpha = {dirichlet_alpha}\n")
        paths.append(path)
    return cloud, paths


def kept_backend_choices() -> dict[str, str]:
    """The environment that keeps the demo edges' measured backend choices across runs: the
    work dir is wiped each time, so they live in the user's cache instead
    (`$XDG_CACHE_HOME/fedstream/backend-choice.json`, else `~/.cache/...`); only the first
    demo on a machine (its CPU, torch and IPEX) measures. Keyed by all that decides a choice,
    so a stale entry is never used (shared/learning/backends/choice_cache.py)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return {"FEDSTREAM_BACKEND__CACHE": str(cache / "fedstream" / "backend-choice.json")}


class Processes:
    """Child services, each logging to its own file; stopped with SIGTERM, then SIGKILL.

    Args:
        workdir: Where the logs go.
        env: Variables for every child; this process's own environment wins over them.
    """

    def __init__(self, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.env = dict(env or {})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, role: str, config: Path) -> None:
        """Start `fedstream ROLE run --config CONFIG` as process `name`."""
        self.spawn_command(name, [sys.executable, "-m", "fedstream", role, "run", "--config",
                                  str(config)])

    def spawn_command(self, name: str, argv: list[str]) -> None:
        """Start `argv` as process `name`, logging to `name.log` (a restart appends)."""
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT,
            env={**self.env, **os.environ, "PYTHONUNBUFFERED": "1"})

    def kill(self, name: str) -> None:
        """SIGKILL one child (a crash, for fault tests) and reap it."""
        proc = self.procs[name]
        proc.kill()
        proc.wait()

    def check_alive(self) -> None:
        """Raise if a child exited, with the tail of its log."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise FedstreamError(Reason.ROUND_FAILED,
                                     f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self, timeout_s: float = 20.0, *, only: Iterable[str] | None = None) -> None:
        """SIGTERM every child (or those named in `only`), wait, SIGKILL stragglers."""
        names = None if only is None else set(only)
        procs = [p for name, p in self.procs.items() if names is None or name in names]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(address: FleetAddress, *, edges: int, procs: Processes,
               timeout_s: float = 180.0, out: TextIO | None = None) -> None:
    """Until the cloud answers and sees every edge online with a backend chosen; with `out` a
    terminal, a bar of the edges ready meanwhile.

    Raises:
        TransportError: no_reply if the fleet is not ready within `timeout_s`.
        FedstreamError: round_failed if a service exited meanwhile (with its log's tail).
    """
    give_up = time.monotonic() + timeout_s
    # A request sent before the cloud subscribed is lost, not queued: probe with short waits.
    probe = dataclasses.replace(address, timeout_s=1.0)
    with follow_fleet(out, edges=edges, timeout_s=timeout_s) as progress:
        while True:
            procs.check_alive()
            try:
                reply = fleet_status(probe)
                # A backend being measured is not ready yet: its map says "state" "tuning".
                ready = [e for e in reply.edges
                         if e.online and e.backend and e.backend.get("state") != "tuning"]
                progress(len(ready), True)
                if len(ready) >= edges:
                    return
            except TransportError:
                pass  # the cloud is still starting
            if time.monotonic() > give_up:
                raise TransportError(Reason.NO_REPLY, "the fleet did not come up in time")
            time.sleep(0.25)


def wait_holding(address: FleetAddress, *, version: int, edges: int,
                 timeout_s: float = 300.0) -> None:
    """Until `edges` edges report holding model `version` (its delivery done; an edge says so
    once it has taken the receipts of its updates, which come before it).

    Raises:
        TransportError: no_reply if they do not within `timeout_s`.
    """
    give_up = time.monotonic() + timeout_s
    while True:
        held = [e for e in fleet_status(address).edges if e.online and e.version == version]
        if len(held) >= edges:
            return
        if time.monotonic() > give_up:
            raise TransportError(Reason.NO_REPLY, f"{len(held)} of {edges} edges hold "
                                                  f"v{version} after {timeout_s:.0f} s")
        time.sleep(0.2)


# With `continual`: the cloud fine-tunes each aggregate on the samples it is sent (mixed with
# replay), gates it, and serves the promoted model over MQTT and HTTP.
CONTINUAL_TABLES = """
[continual]
enabled = true

[continual.finetune]
steps = 100
lr = 0.01
replay_ratio = 0.5

[inference]
enabled = true
http_port = 0
"""
# Of the train split, sent to the cloud before each round: 115 rows, 34 of them evaluation
# rows (eval_fraction 0.3), enough to be scored (min_window_rows 20).
CLOUD_SHARE = 0.08


def run_demo(params: DemoParams, *, out: TextIO) -> int:
    """Run the demo and print a table of rounds; exit code 0 on success."""
    results = run_federation(params, out=out)
    print_table(results, out)
    final = float(results[-1]["accuracy"])
    if final < params.min_accuracy:
        print(f"final accuracy {final:.4f} is below {params.min_accuracy}", file=out)
        return 1
    return 0


def run_federation(params: DemoParams, *, out: TextIO) -> list[Mapping[str, Any]]:
    """Start broker, cloud and edges as processes, run the rounds, stop everything.

    Returns:
        Each round's result (version, accuracy, seconds, bytes, updates).
    """
    shutil.rmtree(params.workdir, ignore_errors=True)
    params.workdir.mkdir(parents=True)
    with Mosquitto(BrokerParams(port=0, data_dir=params.workdir / "broker")) as broker:
        cloud_cfg, edge_cfgs = write_configs(
            params.workdir, port=broker.port, federation=FEDERATION, edges=params.edges,
            dirichlet_alpha=params.dirichlet_alpha,
            cloud_tables=CONTINUAL_TABLES if params.continual else "")
        procs = Processes(params.workdir, env=kept_backend_choices())
        try:
            procs.spawn("cloud", "cloud", cloud_cfg)
            for i, path in enumerate(edge_cfgs):
                procs.spawn(f"edge-{i}", "edge", path)
            address = FleetAddress.local(host=broker.host, port=broker.port,
                                         federation=FEDERATION, model=MODEL)
            print(f"broker on {broker.host}:{broker.port}; cloud + {params.edges} edges "
                  f"starting (logs in {params.workdir}/)", file=out, flush=True)
            wait_ready(address, edges=params.edges, procs=procs, timeout_s=params.ready_timeout_s,
                       out=out)
            initial = fleet_status(address)
            print(f"fleet ready: model v{initial.model_version}, accuracy "
                  f"{initial.model_metrics.get('accuracy', float('nan')):.4f}", file=out,
                  flush=True)
            if not params.continual:
                return [start_round(address, params.round_request, wait=True, out=out).result
                        for _ in range(params.rounds)]
            results = [_continual_round(address, i, params, out) for i in range(params.rounds)]
            show_serving(address, params.workdir, out)
            return results
        finally:
            procs.stop()


def _continual_round(address: FleetAddress, index: int, params: DemoParams,
                     out: TextIO) -> Mapping[str, Any]:
    """Send the cloud a fresh labelled sample (its own evaluation window), then run a round;
    a candidate the gate refuses is reported, not fatal."""
    train = SOURCES.build("digits", split="train").load()
    pick = np.random.default_rng(index).choice(len(train), int(CLOUD_SHARE * len(train)),
                                               replace=False)
    with FleetClient(address) as fleet:
        stored = fleet.send_data(DataBatch.of(train.features[pick], train.y[pick],
                                              window=f"round-{index + 1}"))
    print(f"cloud data: window round-{index + 1}, {stored.detail}", file=out, flush=True)
    try:
        return start_round(address, params.round_request, wait=True, out=out).result
    except FedstreamError as err:
        if err.reason not in (Reason.REGRESSED_NEWEST, Reason.REGRESSED_PAST):
            raise
        # start_round told why; in the demo a refused candidate is a result, not the end.
        print("  the demo goes on with the served model", file=out, flush=True)
        last = fleet_status(address).round
        assert last is not None
        return {**last.result, "gate": str(err.reason)}


def show_serving(address: FleetAddress, workdir: Path, out: TextIO) -> None:
    """The registry, then predictions for five test rows from the served model, over MQTT
    (`fedstream predict`) and over HTTP."""
    print("", file=out)
    model_command(address, action="list", version=None, out=out)
    test = SOURCES.build("digits", split="test").load()
    rows = workdir / "predict.csv"
    np.savetxt(rows, test.features[:5], delimiter=",")
    answers = predict_csv(rows, address)
    port = int(fleet_status(address).serving["http_port"])
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/predict", headers={"Content-Type": "application/json"},
        data=json.dumps({"inputs": test.features[:5].tolist()}).encode())
    with urllib.request.urlopen(request, timeout=address.timeout_s) as resp:
        http = json.load(resp)
    print(f"\npredictions for 5 test rows (true labels {test.y[:5].tolist()}):\n"
          f"  MQTT: {[a.prediction for a in answers]} from v{answers[0].version}\n"
          f"  HTTP: {http['predictions']} from v{http['version']} (port {port})", file=out)


def print_table(results: list[Mapping[str, Any]], out: TextIO) -> None:
    """Round, version, accuracy, time and bytes moved, one row per round."""
    print(f"\n{'round':>5} {'version':>7} {'accuracy':>8} {'seconds':>8} "
          f"{'updates':>7} {'update KiB':>10} {'model KiB':>9} {'win acc':>7} {'forgetting':>10}"
          "  gate", file=out)
    for i, r in enumerate(results, 1):
        # Continual rounds add the served model's mean accuracy over the cloud's evaluation
        # windows, its forgetting, and the gate's verdict on the round's candidate.
        print(f"{i:>5} {r['version']:>7} {r['accuracy']:>8.4f} {r['seconds']:>8.2f} "
              f"{r['updates']:>7} {r['bytes_in'] / 1024:>10.1f} {r['model_bytes'] / 1024:>9.1f}"
              f" {r.get('avg_accuracy', '-'):>7} {r.get('forgetting', '-'):>10}"
              f"  {r.get('gate', 'promoted' if 'candidate' in r else '-')}", file=out)
