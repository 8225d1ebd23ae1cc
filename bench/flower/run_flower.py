"""The Flower half of the side-by-side benchmark: Flower 1.42's Deployment Engine, for real.

    python bench/flower/run_flower.py --data-dir D --work-dir W --rounds R --cache-dir C

Standard library only in this process (and bench/proctree.py). Flower runs from its own venv,
`C/flower-venv` (made once with `pip install flwr==1.42.0 torch==2.13.0 numpy`, reused while
its marker file matches). On
127.0.0.1 with free ports and `--insecure`: one `flower-superlink` (its one HTTP port serves
the Fleet, Control and Runtime APIs; `uv sync` of app dependencies off), three
`flower-supernode`s (`--node-config "partition-id=I num-partitions=3"`, each with its own
Runtime API port for its ClientApps), then `flwr run bench/flower/app bench --stream` against a
SuperLink connection `[superlink.bench]` written to `W/flwr-home/cli/config.toml` (FLWR_HOME;
each process has its own FLWR_HOME under W, nothing goes to ~/.flwr). `--stream` returns once
the run has finished; the ServerApp then has written its timings to `W/serverapp.json`.

What is measured, and how:
- per round (by the ServerApp, see app/fedbench/server_app.py): `wall_s`, from the train
  messages being sent to their aggregate; `train_s`, each ClientApp's perf_counter around its
  epoch; `overhead_s` = wall_s - max(train_s); `accuracy` on test.npz after the round, and
  `evaluated_s` (sent -> accuracy known; `overhead_eval_s` = evaluated_s - max(train_s)); to
  see where the overhead goes, per client `to_clients_s` (sent -> ClientApp handler entered,
  with the ClientApp process's start) and `from_clients_s` (handler left -> aggregated).
- `startup_s`: time.time() in this process just before the SuperLink is launched, to the
  ServerApp's time.time() when round 1's train messages are sent (same machine, same clock).
- memory and TCP bytes come from `bench/proctree.py`'s sampler (its doc has the method), which
  watches the SuperLink, the SuperNodes and `flwr run` down to every descendant (SuperExecs,
  the ServerApp, each ClientApp process) every 0.2 s. `peak_rss_mib`: each process's VmHWM
  summed, in `total` and by kind: `superlink` and `supernodes` (with their SuperExecs), `apps`
  (flwr-serverapp, flwr-clientapp, and what they start) and `cli`. `concurrent_rss_peak_mib`
  is the largest sum of VmRSS over one sample.
- `bytes.superlink_tcp`: TCP payload bytes both ways on every connection to the SuperLink's
  port (the SuperLink's end's tcp_info, `ss -tinp`); by peer (`supernodes`: Fleet API,
  `serverapp`: the ServerApp and its SuperExec on the Runtime API, `cli`: Control API, `other`:
  none of these). A connection that opens and closes between two samples is missed (uvicorn
  and httpx keep idle connections ~5 s, so few are).
  `bytes.superlink_rchar_wchar`: /proc/PID/io rchar + wchar of the SuperLink process from its
  port answering to the end of the run, a proxy that also counts its file and log I/O.
  `bytes.model_payload`: parameters x 4 x 2 x clients x rounds.
- `total_s`: from launching the SuperLink to `flwr run` returning; `versions` from the ServerApp.
Logs: `W/logs/*.log` (ServerApp output also in flwr-run.log, ClientApps' in supernode-I.log).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parents[1]
if str(BENCH_DIR) not in sys.path:  # run as a script: bench/ holds the shared sampler
    sys.path.insert(0, str(BENCH_DIR))

from proctree import Sampler, descendants, io_bytes, proc_table  # noqa: E402

REQUIREMENTS = ("flwr==1.42.0", "torch==2.13.0", "numpy")
APP_DIR = Path(__file__).resolve().parent / "app"
HOST = "127.0.0.1"
CONNECTION = "bench"
NUM_CLIENTS = 3
READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_BASE_S = 900.0
RUN_TIMEOUT_PER_ROUND_S = 300.0
STOP_GRACE_S = 10.0
TAIL_LINES = 40
APP_SCRIPTS = frozenset({"flwr-serverapp", "flwr-clientapp"})
# A SuperLink connection's peer, by the sampler's group: the SuperLink's own tree holds the
# ServerApp and its SuperExec (Runtime API), a SuperNode's tree its Fleet API client.
PEER_GROUP = {"superlink": "serverapp", "supernodes": "supernodes", "cli": "cli"}


class FlowerBenchError(RuntimeError):
    """The Flower run failed; the message ends with the tail of the relevant log."""


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a log file, or a note that it does not exist."""
    if not path.exists():
        return f"({path} does not exist)"
    with path.open(encoding="utf-8", errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))


def failure(message: str, *logs: Path) -> FlowerBenchError:
    """An error whose text carries the tail of each log in `logs`."""
    tails = "".join(f"\n--- tail of {log} ---\n{tail(log)}" for log in logs)
    return FlowerBenchError(message + tails)


