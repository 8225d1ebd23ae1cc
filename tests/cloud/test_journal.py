"""The journal: chunks in flight, verdicts, rounds, versions and meta in one SQLite file."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from fedstream.cloud.journal import Journal, UpdateRow, VersionRow
from fedstream.cloud.rounds import open_round
from fedstream.cloud.store import CloudStore
from fedstream.shared.errors import Reason, StoreError
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.control import RoundState, TrainParams


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    """A fresh journal in the test's temp dir, closed afterwards."""
    opened = Journal(tmp_path / "journal.db")
    yield opened
    opened.close()


def _round(round_id: str) -> RoundState:
    return open_round(round_id=round_id, model="m", base_version=0, now=0.0, deadline_s=60,
                      train=TrainParams(epochs=1, lr=0.1, momentum=0.0, batch_size=8),
                      codec="f32", codec_params={}, selection=("e1", "e2"), quorum=1)


def _row(update_id: str, round_id: str = "r1", status: str = "accepted",
         reason: str = "") -> UpdateRow:
    return UpdateRow(update_id=update_id, round_id=round_id, edge_id="e1", status=status,
                     reason=reason, samples=10, bytes=92, codec="f32",
                     spool=f"{round_id}/{update_id}.blob" if status == "accepted" else "")


def test_new_journal_creates_its_tables_in_wal_mode(journal: Journal) -> None:
    """Opening a journal creates the five tables and leaves the file in WAL mode."""
    # Prepare
    path = journal.path

    # Execute
    with closing(sqlite3.connect(path)) as other:
        mode = other.execute("PRAGMA journal_mode").fetchone()[0]
        tables = {r[0] for r in other.execute("SELECT name FROM sqlite_master "
                                              "WHERE type = 'table'")}

    # Assert
    assert mode == "wal"
    assert tables == {"chunks", "updates", "rounds", "versions", "evals", "meta"}


def test_put_chunk_is_idempotent_by_blob_and_index(journal: Journal) -> None:
    """A second chunk with the same blob id and index is ignored: the first frame stays."""
    # Prepare
    journal.put_chunk("b1", 0, "e1", b"first")

    # Execute
    journal.put_chunk("b1", 0, "e1", b"second")
    journal.put_chunk("b1", 1, "e1", b"next")

    # Assert
    assert list(journal.chunk_frames()) == [("e1", b"first"), ("e1", b"next")]


def test_held_chunks_reach_the_file_on_flush_in_one_transaction(tmp_path: Path) -> None:
    """`put_chunk` holds frames until `flush` (the service acks only after it): another
    connection sees none of them before and all of them after."""
    # Prepare
    journal = Journal(tmp_path / "journal.db")
    other = sqlite3.connect(tmp_path / "journal.db")
    journal.put_chunk("b1", 0, "e1", b"zero")
    journal.put_chunk("b1", 1, "e1", b"one")

    # Execute
    before = other.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    journal.flush()
    after = other.execute("SELECT idx FROM chunks ORDER BY idx").fetchall()
    reader = Journal(tmp_path / "journal.db")

    # Assert
    assert before == 0
    assert after == [(0,), (1,)]
    assert list(reader.chunk_frames("b1")) == [("e1", b"zero"), ("e1", b"one")]
    reader.close()
    other.close()
    journal.close()


def test_every_other_operation_writes_held_chunks_first(journal: Journal) -> None:
    """A read or a verdict sees the chunks held so far: a verdict drops them as if each had
    been written at once."""
    # Prepare
    journal.put_chunk("b1", 0, "e1", b"zero")
    journal.put_chunk("b2", 0, "e2", b"other")

    # Execute
    indices = journal.chunk_indices("b1")
    journal.record_update(_row("b1"))

    # Assert
    assert indices == [0]
    assert list(journal.chunk_frames()) == [("e2", b"other")]


