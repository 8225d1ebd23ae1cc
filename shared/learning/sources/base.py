"""The data-source contract: the `Dataset` value every source returns and the `SOURCES` table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, NoReturn, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.protocol.arch import Architecture, TaskKind
from fedstream.shared.registry import Registry

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

P = TypeVar("P", bound="DataclassInstance")


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Dataset:
    """A table of samples held in memory: class labels, or real-valued targets.

    Exactly one of `labels` (classification) and `targets` (regression, forecasting) is given.
    The arrays are stored as read-only views, so a `Dataset` cannot be changed after it is
    checked, while the caller's own arrays keep their flags. `eq=False` because element-wise
    array comparison has no single truth value; compare the fields instead.

    Args:
        features: float32 array of shape [N, D], all finite.
        labels: int64 array of shape [N], each in [0, num_classes).
        num_classes: Number of classes the labels are drawn from (at least 1 with labels).
        targets: float32 array of shape [N, H], all finite.

    Raises:
        ConfigError: BAD_DATA when a dtype, shape or value is wrong.
    """

    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64] | None = None
    num_classes: int = 0
    targets: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        features = self.features
        if not isinstance(features, np.ndarray) or features.dtype != np.float32:
            _bad(f"features must be a float32 array, got {_describe_array(features)}")
        if features.ndim != 2:
            _bad(f"features must have shape [N, D], got {features.shape}")
        if features.shape[0] == 0:
            _bad("dataset has no samples")
        if (self.labels is None) == (self.targets is None):
            _bad("give either labels (classification) or targets (regression)")
        labels, targets = self.labels, self.targets
        if labels is not None:
            self._check_labels(labels, features.shape[0])
            object.__setattr__(self, "labels", _read_only(labels))
        elif targets is not None:
            self._check_targets(targets, features.shape[0])
            object.__setattr__(self, "targets", _read_only(targets))
        if not np.isfinite(features).all():
            _bad("features hold NaN or Inf")
        object.__setattr__(self, "features", _read_only(features))

    def _check_labels(self, labels: object, rows: int) -> None:
        k = self.num_classes
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64:
            _bad(f"labels must be an int64 array, got {_describe_array(labels)}")
        if labels.shape != (rows,):
            _bad(f"labels shape {labels.shape} does not match {rows} feature rows")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            _bad(f"num_classes must be an int >= 1, got {k!r}")
        if labels.min() < 0 or labels.max() >= k:
            _bad(f"labels must lie in [0, {k}), got [{labels.min()}, {labels.max()}]")

    def _check_targets(self, targets: object, rows: int) -> None:
        if not isinstance(targets, np.ndarray) or targets.dtype != np.float32:
            _bad(f"targets must be a float32 array, got {_describe_array(targets)}")
        if targets.ndim != 2 or targets.shape[0] != rows or targets.shape[1] == 0:
            _bad(f"targets shape {targets.shape} must be [{rows}, H] with H >= 1")
        if self.num_classes:
            _bad("a regression dataset has no num_classes")
        if not np.isfinite(targets).all():
            _bad("targets hold NaN or Inf")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def task(self) -> TaskKind:
        """Classification when the samples have labels, regression when they have targets."""
        return TaskKind.CLASSIFICATION if self.labels is not None else TaskKind.REGRESSION

    @property
    def y(self) -> npt.NDArray[np.int64] | npt.NDArray[np.float32]:
        """What a model learns to predict: the labels or the targets."""
        y = self.labels if self.labels is not None else self.targets
        assert y is not None  # __post_init__ holds exactly one
        return y

    @property
    def outputs(self) -> int:
        """What a model's output has per sample: classes, or target values."""
        return self.num_classes if self.labels is not None else int(self.y.shape[1])

    def check_fits(self, arch: Architecture) -> None:
        """Raise unless a model of `arch` can learn this data.

        Raises:
            ConfigError: BAD_CONFIG naming what differs: the task, the feature width, the
                classes (more than the model's outputs) or the target width.
        """
        width, where = self.features.shape[1], arch.describe()
        if self.task is not arch.task:
            raise ConfigError(Reason.BAD_CONFIG, f"the data is for {self.task}, the model "
                              f"{where} for {arch.task}")
        if width != arch.features:
            raise ConfigError(Reason.BAD_CONFIG, f"the data has {width} features per sample, "
                              f"the model {where} reads {arch.features}")
        if self.labels is not None and self.num_classes > arch.outputs:
            raise ConfigError(Reason.BAD_CONFIG, f"the data has {self.num_classes} classes, "
                              f"the model {where} {arch.outputs}")
        if self.labels is None and self.outputs != arch.outputs:
            raise ConfigError(Reason.BAD_CONFIG, f"the data has {self.outputs} target values "
                              f"per sample, the model {where} predicts {arch.outputs}")

    def class_counts(self) -> list[int]:
        """Number of samples per class, indexed by label (zeros included; [] for regression)."""
        if self.labels is None:
            return []
        return [int(c) for c in np.bincount(self.labels, minlength=self.num_classes)]

    def take(self, index: npt.NDArray[np.intp] | slice) -> Dataset:
        """The samples at `index` (rows of every array), as a new dataset."""
        if self.labels is not None:
            return Dataset(features=self.features[index], labels=self.labels[index],
                           num_classes=self.num_classes)
        assert self.targets is not None  # __post_init__ holds exactly one
        return Dataset(features=self.features[index], targets=self.targets[index])


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