def ensure_venv(cache_dir: Path) -> Path:
    """The bin directory of the Flower venv, created and installed on first use only."""
    venv = cache_dir / "flower-venv"
    marker = venv / "fedbench-requirements.txt"
    wanted = "\n".join(REQUIREMENTS)
    if marker.is_file() and marker.read_text(encoding="utf-8") == wanted:
        return venv / "bin"
    cache_dir.mkdir(parents=True, exist_ok=True)
    log = cache_dir / "flower-venv-install.log"
    with log.open("w", encoding="utf-8") as out:
        for argv in ([sys.executable, "-m", "venv", "--clear", str(venv)],
                     [str(venv / "bin" / "python"), "-m", "pip", "install", *REQUIREMENTS]):
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                              check=False).returncode != 0:
                raise failure(f"installing Flower failed: {' '.join(argv)}", log)
    marker.write_text(wanted, encoding="utf-8")
    return venv / "bin"


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago (bind to port 0)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def flower_env(bin_dir: Path, home: Path) -> dict[str, str]:
    """The environment of a Flower process: its venv first on PATH, its own FLWR_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               VIRTUAL_ENV=str(bin_dir.parent), FLWR_HOME=str(home),
               FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
               OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def write_cli_config(home: Path, port: int) -> None:
    """Point `flwr` at the SuperLink: the default connection of FLWR_HOME/config.toml."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "{HOST}:{port}"\ninsecure = true\n',
        encoding="utf-8")


def write_run_config(path: Path, values: dict[str, object]) -> None:
    """A TOML file of run-config overrides for `flwr run -c` (JSON strings are TOML strings)."""
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()),
                    encoding="utf-8")


def app_kind(pid: int) -> str | None:
    """The sampler's hook: `apps` for a flwr-serverapp or flwr-clientapp process."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    names = {os.path.basename(arg.decode(errors="replace")) for arg in argv}
    return "apps" if names & APP_SCRIPTS else None


@dataclass
class Started:
    """A process this runner launched, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    out: IO[bytes]


