"""`fedstream sim`: its parameters, how it shares the edges out, its exactly-once verdict, and a
real run (Mosquitto, the cloud, two host processes of simulated edges, two rounds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fedstream import sim
from fedstream.edge_node.host_report import HostReport
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.protocol.connection import Connection
from fedstream.sim import SimParams, SimResult, host_argv

ROUND = {"updates": 6, "seconds": 1.0, "bytes_in": 10, "accuracy": 0.5}


def _report(**kw: int) -> HostReport:
    counts = {"edges": 3, "sent": 6, "samples": 384, "accepted": 6, "duplicates": 0,
              "rejected": 0, "unanswered": 0, "failed": 0, **kw}
    return HostReport(**counts)


@pytest.mark.parametrize(("kw", "rule"), [
    ({"edges": 0}, "edges must"), ({"edges": 10_001}, "edges must"),
    ({"edges": 2, "hosts": 3}, "hosts must"), ({"rounds": 0}, "rounds must"),
    ({"samples": 0}, "samples must"), ({"alpha": 0.0}, "alpha must"),
    ({"kill_host": 1.0}, "kill_host must"), ({"kill_host": -0.1}, "kill_host must"),
    ({"kill_host": 0.3, "broker": Connection(host="127.0.0.1", port=1883)},
     "kill_host needs the sim's own cloud"),
])
def test_bad_sim_params_are_bad_config(kw: dict[str, object], rule: str) -> None:
    """Out-of-range sizes are refused with the rule they break."""
    # Execute
    with pytest.raises(FedstreamError) as caught:
        SimParams(**kw)  # type: ignore[arg-type]

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert rule in caught.value.detail


@pytest.mark.parametrize(("edges", "hosts", "expected"), [
    (1, 0, 1), (10, 0, 2), (500, 0, 2), (501, 0, 3), (1000, 0, 4), (1000, 7, 7),
])
def test_host_count_is_one_per_250_edges_at_least_two(edges: int, hosts: int,
                                                     expected: int) -> None:
    """Automatic: one host per 250 edges, at least two (two cores), never more than edges."""
    # Execute / Assert
    assert SimParams(edges=edges, hosts=hosts).host_count == expected


def test_hosts_share_every_edge_out_exactly_once(tmp_path: Path) -> None:
    """1,001 edges over 4 hosts: the hosts' ranges are disjoint and cover 0..1000."""
    # Prepare
    params = SimParams(edges=1001, hosts=4, workdir=tmp_path)

    # Execute
    ranges = []
    for i in range(params.host_count):
        argv = host_argv(params, tmp_path / "base.toml", i)
        first, count = int(argv[argv.index("--first") + 1]), int(argv[argv.index("--count") + 1])
        ranges.append(range(first, first + count))

    # Assert
    assert sorted(e for r in ranges for e in r) == list(range(1001))


@pytest.mark.parametrize(("rounds", "hosts", "problem"), [
    ([ROUND], [_report(sent=7, accepted=7)], "the cloud counted 6 updates, the edges sent 7"),
    ([ROUND], [_report(accepted=5, rejected=1)], "5 accepted receipts for 6 updates"),
    ([ROUND], [_report(accepted=5, rejected=1)], "updates were rejected"),
    ([ROUND], [_report(unanswered=1)], "updates left without receipt"),
    ([ROUND], [_report(failed=1)], "edges failed"),
    ([ROUND], [_report(sent=7, duplicates=1)], "edges trained a round twice"),
])
def test_each_broken_count_is_named(rounds: list[dict[str, object]], hosts: list[HostReport],
                                    problem: str) -> None:
    """A count that is off fails the verdict with what is off."""
    # Execute
    problems = SimResult(rounds=rounds, hosts=hosts, startup_s=1.0).problems()

    # Assert
    assert any(problem in p for p in problems)


