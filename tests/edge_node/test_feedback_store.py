"""The edge's error-feedback residual on disk: each crash point between the residual's and
the update's writes restores the residual that matches the updates that exist."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save
from structlog.testing import capture_logs

from fedstream.edge_node.feedback_store import FeedbackStore, Kept
from fedstream.edge_node.outbox import Outbox


def _residual(value: float) -> list[torch.Tensor]:
    return [torch.full((3, 2), value), torch.full((4,), -value)]


def _kept(store: FeedbackStore, outbox: Outbox, update_id: str, seq: int, value: float,
          *, crash_before_put: bool = False, crash_before_commit: bool = False) -> None:
    """The daemon's order of writes for one update, optionally cut by a crash."""
    store.stage(update_id, seq, _residual(value), ("r1", seq))
    if crash_before_put:
        return
    outbox.put(update_id, [b"frame"])
    if crash_before_commit:
        return
    store.commit(seq, _residual(value), ("r1", seq))


def _same(got: list[torch.Tensor] | None, value: float) -> bool:
    return got is not None and all(torch.equal(a, b) for a, b in zip(got, _residual(value),
                                                                     strict=True))


def test_nothing_on_disk_is_sequence_zero_and_no_residual(tmp_path: Path) -> None:
    """A new edge starts with no residual."""
    # Prepare / Execute
    got = FeedbackStore(tmp_path / "outbox").load()

    # Assert
    assert got == Kept()


def test_a_committed_residual_comes_back_after_its_receipt(tmp_path: Path) -> None:
    """Update 1's residual survives the update's receipt (the outbox entry is gone)."""
    # Prepare
    store, outbox = FeedbackStore(tmp_path / "outbox"), Outbox(tmp_path / "outbox")
    _kept(store, outbox, "u1", 1, 0.5)
    store.drop("u1")
    outbox.remove("u1")

    # Execute
    kept = FeedbackStore(tmp_path / "outbox").load()
    seq, residual = kept.seq, kept.residual

    # Assert
    assert seq == 1 and _same(residual, 0.5)
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == ["residual.ef"]


def test_crash_before_the_update_was_kept_restores_the_previous_residual(
        tmp_path: Path) -> None:
    """Update 2 never reached the outbox: its residual is discarded, update 1's stays."""
    # Prepare
    store, outbox = FeedbackStore(tmp_path / "outbox"), Outbox(tmp_path / "outbox")
    _kept(store, outbox, "u1", 1, 0.5)
    _kept(store, outbox, "u2", 2, 0.25, crash_before_put=True)

    # Execute
    kept = FeedbackStore(tmp_path / "outbox").load()
    seq, residual = kept.seq, kept.residual

    # Assert
    assert seq == 1 and _same(residual, 0.5)
    assert not (tmp_path / "outbox" / "u2.ef").exists()


def test_crash_after_the_update_was_kept_restores_its_residual(tmp_path: Path) -> None:
    """Update 2 is in the outbox (it will be re-sent) but `residual.ef` still holds update
    1's: update 2's own copy wins."""
    # Prepare
    store, outbox = FeedbackStore(tmp_path / "outbox"), Outbox(tmp_path / "outbox")
    _kept(store, outbox, "u1", 1, 0.5)
    _kept(store, outbox, "u2", 2, 0.25, crash_before_commit=True)

    # Execute
    kept = FeedbackStore(tmp_path / "outbox").load()
    seq, residual = kept.seq, kept.residual

    # Assert
    assert seq == 2 and _same(residual, 0.25)


def test_receipts_in_any_order_keep_the_newest_residual(tmp_path: Path) -> None:
    """Update 2's receipt before update 1's: the restored residual is still update 2's."""
    # Prepare
    store, outbox = FeedbackStore(tmp_path / "outbox"), Outbox(tmp_path / "outbox")
    _kept(store, outbox, "u1", 1, 0.5)
    _kept(store, outbox, "u2", 2, 0.25)
    store.drop("u2")
    outbox.remove("u2")

    # Execute
    kept = FeedbackStore(tmp_path / "outbox").load()
    seq, residual = kept.seq, kept.residual

    # Assert
    assert seq == 2 and _same(residual, 0.25)


def test_a_lossless_codecs_empty_residual_round_trips(tmp_path: Path) -> None:
    """After an f32 update there is no residual: that, too, is restored (as None)."""
    # Prepare
    store = FeedbackStore(tmp_path / "outbox")
    store.commit(3, None, None)

    # Execute
    got = FeedbackStore(tmp_path / "outbox").load()

    # Assert
    assert got == Kept(seq=3)


def test_an_unreadable_file_is_skipped(tmp_path: Path) -> None:
    """A corrupt `residual.ef` is logged and ignored, not fatal to the edge."""
    # Prepare
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "residual.ef").write_bytes(b"\x00garbage")

    # Execute
    got = FeedbackStore(tmp_path / "outbox").load()

    # Assert
    assert got == Kept()


def test_what_an_update_was_trained_for_comes_back_with_it(tmp_path: Path) -> None:
    """The round and version of the newest kept update come back (so a restarted edge does
    not train that round again), from its own file or from `residual.ef` after its receipt;
    an update that was never kept (a crash before its `.out`) leaves the earlier one."""
    # Prepare
    root = tmp_path / "outbox"
    store, outbox = FeedbackStore(root), Outbox(root)
    _kept(store, outbox, "u1", 1, 0.5)
    in_flight = FeedbackStore(root).load().trained
    store.drop("u1")
    outbox.remove("u1")
    after_receipt = FeedbackStore(root).load().trained
    _kept(store, outbox, "u2", 2, 0.25, crash_before_put=True)

    # Execute
    after_crash = FeedbackStore(root).load()

    # Assert
    assert in_flight == after_receipt == ("r1", 1)
    assert (after_crash.seq, after_crash.trained) == (1, ("r1", 1))


def test_a_residual_file_naming_a_round_without_its_version_is_skipped(tmp_path: Path) -> None:
    """Metadata with `round` but no `version` (a damaged file) is logged and ignored, not a
    KeyError that stops the edge from starting."""
    # Prepare
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "residual.ef").write_bytes(
        save({}, metadata={"seq": "4", "count": "0", "round": "r1"}))

    # Execute
    with capture_logs() as logs:
        got = FeedbackStore(tmp_path / "outbox").load()

    # Assert
    assert got == Kept()
    assert [e["event"] for e in logs] == ["feedback_unreadable"]
