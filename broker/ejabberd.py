"""A real ejabberd cluster on loopback (each node's MQTT port, one Erlang cluster) for tests.

PLACEHOLDER
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
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, NoReturn, Self

import structlog

from fedstream.broker.launcher import find_free_port
from fedstream.shared.errors import ConfigError, Reason, TransportError
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.mqtt import MqttClient

log = structlog.get_logger(__name__)

_HOST = "127.0.0.1"
_INSTALL = "install it with `apt-get install -y ejabberd`"
_ERLANG_BIN = Path("/usr/lib/erlang/bin")
_LOG_TAIL_LINES = 20
_PROBE_INTERVAL_S = 0.02
_MARKER = "FEDSTREAM_EJABBERD_CLUSTER"  # in every process a cluster starts (see `_leftovers`)
_HALT = ("spawn(fun() -> application:stop(ejabberd), application:stop(mnesia), "
         "erlang:halt(0) end), ok.")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]*")

_YML = """\
# Node {name} of a fedstream test cluster, rendered by fedstream.broker.ejabberd.
hosts: [localhost]
loglevel: info
auth_method: [internal]
auth_password_format: scram
default_db: mnesia
default_ram_db: mnesia
listen:
  -
    port: {mqtt_port}
    ip: "{host}"
    module: mod_mqtt
    backlog: 1024
    # Bounds a whole MQTT packet (topic and properties too), not only its payload.
    max_payload_size: {max_payload_size}
modules:
  mod_mqtt:
    db_type: mnesia
    ram_db_type: mnesia
    queue_type: {queue_type}
    max_queue: {max_queue}
    session_expiry: {session_expiry_s}
    max_topic_depth: 16
    match_retained_limit: infinity
"""

_CTL_CFG = """\
# ejabberdctl settings for node {name} (fedstream.broker.ejabberd). The launcher starts the
# node with `erl` and the same settings; this file lets a person (root or ejabberd) talk to it:
#   ejabberdctl --ctl-config {path} status
# No FIREWALL_WINDOW: ejabberdctl gives it to its own control node too, which would then take
# the running node's distribution port ({dist_port}, set when the node started).
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
        work_dir: Holds the cookie, epmd's log and one directory per node (config, spool, logs).
        nodes: How many nodes; node 0 is the one the others join.
        username: The MQTT username registered (as `username@localhost`).
        password: Its password; random by default (read it back from the params).
        max_queue: Messages a session queues for its client, while the client is away or has
            a QoS 1 message in flight (ejabberd sends one at a time); one more drops the session
            and its whole queue (module docstring).
        max_payload_size: Largest MQTT packet a node accepts, in bytes.
        session_expiry_s: Longest session expiry a client may ask for.
        queue_type: `file` keeps queued messages in the node's spool, `ram` in its memory.
        ejabberdctl: The package's control script; start reads where ejabberd's code is from it.

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
        checks = [(self.nodes >= 1, f"nodes must be at least 1, got {self.nodes}"),
                  (_USERNAME.fullmatch(self.username) is not None,
                   f"username {self.username!r} is not a lowercase [a-z0-9._-] name"),
                  (self.password != "", "password must not be empty"),
                  (self.max_queue >= 1, f"max_queue must be positive, got {self.max_queue}"),
                  (self.max_payload_size >= 1024, "max_payload_size must be at least 1024"),
                  (self.session_expiry_s >= 0, "session_expiry_s must not be negative"),
                  (self.queue_type in ("file", "ram"), "queue_type must be 'file' or 'ram'")]
        for ok, problem in checks:
            if not ok:
                raise ConfigError(Reason.BAD_CONFIG, problem)


@dataclass(frozen=True, slots=True)
class EjabberdNode:
    """One running node: its Erlang name, MQTT address and the OS pid of its VM (beam)."""

    name: str
    host: str
    mqtt_port: int
    pid: int


@dataclass(frozen=True, slots=True)
class _Tools:
    erl: str
    epmd: str
    erl_call: str
    erl_libs: str


