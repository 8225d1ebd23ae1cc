"""When to publish the current model again (pure).

A broker whose nodes do not share retained messages (ejabberd 23.01 serves a new subscription
only what was published through that node: docs/brokers.md) leaves an edge that subscribes
on another node after the model went out without it, and without the open round. Edges say
which version they hold in their status; an online edge that has reported an older one (or
none) for `after_s`, `after_s` or more after the current version was published, gets it, and
the round, published again, at most once per `after_s`. On a single broker this never fires:
an edge (a new one too: its first status, sent before the model arrives, says none) holds the
version within moments, and its next status says so.
"""

from __future__ import annotations

import math


class Redelivery:
    """Tracks the current version's publication and decides on republishing it.

    Args:
        after_s: How long an edge may lack the current version before it is published
            again; 0 turns redelivery off.
    """

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._version: int | None = None
        self._since = -math.inf  # when the version was (re)published
        self._lacking: dict[str, float] = {}  # edge id -> first status without the version

    def published(self, version: int, now: float) -> None:
        """The cloud published `version` (first, or again)."""
        self._version, self._since = version, now

    def due(self, *, edge_id: str, online: bool, held: int | None, now: float) -> bool:
        """True when edge `edge_id`'s status (`online`, holding version `held`) calls for
        publishing the current version again now."""
        if not self.after_s or self._version is None:
            return False
        if not online or (held is not None and held >= self._version):
            self._lacking.pop(edge_id, None)
            return False
        since = self._lacking.setdefault(edge_id, now)
        return now - since >= self.after_s and now - self._since >= self.after_s
