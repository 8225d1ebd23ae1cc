"""Progress on the CLI's waits: a round's updates against its deadline, and the demo's fleet
coming up. A terminal gets a live bar; anything else a plain line per change of a round (the
text scripts and tests read) and nothing for the fleet."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.text import Text

from fedstream import describe
from fedstream.console import console_for, say
from fedstream.shared.protocol.control import RoundState

OnRound = Callable[[RoundState], None]
OnFleet = Callable[[int, bool], None]


class _Count(ProgressColumn):
    """"2/3 updates" (or "7 updates" without a total)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        of = "" if task.total is None else f"/{task.total:.0f}"
        return Text(f"{task.completed:.0f}{of} {self.unit}")


class _Until(ProgressColumn):
    """Seconds left until the task's `until` field (a Unix time), re-rendered on each refresh
    so it counts down between the cloud's announcements."""

    def __init__(self, ahead: str, passed: str) -> None:
        super().__init__()
        self.ahead, self.passed = ahead, passed

    def render(self, task: Task) -> Text:
        left = float(task.fields.get("until", 0.0)) - time.time()
        return Text(f"{left:.0f} s {self.ahead}" if left >= 0 else self.passed,
                    style="yellow" if left < 10 else "")


def _bar(console: Console, unit: str, until: _Until) -> Progress:
    # stdout and stderr stay the process's own: logs go to stderr, not above the bar.
    return Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                    BarColumn(), _Count(unit), until, console=console, transient=True,
                    redirect_stdout=False, redirect_stderr=False)


@contextmanager
def follow_round(console: Console) -> Iterator[OnRound]:
    """A callback for each state of a round being waited on: on a terminal it moves a bar of
    updates received (a session: a spinner and each version it publishes); elsewhere it prints
    a line per change."""
    if not console.is_interactive:
        yield _PlainRound(console)
        return
    with _bar(console, "updates", _Until("to deadline", "deadline passed")) as progress:
        yield _LiveRound(progress)


class _PlainRound:
    """A line per change of status or count (a session: per version published)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seen: set[tuple[str, int]] = set()

    def __call__(self, s: RoundState) -> None:
        if s.is_async:
            version = s.result.get("version")
            if isinstance(version, int) and ("v", version) not in self.seen:
                self.seen.add(("v", version))
                say(self.console, f"  published v{version}: {describe.scores(s.result)}, "
                                  f"{s.received} updates received")
        elif (str(s.status), s.received) not in self.seen:
            self.seen.add((str(s.status), s.received))
            say(self.console, f"  {s.status:<11} {s.received}/{s.expected} updates")


class _LiveRound:
    """One bar for the round; a session's versions print above it as they come."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None  # added with the first state
        self.versions: set[int] = set()

    def __call__(self, s: RoundState) -> None:
        version = s.result.get("version")
        if s.is_async and isinstance(version, int) and version not in self.versions:
            self.versions.add(version)
            say(self.progress.console, f"  published v{version}: "
                                       f"{describe.scores(s.result)}, {s.received} updates")
        name = "session" if s.is_async else "round"
        description = f"{name} {s.round_id} {s.status}"
        total = None if s.is_async else max(1, s.expected)
        if self.task is None:  # added with its values: the bar may be drawn at once
            self.task = self.progress.add_task(description, total=total, completed=s.received,
                                               until=s.deadline)
        else:
            self.progress.update(self.task, description=description, total=total,
                                 completed=s.received, until=s.deadline)


@contextmanager
def follow_fleet(out: TextIO | None, *, edges: int, timeout_s: float) -> Iterator[OnFleet]:
    """A callback `(edges ready, cloud answered)` for a wait on the fleet: a bar on a terminal,
    silent elsewhere (or with no `out`)."""
    console = None if out is None else console_for(out)
    if console is None or not console.is_interactive:
        yield lambda ready, up: None
        return
    with _bar(console, "edges ready", _Until("left", "giving up")) as progress:
        task = progress.add_task("waiting for the cloud", total=edges or None, completed=0,
                                 until=time.time() + timeout_s)

        def show(ready: int, up: bool) -> None:
            progress.update(task, completed=min(ready, edges),
                            description="fleet starting" if up else "waiting for the cloud")

        yield show
