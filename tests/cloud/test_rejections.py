"""Rejected messages: every one counted, one log line per sender, reason and interval."""

from __future__ import annotations

from structlog.testing import capture_logs

from fedstream.cloud.rejections import RejectionLog


def test_a_flood_is_counted_in_full_and_logged_as_one_line_and_one_summary() -> None:
    """1000 bad frames from one sender in an interval: the counter holds 1000, the log holds
    the first one with its detail and, when the interval ends, one summary of the other 999."""
    # Prepare
    rejections = RejectionLog(interval_s=60.0)

    # Execute
    with capture_logs() as logs:
        for i in range(1000):
            rejections.record(sender="rogue", reason="not_msgpack", topic="t/update/m/rogue",
                              detail=f"frame {i}", now=i * 0.01)
        rejections.flush(now=30.0)  # the interval is still open: nothing yet
        mid = len(logs)
        rejections.flush(now=60.0)

    # Assert
    assert rejections.totals == {"not_msgpack": 1000}
    assert mid == 1
    assert [(e["event"], e.get("detail"), e.get("count")) for e in logs] == [
        ("message_rejected", "frame 0", None), ("rejections_summarized", None, 999)]
    assert logs[1]["last_detail"] == "frame 999"


def test_each_sender_and_reason_has_its_own_interval() -> None:
    """Two senders and two reasons each get their first line logged at once; a lone
    rejection gets no summary; a new interval logs its first rejection again."""
    # Prepare
    rejections = RejectionLog(interval_s=10.0)

    # Execute
    with capture_logs() as logs:
        for sender, reason in (("a", "bad_frame"), ("a", "not_msgpack"), ("b", "bad_frame")):
            rejections.record(sender=sender, reason=reason, topic="t", detail="x", now=0.0)
        rejections.flush(now=10.0)
        rejections.record(sender="a", reason="bad_frame", topic="t", detail="y", now=11.0)

    # Assert
    assert [(e["event"], e["sender"], e["reason"]) for e in logs] == [
        ("message_rejected", "a", "bad_frame"), ("message_rejected", "a", "not_msgpack"),
        ("message_rejected", "b", "bad_frame"), ("message_rejected", "a", "bad_frame")]
    assert rejections.totals == {"bad_frame": 3, "not_msgpack": 1}
