"""The demo's child processes: the environment they get, and where the demo's edges keep
their measured backend choices across runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedstream.demo import Processes, kept_backend_choices

_PRINT = "import os; print(os.environ.get('A'), os.environ.get('B'))"


def test_backend_choices_live_in_the_users_cache(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """The demo wipes its work dir; the choices go to $XDG_CACHE_HOME/fedstream (or
    ~/.cache/fedstream), so the next demo does not measure again."""
    # Prepare
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    # Execute
    with_xdg = kept_backend_choices()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    without = kept_backend_choices()

    # Assert
    assert with_xdg == {"FEDSTREAM_BACKEND__CACHE":
                        str(tmp_path / "xdg" / "fedstream" / "backend-choice.json")}
    assert without == {"FEDSTREAM_BACKEND__CACHE":
                       str(tmp_path / "home" / ".cache" / "fedstream" / "backend-choice.json")}


def test_children_get_the_given_environment_under_this_processs_own(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A variable this process already has (a test's shared cache) wins over the given one."""
    # Prepare
    monkeypatch.setenv("B", "mine")
    monkeypatch.delenv("A", raising=False)
    procs = Processes(tmp_path, env={"A": "given", "B": "given"})

    # Execute
    procs.spawn_command("child", [sys.executable, "-c", _PRINT])
    code = procs.procs["child"].wait(timeout=60)

    # Assert
    assert code == 0
    assert (tmp_path / "child.log").read_text().split() == ["given", "mine"]
