"""The autotuner's choices on disk, keyed by everything that decides them.

One JSON file in the service's data directory (`backend-choice.json`), written atomically.
An entry is used only when its key matches exactly: the model's architecture (its manifest
form), the batch size and the rest of the measuring plan, the candidates, the loss tolerance,
the CPU's flags and the torch and IPEX versions. Anything else, or a file that cannot be read,
means measuring again; a bad file is logged and replaced, never fatal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from fedstream.shared.errors import Reason, StoreError
from fedstream.shared.files import write_atomic
from fedstream.shared.learning.backends.candidates import Candidate
from fedstream.shared.learning.backends.decision import Decision
from fedstream.shared.learning.backends.ipex import ipex_version
from fedstream.shared.learning.backends.measure import Plan
from fedstream.shared.learning.cpu import CpuCaps

log = structlog.get_logger(__name__)

CACHE_FILE = "backend-choice.json"
_FORMAT = 1
# Bump when the measuring or the decision rule changes: old choices are then measured again.
METHOD = 1
_KEEP = 32  # entries, newest first: a few architectures x batch sizes per service


@dataclass(frozen=True, slots=True, kw_only=True)
class ChoiceKey:
    """What a cached choice holds for.

    Attributes:
        plan: The model, batch size and measuring protocol.
        candidates: What was measured, in order.
        tolerance: The loss tolerance of the decision.
        cpu: The CPU's model name and flags.
        torch: `torch.__version__`.
        ipex: The installed IPEX version (package metadata), or None.
    """

    plan: Plan
    candidates: tuple[Candidate, ...]
    tolerance: float
    cpu: CpuCaps
    torch: str
    ipex: str | None

    @classmethod
    def here(cls, plan: Plan, candidates: Sequence[Candidate], *, tolerance: float,
             cpu: CpuCaps) -> ChoiceKey:
        """The key of `plan` on this machine's torch and IPEX."""
        return cls(plan=plan, candidates=tuple(candidates), tolerance=tolerance, cpu=cpu,
                   torch=torch.__version__, ipex=ipex_version())

    def to_wire(self) -> dict[str, Any]:
        """JSON-safe fields, compared as canonical JSON."""
        return {"method": METHOD, "plan": self.plan.to_wire(),
                "candidates": [c.label for c in self.candidates], "tolerance": self.tolerance,
                "cpu": self.cpu.to_dict(), "torch": self.torch, "ipex": self.ipex}


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _machine(key: Mapping[str, Any]) -> dict[str, Any]:
    """A key's wire form without the model and batch size."""
    out = {k: v for k, v in key.items() if k != "plan"}
    plan = key.get("plan")
    if isinstance(plan, dict):
        out["plan"] = {k: v for k, v in plan.items() if k not in ("arch", "batch")}
    return out


class ChoiceCache:
    """Cached decisions in one file.

    Args:
        path: The JSON file, e.g. `data_dir / CACHE_FILE`; its directory is made on write.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, key: ChoiceKey) -> Decision | None:
        """The decision cached for exactly `key`, or None (a bad file is logged)."""
        want = _canonical(key.to_wire())
        return self._first(lambda got: _canonical(got) == want)

    def last_batch(self, plan: Plan) -> int | None:
        """The batch size of the newest entry for `plan`'s architecture, or None: the batch
        a restarted service most likely trains with before any round says."""
        arch = _canonical(plan.arch.to_wire())
        for entry in self._entries():
            key = entry.get("key")
            got = key.get("plan") if isinstance(key, dict) else None
            if isinstance(got, dict) and _canonical(got.get("arch")) == arch \
                    and isinstance(got.get("batch"), int):
                return int(got["batch"])
        return None

    def newest_like(self, key: ChoiceKey) -> Decision | None:
        """The newest decision made as `key` would be made (same candidates, tolerance, CPU,
        versions and measuring protocol) for any model and batch size: what a restarted
        service most likely chooses again, before it knows its model."""
        want = _canonical(_machine(key.to_wire()))
        return self._first(lambda got: isinstance(got, dict)
                           and _canonical(_machine(got)) == want)

    def _first(self, matches: Callable[[Any], bool]) -> Decision | None:
        """The decision of the newest entry whose key `matches`, or None (a bad entry is
        logged and discarded)."""
        for entry in self._entries():
            if matches(entry.get("key")):
                try:
                    return Decision.from_wire(entry["choice"])
                except (KeyError, TypeError, ValueError) as err:
                    self._discarded(f"a bad entry: {err}")
                    return None
        return None

    def put(self, key: ChoiceKey, decision: Decision) -> None:
        """Cache `decision` for `key`, newest first, replacing an entry with the same key.

        A failed write is logged and otherwise ignored: the choice still holds for this run.
        """
        want = _canonical(key.to_wire())
        kept = [e for e in self._entries() if _canonical(e.get("key")) != want]
        entry = {"key": key.to_wire(), "choice": decision.to_wire(), "at": round(time.time())}
        body = {"v": _FORMAT, "entries": [entry, *kept][:_KEEP]}
        try:
            write_atomic(self.path, (json.dumps(body, indent=1) + "\n").encode())
        except StoreError as err:
            log.warning("backend_cache_write_failed", path=str(self.path),
                        reason=str(err.reason), detail=err.detail)

    def _entries(self) -> list[Mapping[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as err:
            self._discarded(f"unreadable: {err}")
            return []
        try:
            body = json.loads(text)
        except json.JSONDecodeError as err:
            self._discarded(f"not JSON: {err}")
            return []
        entries = body.get("entries") if isinstance(body, dict) else None
        if not isinstance(body, dict) or body.get("v") != _FORMAT or not isinstance(entries, list):
            self._discarded("not a backend-choice file of this format")
            return []
        return [e for e in entries if isinstance(e, dict)]

    def _discarded(self, detail: str) -> None:
        log.warning("backend_cache_discarded", path=str(self.path), reason=str(Reason.BAD_DATA),
                    detail=detail)
