"""Tests for shared/config.py with the cloud and edge configs built on it."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from fedstream.cloud.config import CloudConfig
from fedstream.edge_node.config import EdgeConfig
from fedstream.shared.config import load_config, read_toml
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol.arch import Architecture, TaskKind

_CLOUD_TOML = """\
federation = "lab"
strategy = "fedavg"

[architecture]
family = "gru"
input_shape = [3, 50]
task = "regression"
outputs = 2
params.hidden = 16

[broker]
host = "mq.local"
port = 1884

[rounds]
epochs = 3
quorum = 2
"""


@pytest.fixture(autouse=True)
def _no_fedstream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from an environment without FEDSTREAM_* variables or systemd's
    STATE_DIRECTORY."""
    for name in ("FEDSTREAM_BROKER__PORT", "FEDSTREAM_BROKER__HOST", "FEDSTREAM_FEDERATION",
                 "FEDSTREAM_EDGE_ID", "FEDSTREAM_DATA_DIR", "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)


def _write(tmp_path: Path, text: str, name: str = "fedstream.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_file_loads(tmp_path: Path) -> None:
    """Values in the TOML file land in the typed, frozen model; the rest keep defaults."""
    # Prepare
    path = _write(tmp_path, _CLOUD_TOML)

    # Execute
    cfg = load_config(CloudConfig, path)

    # Assert
    assert cfg.federation == "lab"
    assert cfg.architecture.build() == Architecture(
        family="gru", input_shape=(3, 50), task=TaskKind.REGRESSION, outputs=2,
        params={"hidden": 16})
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.keepalive_s) == ("mq.local", 1884, 30)
    assert (cfg.rounds.epochs, cfg.rounds.quorum, cfg.rounds.lr) == (3, 2, 0.05)
    with pytest.raises(ValueError, match="frozen"):
        cfg.federation = "other"  # type: ignore[misc]


def test_no_file_gives_defaults() -> None:
    """Without a file, every field keeps its default."""
    # Prepare / Execute
    cfg = load_config(CloudConfig, None)

    # Assert
    assert cfg.federation == "default"
    assert cfg.broker.port == 1883
    assert cfg.strategy == "fedavg"


def test_env_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FEDSTREAM_BROKER__PORT beats the file's port and leaves the file's host alone."""
    # Prepare
    path = _write(tmp_path, _CLOUD_TOML)
    monkeypatch.setenv("FEDSTREAM_BROKER__PORT", "1999")

    # Execute
    cfg = load_config(CloudConfig, path)

    # Assert
    assert cfg.broker.port == 1999
    assert cfg.broker.host == "mq.local"
    assert cfg.federation == "lab"


def test_bad_env_value_is_bad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An out-of-range environment override is reported like a bad file value."""
    # Prepare
    path = _write(tmp_path, _CLOUD_TOML)
    monkeypatch.setenv("FEDSTREAM_BROKER__PORT", "0")

    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(CloudConfig, path)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert "broker.port" in info.value.detail


def test_missing_file_is_config_not_found(tmp_path: Path) -> None:
    """A config path that does not exist is config_not_found naming the path."""
    # Prepare
    path = tmp_path / "absent.toml"

    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(CloudConfig, path)

    # Assert
    assert info.value.reason is Reason.CONFIG_NOT_FOUND
    assert info.value.exit_code == 11
    assert str(path) in info.value.detail


@pytest.mark.parametrize(
    "text",
    ["[broker\nport = 1884\n", "federation = \n", "port = 1\nport = 2\n"],
    ids=["unclosed-table", "missing-value", "duplicate-key"],
)
def test_invalid_toml_is_bad_config_naming_the_file(tmp_path: Path, text: str) -> None:
    """A file that is not valid TOML is bad_config, and the message names the file."""
    # Prepare
    path = _write(tmp_path, text, name="broken.toml")

    # Execute
    with pytest.raises(ConfigError) as info:
        read_toml(path)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert str(path) in info.value.detail


def test_unknown_key_and_bad_value_reported_together(tmp_path: Path) -> None:
    """A typo'd key and an out-of-range value both appear, with key paths, in one error."""
    # Prepare
    path = _write(tmp_path, 'federation = "lab"\ncolour = "red"\n[broker]\nport = 70000\n'
                            "[rounds]\nepochz = 3\n")

    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(CloudConfig, path)

    # Assert
    detail = info.value.detail
    assert info.value.reason is Reason.BAD_CONFIG
    assert detail.startswith(f"{path}: ")
    assert "colour" in detail
    assert "broker.port" in detail
    assert "rounds.epochz" in detail


def test_old_layers_key_names_its_replacement(tmp_path: Path) -> None:
    """A config from before architectures (`layers = [...]`) is refused with what to write."""
    # Prepare
    path = _write(tmp_path, "layers = [64, 100, 10]\n")

    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(CloudConfig, path)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert "'layers' was replaced by the [architecture] table" in info.value.detail


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[rounds]\nmomentum = 1.0\n", "rounds.momentum"),
        ("blend_alpha = 0\n", "blend_alpha"),
        ('[architecture]\nfamily = "MLP"\n', "architecture"),
        ("[architecture]\ninput_shape = []\n", "architecture.input_shape"),
        ("[architecture]\noutputs = 0\n", "architecture.outputs"),
        ('[architecture]\ntask = "ranking"\n', "architecture.task"),
        ("[architecture]\nparams.hidden = [1.5, true]\n", "architecture"),
        ("chunk_size = 100\n", "chunk_size"),
        ('[log]\nlevel = "loud"\n', "log.level"),
        ("threads = 0\n", "threads"),
        ('[broker]\nport = "high"\n', "broker.port"),
    ],
)
def test_out_of_range_cloud_values(tmp_path: Path, text: str, key: str) -> None:
    """Each out-of-range or ill-typed cloud value is bad_config naming its key path."""
    # Prepare
    path = _write(tmp_path, text)

    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(CloudConfig, path)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert f"{key}:" in info.value.detail


