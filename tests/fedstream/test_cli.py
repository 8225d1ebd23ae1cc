"""The `fedstream` command: exit codes and messages carry the error's reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedstream.broker import Mosquitto, find_free_port
from fedstream.client import FleetAddress
from fedstream.demo import Processes, wait_ready, write_configs
from fedstream.shared.errors import REASONS, Reason


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedstream", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_missing_config_file_exits_with_config_not_found(tmp_path: Path) -> None:
    """A config path that does not exist gives exit code and reason config_not_found."""
    # Execute
    done = _run("cloud", "run", "--config", str(tmp_path / "nope.toml"))

    # Assert
    assert done.returncode == REASONS[Reason.CONFIG_NOT_FOUND].exit_code
    assert "config_not_found" in done.stderr


def test_invalid_config_names_every_bad_key(tmp_path: Path) -> None:
    """An edge config with a bad port and a typo reports both key paths and exits bad_config."""
    # Prepare
    cfg = tmp_path / "edge.toml"
    cfg.write_text('edge_id = "e1"\nbogus = 1\n[broker]\nport = 70000\n')

    # Execute
    done = _run("edge", "run", "--config", str(cfg))

    # Assert
    assert done.returncode == REASONS[Reason.BAD_CONFIG].exit_code
    assert "broker.port" in done.stderr and "bogus" in done.stderr


@pytest.mark.parametrize(("role", "text"), [("cloud", ""), ("edge", 'edge_id = "e1"\n')],
                         ids=["cloud", "edge"])
def test_uncreatable_data_dir_is_store_failed(tmp_path: Path, role: str, text: str) -> None:
    """A data_dir that cannot be created (its parent is a file) exits store_failed at start,
    naming the path and the data_dir key, without a traceback."""
    # Prepare
    (tmp_path / "file").write_text("")
    data_dir = tmp_path / "file" / "data"
    cfg = tmp_path / f"{role}.toml"
    cfg.write_text(f'{text}data_dir = "{data_dir}"\n[broker]\nport = {find_free_port()}\n')

    # Execute
    done = _run(role, "run", "--config", str(cfg))

    # Assert
    assert done.returncode == REASONS[Reason.STORE_FAILED].exit_code
    assert "store_failed" in done.stderr and f"data_dir {data_dir} " in done.stderr
    assert "Traceback" not in done.stderr


def test_status_without_a_broker_is_broker_unreachable() -> None:
    """`fedstream status` against a closed port exits with broker_unreachable."""
    # Execute
    done = _run("status", "--port", str(find_free_port()), "--timeout", "0.5")

    # Assert
    assert done.returncode == REASONS[Reason.BROKER_UNREACHABLE].exit_code
    assert "broker_unreachable" in done.stderr


@pytest.mark.mosquitto
def test_status_without_a_cloud_is_no_reply(broker: Mosquitto) -> None:
    """With a broker but no cloud service, `fedstream status` exits with no_reply."""
    # Execute
    done = _run("status", "--port", str(broker.port), "--timeout", "0.5")

    # Assert
    assert done.returncode == REASONS[Reason.NO_REPLY].exit_code


@pytest.mark.mosquitto
def test_status_on_the_wrong_federation_says_where_it_asked(broker: Mosquitto,
                                                            federation: str) -> None:
    """`--federation` picks the federation, and no_reply names it and the broker it asked."""
    # Execute
    done = _run("status", "--port", str(broker.port), "--federation", federation,
                "--timeout", "0.5")

    # Assert
    assert done.returncode == REASONS[Reason.NO_REPLY].exit_code
    assert f"no cloud answered on federation '{federation}' at 127.0.0.1:{broker.port}" in (
        done.stderr)
    assert "Traceback" not in done.stderr


@pytest.mark.mosquitto
def test_round_start_with_no_edges_online_is_no_edges(
    broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """The cloud refuses a round or async session when no edge is online; the CLI shows why
    and exits no_edges; a buffer without --async is bad_config; `round stop` with nothing
    open says so and exits 0; and `fedstream status` shows the initial model."""
    # Prepare
    cloud_cfg, _ = write_configs(tmp_path, port=broker.port, federation=federation, edges=0,
                                 dirichlet_alpha=0.5)
    procs = Processes(tmp_path)
    procs.spawn("cloud", "cloud", cloud_cfg)
    env_args = ("--config", str(cloud_cfg), "--timeout", "10")
    try:
        wait_ready(FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                      model="digits-mlp", timeout_s=2.0), edges=0, procs=procs)

        # Execute
        status = _run("status", *env_args)
        refused = _run("round", "start", *env_args)
        refused_async = _run("round", "start", "--async", *env_args)
        misplaced = _run("round", "start", "--buffer", "2", *env_args)
        stopped = _run("round", "stop", *env_args)
    finally:
        procs.stop()

    # Assert
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("model       v0  accuracy ")
    assert "\nedges       0 online of 0\n" in status.stdout
    assert "\nround       none\n" in status.stdout
    assert refused.returncode == REASONS[Reason.NO_EDGES].exit_code
    assert "no_edges" in refused.stderr
    assert refused_async.returncode == REASONS[Reason.NO_EDGES].exit_code
    assert misplaced.returncode == REASONS[Reason.BAD_CONFIG].exit_code
    assert "buffer" in misplaced.stderr
    assert (stopped.returncode, stopped.stdout) == (0, "no round to stop\n")


@pytest.mark.mosquitto
@pytest.mark.slow
def test_views_print_json_and_a_failed_round_says_why(
    broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """With a cloud and one edge, a round publishes v1 and a second fails (the edge declines
    it: too few samples). The failed `round start --wait` prints reason, meaning and what to
    do and exits no_quorum; `status`, `edges` and `rounds --json` each print one document
    saying so; `rounds` prints the same as a table."""
    # Prepare
    cloud_cfg, edge_cfgs = write_configs(tmp_path, port=broker.port, federation=federation,
                                         edges=1, dirichlet_alpha=0.5)
    procs = Processes(tmp_path)
    client = ("--config", str(cloud_cfg), "--timeout", "10")
    try:
        procs.spawn("cloud", "cloud", cloud_cfg)
        procs.spawn("edge-0", "edge", edge_cfgs[0])
        wait_ready(FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                      model="digits-mlp", timeout_s=2.0), edges=1, procs=procs)

        # Execute
        published = _run("round", "start", "--wait", "--epochs", "1", *client, timeout=120)
        failed = _run("round", "start", "--wait", "--min-samples", "1000000", *client,
                      timeout=120)
        status = _run("status", "--json", *client)
        edges = _run("edges", "--json", *client)
        rounds = _run("rounds", "--json", "--limit", "5", *client)
        table = _run("rounds", *client)
    finally:
        procs.stop()

    # Assert
    assert published.returncode == 0, published.stderr
    assert failed.returncode == REASONS[Reason.NO_QUORUM].exit_code, failed.stderr
    assert "failed   round " in failed.stdout and ": no_quorum: 0 of 1 updates" in failed.stdout
    assert f"meaning  {REASONS[Reason.NO_QUORUM].help}" in failed.stdout
    assert "to do    fewer than quorum updates" in failed.stdout
    assert "fedstream: no_quorum: round " in failed.stderr
    assert [d.returncode for d in (status, edges, rounds, table)] == [0, 0, 0, 0]
    fleet, seen, journal = (json.loads(d.stdout) for d in (status, edges, rounds))
    assert fleet["model"]["version"] == 1 and fleet["edges"] == {"online": 1, "total": 1}
    last = fleet["round"]
    assert (last["status"], last["reason"]) == ("failed", "no_quorum")
    (edge,) = seen["edges"]
    assert edge["id"] == "edge-0" and edge["online"] and edge["version"] == 1
    assert edge["declined"] == {"round": last["id"], "reason": "too_little_data"}
    assert [(r["status"], r["reason"]) for r in journal["rounds"]] == [
        ("failed", "no_quorum"), ("published", None)]
    assert journal["rounds"][0]["declined"] == {"edge-0": "too_little_data"}
    assert journal["rounds"][1]["result"]["version"] == 1
    header, newest, oldest = table.stdout.splitlines()
    assert header.split() == ["round", "mode", "status", "base", "updates", "metric", "version",
                              "seconds", "reason"]
    assert newest.split()[:5] == [last["id"], "sync", "failed", "v1", "0/0"]
    assert "no_quorum: 0 of 1 updates; edge-0 declined: too_little_data" in newest
    assert oldest.split()[2:5] == ["published", "v0", "1/1"]


def test_pki_init_and_issue_write_the_federations_certificates(tmp_path: Path) -> None:
    """`fedstream pki init` makes the CA and the broker's certificate, `pki issue` an
    identity's; a name that cannot be an MQTT username exits with bad_config's code."""
    # Prepare
    pki = tmp_path / "pki"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fedstream", "pki", *args], text=True,
                              capture_output=True, timeout=60, check=False)

    # Execute
    init = cli("init", "--dir", str(pki), "--federation", "lab", "--host", "127.0.0.1")
    issued = cli("issue", "gw-1", "--role", "edge", "--dir", str(pki))
    bad = cli("issue", "gw/1", "--role", "edge", "--dir", str(pki))

    # Assert
    assert (init.returncode, issued.returncode) == (0, 0), init.stderr + issued.stderr
    assert bad.returncode == REASONS[Reason.BAD_CONFIG].exit_code
    assert {p.name for p in pki.iterdir()} >= {"ca.crt", "ca.key", "broker.crt", "broker.key",
                                               "gw-1.crt", "gw-1.key"}
    assert "edge gw-1" in issued.stdout
