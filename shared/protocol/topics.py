"""MQTT topic names: every topic is built here, never by string concatenation at call sites."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fedstream.shared.errors import ConfigError, Reason

_SEGMENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ROOT = "fedstream/v1"


def check_name(kind: str, value: str) -> str:
    """Validate one topic segment (federation, model or edge id).

    Raises:
        ConfigError: the value is empty, too long or holds MQTT-special characters.
    """
    if not _SEGMENT.fullmatch(value):
        raise ConfigError(
            Reason.BAD_CONFIG,
            f"{kind} {value!r} must be 1-64 characters of letters, digits, '_', '.' or '-'",
        )
    return value


@dataclass(frozen=True, slots=True)
class Topic:
    """A concrete topic or a subscription filter."""

    value: str

    def __str__(self) -> str:
        return self.value

    def matches(self, topic: str) -> bool:
        """True if `topic` matches this filter (`+` and `#` wildcards)."""
        want = self.value.split("/")
        have = topic.split("/")
        for i, part in enumerate(want):
            if part == "#":
                return True
            if i >= len(have) or (part != "+" and part != have[i]):
                return False
        return len(want) == len(have)


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic tree of one federation (DESIGN.md, "Topics")."""

    federation: str

    def __post_init__(self) -> None:
        check_name("federation", self.federation)

    @property
    def prefix(self) -> str:
        """`fedstream/v1/{federation}`."""
        return f"{ROOT}/{self.federation}"

    def manifest(self, model: str) -> Topic:
        """Retained manifest of the current global model."""
        return Topic(f"{self.prefix}/model/{model}/manifest")

    def model_chunk(self, model: str, version: int, index: int) -> Topic:
        """Retained chunk `index` of model `version`."""
        return Topic(f"{self.prefix}/model/{model}/v/{version}/{index}")

    def model_all(self, model: str) -> Topic:
        """Filter for the manifest and every model chunk."""
        return Topic(f"{self.prefix}/model/{model}/#")

    def round(self, model: str) -> Topic:
        """Retained state of the latest round."""
        return Topic(f"{self.prefix}/round/{model}")

    def round_progress(self, model: str) -> Topic:
        """Updates received by the open round (not retained; edges do not subscribe)."""
        return Topic(f"{self.prefix}/round/{model}/progress")

    def update(self, model: str, edge_id: str) -> Topic:
        """Update chunks from one edge."""
        return Topic(f"{self.prefix}/update/{model}/{edge_id}")

    def data(self, model: str) -> Topic:
        """Labelled samples for the cloud's own continual learning."""
        return Topic(f"{self.prefix}/data/{model}")

    def infer(self, model: str) -> Topic:
        """MQTT v5 inference requests for the served version of `model`."""
        return Topic(f"{self.prefix}/infer/{model}")

    def update_all(self, model: str) -> Topic:
        """Filter for every edge's update chunks."""
        return Topic(f"{self.prefix}/update/{model}/+")

    def receipt(self, edge_id: str) -> Topic:
        """The cloud's verdicts on one edge's updates."""
        return Topic(f"{self.prefix}/receipt/{edge_id}")

    def status(self, edge_id: str) -> Topic:
        """Retained status (and last will) of one edge."""
        return Topic(f"{self.prefix}/edge/{edge_id}/status")

    def status_all(self) -> Topic:
        """Filter for every edge's status."""
        return Topic(f"{self.prefix}/edge/+/status")

    def command(self, verb: str) -> Topic:
        """MQTT v5 request topic for a CLI command."""
        return Topic(f"{self.prefix}/cmd/{verb}")

    def command_all(self) -> Topic:
        """Filter for every command."""
        return Topic(f"{self.prefix}/cmd/+")

    def reply(self, identity: str, session: str) -> Topic:
        """Response topic private to one requesting client: under its identity (the MQTT
        username its certificate names, which the ACL lets read `reply/<identity>/#`), one
        level per session."""
        return Topic(f"{self.prefix}/reply/{identity}/{session}")

    def last_but(self, topic: str, back: int) -> str:
        """The segment `back` places before the end: 0 is the update's edge id or the
        command's verb, 1 is the status topic's edge id."""
        parts = topic.split("/")
        return parts[-1 - back] if back < len(parts) else ""
