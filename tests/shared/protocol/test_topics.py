"""Tests for shared/protocol/topics.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.protocol.topics import ROOT, Topic, Topics, check_name

_LAB = Topics("lab")


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda t: t.manifest("mlp"), "fedstream/v1/lab/model/mlp/manifest"),
        (lambda t: t.model_chunk("mlp", 3, 0), "fedstream/v1/lab/model/mlp/v/3/0"),
        (lambda t: t.model_all("mlp"), "fedstream/v1/lab/model/mlp/#"),
        (lambda t: t.round("mlp"), "fedstream/v1/lab/round/mlp"),
        (lambda t: t.update("mlp", "e1"), "fedstream/v1/lab/update/mlp/e1"),
        (lambda t: t.update_all("mlp"), "fedstream/v1/lab/update/mlp/+"),
        (lambda t: t.status("e1"), "fedstream/v1/lab/edge/e1/status"),
        (lambda t: t.status_all(), "fedstream/v1/lab/edge/+/status"),
        (lambda t: t.command("round_start"), "fedstream/v1/lab/cmd/round_start"),
        (lambda t: t.command_all(), "fedstream/v1/lab/cmd/+"),
        (lambda t: t.reply("ops", "42"), "fedstream/v1/lab/reply/ops/42"),
        (lambda t: t.infer("mlp"), "fedstream/v1/lab/infer/mlp"),
    ],
    ids=["manifest", "model_chunk", "model_all", "round", "update", "update_all", "status",
         "status_all", "command", "command_all", "reply", "infer"],
)
def test_builders(build: Callable[[Topics], Topic], expected: str) -> None:
    """Each builder yields the documented topic under `fedstream/v1/{federation}`."""
    # Prepare / Execute
    topic = build(_LAB)

    # Assert
    assert isinstance(topic, Topic)
    assert topic.value == expected
    assert str(topic) == expected


def test_prefix() -> None:
    """The prefix is the root plus the federation name."""
    # Prepare / Execute
    prefix = _LAB.prefix

    # Assert
    assert prefix == f"{ROOT}/lab" == "fedstream/v1/lab"


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/b/c", "a/b/c", True),
        ("a/b/c", "a/b/d", False),
        ("a/+/c", "a/x/c", True),
        ("a/+/c", "a/x/d", False),
        ("a/+", "a/", True),
        ("+/+", "/x", True),
        ("a/#", "a/b/c/d", True),
        ("a/#", "a", True),
        ("a/#", "b/c", False),
        ("#", "a/b", True),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
        ("a/+", "a/b/c", False),
        ("a/+/c", "a/b", False),
    ],
)
def test_matches(pattern: str, topic: str, expected: bool) -> None:
    """`matches` follows MQTT filter rules for `+`, `#`, exact segments and length."""
    # Prepare
    filt = Topic(pattern)

    # Execute
    got = filt.matches(topic)

    # Assert
    assert got is expected


def test_built_filters_match_built_topics() -> None:
    """The `_all` filters match the concrete topics built beside them, and nothing else."""
    # Prepare
    other = Topics("other")

    # Execute / Assert
    assert _LAB.update_all("mlp").matches(_LAB.update("mlp", "e7").value)
    assert _LAB.status_all().matches(_LAB.status("e7").value)
    assert _LAB.command_all().matches(_LAB.command("status").value)
    assert _LAB.model_all("mlp").matches(_LAB.model_chunk("mlp", 2, 5).value)
    assert _LAB.model_all("mlp").matches(_LAB.manifest("mlp").value)
    assert not _LAB.update_all("mlp").matches(other.update("mlp", "e7").value)
    assert not _LAB.update_all("mlp").matches(_LAB.update("cnn", "e7").value)


@pytest.mark.parametrize(
    ("topic", "back", "expected"),
    [
        ("fedstream/v1/lab/update/mlp/e1", 0, "e1"),
        ("fedstream/v1/lab/cmd/status", 0, "status"),
        ("fedstream/v1/lab/edge/e1/status", 1, "e1"),
        ("a/b", 1, "a"),
        ("a/b", 2, ""),
        ("a", 5, ""),
    ],
)
def test_last_but(topic: str, back: int, expected: str) -> None:
    """`last_but` counts segments from the end and gives "" past the start."""
    # Prepare / Execute
    got = _LAB.last_but(topic, back)

    # Assert
    assert got == expected


@pytest.mark.parametrize(
    "name",
    ["", "a/b", "a+b", "#", "lab#", "a b", "x" * 65, "läb", "$SYS"],
    ids=["empty", "slash", "plus", "hash", "trailing-hash", "space", "65-chars", "non-ascii",
         "dollar"],
)
def test_invalid_federation_raises(name: str) -> None:
    """A federation name that is empty, too long or holds MQTT-special characters is refused."""
    # Prepare / Execute
    with pytest.raises(ConfigError) as info:
        Topics(name)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert repr(name) in info.value.detail


@pytest.mark.parametrize("name", ["lab", "x" * 64, "lab-1.a_B", "0"])
def test_valid_names_pass(name: str) -> None:
    """Letters, digits, '_', '.', '-' up to 64 characters are accepted and returned unchanged."""
    # Prepare / Execute
    got = check_name("edge id", name)

    # Assert
    assert got == name
    assert Topics(name).federation == name


def test_trailing_newline_is_refused() -> None:
    """A name with a trailing newline is refused like any other special character."""
    # Prepare
    name = "lab\n"

    # Execute / Assert
    with pytest.raises(ConfigError):
        Topics(name)
