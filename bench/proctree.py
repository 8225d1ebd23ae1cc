"""Peak memory, process counts and hub-port TCP bytes of process trees (Linux; stdlib only).

Both sides of `vs_flower.py` measure through this one sampler. A daemon thread takes a sample
every `interval_s` (0.2 s), and once more when it stops:

- memory: every process under each root (the roots included, found through /proc/PID/stat's
  parent pids), keyed by pid and start time so a reused pid is a new process. Each keeps the
  largest VmHWM (its own peak RSS) seen; a process that lived between two samples is missed,
  one seen once is counted with its peak up to then. `peak_rss_mib` sums these peaks by kind
  and in total (peaks of different processes need not coincide, so the total is an upper
  bound); `concurrent_rss_peak_mib` is the largest sum of VmRSS over one sample (a lower
  bound of the true concurrent peak). A process's kind is its root's, unless the optional
  `reclassify(pid)` hook names another kind for it; a process below a reclassified one
  inherits that kind, and a reclassified process keeps it.
- TCP: `ss -tinp` on the hub port (the one every process talks to: Flower's SuperLink,
  fedstream's Mosquitto). For each connection, the hub's end's tcp_info `bytes_sent` +
  `bytes_received` (payload both ways, retransmissions not double-counted), by the peer
  process's root kind (its group; `other` for a peer in no watched tree, e.g. the benchmark
  process itself). A counter that goes down means its peer port was reused by a new
  connection, so the old count is banked. A connection that opens and closes between two
  samples is missed, and bytes after a connection's last sample are not seen.
- `io_bytes(pid)`: /proc/PID/io rchar + wchar, bytes read and written by syscall (sockets,
  files, logs), for a caller's before/after difference.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

OTHER = "other"
_PORTS = re.compile(r"\S+:(\d+)\s+\S+:(\d+)")
_PID = re.compile(r"pid=(\d+)")
_TCP_BYTES = re.compile(r"\bbytes_(?:sent|received):(\d+)")

ProcTable = dict[int, tuple[int, int, str]]
Reclassify = Callable[[int], str | None]


def proc_table() -> ProcTable:
    """Every process now: pid -> (ppid, start time in clock ticks, state letter)."""
    table: ProcTable = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text(encoding="utf-8")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[19]), fields[0])
    return table


def descendants(root: int, table: ProcTable) -> list[int]:
    """`root` and every process below it in `table`, each after its parent."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """VmHWM (peak RSS) and VmRSS of /proc/PID/status in KiB, zeros once the process is gone."""
    fields: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                fields[name] = int(value.split()[0])
    except OSError:
        pass
    return fields.get("VmHWM", 0), fields.get("VmRSS", 0)


def io_bytes(pid: int) -> int:
    """rchar + wchar of /proc/PID/io: bytes the process read and wrote by syscall so far."""
    counters = dict(line.split(": ") for line in
                    Path(f"/proc/{pid}/io").read_text(encoding="utf-8").splitlines())
    return int(counters["rchar"]) + int(counters["wchar"])


@dataclass
class Seen:
    """One process the sampler saw: its root's kind (`group`), its own kind, largest VmHWM."""

    group: str
    kind: str
    peak_kib: int = 0


