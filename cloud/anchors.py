"""Weight-space anchors for fine-tuning: L2-SP and EWC's pull toward earlier weights, and the
diagonal empirical Fisher that weighs EWC's (pure: tensors in, tensors out)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedstream.shared.learning.tasks import Task, task_for
from fedstream.shared.learning.training import Penalty
from fedstream.shared.protocol.arch import TaskKind

CLASSIFICATION = task_for(TaskKind.CLASSIFICATION)
# Rows the Fisher diagonal is estimated on.
FISHER_SAMPLES = 256


def fisher_diagonal(model: nn.Module, features: torch.Tensor, labels: torch.Tensor, *,
                    task: Task = CLASSIFICATION) -> list[torch.Tensor]:
    """Diagonal empirical Fisher of a model's parameters, scaled so its largest entry is 1.

    F is the mean over samples of each sample's squared gradient of log p(label | x) (for a
    regression model, of the squared error: a Gaussian's log-likelihood). Per
    sample, not per mini-batch: squaring a batch's mean gradient lets samples cancel and
    shrinks F by up to the batch size. For a model whose parameters all sit in `nn.Linear`
    layers (an MLP) the per-sample squares come exactly from one backward pass: a Linear
    layer's gradient for sample i is the outer product of δᵢ (the gradient at its output) and
    aᵢ (its input), so Σᵢ (δᵢ aᵢᵀ)² = (δ²)ᵀ a². Any other model (convolutions, recurrent or
    attention layers) takes one backward pass per sample, which gives the same value.

    Scaled to max 1, not mean 1: entries span three orders of magnitude (the output bias
    dominates), and at mean 1 the top ones made `lr · anchor_weight · F` exceed SGD's
    stability bound and the weights diverge. At max 1, `anchor_weight` is the L2-SP strength
    of the most important weight and every other weight gets its Fisher share of it, so EWC
    is stable wherever L2-SP with the same weight is.

    Args:
        model: A model whose parameters require grad (as a freshly built one's do); not
            modified. Call it with grad enabled.
        features: Inputs [N, D], N >= 1.
        labels: Class labels [N], or regression targets [N, H].
        task: The task whose loss is the negative log-likelihood. Its reduction is a mean;
            the constant factor that leaves is scaled away.

    Returns:
        One tensor per parameter, in `model.parameters()` order (spec order for the built-in
        families).

    Raises:
        ValueError: No samples.
    """
    if len(labels) == 0:
        raise ValueError("fisher_diagonal needs at least one sample")
    linears: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(list(model.parameters())) == sum(len(list(m.parameters())) for m in linears):
        fisher = _linear_fisher(model, linears, features, labels, task)
    else:
        fisher = _sample_fisher(model, features, labels, task)
    top = max(float(f.max()) for f in fisher)
    return [f / top for f in fisher] if top > 0 else fisher


def _linear_fisher(model: nn.Module, linears: list[nn.Module], features: torch.Tensor,
                   labels: torch.Tensor, task: Task) -> list[torch.Tensor]:
    seen: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(layer: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen[layer] = (args[0].detach(), out)

    hooks = [m.register_forward_hook(keep) for m in linears]
    try:
        logits = model(features)
    finally:
        for hook in hooks:
            hook.remove()
    # A mean: the gradient at a layer's output row i is sample i's own over N, for every i.
    loss = task.loss(logits, labels)
    deltas = torch.autograd.grad(loss, [seen[m][1] for m in linears])
    squares: dict[torch.Tensor, torch.Tensor] = {}
    for layer, delta in zip(linears, deltas, strict=True):
        d2 = delta.square()
        weight, bias = layer.weight, layer.bias
        assert isinstance(weight, torch.Tensor)
        squares[weight] = d2.T @ seen[layer][0].square()
        if isinstance(bias, torch.Tensor):
            squares[bias] = d2.sum(dim=0)
    return [squares[p] for p in model.parameters()]


def _sample_fisher(model: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                   task: Task) -> list[torch.Tensor]:
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(labels)):
        loss = task.loss(model(features[i:i + 1]), labels[i:i + 1])
        for acc, grad in zip(total, torch.autograd.grad(loss, params), strict=True):
            acc.add_(grad.square())
    return total


def anchor_penalty(weight: float, centre: Sequence[torch.Tensor],
                   importance: Sequence[torch.Tensor] | None = None) -> Penalty:
    """`(weight / 2) · Σ importance · (θ - θ₀)²`, plain L2-SP when `importance` is None.

    Computed in fp32 whatever dtype the parameters train in. Under IPEX bf16 the parameters
    it sees are the bf16 halves of the fp32 master weights, so the pull is as exact as bf16,
    like the forward pass.

    Args:
        weight: Strength of the pull toward `centre`.
        centre: θ₀, laid out like the trained model's parameters (see `trained_layout`).
        importance: Per-weight factors in the same layout, e.g. a Fisher diagonal.

    Returns:
        A function of the model, for `train_steps(penalty=...)`.
    """

    def penalty(model: nn.Module) -> torch.Tensor:
        terms = [(p.float() - c).square()
                 for p, c in zip(model.parameters(), centre, strict=True)]
        if importance is not None:
            terms = [t * f for t, f in zip(terms, importance, strict=True)]
        return 0.5 * weight * torch.stack([t.sum() for t in terms]).sum()

    return penalty
