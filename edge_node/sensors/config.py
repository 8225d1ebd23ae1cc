"""The `[sensors]` table: where readings come from, how they become windows, which labels apply.

Every impossible combination (a label channel that is not a channel, forecast targets that are
none, a label topic missing or given without topic labels, channel names repeated, a channel
its format cannot read) is a `ValueError` from a validator, so `load_config` reports it as one
`ConfigError(BAD_CONFIG)` with its key path, beside any other bad key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from fedstream.edge_node.sensors.channels import build_router
from fedstream.edge_node.sensors.intake_queue import WriterParams
from fedstream.edge_node.sensors.reading import Channel
from fedstream.edge_node.sensors.store import StoreParams, Synchronous
from fedstream.shared.config import BrokerConfig, Section
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.series.align import AlignParams, Fill
from fedstream.shared.learning.series.windows import SUMMARY, Features, WindowParams
from fedstream.shared.protocol.arch import Architecture, TaskKind
from fedstream.shared.protocol.topics import Topic

# Defaults are the params classes' own, written once there.
_STORE, _WRITER = StoreParams(), WriterParams()


class LabelMode(StrEnum):
    """Where a window's label comes from."""

    TOPIC = "topic"  # spans {"label": k, "from": t0, "to": t1} on `label_topic`
    CHANNEL = "channel"  # a channel whose value is the class
    FORECAST = "forecast"  # none: the next `horizon` steps of `targets` (regression)



class AlignConfig(Section):
    """`[sensors.align]`: the grid every channel is put on (see `AlignParams`)."""

    rate_hz: float = Field(gt=0, allow_inf_nan=False)
    fill: Fill = Fill.HOLD
    max_gap_s: float = Field(gt=0, description="inf disables the gap check")


class WindowConfig(Section):
    """`[sensors.windows]`: window length and stride in grid steps, and what a model gets."""

    length: int = Field(ge=1)
    stride: int = Field(ge=1)
    features: Features = Features.RAW


class StoreConfig(Section):
    """`[sensors.store]`: bounds of the sample store on disk (see `StoreParams`)."""

    max_rows: int = Field(default=_STORE.max_rows, ge=1)
    max_age_s: float = Field(default=_STORE.max_age_s, gt=0)
    max_spans: int = Field(default=_STORE.max_spans, ge=1)
    synchronous: Synchronous = _STORE.synchronous


class WriterConfig(Section):
    """`[sensors.writer]`: the queue between paho and the store, and the store writer."""

    queue_capacity: int = Field(default=100_000, ge=1, description="readings, not messages")
    batch_size: int = Field(default=_WRITER.batch_size, ge=1)
    drain_timeout_s: float = Field(default=_WRITER.drain_timeout_s, gt=0)
    prune_every_s: float = Field(default=_WRITER.prune_every_s, ge=0)
    linger_s: float = Field(default=0.02, ge=0, le=1,
                            description="wait this long for a batch to fill (see intake.py)")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelIO:
    """What a model trained on these windows must take and give.

    Args:
        input_shape: `(channels, length)` for raw windows, `(6 * channels,)` for summaries.
        task: Classification (topic or channel labels) or regression (forecasting).
        outputs: Classes, or `len(targets) * horizon` predicted values.
    """

    input_shape: tuple[int, ...]
    task: TaskKind
    outputs: int

    def check(self, arch: Architecture) -> None:
        """Refuse a model that cannot learn from these windows.

        A 1-D input shape of the same size also fits raw windows: the feature row is flat
        and an MLP reads it as it is (`shared/protocol/arch.py`).

        Raises:
            ConfigError: BAD_CONFIG naming each difference.
        """
        problems = []
        fits = arch.input_shape == self.input_shape or (
            len(arch.input_shape) == 1 and arch.features == math.prod(self.input_shape))
        if not fits:
            problems.append(f"input shape {list(arch.input_shape)} (the sensors give "
                            f"{list(self.input_shape)})")
        if arch.task is not self.task:
            problems.append(f"task {arch.task} (the labels make it {self.task})")
        if arch.outputs != self.outputs:
            problems.append(f"{arch.outputs} outputs (the labels need {self.outputs})")
        if problems:
            raise ConfigError(Reason.BAD_CONFIG, f"model {arch.describe()} does not fit the "
                                                 f"[sensors] data: {'; '.join(problems)}")


