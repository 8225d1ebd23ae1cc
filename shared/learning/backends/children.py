"""Measuring candidates in child processes, one per backend, their repeats interleaved.

Each child (`python -m fedstream.shared.learning.backends.measure`) prepares its candidates
at once: the imports, building, the loss check and warming up run concurrently, timing
nothing. Then the timed repeats go round the children one at a time (stock torch's, then
IPEX's, then stock torch's again...), so each repeat has the cores to itself, and a
neighbour's burst of load hits every backend alike rather than whichever child ran then.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from fedstream.shared.learning.backends.candidates import Candidate
from fedstream.shared.learning.backends.decision import Timing
from fedstream.shared.learning.backends.measure import MAX_ROUNDS_FACTOR, MODULE, Plan, settled

# Between one child's repeat and the next's: the first one's OpenMP workers spin a moment
# after their last parallel region before they sleep, on the cores the next one times.
_SETTLE_S = 0.1


class ChildError(Exception):
    """A measuring child that did not answer as it should; the message says why."""


class _Child:
    """One measuring process, driven a JSON line at a time.

    Args:
        plan: What to measure.
        group: Its candidates (one backend's).
        deadline: `time.monotonic()` past which it is killed.

    Raises:
        ChildError: The process could not start.
    """

    def __init__(self, plan: Plan, group: list[Candidate], deadline: float) -> None:
        self.group, self.deadline = group, deadline
        # Closed by `close`: it lives as long as the child, past this method.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._lines: queue.Queue[str | None] = queue.Queue()
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", MODULE], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr,
                                          text=True)
        except OSError as err:
            self._stderr.close()
            raise ChildError(f"the measuring process could not start: {err}") from err
        threading.Thread(target=self._read, name="measure-reader", daemon=True).start()
        self.send(json.dumps({"plan": plan.to_wire(), "candidates": [c.label for c in group],
                              "parent": os.getpid()}))

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, line: str) -> None:
        """Write one line to the child.

        Raises:
            ChildError: It has gone.
        """
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError) as err:
            raise ChildError(self._why_gone()) from err

    def expect(self, key: str) -> Any:
        """The value of the child's next message that holds `key` (other output is skipped).

        Raises:
            ChildError: It exited, or the deadline passed (it is killed).
        """
        while True:
            left = self.deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0.0))
            except queue.Empty:
                self.close()
                raise ChildError("measuring timed out") from None
            if line is None:
                raise ChildError(self._why_gone())
            try:
                message = json.loads(line).get("measure")
            except (ValueError, AttributeError):
                continue  # a library's own print
            if isinstance(message, dict) and key in message:
                return message[key]

    def _why_gone(self) -> str:
        code = self._proc.wait()
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return f"the measuring process exited {code}: {(lines or ['no stderr'])[-1][-300:]}"

    def close(self) -> None:
        """End the child (killed if still running) and free its pipes."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()
        self._stderr.close()


def measure_in_children(plan: Plan, candidates: Sequence[Candidate],
                        timeout_s: float) -> list[Timing]:
    """Measure `candidates` in one child Python per backend.

    Separate processes, because IPEX changes the process it is imported into (its own
    oneDNN, kernels registered over torch's): stock torch is timed as a service running it
    would run, and a service never imports IPEX just to find out it is slower.

    Args:
        plan: What to measure; `plan.repeats` rounds of one repeat per child.
        candidates: Grouped by backend (as `candidates_here` lists them).
        timeout_s: For all children together; a child past it is killed.

    Returns:
        One timing per candidate, in order; the candidates of a child that failed carry why.
    """
    deadline = time.monotonic() + timeout_s
    groups = [list(g) for _, g in itertools.groupby(candidates, key=lambda c: c.backend)]
    children: dict[int, _Child] = {}
    failed: dict[int, str] = {}
    answers: dict[int, list[Timing]] = {}

    def step(i: int, send: str | None, key: str) -> Any:
        try:
            if send is not None:
                children[i].send(send)
            return children[i].expect(key)
        except ChildError as err:
            failed[i] = str(err)
            children.pop(i).close()
            return None

    try:
        for i, group in enumerate(groups):
            try:
                children[i] = _Child(plan, group, deadline)
            except ChildError as err:
                failed[i] = str(err)
        for i in list(children):
            step(i, None, "ready")
        times: dict[int, list[list[float]]] = {}
        for _ in range(MAX_ROUNDS_FACTOR * plan.repeats):
            for i in list(children):
                time.sleep(_SETTLE_S)
                got = step(i, "go", "repeated")
                if isinstance(got, list):
                    times.setdefault(i, []).append([float(t) for t in got])
            if all(settled(list(ts), plan.repeats) for i in children
                   for ts in zip(*times.get(i, [[]]), strict=True)):
                break
        for i in list(children):
            got = step(i, "end", "timings")
            timings = None if got is None else _timings(got, groups[i], failed, i)
            if timings is not None:
                answers[i] = timings
    finally:
        for child in children.values():
            child.close()
    return [t for i, group in enumerate(groups) for t in answers.get(i) or [
        Timing(candidate=c, step_s=math.inf, loss=math.nan, error=failed.get(i, "no answer"))
        for c in group]]


def _timings(got: object, group: list[Candidate], failed: dict[int, str],
             i: int) -> list[Timing] | None:
    try:
        timings = [Timing.from_wire(t) for t in got] if isinstance(got, list) else []
    except (ValueError, TypeError) as err:
        failed[i] = f"the measuring process gave bad timings: {err}"
        return None
    if [t.candidate for t in timings] != group:
        failed[i] = "the measuring process answered for other candidates"
        return None
    return timings