def test_a_failed_flush_is_store_failed_and_keeps_nothing_of_it(tmp_path: Path) -> None:
    """A flush the database refuses (here a trigger aborts chunk 1's row) raises
    store_failed; none of that flush's chunks stay (one transaction: their edges' probes fill
    them), and the next flush is written."""
    # Prepare
    journal = Journal(tmp_path / "journal.db")
    with closing(sqlite3.connect(tmp_path / "journal.db")) as admin:
        admin.execute("CREATE TRIGGER refuse BEFORE INSERT ON chunks WHEN NEW.idx = 1 "
                      "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        admin.commit()
    journal.put_chunk("b1", 0, "e1", b"zero")
    journal.put_chunk("b1", 1, "e1", b"one")

    # Execute
    with pytest.raises(StoreError) as caught:
        journal.flush()
    journal.put_chunk("b1", 2, "e1", b"two")
    journal.flush()

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert journal.chunk_indices("b1") == [2]
    journal.close()


def test_chunk_frames_replay_in_blob_then_index_order(journal: Journal) -> None:
    """Chunks stored out of order come back sorted by (blob id, index) with their sender."""
    # Prepare
    for blob, idx, edge in (("b2", 1, "e2"), ("b1", 2, "e1"), ("b2", 0, "e2"), ("b1", 0, "e1")):
        journal.put_chunk(blob, idx, edge, f"{blob}:{idx}".encode())

    # Execute
    frames = list(journal.chunk_frames())

    # Assert
    assert frames == [("e1", b"b1:0"), ("e1", b"b1:2"), ("e2", b"b2:0"), ("e2", b"b2:1")]


def test_drop_chunks_forgets_only_that_blob(journal: Journal) -> None:
    """Dropping one blob's chunks leaves other blobs' chunks in place."""
    # Prepare
    journal.put_chunk("b1", 0, "e1", b"b1:0")
    journal.put_chunk("b2", 0, "e2", b"b2:0")

    # Execute
    journal.drop_chunks("b1")

    # Assert
    assert list(journal.chunk_frames()) == [("e2", b"b2:0")]


def test_record_update_keeps_the_first_verdict_and_drops_that_blobs_chunks(
    journal: Journal,
) -> None:
    """Recording an update drops its chunks; a second record of the same id keeps verdict one."""
    # Prepare
    journal.put_chunk("u1", 0, "e1", b"u1:0")
    journal.put_chunk("u1", 1, "e1", b"u1:1")
    journal.put_chunk("u2", 0, "e1", b"u2:0")
    first = _row("u1")

    # Execute
    journal.record_update(first)
    journal.record_update(_row("u1", status="rejected", reason="bad_hash"))

    # Assert
    assert journal.update("u1") == first
    assert journal.update("u9") is None
    assert list(journal.chunk_frames()) == [("e1", b"u2:0")]


def test_accepted_lists_only_accepted_rows_of_the_round_in_update_id_order(
    journal: Journal,
) -> None:
    """Rejected rows and rows of other rounds are left out; the rest sort by update id."""
    # Prepare
    for row in (_row("u3"), _row("u1"), _row("u2", status="rejected", reason="bad_hash"),
                _row("u0", round_id="r2")):
        journal.record_update(row)

    # Execute
    ids = [r.update_id for r in journal.accepted("r1")]

    # Assert
    assert ids == ["u1", "u3"]
    assert journal.accepted("r9") == []


def test_pending_lists_accepted_rows_not_yet_applied_in_update_id_order(
    journal: Journal,
) -> None:
    """A version marking u1 applied leaves u2 and u3 pending; rejected rows never are."""
    # Prepare
    for row in (_row("u3"), _row("u1"), _row("u2"), _row("u4", status="rejected",
                                                           reason="stale_round")):
        journal.record_update(row)
    v1 = VersionRow(version=1, parent=0, round_id="r1", path="v1.safetensors", lineage={})

    # Execute
    before = [r.update_id for r in journal.pending("r1")]
    journal.add_version(v1, applied=["u1"])
    after = [r.update_id for r in journal.pending("r1")]

    # Assert
    assert before == ["u1", "u2", "u3"]
    assert after == ["u2", "u3"]
    assert journal.update("u1") == dataclasses.replace(_row("u1"), applied=1)
    assert [r.update_id for r in journal.accepted("r1")] == ["u1", "u2", "u3"]


@pytest.mark.parametrize("applied", [["u1", "u9"], ["u1", "u2"], ["u1", "u1"]],
                         ids=["unknown", "rejected", "applied-twice"])
def test_add_version_marking_a_wrong_update_writes_nothing(applied: list[str],
                                                           journal: Journal) -> None:
    """Marking an unknown, rejected or already applied update raises store_failed, and
    neither the version nor any mark is written (one transaction)."""
    # Prepare
    journal.record_update(_row("u1"))
    journal.record_update(_row("u2", status="rejected", reason="bad_hash"))
    v1 = VersionRow(version=1, parent=0, round_id="r1", path="v1.safetensors", lineage={})

    # Execute
    with pytest.raises(StoreError) as caught:
        journal.add_version(v1, applied=applied)

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert journal.versions() == []
    assert [r.update_id for r in journal.pending("r1")] == ["u1"]


def test_journal_from_before_async_sessions_gains_base_and_applied(tmp_path: Path) -> None:
    """An old journal (updates without base/applied) opens with each row's base taken from
    its round (v3) and accepted rows of a published round applied to its version (v4)."""
    # Prepare
    path = tmp_path / "journal.db"
    old = dataclasses.replace(_round("r1"), base_version=3)
    with closing(sqlite3.connect(path)) as db:
        db.executescript("""
            CREATE TABLE updates (update_id TEXT PRIMARY KEY, round_id TEXT NOT NULL,
                edge_id TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
                samples INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
                codec TEXT NOT NULL DEFAULT '', spool TEXT NOT NULL DEFAULT '');
            CREATE TABLE rounds (round_id TEXT PRIMARY KEY, seq INTEGER NOT NULL,
                status TEXT NOT NULL, state BLOB NOT NULL);
            CREATE TABLE versions (version INTEGER PRIMARY KEY, parent INTEGER,
                round_id TEXT NOT NULL, path TEXT NOT NULL, lineage TEXT NOT NULL);""")
        db.execute("INSERT INTO rounds VALUES ('r1', 1, 'published', ?)", (wire.pack(old),))
        db.execute("INSERT INTO versions VALUES (4, 3, 'r1', 'v4.safetensors', '{}')")
        db.executemany("INSERT INTO updates VALUES (?, 'r1', 'e1', ?, '', 10, 92, 'f32', '')",
                       [("u1", "accepted"), ("u2", "rejected")])
        db.commit()

    # Execute
    opened = Journal(path)
    try:
        rows = [opened.update("u1"), opened.update("u2")]
        pending = opened.pending("r1")
    finally:
        opened.close()

    # Assert
    assert [(r.base, r.applied) for r in rows if r] == [(3, 4), (3, None)]
    assert pending == []


def test_journal_from_before_the_gate_has_every_version_promoted(tmp_path: Path) -> None:
    """Versions written before the promotion gate existed were all served: they read back as
    promoted, and the evals table is created empty."""
    # Prepare
    path = tmp_path / "journal.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE versions (version INTEGER PRIMARY KEY, parent INTEGER, "
                   "round_id TEXT NOT NULL, path TEXT NOT NULL, lineage TEXT NOT NULL)")
        db.execute("INSERT INTO versions VALUES (0, NULL, '', 'v0.safetensors', '{}')")
        db.commit()

    # Execute
    opened = Journal(path)
    try:
        versions, evals = opened.versions(), opened.evals()
    finally:
        opened.close()

    # Assert
    assert [(v.version, v.status, v.reason, v.promoted) for v in versions] == [
        (0, "promoted", "", True)]
    assert evals == {}


