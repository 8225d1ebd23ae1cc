"""The data-source contract: the `Dataset` value every source returns and the `SOURCES` table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, NoReturn, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.registry import Registry

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

P = TypeVar("P", bound="DataclassInstance")


@dataclass(frozen=True, slots=True, eq=False)
class Dataset:
    """A labelled table of samples held in memory.

    The arrays are stored as read-only views, so a `Dataset` cannot be changed after it is
    checked, while the caller's own arrays keep their flags. `eq=False` because element-wise
    array comparison has no single truth value; compare the fields instead.

    Args:
        features: float32 array of shape [N, D], all finite.
        labels: int64 array of shape [N], each in [0, num_classes).
        num_classes: Number of classes the labels are drawn from (at least 1).

    Raises:
        ConfigError: BAD_DATA when a dtype, shape or value is wrong.
    """

    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    num_classes: int

    def __post_init__(self) -> None:
        features, labels, k = self.features, self.labels, self.num_classes
        if not isinstance(features, np.ndarray) or features.dtype != np.float32:
            _bad(f"features must be a float32 array, got {_describe_array(features)}")
        if features.ndim != 2:
            _bad(f"features must have shape [N, D], got {features.shape}")
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64:
            _bad(f"labels must be an int64 array, got {_describe_array(labels)}")
        if labels.shape != (features.shape[0],):
            _bad(f"labels shape {labels.shape} does not match {features.shape[0]} feature rows")
        if labels.size == 0:
            _bad("dataset has no samples")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            _bad(f"num_classes must be an int >= 1, got {k!r}")
        if labels.min() < 0 or labels.max() >= k:
            _bad(f"labels must lie in [0, {k}), got [{labels.min()}, {labels.max()}]")
        if not np.isfinite(features).all():
            _bad("features hold NaN or Inf")
        object.__setattr__(self, "features", _read_only(features))
        object.__setattr__(self, "labels", _read_only(labels))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> list[int]:
        """Number of samples per class, indexed by label (zeros included)."""
        return [int(c) for c in np.bincount(self.labels, minlength=self.num_classes)]


@runtime_checkable
class Source(Protocol):
    """Something that yields one `Dataset` for training or evaluation."""

    def load(self) -> Dataset:
        """Read the data; the same params give the same arrays on every call.

        Raises:
            ConfigError: BAD_DATA for unreadable data, BAD_CONFIG for impossible params.
        """
        ...

    def describe(self) -> str:
        """One line naming the data and the params, for logs and status messages."""
        ...


SOURCES = Registry[Source]("source")


def build_params(cls: type[P], params: Mapping[str, object]) -> P:
    """Build a `Params` dataclass from config keywords, reporting bad keys as config errors.

    Checking the keys here gives a `ConfigError` naming the known params instead of the
    `TypeError` the dataclass constructor would raise.

    Args:
        cls: The frozen, keyword-only params dataclass.
        params: Keyword params from the config.

    Returns:
        The params object; its own `__post_init__` checks the values.

    Raises:
        ConfigError: BAD_CONFIG for an unknown or missing key, or a bad value.
    """
    all_fields = fields(cls)
    known = [f.name for f in all_fields]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            Reason.BAD_CONFIG,
            f"{cls.__name__}: unknown param(s) {', '.join(unknown)}; known: {', '.join(known)}",
        )
    missing = [
        f.name
        for f in all_fields
        if f.default is MISSING and f.default_factory is MISSING and f.name not in params
    ]
    if missing:
        raise ConfigError(
            Reason.BAD_CONFIG, f"{cls.__name__}: missing param(s) {', '.join(missing)}"
        )
    return cls(**params)


def _read_only(array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    view = array.view()
    view.flags.writeable = False
    return view


def _describe_array(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array"
    return type(value).__name__


def _bad(detail: str) -> NoReturn:
    raise ConfigError(Reason.BAD_DATA, f"dataset: {detail}")