def test_the_journal_names_edges_counted_twice_or_not_at_all() -> None:
    """With the cloud's journal, each round must hold one update of every edge: one twice,
    or one missing, is named."""
    # Prepare
    edges = ("e0", "e1", "e2")
    hosts = [_report()]

    def problems(accepted: list[str]) -> list[str]:
        return SimResult(rounds=[ROUND], hosts=hosts, startup_s=1.0, edges=edges,
                         journal={"r1": accepted}).problems()

    # Execute
    twice, missing, whole = (problems(["e0", "e1", "e1", "e2"]), problems(["e0", "e2"]),
                             problems(["e2", "e0", "e1"]))

    # Assert
    assert twice == ["round r1 counted ['e1'] more than once"]
    assert missing == ["round r1 has no update of ['e1'] (1 edges)"]
    assert whole == []


def test_matching_counts_are_exactly_once() -> None:
    """Two hosts whose sends the cloud counted, all accepted: no problem."""
    # Prepare
    result = SimResult(rounds=[ROUND, ROUND], hosts=[_report(), _report()], startup_s=1.0)

    # Execute / Assert
    assert result.problems() == []


@pytest.mark.mosquitto
def test_a_sim_run_counts_every_update_exactly_once(tmp_path: Path) -> None:
    """`fedstream sim run`: 12 edges in 2 host processes, 2 rounds, against its own Mosquitto
    and cloud. The verdict holds, and the cloud's own log agrees: 24 accepted updates, one
    per edge and round, from 12 distinct edges, each with an outbox of its own."""
    # Prepare
    work = tmp_path / "sim"
    argv = [sys.executable, "-m", "fedstream", "sim", "run", "--edges", "12", "--hosts", "2",
            "--rounds", "2", "--samples", "32", "--workdir", str(work)]

    # Execute
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})

    # Assert
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "24 updates, each counted exactly once" in done.stdout
    accepted = [json.loads(line) for line in (work / "cloud.log").read_text().splitlines()
                if '"update_accepted"' in line]
    per_edge_round = Counter((e["edge_id"], e["round_id"]) for e in accepted)
    assert len(accepted) == 24 and set(per_edge_round.values()) == {1}
    assert len({edge for edge, _ in per_edge_round}) == 12
    assert sorted(p.name for p in (work / "edges").iterdir()) == [
        f"sim-{i:05d}" for i in range(12)]
    assert all((work / "edges" / f"sim-{i:05d}" / "outbox").is_dir() for i in range(12))
    reports = [json.loads((work / f"host-{i}.json").read_text()) for i in range(2)]
    assert [r["edges"] for r in reports] == [6, 6]
    assert sum(r["samples"] for r in reports) == 24 * 32


@pytest.mark.mosquitto
@pytest.mark.chaos
def test_a_host_killed_mid_round_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """`--kill-host 0.3`: host 0 (6 of 12 edges) is SIGKILLed once the first round has
    counted 3 updates and started again. Both rounds still count one update of every edge
    (the cloud's journal), no outbox keeps one, nothing is refused: the restarted edges
    resume what their outboxes hold and do not train the round again."""
    # Prepare
    work = tmp_path / "sim"
    argv = [sys.executable, "-m", "fedstream", "sim", "run", "--edges", "12", "--hosts", "2",
            "--rounds", "2", "--samples", "32", "--workdir", str(work), "--kill-host", "0.3"]

    # Execute
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})

    # Assert
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "host-0 SIGKILLed at 3 updates, started again" in done.stdout
    assert "each counted exactly once (by the cloud's journal" in done.stdout
    assert "refused as duplicates" not in done.stdout
    starts = [line for line in (work / "host-0.log").read_text().splitlines()
              if '"host_started"' in line]
    assert len(starts) == 2


def test_a_host_that_left_no_report_is_named(tmp_path: Path) -> None:
    """A host killed past the stop timeout (or crashed) writes no report: round_failed names
    it and its log, not a FileNotFoundError."""
    # Execute
    with pytest.raises(FedstreamError) as caught:
        sim._report(tmp_path, 3)

    # Assert
    assert caught.value.reason is Reason.ROUND_FAILED
    assert "host-3 left no report" in caught.value.detail and "host-3.log" in caught.value.detail
