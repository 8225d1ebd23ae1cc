"""Tests for shared/security/acl.py: the Mosquitto ACL rendered from the identities (pure)."""

from __future__ import annotations

import re

import pytest

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.security.acl import render_acl, rules
from fedstream.shared.security.identity import Identity, Role

P = "fedstream/v1/lab"
LINE = re.compile(r"(#.*|user [A-Za-z0-9_.-]+|topic (read|write|readwrite) [^ ]+|)")


def _id(name: str, role: Role, *, revoked: bool = False) -> Identity:
    return Identity(name=name, role=role, revoked=revoked, serial=1)


@pytest.mark.parametrize(("identity", "expected"), [
    (_id("e1", Role.EDGE), [
        ("write", f"{P}/update/+/e1"), ("write", f"{P}/edge/e1/status"),
        ("read", f"{P}/model/#"), ("read", f"{P}/round/#"), ("read", f"{P}/receipt/e1")]),
    (_id("cloud", Role.CLOUD), [
        ("write", f"{P}/model/#"), ("write", f"{P}/round/#"), ("write", f"{P}/receipt/#"),
        ("write", f"{P}/reply/#"), ("read", f"{P}/update/#"), ("read", f"{P}/edge/+/status"),
        ("read", f"{P}/cmd/#"), ("read", f"{P}/data/#"), ("read", f"{P}/infer/#")]),
    (_id("ops", Role.OPERATOR), [
        ("write", f"{P}/cmd/#"), ("write", f"{P}/infer/+"), ("read", f"{P}/reply/ops/#"),
        ("read", f"{P}/edge/+/status"),
        ("read", f"{P}/round/#"), ("read", f"{P}/model/#")]),
    (_id("feeder", Role.PRODUCER), [
        ("write", f"{P}/data/+"), ("write", f"{P}/infer/+"), ("read", f"{P}/reply/feeder/#")]),
    (_id("broker", Role.BROKER), []),
    (_id("e2", Role.EDGE, revoked=True), []),
    (_id("cloud", Role.CLOUD, revoked=True), []),
], ids=["edge", "cloud", "operator", "producer", "broker", "revoked-edge", "revoked-cloud"])
def test_each_role_gets_the_topics_of_the_design_table(identity: Identity,
                                                       expected: list[tuple[str, str]]) -> None:
    """Edge, cloud, operator and producer get DESIGN.md's topics, scoped to their own name
    where the table says so; the broker and any revoked identity get nothing."""
    # Execute
    got = rules("lab", identity)

    # Assert
    assert got == expected


def test_the_file_has_one_user_block_per_identity_that_may_do_something() -> None:
    """Golden text for a small federation: blocks sorted by name, the broker and the revoked
    edge absent, no `pattern` line, every line Mosquitto ACL syntax."""
    # Prepare
    fleet = [_id("e2", Role.EDGE, revoked=True), _id("broker", Role.BROKER),
             _id("ops", Role.OPERATOR), _id("e1", Role.EDGE)]

    # Execute
    text = render_acl("lab", fleet)

    # Assert
    assert text == (
        "# Mosquitto ACL of federation lab, written by fedstream from its identities "
        "(pki issue and revoke rewrite it; edits are lost).\n"
        "# No `pattern` lines: they would apply to revoked identities too.\n"
        "\n# edge\nuser e1\n"
        f"topic write {P}/update/+/e1\ntopic write {P}/edge/e1/status\n"
        f"topic read {P}/model/#\ntopic read {P}/round/#\ntopic read {P}/receipt/e1\n"
        "\n# operator\nuser ops\n"
        f"topic write {P}/cmd/#\ntopic write {P}/infer/+\ntopic read {P}/reply/ops/#\n"
        f"topic read {P}/edge/+/status\n"
        f"topic read {P}/round/#\ntopic read {P}/model/#\n")
    assert all(LINE.fullmatch(line) for line in text.splitlines())
    assert not any(line.startswith("pattern") for line in text.splitlines())


def test_a_revoked_identity_is_named_nowhere() -> None:
    """A revoked identity has no line of its own, not even a `user` line without topics."""
    # Prepare
    fleet = [_id("gw-7", Role.EDGE, revoked=True), _id("cloud", Role.CLOUD)]

    # Execute
    text = render_acl("lab", fleet)

    # Assert
    assert "gw-7" not in text
    assert "user cloud" in text


@pytest.mark.parametrize("name", ["e/1", "e+", "#", "", "x" * 65, "e1\n", "e 1"])
def test_an_identity_that_cannot_be_a_username_cannot_be_made(name: str) -> None:
    """A name with a topic separator, a wildcard, a space or a newline (an ACL line of its own),
    empty or too long, is refused when the identity is made."""
    # Prepare / Execute
    with pytest.raises(ConfigError) as info:
        _id(name, Role.EDGE)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG


@pytest.mark.parametrize("federation", ["a/b", "+", "", "lab\n"])
def test_a_federation_that_is_not_one_topic_level_is_refused(federation: str) -> None:
    """The federation becomes a topic level of every line, so it must be a plain name."""
    # Prepare / Execute
    with pytest.raises(ConfigError) as info:
        render_acl(federation, [_id("e1", Role.EDGE)])

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG


def test_an_identity_named_twice_is_refused() -> None:
    """Two identities with one name would merge into one Mosquitto user: refused, naming it."""
    # Prepare
    fleet = [_id("e1", Role.EDGE), _id("e1", Role.OPERATOR)]

    # Execute
    with pytest.raises(ConfigError, match="e1") as info:
        render_acl("lab", fleet)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
