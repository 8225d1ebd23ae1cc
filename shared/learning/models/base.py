"""The table of model families and the one way to build a model from its architecture.

A family is a factory `(input_shape, outputs, **params) -> nn.Module`; the module takes a
batch of flat feature rows `[N, prod(input_shape)]` and returns `[N, outputs]`. Families ship
in this package; a user's own join through the `fedstream.models` entry-point group and pass
the same checks.
"""

from __future__ import annotations

import functools
import math
from importlib.metadata import entry_points

import structlog
import torch
from torch import nn

from fedstream.shared.errors import ConfigError, FedstreamError, Reason
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.registry import Registry

ENTRY_POINTS = "fedstream.models"
MODELS = Registry[nn.Module]("model family")
log = structlog.get_logger("fedstream.models")


class Rows(nn.Module):
    """Reads flat feature rows as `[N, *shape]` (the first layer of the sequence families)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, prod(shape)] -> [N, *shape]`."""
        return x.reshape(x.shape[0], *self.shape)


@functools.cache
def load_plugins() -> dict[str, str]:
    """Register the families of the `fedstream.models` entry points, once per process
    (`load_plugins.cache_clear()` makes the next call look again).

    Returns:
        Each entry point's name, with "" when it loaded or why it did not.
    """
    plugins: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINTS):
        if ep.name in MODELS.names():
            if MODELS.summary(ep.name) != f"plug-in {ep.value}":  # not an earlier look's
                log.warning("model_plugin_shadowed", name=ep.name, value=ep.value)
            continue
        try:
            MODELS.add(ep.name, f"plug-in {ep.value}")(ep.load())
            plugins[ep.name] = ""
        except Exception as err:  # a broken plug-in must not take the others down
            plugins[ep.name] = f"{type(err).__name__}: {err}"
            log.warning("model_plugin_failed", name=ep.name, detail=plugins[ep.name])
    return plugins


def build_model(arch: Architecture, *, seed: int | None = None) -> nn.Module:
    """Build the model `arch` describes and check it fits.

    Args:
        arch: Family, parameters, input shape and outputs (from config or manifest).
        seed: Seeds the initial weights, so every process builds the same model.

    Raises:
        ConfigError: unknown_name for an unknown family (listing the known ones, and a
            plug-in that failed to load), bad_config for parameters the family refuses or a
            module that does not map `[N, features]` to float32 `[N, outputs]`.
    """
    broken = load_plugins().get(arch.family)
    if broken:
        raise ConfigError(Reason.UNKNOWN_NAME,
                          f"model family {arch.family!r} failed to load: {broken}")
    rng = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = MODELS.build(arch.family, input_shape=arch.input_shape, outputs=arch.outputs,
                             **arch.params)
    except FedstreamError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(Reason.BAD_CONFIG, f"{arch.describe()}: {err}") from err
    finally:
        torch.random.set_rng_state(rng)
    _check(model, arch)
    return model


def _check(model: object, arch: Architecture) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigError(Reason.BAD_CONFIG, f"model family {arch.family!r} built a "
                          f"{type(model).__name__}, not a torch.nn.Module")
    wrong = [k for k, v in model.state_dict().items() if v.dtype != torch.float32]
    if wrong:
        raise ConfigError(Reason.BAD_CONFIG, f"{arch.describe()}: tensors {wrong[:3]} are not "
                          "float32")
    if not model.state_dict():
        raise ConfigError(Reason.BAD_CONFIG, f"{arch.describe()}: the model has no tensors")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, math.prod(arch.input_shape)))
    except Exception as err:  # a user's module may raise anything on a wrong shape
        raise ConfigError(Reason.BAD_CONFIG, f"{arch.describe()}: forward pass on "
                          f"[2, {arch.features}] failed: {err}") from err
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, arch.outputs):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(Reason.BAD_CONFIG, f"{arch.describe()}: output {shape}, expected "
                          f"(2, {arch.outputs})")
