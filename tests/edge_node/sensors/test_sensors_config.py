"""The `[sensors]` table: a good one loads from TOML, every impossible combination is one
ConfigError(bad_config) naming the problem, and the model input it implies."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from fedstream.edge_node.sensors.config import LabelMode, ModelIO, SensorsConfig
from fedstream.shared.config import ServiceConfig, load_config
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.series.align import Fill
from fedstream.shared.learning.series.windows import Features
from fedstream.shared.protocol.arch import Architecture, TaskKind

TOML = """
[sensors]
labels = "topic"
label_topic = "home/labels"
classes = 4

[[sensors.channels]]
name = "temp"
topic = "home/+/temp"
format = "bare"
unit = "Cel"

[[sensors.channels]]
name = "hum"
topic = "z2m/kitchen"
format = "json"
field = "humidity"

[sensors.align]
rate_hz = 2.0
fill = "linear"
max_gap_s = 5.0

[sensors.windows]
length = 20
stride = 10

[sensors.store]
max_rows = 5000

[sensors.writer]
queue_capacity = 300
"""


class _Edge(ServiceConfig):
    """A service config with only the table under test (the daemon adds it to EdgeConfig)."""

    sensors: SensorsConfig


def _table(**changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "channels": [{"name": "a", "topic": "s/a", "format": "bare"},
                     {"name": "b", "topic": "s/b", "format": "bare"}],
        "labels": "topic", "label_topic": "s/labels", "classes": 3,
        "align": {"rate_hz": 1.0, "max_gap_s": 2.0}, "windows": {"length": 4, "stride": 2}}
    table.update(changes)
    return {k: v for k, v in table.items() if v is not None}


def _load(tmp_path: Path, table: dict[str, Any]) -> SensorsConfig:
    return load_config(_Edge, None, sensors=table).sensors


def test_a_toml_table_loads_with_its_values_and_the_params_defaults(tmp_path: Path) -> None:
    """The TOML example gives its channels, grid and bounds; unset values are the params'."""
    # Prepare
    path = tmp_path / "edge.toml"
    path.write_text(TOML)

    # Execute
    cfg = load_config(_Edge, path).sensors

    # Assert
    assert cfg.labels is LabelMode.TOPIC and cfg.broker is None
    assert [c.name for c in cfg.channel_values()] == ["temp", "hum"]
    assert cfg.align_params().fill is Fill.LINEAR and cfg.window_params().stride == 10
    assert cfg.store_params().max_rows == 5000 and cfg.store_params().max_age_s == 7 * 86400
    assert cfg.writer.queue_capacity == 300 and cfg.writer_params().batch_size == 2000
    assert str(cfg.label_filter()) == "home/labels"


