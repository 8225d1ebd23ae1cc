"""`fedstream sim run` (a simulated fleet of N edges, for load tests) and `fedstream sim host`
(one of its host processes)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fedstream.shared.files import write_atomic
from fedstream.shared.logs import configure_logging

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _run(args: argparse.Namespace) -> int:
    from fedstream.sensors_replay import parse_broker
    from fedstream.sim import SimParams, print_summary, run_sim

    params = SimParams(edges=args.edges, hosts=args.hosts, rounds=args.rounds,
                       samples=args.samples, workdir=args.workdir,
                       broker=None if args.broker is None else parse_broker(args.broker),
                       federation=args.federation, kill_host=args.kill_host)
    return print_summary(params, run_sim(params, out=sys.stdout), sys.stdout)


def _host(args: argparse.Namespace) -> int:
    import torch

    from fedstream.edge_node.config import EdgeConfig
    from fedstream.edge_node.host import EdgeHost, edge_config
    from fedstream.shared.config import load_config
    from fedstream.shared.lifecycle import stop_on_signals

    base = load_config(EdgeConfig, args.config)
    configure_logging(json=base.log.json_lines, level=base.log.level)
    torch.set_num_threads(base.threads or 1)
    host = EdgeHost(edge_config(base, i, edges=args.edges, root=base.data_dir)
                    for i in range(args.first, args.first + args.count))
    with stop_on_signals() as stop:
        host.start()
        try:
            host.serve(stop)
        finally:
            host.shut_down()
            report = host.report()
            write_atomic(args.report, json.dumps(dataclasses.asdict(report)).encode())
    return 0 if report.failed == 0 else 1


def add_sim_parser(sub: SubParsers) -> None:
    """Register `fedstream sim` on the CLI's subcommands."""
    sim = sub.add_parser("sim", help="a simulated fleet of many edges (load tests)")
    actions = sim.add_subparsers(dest="action", required=True)
    run = actions.add_parser(
        "run", help="N edges in a few processes against a broker and cloud (its own unless "
                    "--broker), R rounds, and a check that every update counted exactly once")
    run.add_argument("--edges", type=int, default=100, help="logical edges (1-10000)")
    run.add_argument("--hosts", type=int, default=0,
                     help="processes the edges share (0: one per 250 edges, at least 2)")
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument("--samples", type=int, default=64, help="digits rows per edge's shard")
    run.add_argument("--workdir", type=Path, default=Path("sim-run"),
                     help="configs, logs, outboxes (wiped first)")
    run.add_argument("--broker", help="HOST:PORT of a running broker with a cloud on it "
                                      "(default: start both)")
    run.add_argument("--federation", default="sim")
    run.add_argument("--kill-host", type=float, default=0.0, metavar="SHARE",
                     help="SIGKILL host 0 once the first round has counted this share of the "
                          "updates, and start it again (a fault test; default 0: none)")
    run.set_defaults(handler=_run)
    host = actions.add_parser("host", help="one process of a sim's edges (started by sim run)")
    host.add_argument("--config", type=Path, required=True, help="the edges' base config")
    host.add_argument("--first", type=int, required=True, help="index of its first edge")
    host.add_argument("--count", type=int, required=True, help="how many edges it runs")
    host.add_argument("--edges", type=int, required=True, help="edges in the whole fleet")
    host.add_argument("--report", type=Path, required=True,
                      help="where its counts go as JSON when it stops")
    host.set_defaults(handler=_host)
