"""Tests for fedstream/console.py: colour only on a terminal, plain stable text elsewhere."""

from __future__ import annotations

import io

import pytest
from rich.table import Table
from rich.text import Text

from fedstream.console import console_for, emit, print_json, say


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_no_colour_off_a_terminal_whatever_the_environment_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipe gets no escape codes even with FORCE_COLOR and TTY_COMPATIBLE set."""
    # Prepare
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    out = io.StringIO()

    # Execute
    say(console_for(out), "failed", "bold red")

    # Assert
    assert out.getvalue() == "failed\n"


def test_a_terminal_gets_colour_unless_no_color_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal a red word is coloured; with NO_COLOR it is not."""
    # Prepare
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured, plain = _Terminal(), _Terminal()

    # Execute
    say(console_for(coloured), "failed", "red")
    monkeypatch.setenv("NO_COLOR", "1")
    say(console_for(plain), "failed", "red")

    # Assert
    assert "\x1b[31m" in coloured.getvalue()
    assert "\x1b[31m" not in plain.getvalue() and "failed" in plain.getvalue()


def test_plain_tables_ignore_columns_and_end_lines_without_blanks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal a row is not wrapped to $COLUMNS and no line ends in padding."""
    # Prepare
    monkeypatch.setenv("COLUMNS", "20")
    table = Table("name", "note", box=None)
    table.add_row("a", "x" * 60)
    table.add_row("bb", "y")
    out = io.StringIO()

    # Execute
    emit(console_for(out), table)

    # Assert
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[1].endswith("x" * 60)
    assert all(line == line.rstrip() for line in lines)


def test_say_prints_brackets_as_they_are() -> None:
    """A line holding rich markup syntax is printed verbatim, on one line."""
    # Prepare
    out = io.StringIO()
    text = "[bold]not bold[/bold] " + "z" * 300

    # Execute
    say(console_for(out), text)

    # Assert
    assert out.getvalue() == text + "\n"


def test_json_is_one_strict_document() -> None:
    """`print_json` writes one parseable document, keys in order, NaN as null, no escapes."""
    # Prepare
    out = io.StringIO()

    # Execute
    print_json({"b": 1, "a": [float("nan"), 2.5], "t": Text("x").plain}, out)

    # Assert
    assert out.getvalue() == '{\n  "b": 1,\n  "a": [\n    null,\n    2.5\n  ],\n  "t": "x"\n}\n'
