"""A real ejabberd cluster on loopback for integration tests: N nodes of Debian's ejabberd 23.01
(`apt-get install -y ejabberd`; nothing is installed here), each with an MQTT listener on a free
127.0.0.1 port, joined into one Erlang/mnesia cluster with one MQTT user registered.

Nodes run as the calling user, started with `erl` as `ejabberdctl foreground` would (as root,
ejabberdctl re-runs itself as `ejabberd`, who cannot enter pytest's 0700 directories; `start`
detaches; each command boots a VM: ~6 s to a joined pair); commands go through erl_call. Each
cluster has its own epmd (ERL_EPMD_PORT), cookie and `fsN_<random>@localhost` names. Two nodes
start in ~1.4-2 s on an idle 2-core machine (~1 s boot, ~0.35 s join, ~0.1 s MQTT probes).

Found by tests/broker/test_ejabberd_cluster.py (OTP 25, paho MQTT v5):
- QoS 1, response topic, correlation data, 300 KB and 1 MiB payloads cross nodes. A packet over
  `max_payload_size` gets DISCONNECT 0x95; a client without the password, CONNACK 0x87.
- Retained messages do not cross nodes: each node has the table but matches new subscriptions
  against a topic cache of its own, filled at its start and by its own publishes.
- A subscriber gets one QoS 1 message in flight, the rest queue (2-3k msg/s across nodes);
  `max_queue` counts messages, online or away, and one more ends the session and queue (0x97).
- A persistent session lives on its client's node. It moves to another live node (present,
  queue and subscriptions kept) if the client comes back a second later or more: ejabberd
  orders a client id's registrations by (second, per-node counter), so not within the second.
- SIGKILL of node 1: its clients see the socket close at once (a dead host: only keepalive
  would tell), node 2's carry on, node 1's are on node 2 ~10 ms later. Node 1's sessions are
  gone with their queues (publishes to their topics get 0x10); node 2's keep theirs, even what
  node 1's clients queued there. Retained through node 2 stays; through node 1, still not served.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

import structlog

from fedstream.broker.launcher import find_free_port
from fedstream.shared.errors import ConfigError, Reason, TransportError
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.mqtt import MqttClient

log = structlog.get_logger(__name__)

_HOST = "127.0.0.1"
_INSTALL = "install it with `apt-get install -y ejabberd`"
_LOG_TAIL_LINES = 20
_POLL_S = 0.02
_MARKER = "FEDSTREAM_EJABBERD_CLUSTER"  # =<cluster id> in every process a cluster starts
_STARTED = ("case lists:keymember(ejabberd, 1, application:which_applications()) of "
            "true -> os:getpid(); false -> starting end.")
_HALT = ("spawn(fun() -> application:stop(ejabberd), application:stop(mnesia), "
         "erlang:halt(0) end), ok.")

_YML = """\
hosts: [localhost]
loglevel: info
auth_method: [internal]
auth_password_format: scram
listen:
  - {{port: {mqtt_port}, ip: "{host}", module: mod_mqtt, backlog: 1024,
     max_payload_size: {p.max_payload_size}}}
modules:
  mod_mqtt: {{db_type: mnesia, ram_db_type: mnesia, queue_type: {p.queue_type},
              max_queue: {p.max_queue}, session_expiry: {p.session_expiry_s},
              max_topic_depth: 16, match_retained_limit: infinity}}
