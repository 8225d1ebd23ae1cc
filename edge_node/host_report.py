"""What a host of simulated edges reports when it stops (`edge_node/host.py`), and their ids,
in a module of their own so that the sim reading them does not load torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HostReport:
    """What a host's edges did, for the sim's exactly-once check.

    Args:
        edges: Edges the host ran.
        sent: Updates its edges made and sent (re-sends of one are not counted again).
        samples: Samples those updates were trained on, summed.
        accepted: Receipts "accepted" the edges took (one per update, whatever the re-sends).
        duplicates: Receipts "rejected" as duplicate_update: an edge that trained a round
            twice (it should not: it keeps what it trained for across restarts).
        rejected: Receipts rejected for any other reason.
        unanswered: Updates still in outboxes, without a receipt, at the end.
        failed: Edges that stopped with an error (logged as `edge_failed`).
    """

    edges: int
    sent: int
    samples: int
    accepted: int
    duplicates: int
    rejected: int
    unanswered: int
    failed: int


def sim_edge_id(index: int) -> str:
    """The id of the simulated edge `index`: `sim-00042`."""
    return f"sim-{index:05d}"