class SensorsConfig(Section):
    """`[sensors]`: the edge's own sensor streams as training data.

    `broker` None means the federation's `[broker]`. `formats` holds keyword params per
    payload format (`{json = {naive_time_utc = true}}`). `label_topic` may be a filter
    (`home/labels/#`): a labeller that publishes each span retained on its own sub-topic
    has its spans survive an edge that was away (the intake's session is clean).
    """

    broker: BrokerConfig | None = None
    # Each `[[sensors.channels]]` table holds the fields of `Channel`, which checks them.
    channels: list[Channel] = Field(min_length=1)
    formats: dict[str, dict[str, Any]] = Field(default_factory=dict)
    labels: LabelMode
    label_topic: str | None = None
    label_channel: str | None = None
    label_hold_s: float = Field(default=math.inf, gt=0,
                                description="a label channel's value holds this long; "
                                            "default until the next value")
    classes: int | None = Field(default=None, ge=2, le=1 << 20)
    horizon: int | None = Field(default=None, ge=1)
    targets: list[str] = Field(default_factory=list)
    align: AlignConfig
    windows: WindowConfig
    store: StoreConfig = StoreConfig()
    writer: WriterConfig = WriterConfig()

    @model_validator(mode="after")
    def _consistent(self) -> SensorsConfig:
        names = [c.name for c in self.channels]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"channel name(s) repeated: {', '.join(repeated)}")
        # Channel, topic and format checks raise ConfigError; pydantic reports ValueErrors.
        try:
            self._check_labels(names)
            build_router(self.channel_values(), format_params=self.formats)
        except ConfigError as err:
            raise ValueError(err.detail) from err
        # The params classes check what the field constraints cannot.
        self.align_params()
        self.window_params()
        self.store_params()
        self.writer_params()
        return self

    def _check_labels(self, names: list[str]) -> None:
        mode = self.labels
        given = {"label_topic": self.label_topic is not None,
                 "label_channel": self.label_channel is not None,
                 "classes": self.classes is not None, "horizon": self.horizon is not None,
                 "targets": bool(self.targets)}
        needed = {LabelMode.TOPIC: ("label_topic", "classes"),
                  LabelMode.CHANNEL: ("label_channel", "classes"),
                  LabelMode.FORECAST: ("horizon", "targets")}[mode]
        if missing := [k for k in needed if not given[k]]:
            raise ValueError(f"labels = {mode.value!r} needs {' and '.join(missing)}")
        if stray := [k for k, v in given.items() if v and k not in needed]:
            raise ValueError(f"labels = {mode.value!r} takes no {' or '.join(stray)}")
        if self.label_topic is not None:
            Channel(name="label_topic", topic=self.label_topic, format="json")  # filter rules
            if clash := [c.name for c in self.channels if c.topic == self.label_topic]:
                raise ValueError(f"label_topic {self.label_topic!r} is also the topic of "
                                 f"channel(s) {', '.join(clash)}")
        if self.label_channel is not None:
            if self.label_channel not in names:
                raise ValueError(f"label_channel {self.label_channel!r} is not a channel; "
                                 f"channels: {', '.join(names)}")
            if len(names) < 2:
                raise ValueError("a label channel needs at least one other channel as input")
        if self.targets:
            if unknown := [t for t in self.targets if t not in names]:
                raise ValueError(f"target(s) {', '.join(unknown)} are not channels; "
                                 f"channels: {', '.join(names)}")
            if len(set(self.targets)) != len(self.targets):
                raise ValueError(f"targets repeated: {self.targets}")

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, tables: Any) -> Any:
        if not isinstance(tables, list):
            return tables  # pydantic names the wrong type
        try:
            return [t if isinstance(t, Channel) else Channel(**t) for t in tables]
        except TypeError as err:  # an unknown or missing key
            raise ValueError(f"a channel table: {err}") from err
        except ConfigError as err:
            raise ValueError(err.detail) from err

    def channel_values(self) -> list[Channel]:
        """Every configured channel, in config order."""
        return list(self.channels)

    def feature_channels(self) -> list[str]:
        """The channels a window holds as its rows: all but the label channel."""
        return [c.name for c in self.channels if c.name != self.label_channel]

    def label_filter(self) -> Topic | None:
        """The label topic filter, for topic labels."""
        return Topic(self.label_topic) if self.label_topic is not None else None

    def align_params(self) -> AlignParams:
        """The grid of the feature channels."""
        a = self.align
        return AlignParams(rate_hz=a.rate_hz, fill=a.fill, max_gap_s=a.max_gap_s)

    def label_align_params(self) -> AlignParams:
        """The label channel's own grid: hold-last, so no class is invented between two."""
        return AlignParams(rate_hz=self.align.rate_hz, fill=Fill.HOLD,
                           max_gap_s=self.label_hold_s)

    def window_params(self) -> WindowParams:
        """Window length, stride and features."""
        w = self.windows
        return WindowParams(length=w.length, stride=w.stride, features=w.features)

    def store_params(self) -> StoreParams:
        """Bounds of the sample store."""
        s = self.store
        return StoreParams(max_rows=s.max_rows, max_age_s=s.max_age_s, max_spans=s.max_spans,
                           synchronous=s.synchronous)

    def writer_params(self) -> WriterParams:
        """Batching and pruning of the store writer."""
        w = self.writer
        return WriterParams(batch_size=w.batch_size, drain_timeout_s=w.drain_timeout_s,
                            prune_every_s=w.prune_every_s)

    def model_io(self) -> ModelIO:
        """The input shape, task and outputs a model needs for these windows."""
        rows = len(self.feature_channels())
        shape = ((rows, self.windows.length) if self.windows.features is Features.RAW
                 else (len(SUMMARY) * rows,))
        if self.labels is LabelMode.FORECAST:
            assert self.horizon is not None  # checked by the validator
            return ModelIO(input_shape=shape, task=TaskKind.REGRESSION,
                           outputs=len(self.targets) * self.horizon)
        assert self.classes is not None
        return ModelIO(input_shape=shape, task=TaskKind.CLASSIFICATION, outputs=self.classes)