"""

_CTL_CFG = """\
# ejabberdctl settings for node {name}, started by fedstream.broker.ejabberd with the same
# ones. As root or ejabberd: ejabberdctl --ctl-config {path} status. No FIREWALL_WINDOW: its
# control node would take it too, and it is the running node's distribution port ({dist_port}).
ERLANG_NODE={name}
EJABBERD_CONFIG_PATH={yml}
INET_DIST_INTERFACE={host}
ERL_EPMD_ADDRESS={host}
export ERL_EPMD_PORT={epmd_port}
ERL_OPTIONS="-start_epmd false -setcookie $(cat {cookie})"
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class EjabberdParams:
    """What cluster to start and which MQTT user it lets in.

    Args:
        work_dir: Holds the cookie, epmd's log and a directory per node (configs, spool, logs).
        nodes: How many nodes; the others join node 0.
        username: The MQTT username registered (as `username@localhost`).
        password: Its password; random unless given (read it from the params).
        max_queue: Messages a session may queue for its client (away, or behind the one in
            flight); one more ends the session and drops its queue.
        max_payload_size: Largest MQTT packet a node accepts, in bytes.
        session_expiry_s: Longest session expiry a client may ask for (ejabberd's default: 300).
        queue_type: `file` keeps queued messages in the node's spool, `ram` in its memory.
        ejabberdctl: The package's control script (it names where ejabberd's code is).

    Raises:
        ConfigError: BAD_CONFIG for a value out of range.
    """

    work_dir: Path
    nodes: int = 2
    username: str = "fedstream"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    max_queue: int = 10_000
    max_payload_size: int = 2 * 1024 * 1024
    session_expiry_s: int = 24 * 3600
    queue_type: str = "file"
    ejabberdctl: str = "ejabberdctl"

    def __post_init__(self) -> None:
        object.__setattr__(self, "work_dir", Path(self.work_dir))
        wrong = [what for what, ok in {
            "nodes must be at least 1": self.nodes >= 1,
            "username must be a lowercase [a-z0-9._-] name":
                re.fullmatch(r"[a-z0-9][a-z0-9._-]*", self.username) is not None,
            "password must not be empty": self.password != "",
            "max_queue must be positive": self.max_queue >= 1,
            "max_payload_size must be at least 1024": self.max_payload_size >= 1024,
            "session_expiry_s must not be negative": self.session_expiry_s >= 0,
            "queue_type must be 'file' or 'ram'": self.queue_type in ("file", "ram")}.items()
                 if not ok]
        if wrong:
            raise ConfigError(Reason.BAD_CONFIG, "; ".join(wrong))


@dataclass(frozen=True, slots=True)
class EjabberdNode:
    """One node: its Erlang name, MQTT address and the OS pid of its VM (beam)."""

    name: str
    host: str
    mqtt_port: int
    pid: int


@dataclass(slots=True)
class _Running:
    name: str
    mqtt_port: int
    proc: subprocess.Popen[bytes]
    pid: int