@pytest.mark.parametrize(("changes", "message"), [
    ({"label_topic": None}, "labels = 'topic' needs label_topic"),
    ({"classes": None}, "needs classes"),
    ({"label_channel": "a"}, "takes no label_channel"),
    ({"labels": "channel", "label_topic": None}, "needs label_channel"),
    ({"labels": "channel", "label_topic": None, "label_channel": "c"},
     "label_channel 'c' is not a channel"),
    ({"labels": "channel", "label_topic": None, "label_channel": "a",
      "channels": [{"name": "a", "topic": "s/a", "format": "bare"}]},
     "at least one other channel"),
    ({"labels": "forecast", "label_topic": None, "classes": None, "horizon": 2},
     "needs targets"),
    ({"labels": "forecast", "label_topic": None, "horizon": 2, "targets": ["a"]},
     "takes no classes"),
    ({"labels": "forecast", "label_topic": None, "classes": None, "horizon": 2,
      "targets": ["a", "x"]}, "target(s) x are not channels"),
    ({"labels": "forecast", "label_topic": None, "classes": None, "horizon": 2,
      "targets": ["a", "a"]}, "targets repeated"),
    ({"channels": [{"name": "a", "topic": "s/a", "format": "bare"},
                   {"name": "a", "topic": "s/b", "format": "bare"}]},
     "channel name(s) repeated: a"),
    ({"channels": [{"name": "a", "topic": "s/a", "format": "json"}]},
     "channel 'a' (json): needs a field path"),
    ({"channels": [{"name": "a", "topic": "s/a", "format": "xml"}]}, "xml"),
    ({"channels": [{"name": "a", "topic": "s/#/x", "format": "bare"}]}, "'#' must be the last"),
    ({"label_topic": "s/a"}, "also the topic of channel(s) a"),
    ({"label_topic": "s/+x"}, "a wildcard must fill a whole level"),
    ({"channels": []}, "at least 1 item"),
    ({"align": {"rate_hz": 0.0, "max_gap_s": 1.0}}, "greater than 0"),
    ({"align": {"rate_hz": 1.0, "max_gap_s": math.nan}}, "max_gap_s"),
    ({"windows": {"length": 4, "stride": 2, "features": "fft"}}, "features"),
    ({"writer": {"queue_capacity": 0}}, "queue_capacity"),
    ({"channels": [{"name": "a", "topic": "s/a", "format": "bare", "colour": "red"}]},
     "colour"),
])
def test_an_impossible_table_is_one_config_error_naming_the_problem(
        tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    """Each bad combination raises ConfigError(bad_config) whose message says what is wrong."""
    # Prepare
    table = _table(**changes)

    # Execute
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, table)

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert message in str(caught.value)
    assert "sensors" in str(caught.value)


def test_raw_windows_need_a_channels_by_length_input_and_summaries_six_per_channel(
        tmp_path: Path) -> None:
    """2 channels of 4 steps: raw (2, 4); summary (12,); 3 classes out either way."""
    # Prepare
    raw = _load(tmp_path, _table())
    summary = _load(tmp_path, _table(windows={"length": 4, "stride": 2,
                                              "features": "summary"}))

    # Execute / Assert
    assert raw.model_io() == ModelIO(input_shape=(2, 4), task=TaskKind.CLASSIFICATION,
                                     outputs=3)
    assert summary.window_params().features is Features.SUMMARY
    assert summary.model_io().input_shape == (12,)


def test_a_label_channel_is_not_an_input_and_forecasting_is_regression(tmp_path: Path) -> None:
    """With label channel b only a is a row; forecasting a and b 3 steps gives 6 values."""
    # Prepare
    by_channel = _load(tmp_path, _table(labels="channel", label_topic=None, label_channel="b"))
    forecast = _load(tmp_path, _table(labels="forecast", label_topic=None, classes=None,
                                      horizon=3, targets=["a", "b"]))

    # Execute / Assert
    assert by_channel.feature_channels() == ["a"]
    assert by_channel.model_io().input_shape == (1, 4)
    assert forecast.model_io() == ModelIO(input_shape=(2, 4), task=TaskKind.REGRESSION,
                                          outputs=6)


def test_a_model_that_does_not_fit_the_windows_is_refused_with_each_difference(
        tmp_path: Path) -> None:
    """A (2, 4) cnn1d for 3 classes fits, so does an MLP on 8 inputs; a (3, 4) regression
    model with 2 outputs is refused for its shape, task and outputs at once."""
    # Prepare
    io = _load(tmp_path, _table()).model_io()
    wrong = Architecture(family="cnn1d", input_shape=(3, 4), task=TaskKind.REGRESSION,
                         outputs=2)

    # Execute
    io.check(Architecture(family="cnn1d", input_shape=(2, 4),
                          task=TaskKind.CLASSIFICATION, outputs=3))
    io.check(Architecture.mlp([8, 16, 3]))
    with pytest.raises(ConfigError) as caught:
        io.check(wrong)

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    for part in ("input shape [3, 4]", "task regression", "2 outputs"):
        assert part in str(caught.value)
