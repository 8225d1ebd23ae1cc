"""How round time, the cloud's CPU and memory grow with the fleet: `fedstream sim` at N edges.

    .venv/bin/python bench/scale.py [--edges 10 100 1000] [--rounds 3] [--json PATH]
        [--plot PATH.png] [--work-dir DIR]

For each N, smallest first, `run_sim` (fedstream/sim.py) starts its own Mosquitto, `fedstream
cloud run` (one consumer: P = 1) and host processes running the N simulated edges (real
daemons, one MQTT client each), brings the fleet up and runs `--rounds` sync rounds. Per N:
- `round_s`: the median of the cloud's own round `seconds` (opened to closed); `wall_s`: the
  median of the operator's wall time per round (round_start sent to the result seen, which
  includes its connect), read through `run_sim`'s `between_rounds` hook; `rounds` has each.
- `cloud_cpu_s_per_update`: the cloud process's utime + stime (/proc/PID/stat, in clock ticks
  of 10 ms: a few dozen at 10 edges) from just before the first round to just after the last,
  over the updates it counted; `cloud_cpu_share`: that CPU time over the same wall time (1.0:
  a core busy throughout, where one consumer stops keeping up).
- `peak_rss_mib`: VmHWM by `bench/proctree.py`'s sampler on the broker's, the cloud's and the
  hosts' process trees (`hosts`: summed over the host processes; `hosts_per_edge`).
- `updates`: expected (N x rounds), sent by the edges, counted by the cloud, and `lost` = sent -
  counted, which must be 0; `exactly_once`: `SimResult.problems()` is empty (else `problems`).
The baseline is the smallest fleet of the same run and consumer count: `vs_smallest` gives
`round_time_exponent` = log(round_s ratio) / log(edges ratio) (1.0: linear in the fleet) and
`cpu_per_update_ratio` (1.0: each update costs the cloud the same).

Prints a JSON line per N as it ends (stdout; progress goes to stderr), then a table. `--json`
writes every run so far after each N, `--plot` draws median round time against edges (log x),
one line per consumer count. Exit code 1 when a run failed or did not count every update
exactly once; nothing asserts an absolute time or size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from proctree import Sampler

from fedstream.broker import Mosquitto
from fedstream.demo import Processes
from fedstream.shared.errors import FedstreamError
from fedstream.shared.files import write_atomic
from fedstream.shared.logs import configure_logging
from fedstream.sim import SimParams, SimResult, run_sim

# Consumers of the update stream; the cloud is one process today. A run's record carries it so
# that curves for more consumers become more lines of the same table and plot.
PARTITIONS = 1
SAMPLE_INTERVAL_S = 0.5  # VmHWM is the kernel's own peak: a sample only has to see the process
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of /proc/PID/stat (the process's threads, not its children), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Probe:
    """One run's hooks: the memory sampler on its processes, and clocks between its rounds.

    Attributes:
        stack: Holds the sampler open until the caller's `with` ends.
        marks: (wall clock, cloud CPU seconds) before each round and after the last.
    """

    stack: ExitStack
    sampler: Sampler | None = None
    cloud_pid: int = 0
    marks: list[tuple[float, float]] = field(default_factory=list)

    def started(self, procs: Processes, broker: Mosquitto | None) -> None:
        """Watch the broker, the cloud and the hosts (run_sim's `started`)."""
        assert broker is not None and broker.pid is not None  # run_sim starts its own here
        # No `ss`: reading a thousand connections' tcp_info per sample would take the cores
        # the run measures, and hub bytes are not this bench's question.
        self.sampler = self.stack.enter_context(
            Sampler(port=broker.port, interval_s=SAMPLE_INTERVAL_S, ss=None))
        self.sampler.add("broker", broker.pid)
        for name, proc in procs.procs.items():
            self.sampler.add("cloud" if name == "cloud" else "hosts", proc.pid)
        self.cloud_pid = procs.procs["cloud"].pid

    def between_rounds(self, _index: int) -> None:
        """Read the clocks; sample memory too, so the last round's peaks precede shutdown."""
        self.marks.append((time.perf_counter(), cpu_seconds(self.cloud_pid)))
        if self.sampler is not None:
            self.sampler.sample()


def _median(values: list[float]) -> float:
    return round(float(statistics.median(values)), 4)


def summarise(params: SimParams, result: SimResult, probe: Probe) -> dict[str, Any]:
    """One run's record (see the module doc)."""
    assert probe.sampler is not None
    walls = [b[0] - a[0] for a, b in itertools.pairwise(probe.marks)]
    wall_total = probe.marks[-1][0] - probe.marks[0][0]
    cpu = probe.marks[-1][1] - probe.marks[0][1]
    counted = sum(int(r["updates"]) for r in result.rounds)
    sent = sum(h.sent for h in result.hosts)
    peaks = probe.sampler.peak_rss_mib()
    problems = result.problems()
    return {
        "partitions": PARTITIONS, "edges": params.edges, "hosts": params.host_count,
        "startup_s": round(result.startup_s, 3),
        "round_s": _median([float(r["seconds"]) for r in result.rounds]),
        "wall_s": _median(walls),
        "rounds": [{"round_s": float(r["seconds"]), "wall_s": round(w, 4),
                    "updates": int(r["updates"]), "bytes_in": int(r["bytes_in"]),
                    "accuracy": float(r["accuracy"])}
                   for r, w in zip(result.rounds, walls, strict=True)],
        "cloud_cpu_s": round(cpu, 3),
        "cloud_cpu_s_per_update": round(cpu / counted, 6) if counted else None,
        "cloud_cpu_share": round(cpu / wall_total, 3) if wall_total > 0 else None,
        "peak_rss_mib": {"broker": peaks["broker"], "cloud": peaks["cloud"],
                         "hosts": peaks["hosts"],
                         "hosts_per_edge": round(peaks["hosts"] / params.edges, 2)},
        "updates": {"expected": params.edges * params.rounds, "sent": sent,
                    "counted": counted, "lost": sent - counted},
        "exactly_once": not problems, "problems": problems,
    }


def measure(edges: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """Run the sim at `edges` and return its record, or its error as `error`."""
    params = SimParams(edges=edges, rounds=rounds, workdir=workdir)
    try:
        with ExitStack() as stack:
            probe = Probe(stack)
            result = run_sim(params, out=sys.stderr, started=probe.started,
                             between_rounds=probe.between_rounds)
    except FedstreamError as err:
        return {"partitions": PARTITIONS, "edges": edges, "error": str(err)}
    return summarise(params, result, probe)


def compare(run: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    """`vs_smallest`: growth from the smallest fleet `base` to `run` (see the module doc)."""
    growth = run["edges"] / base["edges"]
    times = (run["round_s"], base["round_s"])
    cpus = (run["cloud_cpu_s_per_update"], base["cloud_cpu_s_per_update"])
    exponent = (round(math.log(times[0] / times[1]) / math.log(growth), 3)
                if growth > 1 and min(times) > 0 else None)
    return {"edges_ratio": round(growth, 3),
            "round_s_ratio": round(times[0] / times[1], 3) if times[1] > 0 else None,
            "round_time_exponent": exponent,
            "cpu_per_update_ratio": round(cpus[0] / cpus[1], 3) if cpus[0] and cpus[1] else None}


def ok(run: dict[str, Any]) -> bool:
    """Whether the run finished and counted every update exactly once."""
    return "error" not in run and run["exactly_once"] and run["updates"]["lost"] == 0


COLUMNS = ("P", "edges", "hosts", "startup s", "round s", "wall s", "cloud CPU ms/upd",
           "CPU share", "broker MiB", "cloud MiB", "hosts MiB", "MiB/edge", "lost",
           "exactly once")


def _row(run: dict[str, Any]) -> list[str]:
    if "error" in run:
        return [str(run["partitions"]), str(run["edges"]), "failed: " + run["error"][:60]]
    cpu = run["cloud_cpu_s_per_update"]
    rss = run["peak_rss_mib"]
    return [str(run["partitions"]), str(run["edges"]), str(run["hosts"]),
            f"{run['startup_s']:.1f}", f"{run['round_s']:.3f}", f"{run['wall_s']:.3f}",
            "-" if cpu is None else f"{cpu * 1000:.2f}", f"{run['cloud_cpu_share'] or 0:.2f}",
            f"{rss['broker']:.1f}", f"{rss['cloud']:.1f}", f"{rss['hosts']:.1f}",
            f"{rss['hosts_per_edge']:.2f}", str(run["updates"]["lost"]),
            "yes" if run["exactly_once"] else "NO"]


def table(runs: list[dict[str, Any]]) -> str:
    """The runs as a Markdown table (it goes into the README as printed)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(run)) + " |" for run in runs]
    return "\n".join(lines)


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the Agg backend, or exit naming the extra that installs it."""
    # matplotlib is optional (the `bench` extra) and only `--plot` needs it.
    try:
        import matplotlib  # noqa: PLC0415
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot(plt: ModuleType, runs: list[dict[str, Any]], rounds: int, path: Path) -> None:
    """Median round time against edges (log x), one line per consumer count."""
    done = [run for run in runs if "error" not in run]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for partitions in sorted({run["partitions"] for run in done}):
        line = sorted((r["edges"], r["round_s"]) for r in done if r["partitions"] == partitions)
        ax.plot([n for n, _ in line], [t for _, t in line], marker="o",
                label=f"P = {partitions} consumer{'s' if partitions > 1 else ''}")
        for n, t in line:
            ax.annotate(f"{t:.2f} s", (n, t), textcoords="offset points", xytext=(4, 6),
                        fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.1)  # room for the last point's label
    ticks = sorted({run["edges"] for run in done})
    ax.set_xticks(ticks, labels=[str(n) for n in ticks])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_ylim(0, 1.15 * max(r["round_s"] for r in done))  # room for the labels
    ax.set_xlabel("simulated edges")
    ax.set_ylabel("round time, cloud's seconds (median)")
    ax.set_title(f"fedstream sim: median of {rounds} sync rounds, {os.cpu_count()} cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    """CLI: one sim run per fleet size, smallest first (see the module doc)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write every run here")
    parser.add_argument("--plot", type=Path, default=None, help="draw round time (PNG)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep each run's configs and logs here (default: a temporary "
                             "directory, removed at the end)")
    args = parser.parse_args()
    plt = pyplot() if args.plot is not None else None  # fail before the runs, not after
    configure_logging(json=False, level="warning", stream=sys.stderr)
    root = args.work_dir or Path(tempfile.mkdtemp(prefix="scale-"))
    runs: list[dict[str, Any]] = []
    try:
        for edges in sorted(set(args.edges)):
            run = measure(edges, args.rounds, root.resolve() / f"p{PARTITIONS}-edges-{edges}")
            base = next((r for r in runs if ok(r) and r["partitions"] == PARTITIONS), None)
            if base is not None and ok(run):
                run["vs_smallest"] = compare(run, base)
            runs.append(run)
            print(json.dumps(run), flush=True)
            if args.json is not None:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                report = {"bench": "scale", "rounds": args.rounds, "cpus": os.cpu_count(),
                          "runs": runs}
                write_atomic(args.json, (json.dumps(report, indent=1) + "\n").encode())
    finally:
        if args.work_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print("\n" + table(runs), flush=True)
    if plt is not None and any("error" not in run for run in runs):
        plot(plt, runs, args.rounds, args.plot)
    sys.exit(0 if all(ok(run) for run in runs) else 1)


if __name__ == "__main__":
    main()