def test_edge_config_requires_edge_id(tmp_path: Path) -> None:
    """An edge config without edge_id is bad_config naming the field."""
    # Prepare
    path = _write(tmp_path, 'federation = "lab"\n')

    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(EdgeConfig, path)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert "edge_id" in info.value.detail


@pytest.mark.parametrize(
    ("source", "expected"),
    [("file", "e1"), ("override", "e2"), ("env", "e3")],
)
def test_edge_id_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str,
                         expected: str) -> None:
    """edge_id may come from the file, an explicit override or FEDSTREAM_EDGE_ID."""
    # Prepare
    path = _write(tmp_path, 'edge_id = "e1"\n' if source == "file" else "")
    overrides = {"edge_id": "e2"} if source == "override" else {}
    if source == "env":
        monkeypatch.setenv("FEDSTREAM_EDGE_ID", "e3")

    # Execute
    cfg = load_config(EdgeConfig, path, **overrides)

    # Assert
    assert cfg.edge_id == expected
    assert cfg.backend.name == "auto"


@pytest.mark.parametrize("edge_id", ["", "a/b", "e+1", "x" * 65, "e1\n"])
def test_edge_config_rejects_bad_edge_id(edge_id: str) -> None:
    """An edge id that could not be a topic segment is bad_config."""
    # Prepare / Execute
    with pytest.raises(ConfigError) as info:
        load_config(EdgeConfig, None, edge_id=edge_id)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert "edge_id" in info.value.detail