@dataclass(slots=True)
class _Running:
    node: EjabberdNode
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    alive: bool = True


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
        self._tools: _Tools | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._running: list[_Running] = []
        self._startup_s = 0.0

    @property
    def nodes(self) -> tuple[EjabberdNode, ...]:
        """Every node started (killed ones too), in order; empty before `start`."""
        return tuple(r.node for r in self._running)

    @property
    def startup_s(self) -> float:
        """Seconds the last `start` took, from the first file written to the last MQTT probe."""
        return self._startup_s

    def connection(self, i: int) -> Connection:
        """A `Connection` to node `i` with the registered user, the other nodes as failover."""
        nodes = self.nodes
        return Connection(host=nodes[i].host, port=nodes[i].mqtt_port,
                          failover=tuple((n.host, n.mqtt_port) for j, n in enumerate(nodes)
                                         if j != i),
                          username=self._params.username, password=self._params.password)

    def start(self, timeout: float = 30.0) -> None:
        """Render the configs, start epmd and every node, join them, register the user, and
        return once each node accepts an MQTT v5 CONNECT with it. Installs nothing.

        Raises:
            ConfigError: BAD_CONFIG if Erlang or ejabberd is not installed.
            TransportError: BROKER_FAILED if a node does not come up (with its log tail).
        """
        if self._running:
            return
        tools = self._tools = _find_tools(self._params.ejabberdctl)
        began = time.monotonic()
        deadline = began + timeout
        try:
            self._start_epmd(tools, deadline)
            for i in range(self._params.nodes):
                self._spawn_node(i, tools)
            for i in range(self._params.nodes):
                self._wait_started(i, deadline)
                if i == 0:
                    self._register()
                else:
                    self._join(i, deadline)
            self._running = [self._with_os_pid(r) for r in self._running]
            for i in range(self._params.nodes):
                self._probe(i, deadline)
        except BaseException:
            self.stop()
            raise
        self._startup_s = time.monotonic() - began
        log.info("cluster_started", cluster=self._id, nodes=[n.name for n in self.nodes],
                 ports=[n.mqtt_port for n in self.nodes], ms=round(self._startup_s * 1000))

    def kill(self, i: int) -> None:
        """SIGKILL node `i`'s VM (no goodbye to its peers or clients); idempotent."""
        run = self._running[i]
        if not run.alive:
            return
        _signal(run.node.pid, signal.SIGKILL)
        run.proc.kill()
        run.proc.wait()
        run.alive = False
        log.info("node_killed", cluster=self._id, node=run.node.name, pid=run.node.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node cleanly (ejabberd, then mnesia, then the VM), SIGKILL what hangs,
        stop the cluster's own epmd and kill any process of the cluster still there."""
        live = [r for r in self._running if r.alive]
        for run in live:
            # SIGTERM (init:stop) does the same but then idles ~1 s in OTP 25's shutdown.
            if self._call(self._running.index(run), _HALT, 2.0)[0] != 0:
                _signal(run.node.pid, signal.SIGTERM)
        give_up = time.monotonic() + timeout
        for run in live:
            try:
                run.proc.wait(max(0.0, give_up - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(self._running.index(run))
            run.alive = False
        for run in self._running:
            run.log.close()
        if self._epmd is not None:
            self._epmd.terminate()
            self._epmd.wait()
            self._epmd = None
        stragglers = _leftovers(self._id)
        for pid in stragglers:
            _signal(pid, signal.SIGKILL)
        if live or stragglers:
            log.info("cluster_stopped", cluster=self._id, stragglers=len(stragglers))
        self._running = []

    def log_tail(self, i: int) -> str:
        """The last lines of node `i`'s ejabberd log, and of its VM's own output if any."""
        node_dir = self._node_dir(i)
        parts = [_tail(node_dir / "logs" / "ejabberd.log")]
        vm = _tail(node_dir / "logs" / "erl.log")
        if vm:
            parts.append(f"-- erl output --\n{vm}")
        return "\n".join(parts) or "(no log)"

    def members(self, i: int) -> frozenset[str]:
        """The node names node `i` counts in its cluster (asks it over Erlang distribution)."""
        out = self._rpc(i, "[atom_to_list(N) || N <- ejabberd_cluster:get_nodes()].")
        return frozenset(re.findall(r'"([^"]+)"', out))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _node_dir(self, i: int) -> Path:
        return self._work / f"fs{i + 1}"

    def _start_epmd(self, tools: _Tools, deadline: float) -> None:
        """Our own epmd on a free loopback port: clusters never share one, and stop ends it."""
        self._work.mkdir(parents=True, exist_ok=True)
        cookie = self._work / ".erlang.cookie"
        cookie.unlink(missing_ok=True)
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)  # Erlang refuses a cookie file others can read
        port = find_free_port(_HOST)
        # HOME: the cookie for the nodes and erl_call, and nothing written to the caller's home.
        self._env = {**os.environ, "HOME": str(self._work), "ERL_EPMD_PORT": str(port),
                     "ERL_EPMD_ADDRESS": _HOST, "ERL_LIBS": tools.erl_libs,
                     "ERL_CRASH_DUMP_BYTES": "0", _MARKER: self._id}
        with (self._work / "epmd.log").open("wb") as out:
            self._epmd = subprocess.Popen([tools.epmd, "-port", str(port), "-address", _HOST],
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                          env=self._env)
        problem = _await_port(self._epmd, port, deadline)
        if problem is not None:
            raise TransportError(Reason.BROKER_FAILED,
                                 f"epmd {problem}: {_tail(self._work / 'epmd.log')}")

    def _spawn_node(self, i: int, tools: _Tools) -> None:
        p = self._params
        name = f"fs{i + 1}_{self._id}@localhost"
        node_dir = self._node_dir(i)
        (node_dir / "logs").mkdir(parents=True, exist_ok=True)
        mqtt_port, dist_port = find_free_port(_HOST), find_free_port(_HOST)
        yml = node_dir / "ejabberd.yml"
        yml.write_text(_YML.format(name=name, host=_HOST, mqtt_port=mqtt_port,
                                   max_payload_size=p.max_payload_size, max_queue=p.max_queue,
                                   queue_type=p.queue_type,
                                   session_expiry_s=p.session_expiry_s))
        ctl = node_dir / "ejabberdctl.cfg"
        ctl.write_text(_CTL_CFG.format(name=name, path=ctl, yml=yml, host=_HOST,
                                       dist_port=dist_port, epmd_port=self._env["ERL_EPMD_PORT"],
                                       cookie=self._work / ".erlang.cookie"))
        # What `ejabberdctl foreground` runs, without its detour through `su ejabberd` (which
        # cannot enter a 0700 pytest directory) and the extra VMs its helpers boot.
        argv = [tools.erl, "-sname", name, "-noinput", "-start_epmd", "false",
                "-kernel", "inet_dist_listen_min", str(dist_port),
                "inet_dist_listen_max", str(dist_port), "inet_dist_use_interface", "{127,0,0,1}",
                "-mnesia", "dir", _erl_string(str(node_dir / "spool")),
                "-ejabberd", "quiet", "true", "-s", "ejabberd"]  # quiet: the log file only
        env = {**self._env, "EJABBERD_CONFIG_PATH": str(yml),
               "EJABBERD_LOG_PATH": str(node_dir / "logs" / "ejabberd.log")}
        out = (node_dir / "logs" / "erl.log").open("ab")
        try:
            proc = subprocess.Popen(argv, cwd=node_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out)
        except OSError as err:
            out.close()
            raise TransportError(Reason.BROKER_FAILED, f"cannot run {tools.erl}: {err}") from err
        self._running.append(_Running(EjabberdNode(name, _HOST, mqtt_port, proc.pid), proc, out))

    def _wait_started(self, i: int, deadline: float) -> None:
        """Until ejabberd runs on node i: its MQTT port accepts TCP before the tables exist."""
        run = self._running[i]
        while self._call(i, "lists:keymember(ejabberd, 1, application:which_applications()).",
                         1.0) != (0, "{ok, true}"):
            try:
                run.proc.wait(_PROBE_INTERVAL_S)  # paces the polls; returns if the node died
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                self._fail(i, "did not start ejabberd in time")
            run.alive = False
            self._fail(i, f"exited with code {run.proc.returncode}")

    def _register(self) -> None:
        p = self._params
        out = self._rpc(0, f"case ejabberd_auth:try_register({_erl_binary(p.username)}, "
                           f"<<\"localhost\">>, {_erl_binary(p.password)}) of "
                           "ok -> registered; {error, exists} -> registered; E -> E end.")
        if out != "registered":
            self._fail(0, f"did not register {p.username}: {out}")

    def _join(self, i: int, deadline: float) -> None:
        """`ejabberdctl join_cluster`: node i restarts ejabberd with node 0's tables (~0.2 s)."""
        first = _erl_binary(self._running[0].node.name)
        out = self._rpc(i, f"ejabberd_admin:join_cluster({first}).", deadline - time.monotonic())
        if out != "ok":
            self._fail(i, f"did not join {self._running[0].node.name}: {out}")

    def _with_os_pid(self, run: _Running) -> _Running:
        """The VM's own word for its pid: `erl` execs into beam, but a wrapper might not."""
        i = self._running.index(run)
        pid = int(self._rpc(i, "os:getpid().").strip('"'))
        node = run.node
        return _Running(EjabberdNode(node.name, node.host, node.mqtt_port, pid), run.proc, run.log)

    def _probe(self, i: int, deadline: float) -> None:
        conn = self.connection(i)
        probe = MqttClient(client_id=f"probe-{self._id}-{i}",
                           conn=Connection(host=conn.host, port=conn.port,
                                           username=conn.username, password=conn.password,
                                           connect_timeout_s=max(0.1, deadline - time.monotonic())))
        try:
            probe.connect()
        except TransportError as err:
            self._fail(i, f"refused the MQTT v5 probe: {err}", cause=err)
        probe.close()

    def _rpc(self, i: int, expr: str, timeout: float = 10.0) -> str:
        """The value of `expr` evaluated on node `i`.

        Raises:
            TransportError: BROKER_FAILED if the node cannot be reached or `expr` fails.
        """
        code, out = self._call(i, expr, timeout)
        if code != 0 or not out.startswith("{ok,") or not out.endswith("}"):
            self._fail(i, f"erl_call {expr!r}: {out}")
        return out[len("{ok,"):-1].strip()

    def _call(self, i: int, expr: str, timeout: float) -> tuple[int, str]:
        """erl_call's exit code and output for `expr` on node `i` (a C client: no VM boots)."""
        assert self._tools is not None
        argv = [self._tools.erl_call, "-sname", self._running[i].node.name,
                "-timeout", str(max(1, round(timeout))), "-e"]
        try:
            res = subprocess.run(argv, input=f"{expr}\n".encode(), capture_output=True,
                                 env=self._env, timeout=timeout + 5, check=False)
        except subprocess.TimeoutExpired:
            return -1, f"no answer in {timeout + 5:g}s"
        return res.returncode, (res.stdout or res.stderr).decode(errors="replace").strip()

    def _fail(self, i: int, detail: str, cause: BaseException | None = None) -> NoReturn:
        name = self._running[i].node.name
        raise TransportError(Reason.BROKER_FAILED,
                             f"ejabberd node {name} {detail}; log tail:\n{self.log_tail(i)}"
                             ) from cause


def _find_tools(ejabberdctl: str) -> _Tools:
    """Erlang's programs and ejabberd's code (the ERL_LIBS line of the package's ejabberdctl)."""
    ctl = shutil.which(ejabberdctl) or shutil.which(ejabberdctl, path="/usr/sbin:/usr/local/sbin")
    found = {name: shutil.which(name) or shutil.which(name, path=str(_ERLANG_BIN))
             for name in ("erl", "epmd", "erl_call")}
    missing = [name for name, path in {"ejabberdctl": ctl, **found}.items() if path is None]
    if ctl is None or missing:
        raise ConfigError(Reason.BAD_CONFIG, f"ejabberd is not installed ({', '.join(missing)} "
                                             f"not found); {_INSTALL}")
    libs = re.search(r"^ERL_LIBS='([^']+)'", Path(ctl).read_text(errors="replace"), re.M)
    if libs is None or not any(Path(libs[1]).glob("ejabberd-*/ebin/ejabberd.app")):
        raise ConfigError(Reason.BAD_CONFIG, f"{ctl} names no ejabberd code directory; {_INSTALL}")
    return _Tools(erl=str(found["erl"]), epmd=str(found["epmd"]),
                  erl_call=str(found["erl_call"]), erl_libs=libs[1])


def _await_port(proc: subprocess.Popen[bytes], port: int, deadline: float) -> str | None:
    """None once `port` accepts TCP connections, else why not (`proc` exited, or time ran out)."""
    while not _listening(port):
        try:
            proc.wait(_PROBE_INTERVAL_S)  # paces the probe and returns at once if proc dies
        except subprocess.TimeoutExpired:
            if time.monotonic() < deadline:
                continue
            return f"not listening on {_HOST}:{port} in time"
        return f"exited with code {proc.returncode}"
    return None


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _leftovers(cluster_id: str) -> list[int]:
    """Live processes whose environment carries this cluster's marker: beam's port programs
    (memsup, inet_gethost, eimp) would outlive a killed VM as orphans if anything hung."""
    mark = f"{_MARKER}={cluster_id}".encode()
    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in env.read_bytes().split(b"\0"):
                pids.append(int(env.parent.name))
        except OSError:
            continue  # gone, or not ours to read
    return pids


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def _erl_binary(text: str) -> str:
    """An Erlang binary literal of `text`'s UTF-8 bytes: no quoting to get wrong."""
    return "<<" + ",".join(str(b) for b in text.encode()) + ">>"


def _erl_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
