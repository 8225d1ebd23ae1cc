"""Where a round's training data comes from: a data set loaded once, or the sensor stream.

A feed gives each round the samples its limits allow (`TrainParams.max_windows`,
`max_age_s`, `min_samples`), or raises `too_little_data` so the edge declines the round
instead of sending a bad update; and it reports what it holds for the edge's status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from fedstream.edge_node.config import EdgeConfig
from fedstream.edge_node.sensors.config import SensorsConfig
from fedstream.edge_node.sensors.dataset import build_dataset
from fedstream.edge_node.sensors.intake import SensorIntake
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.sources import SOURCES, Dataset
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.control import TrainParams

Scalar = int | float | str | bool


class Feed(Protocol):
    """The edge's private training data."""

    def start(self) -> None:
        """Begin collecting (a stream subscribes); a data set has nothing to start."""
        ...

    def stop(self) -> None:
        """Stop collecting and close what is open."""
        ...

    def check(self, arch: Architecture) -> None:
        """Raise ConfigError(BAD_CONFIG) unless a model of `arch` can learn from this data."""
        ...

    def round_data(self, train: TrainParams) -> Dataset:
        """The samples a round trains on, under its limits.

        Raises:
            ConfigError: TOO_LITTLE_DATA when fewer than `train.min_samples` remain.
            StoreError: the sample store cannot be read.
        """
        ...

    def stats(self) -> Mapping[str, Scalar]:
        """What the feed holds and has dropped, as flat scalars for the edge's status."""
        ...


class DatasetFeed:
    """A data set loaded once (`[source]`): the newest samples are the last rows.

    Args:
        data: The loaded data set.
        name: The source's name, for the status.
    """

    def __init__(self, data: Dataset, name: str) -> None:
        self.data, self.name = data, name

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

    def check(self, arch: Architecture) -> None:
        """See `Dataset.check_fits`."""
        self.data.check_fits(arch)

    def round_data(self, train: TrainParams) -> Dataset:
        """The last `max_windows` rows (all with 0); a data set has no age, so `max_age_s`
        keeps every row."""
        data = self.data
        if train.max_windows and train.max_windows < len(data):
            data = data.take(np.arange(len(data) - train.max_windows, len(data)))
        _enough(len(data), train.min_samples, f"source {self.name}")
        return data

    def stats(self) -> Mapping[str, Scalar]:
        """The source and its size."""
        return {"source": self.name, "samples": len(self.data)}


class StreamFeed:
    """The edge's sensor streams (`[sensors]`): readings collected into the sample store and
    cut into windows for each round.

    Args:
        intake: Subscribes to the sensor topics and fills the store.
        cfg: The `[sensors]` table (channels, grid, windows, labels).
    """

    def __init__(self, intake: SensorIntake, cfg: SensorsConfig) -> None:
        self.intake, self.cfg = intake, cfg
        self._trained = 0

    def start(self) -> None:
        """Subscribe (in the background: the federation does not wait for the sensors)."""
        self.intake.start()

    def stop(self) -> None:
        """Store what is queued and close the store."""
        self.intake.stop()

    def check(self, arch: Architecture) -> None:
        """See `ModelIO.check`."""
        self.cfg.model_io().check(arch)

    def round_data(self, train: TrainParams) -> Dataset:
        """The windows the store holds now, under the round's limits; too little data names
        the sensors broker's failure too, when there is one."""
        try:
            data = build_dataset(self.intake.store, self.cfg, max_windows=train.max_windows,
                                 max_age_s=train.max_age_s, min_windows=train.min_samples)
        except ConfigError as err:
            error = self.intake.counts().error
            if err.reason is not Reason.TOO_LITTLE_DATA or not error:
                raise
            raise ConfigError(err.reason, f"{err.detail} (sensors broker: {error})") from err
        self._trained = len(data)
        return data

    def stats(self) -> Mapping[str, Scalar]:
        """Readings and spans stored, windows of the last round, drops by reason."""
        c = self.intake.counts()
        return {"source": "sensors", "readings": c.rows, "spans": c.spans,
                "messages": c.messages, "windows_trained": self._trained,
                "queue_peak": c.queue_peak, "sensors_connected": c.connected,
                "sensors_error": c.error,
                **{f"dropped.{k}": n for k, n in sorted(c.readings_dropped.items())},
                **{f"labels_dropped.{k}": n for k, n in sorted(c.labels_dropped.items())}}


def open_feed(cfg: EdgeConfig) -> Feed:
    """The feed `cfg` names: `[sensors]` when it is there, else `[source]`.

    Raises:
        ConfigError: a bad data source or sensor channel.
        StoreError: the sample store cannot be opened.
    """
    if cfg.sensors is not None:
        intake = SensorIntake.open(cfg.sensors, cfg.edge_id, cfg.data_dir, cfg.broker)
        return StreamFeed(intake, cfg.sensors)
    data = SOURCES.build(cfg.source.name, **cfg.source.params).load()
    return DatasetFeed(data, cfg.source.name)


def _enough(n: int, need: int, what: str) -> None:
    if n < need:
        raise ConfigError(Reason.TOO_LITTLE_DATA, f"{what}: {n} samples, the round needs {need}")
