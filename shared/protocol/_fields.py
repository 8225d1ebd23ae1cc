"""Typed field readers for `from_wire`: every bad field becomes a `ProtocolError`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fedstream.shared.errors import ProtocolError, Reason

Wire = dict[str, Any]
T = TypeVar("T")
Scalar = int | float | str | bool


def req(d: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...]) -> T:
    """Field `key` of `d`, checked to be of `kind` (bool is never taken for int)."""
    if key not in d:
        raise ProtocolError(Reason.BAD_FRAME, f"missing field {key!r}")
    value = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError(Reason.BAD_FRAME, f"field {key!r} must not be a bool")
    if not isinstance(value, kinds):
        raise ProtocolError(Reason.BAD_FRAME, f"field {key!r} has type {type(value).__name__}")
    return value  # type: ignore[return-value]


def req_range(d: Mapping[str, Any], key: str, low: float, high: float) -> int:
    """Integer field `key` within [low, high]."""
    value: int = req(d, key, int)
    if not low <= value <= high:
        raise ProtocolError(Reason.BAD_FRAME, f"field {key!r}={value} outside [{low}, {high}]")
    return value


def req_float(d: Mapping[str, Any], key: str) -> float:
    """A finite float field (ints are accepted)."""
    value = float(req(d, key, (int, float)))
    if not math.isfinite(value):
        raise ProtocolError(Reason.BAD_FRAME, f"field {key!r} is not finite")
    return value


def req_map(d: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A map field with string keys."""
    value: dict[str, Any] = req(d, key, dict)
    if not all(isinstance(k, str) for k in value):
        raise ProtocolError(Reason.BAD_FRAME, f"field {key!r} has non-string keys")
    return value


def req_scalars(d: Mapping[str, Any], key: str) -> dict[str, Scalar]:
    """A map of plain scalar values (metrics, command arguments)."""
    value = req_map(d, key)
    if not all(isinstance(v, int | float | str | bool) for v in value.values()):
        raise ProtocolError(Reason.BAD_FRAME, f"field {key!r} holds non-scalar values")
    return value


def opt_int(d: Mapping[str, Any], key: str) -> int | None:
    """An optional (nil or absent) non-negative integer field."""
    value = d.get(key)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= 1 << 53:
        raise ProtocolError(Reason.BAD_FRAME, f"field {key!r} must be a non-negative int or nil")
    return value


def req_list_of(d: Mapping[str, Any], key: str,
                parse: Callable[[Mapping[str, Any]], T]) -> tuple[T, ...]:
    """A list field of nested messages, each parsed by `parse`."""
    items = req(d, key, list)
    if not all(isinstance(i, dict) for i in items):
        raise ProtocolError(Reason.BAD_FRAME, f"{key!r} must be a list of maps")
    return tuple(parse(i) for i in items)
