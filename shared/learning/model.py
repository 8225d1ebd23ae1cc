"""Tensor helpers for any model: its spec, fp32 copies of its state, loading a state back."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.protocol.messages import Spec, TensorSpec


def spec_of(model: nn.Module) -> Spec:
    """Tensor spec of a model's state, in state-dict order."""
    return tuple(TensorSpec(name=k, shape=tuple(v.shape)) for k, v in model.state_dict().items())


def tensors_of(model: nn.Module) -> list[torch.Tensor]:
    """Detached float32 copies of a model's state, in spec order."""
    return [v.detach().to(torch.float32).clone() for v in model.state_dict().values()]


def load_tensors(model: nn.Module, tensors: Sequence[torch.Tensor]) -> None:
    """Copy `tensors` (spec order) into `model`.

    Raises:
        ConfigError: SPEC_MISMATCH when their number or shapes differ from the model's (a
            manifest whose tensors do not fit its architecture, say).
    """
    state = model.state_dict()
    want = [tuple(v.shape) for v in state.values()]
    got = [tuple(t.shape) for t in tensors]
    if want != got:
        raise ConfigError(Reason.SPEC_MISMATCH, f"the model's {len(want)} tensors have shapes "
                          f"{want[:4]}{'...' if len(want) > 4 else ''}; got {len(got)} of "
                          f"{got[:4]}{'...' if len(got) > 4 else ''}")
    model.load_state_dict(OrderedDict(zip(state, tensors, strict=True)))


def num_parameters(spec: Spec) -> int:
    """Total elements in a spec."""
    return sum(t.numel for t in spec)
