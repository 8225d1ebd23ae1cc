"""The architecture a model is built from, as it travels in the manifest (pure).

Both sides build the model from this value through one table of model families
(`shared/learning/models`), so an edge never needs layer sizes in its own config. The
features of a sample are always a flat row of `prod(input_shape)` floats; a family reads that
row as the shape it wants (`[channels, steps]` for the sequence models).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn, Self

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol._fields import Wire, req, req_map, req_range

FAMILY_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
MAX_DIMS = 3
MAX_SIZE = 1 << 20
MAX_PARAMS = 32
# A parameter is a scalar or a short list of numbers (hidden sizes, kernel widths).
Param = int | float | str | bool | tuple[int | float, ...]


class TaskKind(StrEnum):
    """What a model predicts: a class per sample, or real values per sample."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


@dataclass(frozen=True, slots=True, kw_only=True)
class Architecture:
    """A model family, its parameters, what goes in and what comes out.

    Attributes:
        family: A name in the model-family table (`mlp`, `cnn1d`, `gru`, `transformer`, or a
            plug-in's).
        input_shape: How a sample's flat feature row is read, e.g. `(64,)` or `(6, 20)`.
        task: Classification (outputs = classes) or regression (outputs = values).
        outputs: Number of classes, or of predicted values.
        params: The family's own parameters (hidden sizes, kernel width, ...).

    Raises:
        ProtocolError: bad_frame for a name, shape or parameter that is out of bounds.
    """

    family: str
    input_shape: tuple[int, ...]
    task: TaskKind
    outputs: int
    params: Mapping[str, Param] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not FAMILY_RE.match(self.family):
            _bad(f"family {self.family!r} is not a lowercase name")
        shape = self.input_shape
        if not (isinstance(shape, tuple) and 1 <= len(shape) <= MAX_DIMS
                and all(type(n) is int and 0 < n <= MAX_SIZE for n in shape)
                and math.prod(shape) <= MAX_SIZE):
            _bad(f"input shape {shape!r} must be 1-{MAX_DIMS} positive sizes")
        if type(self.outputs) is not int or not 0 < self.outputs <= MAX_SIZE:
            _bad(f"outputs {self.outputs!r} must be a positive int")
        object.__setattr__(self, "task", TaskKind(self.task))
        object.__setattr__(self, "params", _params(self.params))

    @property
    def features(self) -> int:
        """Length of the flat feature row a sample has."""
        return math.prod(self.input_shape)

    def describe(self) -> str:
        """One line for logs: `cnn1d(6x20 -> 4 classes; channels=16, kernel=5)`."""
        shape = "x".join(map(str, self.input_shape))
        out = (f"{self.outputs} classes" if self.task is TaskKind.CLASSIFICATION
               else f"{self.outputs} values")
        params = ", ".join(f"{k}={_show(v)}" for k, v in self.params.items())
        return f"{self.family}({shape} -> {out}{'; ' + params if params else ''})"

    def to_wire(self) -> Wire:
        """Short stable keys; list parameters travel as msgpack arrays."""
        return {"fam": self.family, "in": list(self.input_shape), "task": str(self.task),
                "out": self.outputs,
                "p": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; every bad field is a `ProtocolError`."""
        shape = req(d, "in", list)
        task = req(d, "task", str)
        if task not in set(TaskKind):
            _bad(f"unknown task {task!r}")
        return cls(family=req(d, "fam", str), input_shape=tuple(shape), task=TaskKind(task),
                   outputs=req_range(d, "out", 1, MAX_SIZE), params=req_map(d, "p"))

    @classmethod
    def mlp(cls, layers: tuple[int, ...] | list[int]) -> Self:
        """The MLP that layer sizes `(inputs, hidden..., classes)` describe (the v1 manifest)."""
        if len(layers) < 2:
            _bad(f"layers must be >= 2 sizes, got {list(layers)}")
        return cls(family="mlp", input_shape=(layers[0],), task=TaskKind.CLASSIFICATION,
                   outputs=layers[-1], params={"hidden": tuple(layers[1:-1])})


def _params(params: object) -> dict[str, Param]:
    if not isinstance(params, Mapping) or len(params) > MAX_PARAMS:
        _bad(f"params must be a map of at most {MAX_PARAMS} entries")
    out: dict[str, Param] = {}
    for key in sorted(params):
        value = params[key]
        if not isinstance(key, str) or not FAMILY_RE.match(key):
            _bad(f"param name {key!r} is not a lowercase name")
        if isinstance(value, list | tuple):
            if len(value) > 64 or not all(
                    isinstance(v, int | float) and not isinstance(v, bool)
                    and math.isfinite(v) for v in value):
                _bad(f"param {key!r}: a list holds at most 64 finite numbers")
            out[key] = tuple(value)
        elif isinstance(value, float) and not math.isfinite(value):
            _bad(f"param {key!r} is not finite")
        elif isinstance(value, int | float | str | bool):
            out[key] = value
        else:
            _bad(f"param {key!r} has type {type(value).__name__}")
    return out


def _show(value: Param) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, tuple) else str(value)


def _bad(detail: str) -> NoReturn:
    raise ProtocolError(Reason.BAD_FRAME, f"architecture: {detail}")
