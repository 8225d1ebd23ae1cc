"""The PUBACKs one `MqttClient.publish_many` call waits for, in send order; the log line of a
refused publish nobody waits for."""

from __future__ import annotations

import math
import threading
import time

import structlog
from paho.mqtt.reasoncodes import ReasonCode

from fedstream.shared.protocol.topics import Topic

log = structlog.get_logger("fedstream.shared.protocol.mqtt")


class Batch:
    """The PUBACKs one `publish_many` call waits for (guarded by the client's lock)."""

    def __init__(self) -> None:
        self.pending: dict[int, tuple[int, Topic]] = {}  # mid -> (send order, topic)
        self.failures: list[tuple[int, Topic, ReasonCode]] = []
        # The oldest unconfirmed item (in send order) and since when it is the oldest: its
        # PUBACK is the one a caller waiting on each message in order would be waiting for.
        self.head = 0
        self.since = time.monotonic()
        self._confirmed_after_head: set[int] = set()
        # Set by the network thread once at most `limit` are pending (-1: nobody waits).
        self.limit = -1
        self.room = threading.Event()

    def settle(self, seq: int, topic: Topic, code: ReasonCode) -> None:
        """Record the PUBACK of item `seq`."""
        if code.is_failure:
            self.failures.append((seq, topic, code))
        if seq != self.head:
            self._confirmed_after_head.add(seq)
            return
        self.head += 1
        while self.head in self._confirmed_after_head:
            self._confirmed_after_head.remove(self.head)
            self.head += 1
        self.since = time.monotonic()

    def failed_in_order(self) -> bool:
        """True once a refused item has no unconfirmed item before it."""
        return bool(self.failures) and min(self.failures)[0] < self.head

    def wait(self, lock: threading.Lock, limit: int, timeout_s: float) -> bool:
        """Wait until at most `limit` items are unconfirmed (True). False, to give up, once an
        item was refused with all before it confirmed, or the oldest unconfirmed item has
        waited `timeout_s`: where waiting on each PUBACK in turn would raise. `lock` is the
        client's, which the network thread holds while it settles PUBACKs.

        One wake-up per wait, not per PUBACK: a thread woken per message would compete with
        the network thread for the GIL while chunks stream.
        """
        started = time.monotonic()
        while True:
            with lock:
                if self.failed_in_order():
                    return False
                if len(self.pending) <= limit:
                    return True
                self.limit = limit
                self.room.clear()
                left = max(started, self.since) + timeout_s - time.monotonic()
            if left <= 0:
                return False
            self.room.wait(left)


class Refusals:
    """Logs the refused PUBACKs of one client's unwaited publishes
    (`MqttClient.publish_unwaited`): the first of each reason in `every_s`, with `more`, the
    refusals of that reason not logged since its last line (an ACL refusing every receipt
    must not write a line per message)."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def __call__(self, topic: Topic, code: ReasonCode) -> None:
        """Take one PUBACK; a success is not logged."""
        if not code.is_failure:
            return
        reason, now = str(code), time.monotonic()
        with self._lock:
            if now - self._logged_at.get(reason, -math.inf) < self.every_s:
                self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
                return
            self._logged_at[reason] = now
            more = self._unlogged.pop(reason, 0)
        log.warning("publish_refused", topic=str(topic), reason=reason, more=more)
