"""Name tables for pluggable units (codecs, sources, backends, strategies)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Generic, TypeVar

from fedstream.shared.errors import ConfigError, Reason

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., object])


class Registry(Generic[T]):
    """Maps a config name to a factory that builds one unit.

    Args:
        kind: What the table holds, used in error messages ("codec", "source").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._summaries: dict[str, str] = {}

    def add(self, name: str, summary: str) -> Callable[[F], F]:
        """Register a factory under `name`; used as a decorator."""

        def register(factory: F) -> F:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._factories[name] = factory  # type: ignore[assignment]
            self._summaries[name] = summary
            return factory

        return register

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def summary(self, name: str) -> str:
        """One-line description of a unit."""
        self._check(name)
        return self._summaries[name]

    def build(self, name: str, /, **params: object) -> T:
        """Build the unit registered as `name` with keyword params.

        Raises:
            ConfigError: `name` is unknown (unknown_name, listing the known names) or a
                parameter is not one the unit takes (bad_config).
        """
        self._check(name)
        factory = self._factories[name]
        try:
            inspect.signature(factory).bind(**params)
        except TypeError as err:
            accepted = ", ".join(inspect.signature(factory).parameters) or "none"
            raise ConfigError(Reason.BAD_CONFIG,
                              f"{self.kind} {name!r}: {err}; parameters: {accepted}") from err
        return factory(**params)

    def _check(self, name: str) -> None:
        if name not in self._factories:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(
                Reason.UNKNOWN_NAME, f"unknown {self.kind} {name!r}; known: {known}"
            )