@dataclass
class Sampler:
    """Samples the trees of the roots `add`ed and the hub port's connections (module doc).

    A context manager: sampling runs in a thread from enter to exit, which takes a last sample.

    Attributes:
        port: The hub's TCP port.
        reclassify: Names another kind for a process (None: keep its root's).
        interval_s: Seconds between samples.
    """

    port: int
    reclassify: Reclassify | None = None
    interval_s: float = 0.2
    roots: dict[int, str] = field(default_factory=dict)
    seen: dict[tuple[int, int], Seen] = field(default_factory=dict)
    concurrent_kib: int = 0
    live: dict[int, tuple[str, int]] = field(default_factory=dict)
    banked: dict[str, int] = field(default_factory=dict)
    ss: str | None = field(default_factory=lambda: shutil.which("ss"))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="proctree", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def add(self, kind: str, pid: int) -> None:
        """Watch `pid` and its descendants as `kind`."""
        with self._lock:
            self.roots[pid] = kind

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """One pass: every watched process's memory, then the hub port's sockets."""
        with self._lock:
            table = proc_table()
            groups: dict[int, str] = {}
            marked: dict[int, str] = {}
            rss_kib = 0
            for root, group in self.roots.items():
                for pid in descendants(root, table):
                    seen = self.seen.setdefault((pid, table[pid][1]), Seen(group, group))
                    self._classify(pid, table[pid][0], seen, marked)
                    peak, rss = memory_kib(pid)
                    seen.peak_kib = max(seen.peak_kib, peak)
                    rss_kib += rss
                    groups[pid] = seen.group
            self.concurrent_kib = max(self.concurrent_kib, rss_kib)
            if self.ss is not None:
                self._sample_sockets(self.ss, groups)

    def _classify(self, pid: int, ppid: int, seen: Seen, marked: dict[int, str]) -> None:
        """Apply the hook (or the parent's reclassified kind); mark reclassified pids."""
        if seen.kind == seen.group:
            new = marked.get(ppid) or (self.reclassify(pid) if self.reclassify else None)
            seen.kind = new or seen.kind
        if seen.kind != seen.group:
            marked[pid] = seen.kind

    def _sample_sockets(self, ss: str, groups: dict[int, str]) -> None:
        """Read tcp_info byte counters of the hub's connections, by the peer's group."""
        out = subprocess.run([ss, "-tinpH", "state", "connected",
                              f"( sport = :{self.port} or dport = :{self.port} )"],
                             capture_output=True, text=True, timeout=10, check=False).stdout
        owner: dict[int, int] = {}
        hub_side: dict[int, int] = {}
        for entry in re.split(r"\n(?=\S)", out):
            ports = _PORTS.search(entry)
            if ports is None:
                continue
            local, peer = int(ports[1]), int(ports[2])
            if local == self.port:
                hub_side[peer] = sum(int(n) for n in _TCP_BYTES.findall(entry))
            elif peer == self.port and (pid := _PID.search(entry)) is not None:
                owner[local] = int(pid[1])
        for peer, count in hub_side.items():
            group, last = self.live.get(peer, (OTHER, 0))
            if count < last:  # the peer port was reused by a new connection
                self.banked[group] = self.banked.get(group, 0) + last
            self.live[peer] = (groups.get(owner.get(peer, -1), group), count)

    def tcp_bytes(self) -> dict[str, int] | None:
        """Bytes on the hub port's connections by peer group, None without `ss`."""
        if self.ss is None:
            return None
        totals = dict(self.banked)
        for group, count in self.live.values():
            totals[group] = totals.get(group, 0) + count
        return totals

    def peak_rss_mib(self) -> dict[str, float]:
        """Summed VmHWM peaks in MiB, in total and per kind (every root's kind, even if 0)."""
        kinds = dict.fromkeys(self.roots.values(), 0)
        for seen in self.seen.values():
            kinds[seen.kind] = kinds.get(seen.kind, 0) + seen.peak_kib
        mib = {kind: round(kib / 1024, 1) for kind, kib in kinds.items()}
        return {"total": round(sum(kinds.values()) / 1024, 1), **mib}

    def concurrent_rss_peak_mib(self) -> float:
        """The largest sum of VmRSS over one sample, in MiB."""
        return round(self.concurrent_kib / 1024, 1)

    def process_counts(self) -> dict[str, int]:
        """How many distinct processes of each kind ran (seen alive: a VmHWM above 0)."""
        counts: dict[str, int] = {}
        for seen in self.seen.values():
            if seen.peak_kib > 0:
                counts[seen.kind] = counts.get(seen.kind, 0) + 1
        return counts