@dataclass
class Processes:
    """Flower's processes of one run, each logging to `log_dir/NAME.log`."""

    log_dir: Path
    started: list[Started] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Started:
        """Launch `argv` with stdout and stderr to its log file."""
        log = self.log_dir / f"{name}.log"
        out = log.open("wb")
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self.started.append(Started(name, popen, log, out))
        return self.started[-1]

    def check_alive(self, skip: Started) -> None:
        """Raise with its log's tail if any process but `skip` has exited."""
        for proc in self.started:
            if proc is not skip and proc.popen.poll() is not None:
                raise failure(f"{proc.name} exited with {proc.popen.returncode}", proc.log)

    def stop(self) -> None:
        """SIGTERM the launched processes, then their leftover descendants; SIGKILL after 10 s."""
        table = proc_table()
        below = {pid: table[pid][1] for proc in self.started
                 for pid in descendants(proc.popen.pid, table) if pid != proc.popen.pid}
        for proc in self.started:
            if proc.popen.poll() is None:
                proc.popen.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.started:
            try:
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
            proc.out.close()
        _signal_alive(below, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while _alive(below) and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_alive(below, signal.SIGKILL)


def _alive(procs: dict[int, int]) -> dict[int, int]:
    """The processes of `procs` (pid -> start time) still running, not zombies nor reused."""
    table = proc_table()
    return {pid: start for pid, start in procs.items()
            if pid in table and table[pid][1] == start and table[pid][2] != "Z"}


def _signal_alive(procs: dict[int, int], sig: signal.Signals) -> None:
    """Send `sig` to each process of `procs` that is still the one recorded."""
    for pid in _alive(procs):
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_listening(port: int, proc: Started, timeout: float) -> None:
    """Block until 127.0.0.1:`port` accepts connections; raise if `proc` exits or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise failure(f"{proc.name} exited with {proc.popen.returncode}", proc.log)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise failure(f"{proc.name} did not listen on {HOST}:{port} in {timeout:.0f} s", proc.log)


def wait_run(procs: Processes, cli: Started, timeout: float) -> None:
    """Block until `flwr run --stream` returns (the run finished); raise on any failure."""
    deadline = time.monotonic() + timeout
    while cli.popen.poll() is None:
        procs.check_alive(skip=cli)
        if time.monotonic() > deadline:
            raise failure(f"the run did not finish in {timeout:.0f} s", cli.log,
                          procs.started[0].log)
        time.sleep(0.2)
    if cli.popen.returncode != 0:
        raise failure(f"flwr run exited with {cli.popen.returncode}", cli.log)


def launch(procs: Processes, sampler: Sampler, *, bin_dir: Path, work_dir: Path,
           ports: list[int], run_config: Path) -> tuple[int, Started]:
    """Start the SuperLink, the SuperNodes and `flwr run`; the SuperLink's rchar+wchar at ready."""
    homes = work_dir / "flwr-home"
    link_port, node_ports = ports[0], ports[1:]
    superlink = procs.start(
        "superlink", [str(bin_dir / "flower-superlink"), "--insecure", "--host", HOST,
                      "--port", str(link_port), "--disable-runtime-dependency-installation"],
        flower_env(bin_dir, homes / "superlink"), work_dir)
    sampler.add("superlink", superlink.popen.pid)
    wait_listening(link_port, superlink, READY_TIMEOUT_S)
    io_at_ready = io_bytes(superlink.popen.pid)
    for part, node_port in enumerate(node_ports):
        node = procs.start(
            f"supernode-{part}",
            [str(bin_dir / "flower-supernode"), "--insecure", "--superlink",
             f"{HOST}:{link_port}", "--node-config",
             f"partition-id={part} num-partitions={NUM_CLIENTS}",
             "--host", HOST, "--port", str(node_port)],
            flower_env(bin_dir, homes / f"supernode-{part}"), work_dir)
        sampler.add("supernodes", node.popen.pid)
    write_cli_config(homes / "cli", link_port)
    cli = procs.start("flwr-run", [str(bin_dir / "flwr"), "run", str(APP_DIR), CONNECTION,
                                   "--stream", "-c", str(run_config)],
                      flower_env(bin_dir, homes / "cli"), work_dir)
    sampler.add("cli", cli.popen.pid)
    return io_at_ready, cli


def summarise(server: dict[str, Any], sampler: Sampler, *, launched: float, finished: float,
              superlink_io: int) -> dict[str, Any]:
    """The result dict from the ServerApp's JSON and the runner's own measurements."""
    rounds = [{"round": r["round"], "wall_s": round(r["wall_s"], 4),
               "train_s": [round(t, 4) for t in r["train_s"]],
               "overhead_s": round(r["wall_s"] - max(r["train_s"]), 4),
               "evaluated_s": round(r["evaluated_s"], 4),
               "overhead_eval_s": round(r["evaluated_s"] - max(r["train_s"]), 4),
               "to_clients_s": [round(t, 4) for t in r["to_clients_s"]],
               "from_clients_s": [round(t, 4) for t in r["from_clients_s"]],
               "accuracy": round(r["accuracy"], 4)} for r in server["rounds"]]
    tcp = sampler.tcp_bytes()
    if tcp is not None:
        tcp = {PEER_GROUP.get(group, group): count for group, count in tcp.items()}
    payload = server["num_parameters"] * 4 * 2 * NUM_CLIENTS * len(rounds)
    return {
        "framework": "flower",
        "rounds": rounds,
        "startup_s": round(server["rounds"][0]["sent_unix"] - launched, 3),
        "peak_rss_mib": sampler.peak_rss_mib(),
        "concurrent_rss_peak_mib": sampler.concurrent_rss_peak_mib(),
        "processes": sampler.process_counts(),
        "bytes": {"superlink_tcp": None if tcp is None else sum(tcp.values()),
                  "superlink_tcp_by_peer": tcp, "superlink_rchar_wchar": superlink_io,
                  "model_payload": payload},
        "num_parameters": server["num_parameters"],
        "versions": server["versions"],
        "total_s": round(finished - launched, 3),
    }


def run_flower(*, data_dir: Path, work_dir: Path, rounds: int, cache_dir: Path) -> dict[str, Any]:
    """Run `rounds` FedAvg rounds on Flower's Deployment Engine and return what was measured.

    See the module docstring for each figure's method. All processes are stopped before this
    returns or raises (SIGTERM, then SIGKILL); a failure raises FlowerBenchError with log tails.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    bin_dir = ensure_venv(cache_dir.resolve())
    work_dir = work_dir.resolve()
    (work_dir / "logs").mkdir(parents=True, exist_ok=True)
    result_file = work_dir / "serverapp.json"
    result_file.unlink(missing_ok=True)
    run_config = work_dir / "run-config.toml"
    write_run_config(run_config, {"num-server-rounds": rounds, "num-clients": NUM_CLIENTS,
                                  "data-dir": str(data_dir.resolve()),
                                  "result-file": str(result_file)})
    ports = free_ports(1 + NUM_CLIENTS)
    procs = Processes(work_dir / "logs")
    launched = time.time()
    try:
        with Sampler(port=ports[0], reclassify=app_kind) as sampler:
            io_at_ready, cli = launch(procs, sampler, bin_dir=bin_dir, work_dir=work_dir,
                                     ports=ports, run_config=run_config)
            wait_run(procs, cli, RUN_TIMEOUT_BASE_S + RUN_TIMEOUT_PER_ROUND_S * rounds)
            finished = time.time()
            superlink_io = io_bytes(procs.started[0].popen.pid) - io_at_ready
    finally:
        procs.stop()
    if not result_file.exists():
        raise failure("the ServerApp wrote no results", cli.log, procs.started[0].log)
    server = json.loads(result_file.read_text(encoding="utf-8"))
    return summarise(server, sampler, launched=launched, finished=finished,
                     superlink_io=superlink_io)


def main() -> None:
    """CLI: run the benchmark and print its result as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, required=True)
    args = parser.parse_args()
    print(json.dumps(run_flower(data_dir=args.data_dir, work_dir=args.work_dir,
                                rounds=args.rounds, cache_dir=args.cache_dir)))


if __name__ == "__main__":
    main()
