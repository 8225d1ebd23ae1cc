"""Tests for model-family plug-ins: real `fedstream.models` entry points found on sys.path."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from structlog.testing import capture_logs

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.models import MODELS, build_model, load_plugins
from fedstream.shared.protocol.arch import Architecture, TaskKind

MODULE_PREFIX = "fedstream_test_plugin_"  # as tests/conftest.py names them
Install = Callable[[Path, str, str], None]

GOOD = """
    import math
    from torch import nn

    def build(*, input_shape, outputs, width=4):
        return nn.Sequential(nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                             nn.Linear(width, outputs))
"""


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`tmp_path` on sys.path with a fresh plug-in scan; MODELS and sys.modules put back after."""
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.setattr(MODELS, "_factories", dict(MODELS._factories))
    monkeypatch.setattr(MODELS, "_summaries", dict(MODELS._summaries))
    load_plugins.cache_clear()
    yield tmp_path
    load_plugins.cache_clear()  # the next scan runs without tmp_path, against the old table
    for module in [m for m in sys.modules if m.startswith(MODULE_PREFIX)]:
        del sys.modules[module]


def _arch(family: str, **params: int) -> Architecture:
    return Architecture(family=family, input_shape=(6, 5), task=TaskKind.CLASSIFICATION,
                        outputs=3, params=params)


def test_entry_point_family_builds_and_leaves_no_trace(install_plugin: Install, plugin_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A plug-in's family builds like a built-in one; undoing the fixture unregisters it."""
    # Prepare
    install_plugin(plugin_dir, "myfamily", GOOD)

    # Execute
    model = build_model(_arch("myfamily", width=7), seed=0)
    loaded = load_plugins()
    summary = MODELS.summary("myfamily")
    monkeypatch.undo()
    load_plugins.cache_clear()
    rescanned = load_plugins()

    # Assert
    assert loaded == {"myfamily": ""}
    assert model(torch.zeros(2, 30)).shape == (2, 3)
    assert model.state_dict()["0.weight"].shape == (7, 30)
    assert summary == f"plug-in {MODULE_PREFIX}myfamily:build"
    assert "myfamily" not in MODELS.names()
    assert "myfamily" not in rescanned


def test_plugin_params_are_checked_like_builtin_ones(install_plugin: Install,
                                                     plugin_dir: Path) -> None:
    """A parameter the plug-in's factory does not take is bad_config listing the ones it does."""
    # Prepare
    install_plugin(plugin_dir, "myfamily", GOOD)

    # Execute
    with pytest.raises(ConfigError) as caught:
        build_model(_arch("myfamily", depth=2))

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert "input_shape, outputs, width" in caught.value.detail


def test_plugin_that_fails_to_import_is_unknown_name(install_plugin: Install,
                                                     plugin_dir: Path) -> None:
    """A plug-in raising on import is unknown_name naming the error; built-ins still build."""
    # Prepare
    install_plugin(plugin_dir, "broken", "raise RuntimeError('sensor driver missing')\n")

    # Execute
    with capture_logs() as logs, pytest.raises(ConfigError) as caught:
        build_model(_arch("broken"))
    builtin = build_model(_arch("mlp"))

    # Assert
    assert caught.value.reason is Reason.UNKNOWN_NAME
    assert "'broken' failed to load: RuntimeError: sensor driver missing" in caught.value.detail
    assert [e["event"] for e in logs] == ["model_plugin_failed"]
    assert logs[0]["name"] == "broken"
    assert isinstance(builtin, torch.nn.Module)


@pytest.mark.parametrize(("source", "says"), [
    ("from torch import nn\ndef build(*, input_shape, outputs):\n"
     "    return nn.Linear(30, outputs + 1)\n", "output (2, 4), expected (2, 3)"),
    ("def build(*, input_shape, outputs):\n    return object()\n",
     "built a object, not a torch.nn.Module"),
    ("from torch import nn\ndef build(*, input_shape, outputs):\n"
     "    return nn.Linear(30, outputs).double()\n", "are not float32"),
    ("from torch import nn\ndef build(*, input_shape, outputs):\n"
     "    return nn.Linear(31, outputs)\n", "forward pass on [2, 30] failed"),
], ids=["wrong_shape", "not_a_module", "float64", "forward_fails"])
def test_plugin_building_a_misfit_is_bad_config(install_plugin: Install, plugin_dir: Path,
                                                source: str, says: str) -> None:
    """A plug-in whose module is not a float32 `[N, features] -> [N, outputs]` map is bad_config."""
    # Prepare
    install_plugin(plugin_dir, "misfit", source)

    # Execute
    with pytest.raises(ConfigError) as caught:
        build_model(_arch("misfit"))

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert says in caught.value.detail
