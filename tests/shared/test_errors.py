"""Tests for shared/errors.py."""

from __future__ import annotations

import re

import pytest

from fedstream.shared.errors import (
    REASONS,
    ConfigError,
    FedstreamError,
    ProtocolError,
    Reason,
    StoreError,
    TransportError,
)

_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_every_reason_has_help_and_exit_code(reason: Reason) -> None:
    """Every Reason member has a REASONS entry with a non-empty help line and an exit code."""
    # Prepare / Execute
    info = REASONS.get(reason)

    # Assert
    assert info is not None, f"{reason} has no REASONS entry"
    assert info.help.strip()
    assert isinstance(info.exit_code, int)


def test_table_holds_only_reasons() -> None:
    """REASONS has exactly one entry per Reason member and nothing else."""
    # Prepare / Execute
    keys = set(REASONS)

    # Assert
    assert keys == set(Reason)


def test_exit_codes_are_unique_and_in_range() -> None:
    """No two reasons share an exit code, and every code lies within 10..119 (a shell keeps
    126 and up for itself)."""
    # Prepare
    codes = [info.exit_code for info in REASONS.values()]

    # Execute
    out_of_range = [c for c in codes if not 10 <= c <= 119]

    # Assert
    assert len(codes) == len(set(codes))
    assert out_of_range == []


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_reason_values_are_snake_case(reason: Reason) -> None:
    """Reason strings are snake_case, the form logs, replies and the CLI share."""
    # Prepare / Execute
    value = str(reason)

    # Assert
    assert _SNAKE.match(value), value
    assert value == reason.name.lower()


@pytest.mark.parametrize(
    ("reason", "low", "high"),
    [
        (Reason.BAD_CONFIG, 10, 29),
        (Reason.UNKNOWN_NAME, 10, 29),
        (Reason.NOT_MSGPACK, 30, 59),
        (Reason.BAD_HASH, 30, 59),
        (Reason.DUPLICATE_UPDATE, 30, 59),
        (Reason.BROKER_UNREACHABLE, 60, 79),
        (Reason.NO_REPLY, 60, 79),
        (Reason.NO_EDGES, 80, 99),
        (Reason.STORE_FAILED, 80, 99),
        (Reason.BAD_SIGNATURE, 100, 119),
        (Reason.RATE_LIMITED, 100, 119),
    ],
)
def test_exit_code_lies_in_its_component_range(reason: Reason, low: int, high: int) -> None:
    """Config, wire, transport, round/store and security reasons keep to their exit-code
    ranges."""
    # Prepare / Execute
    code = REASONS[reason].exit_code

    # Assert
    assert low <= code <= high


@pytest.mark.parametrize(
    ("error", "exit_code", "message"),
    [
        (FedstreamError(Reason.NO_EDGES, "no edge is online"), 81, "no_edges: no edge is online"),
        (ConfigError(Reason.BAD_CONFIG), 10, "bad_config"),
        (ProtocolError(Reason.BAD_HASH, "blob b1"), 38, "bad_hash: blob b1"),
        (TransportError(Reason.NO_REPLY, "10 s"), 62, "no_reply: 10 s"),
        (StoreError(Reason.STORE_FAILED, ""), 84, "store_failed"),
    ],
)
def test_error_exit_code_and_message(error: FedstreamError, exit_code: int, message: str) -> None:
    """An error's exit code comes from its reason, and its message is `reason: detail`."""
    # Prepare / Execute
    text = str(error)

    # Assert
    assert error.exit_code == exit_code
    assert text == message


def test_error_keeps_reason_and_detail() -> None:
    """The reason and detail stay readable as attributes for logs and replies."""
    # Prepare
    error = ProtocolError(Reason.CHUNK_OUT_OF_RANGE, "chunk 7 of 3")

    # Execute
    reason, detail = error.reason, error.detail

    # Assert
    assert reason is Reason.CHUNK_OUT_OF_RANGE
    assert reason == "chunk_out_of_range"
    assert detail == "chunk 7 of 3"


@pytest.mark.parametrize("cls", [ConfigError, ProtocolError, TransportError, StoreError])
def test_children_are_fedstream_errors(cls: type[FedstreamError]) -> None:
    """Each of the four children is caught by `except FedstreamError`."""
    # Prepare / Execute
    with pytest.raises(FedstreamError) as info:
        raise cls(Reason.BAD_DATA, "x")

    # Assert
    assert type(info.value) is cls
    assert info.value.exit_code == 13