def test_version_evals_and_status_round_trip(journal: Journal) -> None:
    """Per-window accuracies are stored with their version in one transaction; a rejected
    candidate promoted by hand keeps the gate's reason and gains a lineage note."""
    # Prepare
    rejected = VersionRow(version=1, parent=0, round_id="r1", path="v1.safetensors",
                          lineage={}, status="rejected", reason="regressed_past")

    # Execute
    journal.add_version(rejected, evals={"w1": 0.5, "w0": 0.25})
    before = journal.versions()
    journal.set_status(1, "promoted", {"promoted_by": "hand"})
    after = journal.versions()

    # Assert
    assert journal.evals() == {1: {"w1": 0.5, "w0": 0.25}}
    assert [(v.status, v.reason, v.promoted) for v in before] == [
        ("rejected", "regressed_past", False)]
    assert [(v.status, v.reason, v.lineage) for v in after] == [
        ("promoted", "regressed_past", {"promoted_by": "hand"})]


def test_save_round_upserts_and_last_round_is_the_latest_opened(journal: Journal) -> None:
    """Updating an older round after a newer one was opened does not make it the last round."""
    # Prepare
    r1, r2 = _round("r1"), _round("r2")
    r1_collecting = dataclasses.replace(r1, status="collecting", received=1)
    r1_failed = dataclasses.replace(r1, status="failed", reason="no_quorum")

    # Execute
    empty = journal.last_round()
    journal.save_round(r1)
    journal.save_round(r1_collecting)
    after_upsert = journal.last_round()
    journal.save_round(r2)
    journal.save_round(r1_failed)
    last = journal.last_round()

    # Assert
    assert empty is None
    assert after_upsert == r1_collecting
    assert last == r2
    with closing(sqlite3.connect(journal.path)) as other:
        rows = other.execute("SELECT round_id, seq, status FROM rounds ORDER BY seq").fetchall()
    assert rows == [("r1", 1, "failed"), ("r2", 2, "open")]


