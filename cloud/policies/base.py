"""The contract between the coordinator and its round policies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from fedstream.cloud.config import CloudConfig
from fedstream.cloud.model_keeper import ModelKeeper
from fedstream.cloud.store import CloudStore
from fedstream.cloud.versions import ModelVersion
from fedstream.shared.protocol._fields import Scalar
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.control import EdgeStatus, RoundState, TrainParams


@dataclass(frozen=True, slots=True, kw_only=True)
class Opening:
    """What every mode's opening shares, checked by the coordinator: the id, the operator's
    request, and the training and codec settings resolved against the config."""

    round_id: str
    request: RoundStart
    train: TrainParams
    codec: str
    codec_params: Mapping[str, Scalar]


class RoundHost(Protocol):
    """What a policy may see and do: the coordinator's stores, model and round, and the two
    ways to change the round (save and announce it; and so, finishing it, log it)."""

    cfg: CloudConfig
    store: CloudStore
    keeper: ModelKeeper
    edges: dict[str, EdgeStatus]
    counted: set[tuple[str, int]]

    @property
    def round(self) -> RoundState | None:
        """The latest round."""

    @property
    def current(self) -> ModelVersion:
        """The served model."""

    def set_round(self, state: RoundState) -> None:
        """Save a round state, then announce it."""

    def announce(self, state: RoundState) -> None:
        """Announce a round state that is saved already."""

    def finish(self, state: RoundState) -> None:
        """Save and announce a terminal round state, and log the round's canonical line."""


class RoundPolicy(Protocol):
    """One way of running rounds. Each call acts on the host's open round of this mode."""

    def open(self, now: float, opening: Opening) -> RoundState:
        """Open a round or session and make it the host's round.

        Raises:
            FedstreamError: no_edges, or bad_config for this mode's settings.
        """

    def on_counted(self, now: float) -> None:
        """An accepted update was just counted in the open round."""

    def tick(self, now: float) -> None:
        """Close what is due (every update in, or the deadline passed)."""

    def stop(self, now: float) -> None:
        """End the open round now, on the operator's word."""

    def resume(self, now: float, model_bytes: int) -> None:
        """Pick the open round up after a restart (or a failure half-way), from the journal."""
