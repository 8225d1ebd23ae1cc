"""The edge's outbox: updates kept on disk until the cloud's receipt, re-sent after a restart."""

from __future__ import annotations

import os
import time
from pathlib import Path

from structlog.testing import capture_logs

from fedstream.edge_node.outbox import Outbox, Pending


def test_put_pending_remove_round_trip(tmp_path: Path) -> None:
    """A kept update comes back with its frames in order until it is removed."""
    # Prepare
    outbox = Outbox(tmp_path / "outbox")
    outbox.put("u1", [b"f0", b"", b"\x00\xff"])

    # Execute
    before = outbox.pending()
    removed = outbox.remove("u1")
    after = outbox.pending()

    # Assert
    assert before == [Pending(update_id="u1", frames=[b"f0", b"", b"\x00\xff"])]
    assert removed is True
    assert after == []


def test_entries_survive_a_new_outbox_on_the_same_directory(tmp_path: Path) -> None:
    """An outbox opened again on the same directory (a restart) still holds the update."""
    # Prepare
    Outbox(tmp_path / "outbox").put("u1", [b"f0"])

    # Execute
    pending = Outbox(tmp_path / "outbox").pending()

    # Assert
    assert pending == [Pending(update_id="u1", frames=[b"f0"])]


def test_pending_lists_oldest_first(tmp_path: Path) -> None:
    """Entries come back by file modification time, not by name or insertion order."""
    # Prepare
    outbox = Outbox(tmp_path)
    for update_id, mtime in (("u-b", 3000), ("u-c", 1000), ("u-a", 2000)):
        outbox.put(update_id, [update_id.encode()])
        os.utime(tmp_path / f"{update_id}.out", (mtime, mtime))

    # Execute
    ids = [p.update_id for p in outbox.pending()]

    # Assert
    assert ids == ["u-c", "u-a", "u-b"]


def test_remove_of_an_unknown_update_returns_false(tmp_path: Path) -> None:
    """Removing an id that is not kept (a late duplicate receipt) is a no-op returning False."""
    # Prepare
    outbox = Outbox(tmp_path)
    outbox.put("u1", [b"f0"])

    # Execute
    removed = outbox.remove("u9")

    # Assert
    assert removed is False
    assert len(outbox) == 1


def test_unreadable_entry_is_logged_and_set_aside(tmp_path: Path) -> None:
    """A corrupt file is renamed to .bad with an error logged; the good entry is still listed."""
    # Prepare
    outbox = Outbox(tmp_path)
    outbox.put("good", [b"f0"])
    (tmp_path / "broken.out").write_bytes(b"\xc1 not msgpack")

    # Execute
    with capture_logs() as logs:
        pending = outbox.pending()

    # Assert
    assert pending == [Pending(update_id="good", frames=[b"f0"])]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.bad", "good.out"]
    assert [(e["event"], e["log_level"], e["path"]) for e in logs] == [
        ("outbox_entry_unreadable", "error", str(tmp_path / "broken.out"))]
    assert len(outbox) == 1


def test_len_counts_kept_updates(tmp_path: Path) -> None:
    """The length follows puts and removes; re-putting an id replaces it rather than adding."""
    # Prepare
    outbox = Outbox(tmp_path)
    sizes = [len(outbox)]

    # Execute
    outbox.put("u1", [b"a"])
    outbox.put("u2", [b"b"])
    sizes.append(len(outbox))
    outbox.put("u2", [b"c"])
    sizes.append(len(outbox))
    outbox.remove("u1")
    sizes.append(len(outbox))

    # Assert
    assert sizes == [0, 2, 2, 1]
    assert outbox.pending() == [Pending(update_id="u2", frames=[b"c"])]


def test_pending_skips_entries_younger_than_the_minimum_age(tmp_path: Path) -> None:
    """A re-send pass leaves alone an update written moments ago (its receipt may be on the
    way) and takes one that waited longer."""
    # Prepare
    box = Outbox(tmp_path)
    box.put("old", [b"a"])
    box.put("new", [b"b"])
    ten_minutes_ago = time.time() - 600
    os.utime(tmp_path / "old.out", (ten_minutes_ago, ten_minutes_ago))

    # Execute
    due = box.pending(min_age_s=30.0)

    # Assert
    assert [p.update_id for p in due] == ["old"]
    assert [p.update_id for p in box.pending()] == ["old", "new"]


def test_a_reopened_outbox_counts_what_is_on_disk(tmp_path: Path) -> None:
    """After a restart the count is what the directory holds (a corrupt entry until it is set
    aside by the next pass), then follows this run's puts and removes."""
    # Prepare
    Outbox(tmp_path).put("u1", [b"a"])
    Outbox(tmp_path).put("u2", [b"b"])
    (tmp_path / "broken.out").write_bytes(b"\xc1 not msgpack")

    # Execute
    reopened = Outbox(tmp_path)
    at_start = len(reopened)
    with capture_logs():
        reopened.pending()
    after_pass = len(reopened)
    reopened.remove("u1")

    # Assert
    assert (at_start, after_pass, len(reopened)) == (3, 2, 1)
