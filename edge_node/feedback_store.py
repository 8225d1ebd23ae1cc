"""The edge's error-feedback residual on disk, kept consistent with its outbox across crashes.

The residual after update n must survive exactly when update n does: restored without the
update, the dropped mass it carries would be lost; restored with a stale residual, the update
would count part of it twice. So each residual is numbered by its update's sequence and written
twice, atomically each time:

1. `<update_id>.ef` next to the outbox, before the update's `<update_id>.out`: an update on
   disk always has its residual;
2. `residual.ef` right after the update is on disk: the residual outlives the update's receipt.

On start the newest consistent one wins: the highest sequence among `residual.ef` and the
`.ef` files whose update is still in the outbox. An `.ef` without its `.out` comes from a crash
between the two writes (the update never existed) and is deleted.

Each file also names the round (or session) and model version its update was trained for, so
an edge restarted mid-round does not train that round again: it resumes the kept update (or
has its receipt already), and a second update would only be refused as a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from fedstream.edge_node.outbox import Outbox
from fedstream.shared.errors import StoreError
from fedstream.shared.files import write_atomic
from fedstream.shared.protocol.codecs.feedback import ErrorFeedback

log = structlog.get_logger(__name__)

Residual = list[torch.Tensor] | None
Trained = tuple[str, int] | None
"""(round or session id, model version) an update was trained for."""
_CURRENT = "residual.ef"


@dataclass(frozen=True, slots=True)
class Kept:
    """What a start restores: the newest consistent residual, its update's sequence number,
    and what that update was trained for."""

    seq: int = 0
    residual: Residual = None
    trained: Trained = None


class FeedbackStore:
    """Residual files in the outbox directory `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def stage(self, update_id: str, seq: int, residual: Residual, trained: Trained) -> None:
        """Keep the residual that follows update `update_id`, before the update is kept."""
        write_atomic(self.root / f"{update_id}.ef", _encode(seq, residual, trained))

    def commit(self, seq: int, residual: Residual, trained: Trained) -> None:
        """Make the residual of update `seq` the current one, once the update is kept."""
        write_atomic(self.root / _CURRENT, _encode(seq, residual, trained))

    def drop(self, update_id: str) -> None:
        """Forget an update's own copy once its receipt arrived (`residual.ef` has it)."""
        (self.root / f"{update_id}.ef").unlink(missing_ok=True)

    def load(self) -> Kept:
        """The newest consistent residual (see `Kept`); `Kept()` when there is none."""
        best = Kept()
        for path in sorted(self.root.glob("*.ef")):
            if path.name != _CURRENT and not path.with_suffix(".out").exists():
                path.unlink()  # a crash before its update was kept: it never existed
                continue
            try:
                found = _decode(path)
            except (OSError, ValueError, KeyError, SafetensorError) as err:
                log.error("feedback_unreadable", path=str(path), detail=str(err))
                continue
            if found.seq > best.seq:
                best = found
        return best


def _encode(seq: int, residual: Residual, trained: Trained) -> bytes:
    tensors = {f"r{i}": t.contiguous() for i, t in enumerate(residual or [])}
    marks = {} if trained is None else {"round": trained[0], "version": str(trained[1])}
    return save(tensors, metadata={"seq": str(seq), "count": str(len(tensors)), **marks})


def _decode(path: Path) -> Kept:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if "seq" not in meta or "count" not in meta:
            raise ValueError("no seq/count metadata")
        residual = [f.get_tensor(f"r{i}") for i in range(int(meta["count"]))]
    # Files from before the round was recorded have none: such an edge may train again.
    trained = (meta["round"], int(meta["version"])) if "round" in meta else None
    return Kept(seq=int(meta["seq"]), residual=residual or None, trained=trained)


def keep_update(feedback: ErrorFeedback, before: Residual, *, store: FeedbackStore,
                outbox: Outbox, update_id: str, seq: int, frames: list[bytes],
                trained: Trained) -> None:
    """Put an update on disk with the residual it leaves, the residual first.

    Args:
        feedback: Holds the residual after this update (what `compress` left).
        before: The residual before this update, restored if the update cannot be kept.
        store: Where the residual is staged.
        outbox: Where the update's frames are kept until its receipt.
        update_id: The update's blob id.
        seq: The update's feedback sequence number.
        frames: The update's chunk frames.
        trained: What the update was trained for.

    Raises:
        StoreError: a write failed; `feedback.residual` is `before` again, since no update
            was kept (a staged residual without its update is dropped on the next start).
    """
    try:
        store.stage(update_id, seq, feedback.residual, trained)
        outbox.put(update_id, frames)
    except StoreError:
        feedback.residual = before
        raise
