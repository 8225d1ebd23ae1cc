"""The broker's access control list, rendered from the federation's identities (pure).

Mosquitto's TLS listener takes each client certificate's CN as the username, so the ACL names
every identity that is not revoked in a `user` block of its own (DESIGN.md, "Security"). There
are no `pattern` lines: a pattern applies to every user, revoked ones included, while a revoked
identity must get no line at all, so that it may do nothing. A user without lines may neither
publish nor receive anything.

Mosquitto 2.0's ACL file never refuses a SUBSCRIBE (every filter gets its SUBACK granted); it
checks `read` when it delivers each message (retained ones included) and drops what the
subscriber may not read. `write` is checked on each PUBLISH: a denied QoS 1 publish from an MQTT
v5 client gets PUBACK reason code 0x87 (not authorized), and is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.protocol.topics import Topics
from fedstream.shared.security.identity import Identity, Role, check_identity

Rule = tuple[str, str]  # (access: read | write | readwrite, topic filter)


def _edge(p: str, name: str) -> list[Rule]:
    return [("write", f"{p}/update/+/{name}"), ("write", f"{p}/edge/{name}/status"),
            ("read", f"{p}/model/#"), ("read", f"{p}/round/#"), ("read", f"{p}/receipt/{name}")]


def _cloud(p: str, _name: str) -> list[Rule]:
    # The cloud (service and inference) subscribes to none of what it writes, so `write` is
    # enough; clearing a retained model chunk is a publish too.
    return [("write", f"{p}/model/#"), ("write", f"{p}/round/#"), ("write", f"{p}/receipt/#"),
            ("write", f"{p}/reply/#"),
            ("read", f"{p}/update/#"), ("read", f"{p}/edge/+/status"), ("read", f"{p}/cmd/#"),
            ("read", f"{p}/data/#"), ("read", f"{p}/infer/#")]


def _operator(p: str, name: str) -> list[Rule]:
    # `reply/NAME/#` also matches `reply/NAME` itself: a client may reply-to either its own
    # name or one level under it (one per CLI session, so two of them never share answers).
    # `fedstream predict` asks the served model on `infer/<model>`.
    return [("write", f"{p}/cmd/#"), ("write", f"{p}/infer/+"), ("read", f"{p}/reply/{name}/#"),
            ("read", f"{p}/edge/+/status"), ("read", f"{p}/round/#"), ("read", f"{p}/model/#")]


def _producer(p: str, name: str) -> list[Rule]:
    return [("write", f"{p}/data/+"), ("write", f"{p}/infer/+"),
            ("read", f"{p}/reply/{name}/#")]


def _nothing(_p: str, _name: str) -> list[Rule]:
    # The broker's certificate identifies the broker to clients; it never logs in itself.
    return []


RULES: dict[Role, Callable[[str, str], list[Rule]]] = {
    Role.EDGE: _edge, Role.CLOUD: _cloud, Role.OPERATOR: _operator,
    Role.PRODUCER: _producer, Role.BROKER: _nothing,
}


def rules(federation: str, identity: Identity) -> list[Rule]:
    """What `identity` may read and write in `federation`: nothing once it is revoked.

    Raises:
        ConfigError: BAD_CONFIG for a federation or identity name that is not a plain name.
    """
    prefix = Topics(federation).prefix
    check_identity(identity.name)
    return [] if identity.revoked else RULES[identity.role](prefix, identity.name)


def render_acl(federation: str, identities: Sequence[Identity]) -> str:
    """A Mosquitto `acl_file`: one `user` block per identity that may do something.

    Args:
        federation: The federation's name (the topic prefix `fedstream/v1/<federation>`).
        identities: Every identity the CA issued, revoked ones included (they get no lines).

    Returns:
        The file's text.

    Raises:
        ConfigError: BAD_CONFIG for a name that is not a plain name, or a name given twice.
    """
    names = [i.name for i in identities]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(Reason.BAD_CONFIG, f"identities named twice: {', '.join(twice)}")
    lines = [f"# Mosquitto ACL of federation {federation}, written by fedstream from its "
             "identities (pki issue and revoke rewrite it; edits are lost).",
             "# No `pattern` lines: they would apply to revoked identities too."]
    for identity in sorted(identities, key=lambda i: i.name):
        granted = rules(federation, identity)
        if granted:
            lines += ["", f"# {identity.role}", f"user {identity.name}",
                      *(f"topic {access} {topic}" for access, topic in granted)]
    return "\n".join(lines) + "\n"
