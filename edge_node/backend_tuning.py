"""The edge's training backend: chosen per architecture and batch size by the autotuner
(`shared/learning/backends/autotune.py`) off the message loop, cached in the data directory,
and how long a round waits while it is being measured.

A round that arrives before the edge has any backend waits up to `backend.wait_s` for the
measuring to end (the usual case after the very first start: a few seconds; after a restart
the cache answers at once), then is declined with `backend_tuning`, so the cloud stops waiting
for this edge. The measuring goes on, and a round still open when it ends is trained and sent
anyway: the cloud counts a late update from an edge that declined.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fedstream.edge_node.config import BackendConfig, EdgeConfig
from fedstream.shared.learning.backends import BackendChoice, select_backend
from fedstream.shared.learning.backends.autotune import AutoTuner, TuneParams, TuneState, Tuning
from fedstream.shared.learning.backends.choice_cache import CACHE_FILE, ChoiceCache
from fedstream.shared.protocol.arch import Architecture

# Before any round names its batch size, and with nothing cached for the architecture.
DEFAULT_BATCH = 32
# Inbox topics no broker delivers (MQTT keeps "$" topics for itself): the loop's wake-ups
# from the tuner's thread and from the timer of a round waiting for it.
BACKEND_TUNED = "$fedstream/backend_tuned"
TUNING_WAIT = "$fedstream/tuning_wait"

Wake = Callable[[str], None]


class EdgeBackend:
    """The backend the edge trains with, and the tuning that may replace it.

    Args:
        tuner: Chooses (and caches) backends.
        cfg: The `[backend]` config: names and precision for an untimed choice, `wait_s`.
        wake: Puts an event (`BACKEND_TUNED`, `TUNING_WAIT`) into the loop's inbox; called
            from other threads.
    """

    def __init__(self, *, tuner: AutoTuner, cfg: BackendConfig, wake: Wake) -> None:
        self.tuner, self.cfg, self._wake = tuner, cfg, wake
        self.choice: BackendChoice | None = None
        self._tuning: Tuning | None = None
        self._wait: tuple[str, float] | None = None  # (round id, when it is declined)

    @classmethod
    def of(cls, cfg: EdgeConfig, wake: Wake) -> EdgeBackend:
        """The edge's, with its choices cached in `backend.cache`, by default
        `data_dir/backend-choice.json`."""
        backend = cfg.backend
        params = TuneParams(preference=backend.name, precision=backend.precision,
                            tolerance=backend.tolerance, seed=cfg.seed)
        tuner = AutoTuner(cache=ChoiceCache(backend.cache or cfg.data_dir / CACHE_FILE),
                          params=params)
        return cls(tuner=tuner, cfg=backend, wake=wake)

    @property
    def tuned_batch(self) -> int | None:
        """The batch size the newest tuning is for, None before the first."""
        return None if self._tuning is None else self._tuning.plan.batch_size

    def select(self, arch: Architecture, batch_size: int | None = None) -> None:
        """Choose for `arch` at `batch_size` (None: the batch last tuned for `arch`): at once
        when cached, else measured in the background; until then `choice` stays as it was.
        Nothing happens when the newest tuning is for the same model and batch.

        Raises:
            ConfigError: The `[backend]` config asks for what cannot run here.
        """
        batch = batch_size or self.tuner.batch_hint(arch, DEFAULT_BATCH)
        tuning = self._tuning
        if tuning is not None and (tuning.plan.arch, tuning.plan.batch_size) == (arch, batch):
            return
        self._tuning = self.tuner.start(arch, batch, on_done=lambda: self._wake(BACKEND_TUNED))
        self.take()

    def untimed(self) -> None:
        """A choice without measuring, when there is none yet (for a model the edge cannot
        build, whose rounds it declines anyway): stock torch fp32 unless the config names
        a backend or precision, so IPEX is not imported for nothing."""
        if self.choice is None:
            self.choice = select_backend(
                preference="torch" if self.cfg.name == "auto" else self.cfg.name,
                precision="fp32" if self.cfg.precision == "auto" else self.cfg.precision)

    def take(self) -> bool:
        """Adopt the newest tuning's choice if it is made; True when `choice` changed."""
        tuning = self._tuning
        if tuning is None or tuning.state is not TuneState.READY:
            return False
        choice = tuning.result(0)
        changed, self.choice = choice is not self.choice, choice
        return changed

    def waited_out(self, round_id: str) -> str | None:
        """For a round that would train now but has no backend yet: None while it may wait
        (a timer wakes the loop when it may not), else why it is declined."""
        if self._wait is None or self._wait[0] != round_id:
            self._wait = (round_id, time.monotonic() + self.cfg.wait_s)
            timer = threading.Timer(self.cfg.wait_s, self._wake, args=(TUNING_WAIT,))
            timer.daemon = True
            timer.start()
        if time.monotonic() < self._wait[1] or self._tuning is None:
            return None
        tuning = self._tuning.describe()
        return f"measuring {tuning['tuning']} for {tuning['tuning_s']} s"

    def describe(self) -> dict[str, str | float | bool]:
        """Status fields: the choice with "state" "ready"; "state" "tuning" with what is
        measured and for how long while a tuning runs (beside the earlier choice, which
        trains meanwhile, if there is one); empty before the first model."""
        fields: dict[str, str | float | bool] = dict(self.choice.describe()) if self.choice \
            else {}
        if self._tuning is not None and self._tuning.state is TuneState.TUNING:
            fields.update(self._tuning.describe())
        elif fields:
            fields["state"] = str(TuneState.READY)
        return fields
