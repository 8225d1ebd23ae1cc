"""Rejected messages: every one counted, the log told about each class of them, not each one.

A rogue client can send thousands of malformed frames a second; one log line each would fill
the disk (21,000 lines in two minutes, in a test). The first rejection of a (sender, reason)
in an interval is logged at once as `message_rejected`, so a lone bad frame is still visible
with its detail; the rest of that interval are counted and summed up in one
`rejections_summarized` line when the interval ends.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL_S = 60.0


@dataclass(slots=True)
class _Spell:
    started: float
    suppressed: int = 0
    last_detail: str = ""
    topic: str = ""


@dataclass(slots=True)
class RejectionLog:
    """Counts rejections by reason and rate-limits their log lines per sender and reason.

    Args:
        interval_s: Length of one summary interval.
    """

    interval_s: float = DEFAULT_INTERVAL_S
    totals: Counter[str] = field(default_factory=Counter)
    _spells: dict[tuple[str, str], _Spell] = field(default_factory=dict)

    def record(self, *, sender: str, reason: str, topic: str, detail: str, now: float) -> None:
        """Count one rejection; log it if it opens its (sender, reason) interval."""
        self.totals[reason] += 1
        key = (sender, reason)
        spell = self._spells.get(key)
        if spell is None:
            self._spells[key] = _Spell(started=now)
            log.warning("message_rejected", sender=sender, topic=topic, reason=reason,
                        detail=detail)
            return
        spell.suppressed += 1
        spell.last_detail, spell.topic = detail, topic

    def flush(self, now: float) -> None:
        """Close the intervals that ended: one summary line for each that suppressed any."""
        for key, spell in list(self._spells.items()):
            if now - spell.started < self.interval_s:
                continue
            del self._spells[key]
            if spell.suppressed:
                sender, reason = key
                log.warning("rejections_summarized", sender=sender, reason=reason,
                            count=spell.suppressed, seconds=round(now - spell.started, 1),
                            topic=spell.topic, last_detail=spell.last_detail)