def test_rounds_are_newest_opened_first_in_their_saved_state(journal: Journal) -> None:
    """`rounds(limit)` lists the newest opened rounds first, each as last saved, at most
    `limit` of them."""
    # Prepare
    r1, r2, r3 = _round("r1"), _round("r2"), _round("r3")
    r1_failed = dataclasses.replace(r1, status="failed", reason="no_quorum")
    for state in (r1, r2, r3, r1_failed):
        journal.save_round(state)

    # Execute
    every = journal.rounds(10)
    newest = journal.rounds(2)

    # Assert
    assert every == [r3, r2, r1_failed]
    assert newest == [r3, r2]


def test_versions_round_trip_with_their_lineage(journal: Journal) -> None:
    """Versions come back oldest first with parent and the lineage dict intact."""
    # Prepare
    v0 = VersionRow(version=0, parent=None, round_id="", path="v0.safetensors",
                    lineage={"origin": "initial", "seed": 0})
    v1 = VersionRow(version=1, parent=0, round_id="r1", path="v1.safetensors",
                    lineage={"edges": ["e1", "e2"], "metrics": {"accuracy": 0.5}})

    # Execute
    journal.add_version(v1)
    journal.add_version(v0)

    # Assert
    assert journal.versions() == [v0, v1]


def test_duplicate_version_is_store_failed(journal: Journal) -> None:
    """Adding a version number twice raises store_failed and keeps the first row."""
    # Prepare
    first = VersionRow(version=1, parent=0, round_id="r1", path="v1.safetensors", lineage={})
    journal.add_version(first)

    # Execute
    with pytest.raises(StoreError) as caught:
        journal.add_version(dataclasses.replace(first, path="other.safetensors"))

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert journal.versions() == [first]


def test_meta_is_set_overwritten_and_read(journal: Journal) -> None:
    """A meta key reads back its latest value; an unset key reads None."""
    # Prepare
    journal.set_meta("current", "1")

    # Execute
    journal.set_meta("current", "2")

    # Assert
    assert journal.meta("current") == "2"
    assert journal.meta("missing") is None


