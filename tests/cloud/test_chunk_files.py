"""Chunk frames in one file per update beside the journal: what is written, kept, swept and
refused, and a journal from before them."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from fedstream.cloud.chunk_files import ChunkFiles
from fedstream.cloud.journal import Journal, UpdateRow
from fedstream.shared.errors import Reason, StoreError


def test_frames_append_at_their_offsets_and_read_back(tmp_path: Path) -> None:
    """Each frame lands after the previous one; reading an offset gives that frame."""
    # Prepare
    files = ChunkFiles(tmp_path / "chunks")

    # Execute
    offsets = [files.append("u1", frame) for frame in (b"abc", b"defgh", b"i")]

    # Assert
    assert offsets == [0, 3, 8]
    assert [files.read("u1", o, n) for o, n in zip(offsets, (3, 5, 1), strict=True)] == [
        b"abc", b"defgh", b"i"]


@pytest.mark.parametrize("sync", [False, True])
def test_a_journal_keeps_frames_in_files_and_rows_only_in_sqlite(tmp_path: Path,
                                                                  sync: bool) -> None:
    """The row of a chunk holds no frame; the update's file holds it (FULL fsyncs it before
    the rows commit); the verdict removes the file."""
    # Prepare
    journal = Journal(tmp_path / "journal.db", synchronous="FULL" if sync else "NORMAL")
    journal.put_chunk("u1", 0, "e1", b"zero")
    journal.put_chunk("u1", 1, "e1", b"one")
    journal.flush()

    # Execute
    with closing(sqlite3.connect(tmp_path / "journal.db")) as db:
        stored = db.execute("SELECT idx, length(frame), off, len FROM chunks").fetchall()
    frames = list(journal.chunk_frames("u1"))
    journal.record_update(UpdateRow(update_id="u1", round_id="r1", edge_id="e1",
                                    status="rejected", reason="stale_round"))

    # Assert
    assert stored == [(0, 0, 0, 4), (1, 0, 4, 3)]
    assert frames == [("e1", b"zero"), ("e1", b"one")]
    assert not (tmp_path / "chunks" / "u1.frames").exists()
    journal.close()


def test_sweep_removes_files_no_row_names(tmp_path: Path) -> None:
    """A frame written but whose row never committed (the process was killed between) leaves
    a file no row names: the writer's start removes it, and keeps the others."""
    # Prepare
    journal = Journal(tmp_path / "journal.db")
    journal.put_chunk("kept", 0, "e1", b"k")
    journal.flush()
    ChunkFiles(tmp_path / "chunks").append("orphan", b"o")

    # Execute
    swept = journal.sweep_frames()

    # Assert
    assert swept == 1
    assert sorted(p.name for p in (tmp_path / "chunks").iterdir()) == ["kept.frames"]
    assert list(journal.chunk_frames()) == [("e1", b"k")]
    journal.close()


def test_a_missing_or_short_file_is_store_failed(tmp_path: Path) -> None:
    """A row whose frame is not where it says is a storage failure, not a crash."""
    # Prepare
    journal = Journal(tmp_path / "journal.db")
    journal.put_chunk("u1", 0, "e1", b"zero")
    journal.flush()
    (tmp_path / "chunks" / "u1.frames").write_bytes(b"ze")

    # Execute
    with pytest.raises(StoreError) as short:
        list(journal.chunk_frames("u1"))
    (tmp_path / "chunks" / "u1.frames").unlink()
    with pytest.raises(StoreError) as missing:
        list(journal.chunk_frames("u1"))

    # Assert
    assert short.value.reason is missing.value.reason is Reason.STORE_FAILED
    assert "4 bytes at 0 expected, 2 there" in short.value.detail
    journal.close()


def test_an_unwritable_directory_is_store_failed(tmp_path: Path) -> None:
    """The frames directory cannot be made (a file is in its way): put_chunk says so."""
    # Prepare
    journal = Journal(tmp_path / "journal.db")
    (tmp_path / "chunks").write_text("in the way\n")

    # Execute
    with pytest.raises(StoreError) as caught:
        journal.put_chunk("u1", 0, "e1", b"zero")

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert journal.chunk_indices("u1") == []
    journal.close()


def test_an_id_that_is_not_a_blob_id_never_names_a_file(tmp_path: Path) -> None:
    """Ids reach here checked by the wire (P5); anything else is a programming error."""
    # Execute
    with pytest.raises(ValueError, match="not a blob id"):
        ChunkFiles(tmp_path).append("../escape", b"x")


def test_a_journal_from_before_frames_files_still_replays_its_frames(tmp_path: Path) -> None:
    """Rows written with their frame inside (no off/len columns yet) gain the columns and
    replay from the row; new chunks go to the files."""
    # Prepare
    with closing(sqlite3.connect(tmp_path / "journal.db")) as db:
        db.execute("CREATE TABLE chunks (blob_id TEXT NOT NULL, idx INTEGER NOT NULL, "
                   "edge_id TEXT NOT NULL, frame BLOB NOT NULL, PRIMARY KEY (blob_id, idx))")
        db.execute("INSERT INTO chunks VALUES ('u1', 0, 'e1', x'6f6c64')")
        db.commit()

    # Execute
    journal = Journal(tmp_path / "journal.db")
    journal.put_chunk("u1", 1, "e1", b"new")
    frames = list(journal.chunk_frames("u1"))

    # Assert
    assert frames == [("e1", b"old"), ("e1", b"new")]
    journal.close()