def test_explicit_override_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit override (a CLI flag) wins over a FEDSTREAM_* variable and the file."""
    # Prepare
    path = _write(tmp_path, _CLOUD_TOML)
    monkeypatch.setenv("FEDSTREAM_BROKER__PORT", "1999")

    # Execute
    cfg = load_config(CloudConfig, path, broker={"host": "127.0.0.1", "port": 2000})

    # Assert
    assert cfg.broker.port == 2000


class _Service(NamedTuple):
    """A service config class, the TOML it needs at least, and its systemd unit name."""

    cls: type[CloudConfig | EdgeConfig]
    toml: str
    unit: str


_SERVICES = pytest.mark.parametrize(
    "service",
    [_Service(CloudConfig, "", "fedstream-cloud"),
     _Service(EdgeConfig, 'edge_id = "e1"\n', "fedstream-edge")],
    ids=["cloud", "edge"],
)


@_SERVICES
def test_data_dir_defaults_to_var_lib(tmp_path: Path, service: _Service) -> None:
    """Outside systemd (no STATE_DIRECTORY) the data directory is /var/lib/<unit name>."""
    # Prepare
    path = _write(tmp_path, service.toml)

    # Execute
    cfg = load_config(service.cls, path)

    # Assert
    assert cfg.data_dir == Path("/var/lib") / service.unit


@_SERVICES
@pytest.mark.parametrize(
    ("state", "expected"),
    [("/var/lib/private/svc", "/var/lib/private/svc"), ("/srv/a:/srv/b", "/srv/a")],
    ids=["one", "first-of-list"],
)
def test_data_dir_follows_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          service: _Service, state: str, expected: str) -> None:
    """Under a unit with StateDirectory=, the default is the first entry of $STATE_DIRECTORY."""
    # Prepare
    path = _write(tmp_path, service.toml)
    monkeypatch.setenv("STATE_DIRECTORY", state)

    # Execute
    cfg = load_config(service.cls, path)

    # Assert
    assert cfg.data_dir == Path(expected)


@_SERVICES
@pytest.mark.parametrize("source", ["file", "env"])
def test_explicit_data_dir_beats_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service: _Service, source: str
) -> None:
    """A data_dir in the TOML file, or FEDSTREAM_DATA_DIR over that, wins over systemd's."""
    # Prepare
    path = _write(tmp_path, f'{service.toml}data_dir = "/from/file"\n')
    monkeypatch.setenv("STATE_DIRECTORY", "/from/systemd")
    if source == "env":
        monkeypatch.setenv("FEDSTREAM_DATA_DIR", "/from/env")

    # Execute
    cfg = load_config(service.cls, path)

    # Assert
    assert cfg.data_dir == Path(f"/from/{source}")


@pytest.mark.parametrize("family", ["mlp", "cnn1d", "gru", "transformer"])
def test_an_architecture_without_params_takes_its_familys_defaults(tmp_path: Path,
                                                                   family: str) -> None:
    """Naming only the family and shapes builds the model with the family's own defaults
    (no MLP defaults leak into another family)."""
    # Prepare
    path = _write(tmp_path, f'[architecture]\nfamily = "{family}"\ninput_shape = [6, 20]\n'
                            "outputs = 4\n")

    # Execute
    arch = load_config(CloudConfig, path).architecture.build()
    model = build_model(arch, seed=0)

    # Assert
    assert arch.params == {} and sum(p.numel() for p in model.parameters()) > 0


def test_an_edge_with_both_a_data_set_and_sensors_is_refused(tmp_path: Path) -> None:
    """[source] and [sensors] are two answers to one question: giving both is bad_config."""
    # Prepare
    path = _write(tmp_path, 'edge_id = "e1"\n[source]\nname = "digits"\n[sensors]\n'
                            'labels = "forecast"\nhorizon = 1\ntargets = ["t"]\n'
                            '[[sensors.channels]]\nname = "t"\ntopic = "a/t"\nformat = "bare"\n'
                            "[sensors.align]\nrate_hz = 1.0\nmax_gap_s = 5.0\n"
                            "[sensors.windows]\nlength = 4\nstride = 1\n")

    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(EdgeConfig, path)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG and "not both" in info.value.detail