def test_everything_survives_closing_and_reopening(tmp_path: Path) -> None:
    """A new journal on the same file sees the chunks, updates, rounds, versions and meta."""
    # Prepare
    path = tmp_path / "data" / "journal.db"
    version = VersionRow(version=0, parent=None, round_id="", path="v0.safetensors",
                         lineage={"origin": "initial"})
    first = Journal(path)
    first.put_chunk("u2", 0, "e2", b"u2:0")
    first.record_update(_row("u1"))
    first.save_round(_round("r1"))
    first.add_version(version)
    first.set_meta("current", "0")
    first.close()

    # Execute
    again = Journal(path)
    try:
        seen = (list(again.chunk_frames()), again.update("u1"), again.last_round(),
                again.versions(), again.meta("current"))
    finally:
        again.close()

    # Assert
    assert seen == ([("e2", b"u2:0")], _row("u1"), _round("r1"), [version], "0")


@pytest.mark.parametrize("where", [
    "a directory",
    pytest.param("under a regular file"),
])
def test_journal_on_an_unusable_path_is_store_failed(where: str, tmp_path: Path) -> None:
    """A journal path that is a directory, or lies under a regular file, raises store_failed."""
    # Prepare
    (tmp_path / "file").write_bytes(b"x")
    path = tmp_path if where == "a directory" else tmp_path / "file" / "journal.db"

    # Execute
    with pytest.raises(StoreError) as caught:
        Journal(path)

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED


@contextmanager
def _write_lock_held(path: Path, hold_s: float) -> Iterator[threading.Event]:
    """Another connection holds the write lock (with a write of its own) for `hold_s` seconds.

    The event is set just before that connection commits, so a write that finishes while the
    lock is held finds it unset.
    """
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO meta VALUES ('holder', 'other')")
    releasing = threading.Event()

    def release() -> None:
        releasing.set()
        other.execute("COMMIT")

    timer = threading.Timer(hold_s, release)
    timer.start()
    try:
        yield releasing
    finally:
        timer.join()
        other.close()


def test_write_waits_while_another_connection_holds_the_lock(journal: Journal) -> None:
    """With stock settings SQLite's own 5 s busy wait absorbs a 0.2 s lock held by another
    connection: the write lands after the release without a retry being scheduled."""
    # Prepare
    with capture_logs() as logs, _write_lock_held(journal.path, 0.2) as releasing:

        # Execute
        journal.set_meta("k", "v")
        released_first = releasing.is_set()

    # Assert
    assert released_first
    assert (journal.meta("k"), journal.meta("holder")) == ("v", "other")
    assert [e for e in logs if e["event"] == "retry_scheduled"] == []


def test_busy_write_is_retried_until_another_connection_releases_the_lock(
    journal: Journal,
) -> None:
    """With SQLite's busy wait off on the journal's connection, "database is locked" reaches
    Journal._run at once, and only its tenacity retry lets the write land after the release."""
    # Prepare
    journal._db.execute("PRAGMA busy_timeout = 0")  # fail fast: leave the waiting to tenacity
    with capture_logs() as logs, _write_lock_held(journal.path, 0.2) as releasing:

        # Execute
        journal.set_meta("k", "v")
        released_first = releasing.is_set()

    # Assert
    retries = [e for e in logs if e["event"] == "retry_scheduled"]
    assert released_first
    assert (journal.meta("k"), journal.meta("holder")) == ("v", "other")
    assert retries and all(e["op"] == "sqlite" for e in retries)


@pytest.mark.parametrize(("synchronous", "sync"), [("NORMAL", False), ("FULL", True)])
def test_the_spool_flushes_to_disk_as_the_journal_does(tmp_path: Path, synchronous: str,
                                                       sync: bool) -> None:
    """A spooled blob is fsynced only when the journal is (FULL: power loss too); either
    way it is written whole."""
    # Execute
    store = CloudStore.open(tmp_path, synchronous=synchronous)
    rel = store.spool.put("r1", "u1", b"blob")

    # Assert
    assert store.spool.sync is sync
    assert store.spool.get(rel) == bytearray(b"blob")
    store.close()
