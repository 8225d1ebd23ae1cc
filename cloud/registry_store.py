"""Model versions on disk: weights (and the strategy's server state) as safetensors files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from fedstream.shared.errors import Reason, StoreError
from fedstream.shared.files import write_atomic
from fedstream.shared.protocol.messages import Spec

ServerState = dict[str, list[torch.Tensor]]
_STATE = "__state__"


class ModelFiles:
    """Reads and writes `root/v<version>.safetensors`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, version: int, spec: Spec, tensors: Sequence[torch.Tensor],
             state: ServerState | None) -> str:
        """Write a version's weights and server state; returns the file name."""
        named = {t.name: w.contiguous() for t, w in zip(spec, tensors, strict=True)}
        for key, parts in (state or {}).items():
            named.update({f"{_STATE}.{key}.{i}": p.contiguous() for i, p in enumerate(parts)})
        name = f"v{version}.safetensors"
        write_atomic(self.root / name, save(named, metadata={"version": str(version)}))
        return name

    def load(self, name: str, spec: Spec) -> tuple[list[torch.Tensor], ServerState | None]:
        """Read weights (in spec order) and server state of a saved version."""
        try:
            named = load((self.root / name).read_bytes())
        except (OSError, ValueError, SafetensorError) as err:
            raise StoreError(Reason.STORE_FAILED, f"{name}: {err}") from err
        missing = [t.name for t in spec if t.name not in named]
        if missing:
            raise StoreError(Reason.STORE_FAILED, f"{name} lacks tensors {missing}")
        tensors = [named[t.name] for t in spec]
        prefix = _STATE + "."
        counts: dict[str, int] = {}
        for key in named:
            if key.startswith(prefix):
                part = key[len(prefix):].rsplit(".", 1)[0]
                counts[part] = counts.get(part, 0) + 1
        state = {part: [named[f"{prefix}{part}.{i}"] for i in range(n)]
                 for part, n in counts.items()}
        return tensors, state or None