class EjabberdCluster:
    """ejabberd nodes on loopback joined into one cluster; a context manager (start, stop).

    Args:
        params: The cluster's size, limits and MQTT user.
    """

    def __init__(self, params: EjabberdParams) -> None:
        self._params = params
        self._id = secrets.token_hex(4)
        self._work = params.work_dir.resolve()
        self._env: dict[str, str] = {}
        self._erl_call = ""
        self._epmd: subprocess.Popen[bytes] | None = None
        self._running: list[_Running] = []

    @property
    def nodes(self) -> tuple[EjabberdNode, ...]:
        """Every node started (killed ones too), in order; empty before `start`, after `stop`."""
        return tuple(EjabberdNode(r.name, _HOST, r.mqtt_port, r.pid) for r in self._running)

    def connection(self, i: int) -> Connection:
        """A `Connection` to node `i` as the registered user, the other nodes as failover."""
        ports = [r.mqtt_port for r in self._running]
        return Connection(host=_HOST, port=ports[i],
                          failover=tuple((_HOST, p) for j, p in enumerate(ports) if j != i),
                          username=self._params.username, password=self._params.password)

    def start(self, timeout: float = 30.0) -> None:
        """Render the configs, start epmd and the nodes, join them, register the user, and
        return once every node accepts an MQTT v5 CONNECT as that user.

        Raises:
            ConfigError: BAD_CONFIG if Erlang or ejabberd is not installed.
            TransportError: BROKER_FAILED if a node does not come up (with its log tail).
        """
        if self._running:
            return
        erl, epmd, self._erl_call, erl_libs = _find_tools(self._params.ejabberdctl)
        began = time.monotonic()
        deadline = began + timeout
        try:
            self._start_epmd(epmd, erl_libs, deadline)
            for i in range(self._params.nodes):
                self._spawn_node(i, erl)
            p, first = self._params, self._running[0].name
            for i in range(p.nodes):
                self._wait_started(i, deadline)
                # Node 0 registers the user; the others join it (ejabberd restarts, ~0.35 s).
                expr = (f"ejabberd_auth:try_register({_erl_binary(p.username)}, <<\"localhost\">>,"
                        f" {_erl_binary(p.password)})." if i == 0 else
                        f"ejabberd_admin:join_cluster({_erl_binary(first)}).")
                if (out := self._rpc(i, expr, deadline - time.monotonic())) != "ok":
                    self._fail(i, f"did not {'join ' + first if i else 'register'}: {out}")
            for i in range(p.nodes):
                self._probe(i, deadline)
        except BaseException:
            self.stop()
            raise
        log.info("cluster_started", cluster=self._id, nodes=[r.name for r in self._running],
                 ports=[r.mqtt_port for r in self._running],
                 ms=round((time.monotonic() - began) * 1000))

    def kill(self, i: int) -> None:
        """SIGKILL node `i`'s VM: no goodbye to its peers or clients. Idempotent."""
        run = self._running[i]
        if run.proc.poll() is None:
            _signal(run.pid, signal.SIGKILL)
            run.proc.kill()  # the same process unless `erl` did not exec into beam
            run.proc.wait()
            log.info("node_killed", cluster=self._id, node=run.name, pid=run.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the nodes cleanly (ejabberd, mnesia, then the VM), SIGKILL any that hangs, end
        the cluster's epmd, then kill whatever process of the cluster is left. Idempotent."""
        live = [i for i, r in enumerate(self._running) if r.proc.poll() is None]
        for i in live:
            # SIGTERM (init:stop) does the same, then idles ~1 s in OTP 25's shutdown.
            if self._call(i, _HALT, 2.0)[0] != 0:
                _signal(self._running[i].pid, signal.SIGTERM)
        give_up = time.monotonic() + timeout
        for i in live:
            try:
                self._running[i].proc.wait(max(0.0, give_up - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(i)
        if self._epmd is not None:
            self._epmd.terminate()
            self._epmd.wait()
            self._epmd = None
        stragglers = _leftovers(self._id)  # a port program a hung VM left behind
        for pid in stragglers:
            _signal(pid, signal.SIGKILL)
        if self._running:
            log.info("cluster_stopped", cluster=self._id, stragglers=len(stragglers))
        self._running = []

    def log_tail(self, i: int) -> str:
        """The last lines of node `i`'s ejabberd log, and of its VM's own output if any."""
        logs = self._work / f"fs{i + 1}" / "logs"
        vm = _tail(logs / "erl.log")
        return "\n".join([_tail(logs / "ejabberd.log")] + ([f"-- erl --\n{vm}"] if vm else []))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _start_epmd(self, epmd: str, erl_libs: str, deadline: float) -> None:
        self._work.mkdir(parents=True, exist_ok=True)
        cookie = self._work / ".erlang.cookie"
        cookie.unlink(missing_ok=True)
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)  # Erlang refuses a cookie others may read
        port = find_free_port(_HOST)
        # HOME: where the nodes and erl_call read the cookie; nothing goes to the caller's home.
        self._env = {**os.environ, "HOME": str(self._work), "ERL_EPMD_PORT": str(port),
                     "ERL_EPMD_ADDRESS": _HOST, "ERL_LIBS": erl_libs,
                     "ERL_CRASH_DUMP_BYTES": "0", _MARKER: self._id}
        with (self._work / "epmd.log").open("wb") as out:
            self._epmd = subprocess.Popen([epmd, "-port", str(port), "-address", _HOST],
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                          env=self._env)
        while not _listening(port):
            if self._epmd.poll() is not None or time.monotonic() > deadline:
                raise TransportError(Reason.BROKER_FAILED, f"epmd did not listen on {port}: "
                                     f"{_tail(self._work / 'epmd.log')}")
            time.sleep(_POLL_S)

    def _spawn_node(self, i: int, erl: str) -> None:
        name, node_dir = f"fs{i + 1}_{self._id}@localhost", self._work / f"fs{i + 1}"
        (node_dir / "logs").mkdir(parents=True, exist_ok=True)
        mqtt_port, dist_port = find_free_port(_HOST), find_free_port(_HOST)
        yml, ctl = node_dir / "ejabberd.yml", node_dir / "ejabberdctl.cfg"
        yml.write_text(_YML.format(name=name, host=_HOST, mqtt_port=mqtt_port, p=self._params))
        ctl.write_text(_CTL_CFG.format(name=name, path=ctl, yml=yml, host=_HOST,
                                       dist_port=dist_port, epmd_port=self._env["ERL_EPMD_PORT"],
                                       cookie=self._work / ".erlang.cookie"))
        argv = [erl, "-sname", name, "-noinput", "-start_epmd", "false",
                "-kernel", "inet_dist_listen_min", str(dist_port),
                "inet_dist_listen_max", str(dist_port), "inet_dist_use_interface", "{127,0,0,1}",
                "-mnesia", "dir", '"spool"',  # in cwd, the node's directory
                "-ejabberd", "quiet", "true", "-s", "ejabberd"]  # quiet: log to the file only
        env = {**self._env, "EJABBERD_CONFIG_PATH": str(yml),
               "EJABBERD_LOG_PATH": str(node_dir / "logs" / "ejabberd.log")}
        try:
            with (node_dir / "logs" / "erl.log").open("ab") as out:  # the VM has its own copy
                proc = subprocess.Popen(argv, cwd=node_dir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=out)
        except OSError as err:
            raise TransportError(Reason.BROKER_FAILED, f"cannot run {erl}: {err}") from err
        self._running.append(_Running(name, mqtt_port, proc, proc.pid))

    def _wait_started(self, i: int, deadline: float) -> None:
        """Until ejabberd runs on node `i` (its MQTT port opens before its tables exist); the
        OS pid comes from the VM itself."""
        run = self._running[i]
        while not (started := re.fullmatch(r'\{ok, "(\d+)"\}', self._call(i, _STARTED, 1)[1])):
            try:
                run.proc.wait(_POLL_S)  # paces the polls, and returns at once if the node died
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                self._fail(i, "did not start ejabberd in time")
            self._fail(i, f"exited with code {run.proc.returncode}")
        run.pid = int(started[1])

    def _probe(self, i: int, deadline: float) -> None:
        conn = replace(self.connection(i), failover=(),
                       connect_timeout_s=max(0.1, deadline - time.monotonic()))
        probe = MqttClient(client_id=f"probe-{self._id}-{i}", conn=conn)
        try:
            probe.connect()
        except TransportError as err:
            self._fail(i, f"refused the MQTT v5 probe: {err}", err)
        probe.close()

    def _rpc(self, i: int, expr: str, timeout: float = 10.0) -> str:
        """The value of `expr` evaluated on node `i` (BROKER_FAILED if it cannot be had)."""
        code, out = self._call(i, expr, timeout)
        if code != 0 or not out.startswith("{ok,") or not out.endswith("}"):
            self._fail(i, f"erl_call {expr!r}: {out}")
        return out[len("{ok,"):-1].strip()

    def _call(self, i: int, expr: str, timeout: float) -> tuple[int, str]:
        """erl_call's exit code and output for `expr` on node `i`."""
        argv = [self._erl_call, "-sname", self._running[i].name,
                "-timeout", str(max(1, round(timeout))), "-e"]
        try:
            res = subprocess.run(argv, input=f"{expr}\n".encode(), capture_output=True,
                                 env=self._env, timeout=timeout + 5, check=False)
        except subprocess.TimeoutExpired:
            return -1, f"no answer in {timeout + 5:g} s"
        return res.returncode, (res.stdout or res.stderr).decode(errors="replace").strip()

    def _fail(self, i: int, detail: str, cause: BaseException | None = None) -> NoReturn:
        raise TransportError(Reason.BROKER_FAILED, f"ejabberd node {self._running[i].name} "
                             f"{detail}; log tail:\n{self.log_tail(i)}") from cause


def _find_tools(ejabberdctl: str) -> tuple[str, str, str, str]:
    """erl, epmd, erl_call, and ejabberd's code directory (ERL_LIBS in the package's script)."""
    found = {name: shutil.which(name) for name in ("erl", "epmd", "erl_call")}
    found["ejabberdctl"] = shutil.which(ejabberdctl, path=f"{os.getenv('PATH', '')}:/usr/sbin")
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ConfigError(Reason.BAD_CONFIG, f"ejabberd is not installed ({', '.join(missing)} "
                                             f"not found); {_INSTALL}")
    ctl = Path(str(found["ejabberdctl"]))
    libs = re.search(r"^ERL_LIBS='([^']+)'", ctl.read_text(errors="replace"), re.MULTILINE)
    if libs is None or not any(Path(libs[1]).glob("ejabberd-*/ebin/ejabberd.app")):
        raise ConfigError(Reason.BAD_CONFIG, f"{ctl} names no ejabberd code; {_INSTALL}")
    return str(found["erl"]), str(found["epmd"]), str(found["erl_call"]), libs[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((_HOST, port)) == 0


def _leftovers(cluster_id: str) -> list[int]:
    """Live processes carrying the cluster's marker in their environment (zombies have none)."""
    mark, pids = f"{_MARKER}={cluster_id}".encode(), []
    for env in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):  # gone, or not ours to read
            if mark in env.read_bytes().split(b"\0"):
                pids.append(int(env.parent.name))
    return pids


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:])
    except OSError:
        return ""


def _erl_binary(text: str) -> str:
    """An Erlang binary of `text`'s UTF-8 bytes, written as numbers: nothing to escape."""
    return "<<" + ",".join(str(b) for b in text.encode()) + ">>"
