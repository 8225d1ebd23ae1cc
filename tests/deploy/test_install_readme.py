"""The README's install commands, run line by line in a scratch root: a wheel built from a
copy of this checkout, a venv at <root>/opt/fedstream/venv, `fedstream install cloud edge`,
the configs edited, both units started the way systemd starts them (their ExecStart=,
Environment=, StateDirectory= and WorkingDirectory=, a notify socket), and a round.

What cannot run without systemd as PID 1 stands in for it: `systemctl start` is the unit's
own command line run by the test, `systemctl status` the STATUS= lines read from the socket.
A README line this test does not know fails it, so the docs cannot drift from what is tested.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedstream.broker import Mosquitto

REPO = Path(__file__).resolve().parents[2]
MARK = "<!-- tests/deploy/test_install_readme.py runs these lines"
START_S = 180.0  # a fresh venv's first imports (bytecode compiled on the way)
SYSTEMCTL = shutil.which("systemctl")

pytestmark = [
    pytest.mark.mosquitto, pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(SYSTEMCTL is None, reason="systemctl is not installed (enabling units)"),
    # The install builds its own stock-torch venv whatever stack runs the suite; once per
    # `make test` (the stock suite) is enough.
    pytest.mark.skipif(importlib.util.find_spec("intel_extension_for_pytorch") is not None,
                       reason="installs its own stock-torch venv: run once, by the stock suite"),
]


def readme_lines() -> list[str]:
    """The commands of the README's install block, comments dropped."""
    block = (REPO / "README.md").read_text().split(MARK, 1)[1]
    body = block.split("```bash\n", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line) for line in body.splitlines() if line.strip()]


def _copy_checkout(into: Path) -> None:
    """What a fresh clone of this working tree holds (tracked and new, unignored files)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)


def _edit(path: Path, settings: list[tuple[str, str]]) -> None:
    """An operator's edit: each (key, value) sets the next line assigning `key` (top to
    bottom, so a second `port` is the one after the first); the line must be there."""
    lines = path.read_text().splitlines()
    at = 0
    for key, value in settings:
        found = next((i for i in range(at, len(lines)) if lines[i].startswith(f"{key} =")),
                     None)
        assert found is not None, f"{path.name} no longer sets {key} after line {at}"
        lines[found], at = f"{key} = {value}", found + 1
    path.write_text("\n".join(lines) + "\n")


def _unit(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", "[")):
            found.setdefault(key, []).append(value)
    return found


@dataclass
class Service:
    """One unit started as systemd would: its process and its notify socket's datagrams."""

    proc: subprocess.Popen[bytes]
    sock: socket.socket
    log: Path
    seen: list[str] = field(default_factory=list)

    def until(self, want: Callable[[str], bool], timeout_s: float = START_S) -> str:
        """Read datagrams until one of their lines satisfies `want`; that line."""
        self.sock.settimeout(timeout_s)
        while True:
            try:
                lines = self.sock.recv(4096).decode().split("\n")
            except TimeoutError:
                raise AssertionError(f"no such line in {timeout_s}s; saw {self.seen}; "
                                     f"log: {self.log.read_text()[-3000:]}") from None
            self.seen.extend(lines)
            if hit := next((line for line in lines if want(line)), None):
                return hit

    def drain(self) -> None:
        """Keep what the process sent before it exited, then close the socket (once)."""
        if self.sock.fileno() == -1:
            return
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.seen.extend(self.sock.recv(4096).decode().split("\n"))
        self.sock.close()


