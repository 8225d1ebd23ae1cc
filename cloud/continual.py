"""What happens to the aggregate before it is published. For now: the prototype's blend
`(1-alpha)·serving + alpha·aggregate`; cloud-side fine-tuning slots in here later."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def apply_delta(base: Sequence[torch.Tensor], delta: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """`base + delta`, tensor by tensor."""
    return [b + d for b, d in zip(base, delta, strict=True)]


def blend(serving: Sequence[torch.Tensor], aggregate: Sequence[torch.Tensor],
          alpha: float) -> list[torch.Tensor]:
    """`(1 - alpha) * serving + alpha * aggregate`; alpha = 1 returns the aggregate itself."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if alpha == 1:
        return [a.clone() for a in aggregate]
    return [torch.lerp(s, a, alpha) for s, a in zip(serving, aggregate, strict=True)]
