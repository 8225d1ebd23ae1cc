"""When to publish the current model again (pure).

A broker whose nodes do not share retained messages (ejabberd 23.01 serves a new subscription
only what was published through that node: docs/brokers.md) leaves an edge that subscribes
on another node after the model went out without it, and without the open round. Edges say
which version they hold in their status; an online edge that still reports an older one (or
none) `after_s` after the current version was published gets it, and the round, published
again, at most once per `after_s`. On a single broker this never fires: an edge holds a new
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

    def published(self, version: int, now: float) -> None:
        """The cloud published `version` (first, or again)."""
        self._version, self._since = version, now

    def due(self, *, online: bool, held: int | None, now: float) -> bool:
        """True when an edge's status (`online`, holding version `held`) calls for
        publishing the current version again now."""
        if not self.after_s or self._version is None or not online:
            return False
        if held is not None and held >= self._version:
            return False
        return now - self._since >= self.after_s