@dataclass
class Scratch:
    """The scratch root, the source copy the README's relative paths resolve in, and what
    the test stands in for systemd with."""

    root: Path
    src: Path
    port: int
    federation: str
    services: dict[str, Service] = field(default_factory=dict)

    def mapped(self, word: str) -> str:
        return str(self.root) + word if word.startswith(("/opt/", "/etc/")) else word

    def env(self) -> dict[str, str]:
        # The CLI reads FEDSTREAM_* like the services do: the operator's broker and federation.
        return {**os.environ, "FEDSTREAM_BROKER__PORT": str(self.port),
                "FEDSTREAM_FEDERATION": self.federation}

    def run(self, line: str) -> None:
        words = shlex.split(line)
        words = words[1:] if words[0] == "sudo" else words
        if words[0] == "sudoedit":
            self.edit([Path(self.mapped(w)) for w in words[1:]])
        elif words[:2] == ["systemctl", "start"]:
            for unit in words[2:]:
                self.start(unit)
        elif words[:2] == ["systemctl", "status"]:
            self.status(words[2:])
        elif words[0] == "make" or words[:3] == ["python3", "-m", "venv"] or \
                words[0].startswith("/opt/fedstream/venv/bin/"):
            argv = [self.mapped(w) for w in words]
            if words[1:2] == ["install"] and words[0].endswith("/fedstream"):
                argv += ["--root", str(self.root)]
            done = subprocess.run(argv, cwd=self.src, env=self.env(), capture_output=True,
                                  text=True, check=False, timeout=600)
            assert done.returncode == 0, f"{line}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
            self.after(words, done.stdout)
        else:
            raise AssertionError(f"the README's install block has a line this test does not "
                                 f"run: {line!r}")

    def after(self, words: list[str], out: str) -> None:
        """What each step must have left behind."""
        if words[1:2] == ["install"] and words[0].endswith("/fedstream"):
            units = self.root / "etc/systemd/system"
            for role in ("cloud", "edge"):
                assert f"wrote  {self.root}/etc/fedstream/{role}.toml" in out
                state = subprocess.run([str(SYSTEMCTL), f"--root={self.root}", "is-enabled",
                                        f"fedstream-{role}.service"], capture_output=True,
                                       text=True, check=False)
                assert state.stdout.strip() == "enabled"
                assert f"ExecStart=/opt/fedstream/venv/bin/fedstream {role} run --config " \
                       f"/etc/fedstream/{role}.toml" in (units / f"fedstream-{role}.service") \
                    .read_text().splitlines()
        if words[1:3] == ["round", "start"]:
            assert "published v1" in out, out

    def edit(self, paths: list[Path]) -> None:
        """The edits the README asks for: this broker, a federation of the test's own, free
        metrics ports, and a gateway whose samples.csv is in its state directory."""
        for path in paths:
            head = [("federation", f'"{self.federation}"')]
            ports = [("port", str(self.port)), ("port", "0")]  # the broker's; /metrics
            if path.name == "cloud.toml":
                _edit(path, [*head, *ports])
            else:
                samples = self.root / "var/lib/fedstream-edge/samples.csv"
                # One backend candidate: nothing to measure before the first round.
                _edit(path, [*head, ports[0], ("path", f'"{samples}"'), ("name", '"torch"'),
                             ports[1]])
                _write_digits_csv(samples)

    def start(self, unit: str) -> None:
        """Run the installed unit's ExecStart= as systemd does: its environment, a state
        directory (`$STATE_DIRECTORY`), its working directory and a notify socket."""
        name = unit.removesuffix(".service") + ".service"
        settings = _unit(self.root / "etc/systemd/system" / name)
        state = self.root / "var/lib" / settings["StateDirectory"][0]
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.root / f"{name}.notify"))
        env = {**os.environ, **dict(e.split("=", 1) for e in settings["Environment"]),
               "STATE_DIRECTORY": str(state), "NOTIFY_SOCKET": str(self.root / f"{name}.notify")}
        log = self.root / f"{name}.log"
        argv = [self.mapped(w) for w in shlex.split(settings["ExecStart"][0])]
        proc = subprocess.Popen(argv, cwd=self.mapped_dir(settings["WorkingDirectory"][0]),
                                env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.services[name] = Service(proc, sock, log)

    def mapped_dir(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def status(self, units: list[str]) -> None:
        """`systemctl status`: each unit is up (READY=1) and says what it is doing."""
        for unit in units:
            service = self.services[f"{unit}.service"]
            service.until(lambda line: line == "READY=1")
            assert service.proc.poll() is None

    def stop(self) -> dict[str, int]:
        """`systemctl stop`: SIGTERM, then each exit code."""
        codes = {}
        for name, service in self.services.items():
            try:
                if service.proc.poll() is None:
                    service.proc.send_signal(signal.SIGTERM)
                codes[name] = service.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                codes[name] = -1
            finally:
                if service.proc.poll() is None:  # never leave a service behind
                    service.proc.kill()
                    service.proc.wait()
                service.drain()
        return codes


def _write_digits_csv(path: Path) -> None:
    """The gateway's private data: digits rows as an operator's CSV (header, label column)."""
    digits = load_digits()
    rows = np.random.default_rng(0).permutation(len(digits.target))[:600]
    header = ",".join([*(f"p{i}" for i in range(64)), "label"])
    body = "\n".join(",".join([*(f"{v / 16:.4f}" for v in digits.data[i]),
                               str(digits.target[i])]) for i in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{header}\n{body}\n")


@pytest.fixture
def scratch(tmp_path: Path, broker: Mosquitto, federation: str) -> Iterator[Scratch]:
    src = tmp_path / "src"
    _copy_checkout(src)
    place = Scratch(root=tmp_path / "root", src=src, port=broker.port, federation=federation)
    place.root.mkdir()
    yield place
    place.stop()


def test_the_readme_install_commands_give_running_enabled_services(scratch: Scratch) -> None:
    """Every line of the README's install block runs; the installed units come up READY,
    a round through the installed CLI publishes v1, and SIGTERM stops both cleanly."""
    # Execute
    for line in readme_lines():
        scratch.run(line)
    cloud = scratch.services["fedstream-cloud.service"]
    edge = scratch.services["fedstream-edge.service"]
    published = cloud.until(lambda line: "published, model v1" in line, timeout_s=60)
    trained = edge.until(lambda line: line.startswith("STATUS=model v1"), timeout_s=60)
    codes = scratch.stop()

    # Assert
    assert re.fullmatch(r"STATUS=round \w+ published, model v1, 1 edge online", published)
    assert re.fullmatch(r"STATUS=model v1, round \w+ trained, outbox 0, backend torch fp32",
                        trained)
    assert codes == {"fedstream-cloud.service": 0, "fedstream-edge.service": 0}
    assert all("STOPPING=1" in s.seen for s in scratch.services.values())
