"""Intel Extension for PyTorch: fused CPU kernels and bf16 weight handling, when it can load."""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager
from importlib import metadata
from types import ModuleType
from typing import ClassVar

import torch

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.backends.base import (
    BACKENDS,
    Precision,
    autocast_for,
    check_precision,
)

_DIST = "intel-extension-for-pytorch"
# IPEX 2.8 logs these through its own "IPEX" logger, not `warnings`: "'fuse_update_step' will
# be deprecated in a future release of Intel® Extension for PyTorch*." on every `optimize` with
# an optimizer, the same for 'split_master_weight_for_bf16' in bf16, and "Conv1d channels last
# support will be deprecated in Intel® Extension for PyTorch* 2.9." per Conv1d layer. Nothing a
# caller can act on, and dozens of lines per run in a service's log.
_DEPRECATED = re.compile(r"will be deprecated in (a future release of )?Intel® Extension for "
                         r"PyTorch\*")
# The Conv1d notice comes from its own module's logger, the others from "IPEX".
_LOGGERS = ("IPEX", "intel_extension_for_pytorch.nn.utils._weight_prepack")
# And for a model with Conv1d layers, real FutureWarnings from `optimize` itself:
# "`ipex.utils.to_channels_last_1d(args...)` is deprecated." and the same for
# `tensor_to_channels_last_1d`.
_DEPRECATED_UTILS = r"`ipex\.utils\.\w*channels_last_1d\(args\.\.\.\)` is deprecated"


class _DropDeprecations(logging.Filter):
    """Drops IPEX's deprecation notices, lets every other record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _DEPRECATED.search(record.getMessage())


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """Around an `ipex.optimize` call: its deprecation notices are dropped where they are
    raised, the log records by a filter on IPEX's logger (`warnings` never sees them), the
    FutureWarnings by a filter matching their message. `catch_warnings` is process-wide: a
    second thread optimizing at the same moment can at worst leave this one filter
    installed, which hides nothing else."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    quiet = _DropDeprecations()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DEPRECATED_UTILS, category=FutureWarning)
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def _minor(version: str) -> tuple[str, ...]:
    """Major and minor of a version string, ignoring any local tag such as "+cpu"."""
    return tuple(version.split("+", 1)[0].split(".")[:2])


def check_versions(ipex_version: str | None, torch_version: str) -> tuple[bool, str]:
    """Decide whether an IPEX release can load next to a torch release.

    Args:
        ipex_version: Installed IPEX version, or None when it is not installed.
        torch_version: `torch.__version__`.

    Returns:
        (usable, reason); the reason is meant for logs and status messages.
    """
    torch_base = torch_version.split("+", 1)[0]
    if ipex_version is None:
        return False, f"{_DIST} not installed"
    if _minor(ipex_version) != _minor(torch_version):
        return False, f"ipex {ipex_version} does not match torch {torch_base}"
    return True, f"ipex {ipex_version} matches torch {torch_base}"


def ipex_version() -> str | None:
    """The installed IPEX version from package metadata (never by importing it), or None."""
    try:
        return metadata.version(_DIST)
    except metadata.PackageNotFoundError:
        return None


def ipex_status() -> tuple[bool, str]:
    """Whether IPEX can be imported safely here, without importing it.

    IPEX built for another torch minor prints an error and exits the process on import, so
    the versions are compared from package metadata before anything imports it.

    Returns:
        (usable, reason), e.g. (False, "ipex 2.8.0 does not match torch 2.13.0").
    """
    return check_versions(ipex_version(), torch.__version__)


class IpexBackend:
    """Trains through `ipex.optimize`; bf16 keeps fp32 master weights inside the optimizer.

    Args:
        precision: "fp32" or "bf16".
        ipex: The imported `intel_extension_for_pytorch` module.
    """

    name: ClassVar[str] = "ipex"

    def __init__(self, *, precision: Precision, ipex: ModuleType) -> None:
        self.precision: Precision = precision
        self._ipex = ipex

    def _dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def prepare_training(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Return IPEX-optimized copies of the model and optimizer, in train mode."""
        with _quiet_deprecations():
            optimized = self._ipex.optimize(model.train(), optimizer=optimizer,
                                            dtype=self._dtype())
        new_model, new_optimizer = optimized
        return new_model, new_optimizer

    def prepare_inference(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return an IPEX-optimized eval-mode copy without grads.

        The copy leaves the caller's training model untouched for the next round.
        """
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        with _quiet_deprecations():
            result: torch.nn.Module = self._ipex.optimize(frozen, dtype=self._dtype(),
                                                          inplace=True)
        return result

    def autocast(self) -> AbstractContextManager[object]:
        """bf16 autocast for "bf16", a no-op for "fp32"."""
        return autocast_for(self.precision)


@BACKENDS.add("ipex", "Intel Extension for PyTorch; needs its own torch minor version")
def build_ipex(*, precision: str = "fp32") -> IpexBackend:
    """Build the IPEX backend, importing IPEX only after the version check passes.

    Args:
        precision: "fp32" or "bf16".

    Raises:
        ConfigError: BACKEND_UNAVAILABLE when IPEX is missing, mismatched or fails to import;
            BAD_CONFIG for an unknown precision.
    """
    checked = check_precision(precision)
    usable, reason = ipex_status()
    if not usable:
        raise ConfigError(Reason.BACKEND_UNAVAILABLE, reason)
    # IPEX's import brings in torch._inductor, which starts a pool of compile workers: a
    # child process with a torch of its own (585 MiB resident, measured) that nothing here
    # uses (there is no torch.compile), counted against the unit's MemoryMax. With one
    # compile thread inductor compiles in-process and starts no pool.
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    try:
        module = importlib.import_module("intel_extension_for_pytorch")
    except (ImportError, AttributeError, OSError) as err:
        # A matching version can still fail to load (missing shared library, broken wheel).
        raise ConfigError(Reason.BACKEND_UNAVAILABLE, f"import failed: {err}") from err
    return IpexBackend(precision=checked, ipex=module)
