"""Meta-transfer learning (Winata et al., ACL 2020): the first-order MAML step.

Each step, every source task i (a monolingual language, or the code-switched target itself)
adapts the weights theta with one inner SGD step on its support batch S_i, and the adapted
weights are scored on a query batch Q of the code-switched target:

    theta_i' = theta - alpha * clip(grad L(S_i; theta))
    g_i      = grad L(Q; theta_i')                      (first order: no second derivatives)

The outer optimiser (Adam in the paper) then steps from theta, which the inner steps leave
unchanged, along one of two outer gradients, chosen by ``variant``:

* ``paper``:     G = (1 / n) * sum_i g_i
* ``reference``: G = (1 / n) * sum_i g_i + sum_i clip(grad L(S_i; theta)), as the public code
  (audioku/meta-transfer-learning, ``transient_trainer.py`` with ``copy_grad``) computes it:
  its query backward adds onto the support gradients still held in ``.grad``.

This module computes G; ``MetaAsrTask`` (``xasr.train.module``) feeds it the support and query
batches of ``xasr.data.sources.MetaSampler`` and steps the optimiser along it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xasr import checks
from xasr.config import META_VARIANTS, TrainConfig


@dataclass(frozen=True)
class MetaOptions:
    """``inner_lr``: alpha of the inner SGD step; ``clip``: the inner gradient's largest norm
    (0: no clipping); ``variant``: the outer gradient (module docstring)."""

    inner_lr: float = 1e-3
    clip: float = 5.0
    variant: str = "paper"

    def __post_init__(self):
        checks.number("--inner-lr", self.inner_lr, above=0)
        checks.number("--meta-clip", self.clip, at_least=0)
        checks.one_of("--meta-transfer", self.variant, META_VARIANTS)

    @classmethod
    def from_train_config(cls, cfg: TrainConfig) -> MetaOptions:
        return cls(inner_lr=cfg.inner_lr, clip=cfg.meta_clip, variant=cfg.meta_variant)


def meta_gradient(
    model: nn.Module,
    loss: Callable[[nn.Module, dict], Tensor],
    supports: Sequence[dict],
    query: dict,
    opts: MetaOptions,
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """The outer gradient G of one meta step, {parameter name: tensor}, and the mean support
    and query losses. ``loss(model, batch)`` is the training loss of a batch; ``supports``: one
    batch per task. The model's weights are as they were when this returns. The outer step
    clips G as the reference code does (the training loop's part, with the optimiser)."""
    if not supports:
        raise ValueError("a meta step needs at least one support batch (one task)")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    start = {n: p.detach().clone() for n, p in params.items()}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    support_losses, query_losses = [], []
    try:
        for support in supports:
            grads = _gradients(loss(model, support), params)
            _clip(grads, opts.clip)
            support_losses.append(grads.pop(None))
            with torch.no_grad():
                for n, p in params.items():
                    p.sub_(opts.inner_lr * grads[n])
                    if opts.variant == "reference":
                        total[n] += grads[n]
            query_grads = _gradients(loss(model, query), params)
            query_losses.append(query_grads.pop(None))
            with torch.no_grad():
                for n, p in params.items():
                    total[n] += query_grads[n] / len(supports)
                    p.copy_(start[n])
    finally:
        with torch.no_grad():  # an exception mid-step must not leave adapted weights behind
            for n, p in params.items():
                p.copy_(start[n])
    stats = {
        "support_loss": sum(support_losses) / len(support_losses),
        "query_loss": sum(query_losses) / len(query_losses),
    }
    return total, stats


def inner_step_diagnosis(
    model: nn.Module,
    loss: Callable[[nn.Module, dict], Tensor],
    supports: Sequence[dict],
    query: dict,
    opts: MetaOptions,
) -> dict[str, float]:
    """Whether the inner step does anything: "inner_step", the mean over tasks of
    ||theta_i' - theta|| (inner_lr x the clipped support gradient's norm), and "query_cosine",
    the mean cosine between the query gradient at theta_i' and at theta. A tiny step with a
    cosine near 1 means a meta step trains on the query batch alone, as plain training would.

    Measured apart from the step (1 + 2 x tasks more passes, not part of any budget), in eval
    mode (no dropout: with a zero step the cosine is exactly 1) with ``loss`` given no
    augmentation, and with the random generators restored after, so a diagnosed run trains as
    an undiagnosed one does. The weights are as they were when this returns."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    start = {n: p.detach().clone() for n, p in params.items()}
    rng = torch.get_rng_state()
    was_training = model.training
    model.eval()
    steps, cosines = [], []
    try:
        at_start = _gradients(loss(model, query), params)
        for support in supports:
            grads = _gradients(loss(model, support), params)
            _clip(grads, opts.clip)
            grads.pop(None)
            steps.append(opts.inner_lr * float(_norm(grads.values())))
            with torch.no_grad():
                for n, p in params.items():
                    p.sub_(opts.inner_lr * grads[n])
            cosines.append(_cosine(_gradients(loss(model, query), params), at_start))
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(start[n])
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(start[n])
        model.train(was_training)
        torch.set_rng_state(rng)
    return {"inner_step": sum(steps) / len(steps), "query_cosine": sum(cosines) / len(cosines)}


def _norm(tensors) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def _cosine(a: dict, b: dict) -> float:
    """Cosine between two gradients ({name: tensor}; the loss at None left out)."""
    names = [n for n in a if n is not None]
    dot = sum(float((a[n] * b[n]).sum()) for n in names)
    norms = float(_norm([a[n] for n in names])) * float(_norm([b[n] for n in names]))
    return dot / max(norms, 1e-12)


def _gradients(value: Tensor, params: dict[str, nn.Parameter]) -> dict:
    """{name: gradient} (zeros for parameters the loss does not reach), and the loss at None."""
    names = list(params)
    grads = torch.autograd.grad(value, [params[n] for n in names], allow_unused=True)
    out = {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)}
    out[None] = float(value.detach())
    return out


def _clip(grads: dict, max_norm: float) -> None:
    """Scale the gradients (not the loss at None) to a total norm of at most ``max_norm``."""
    if not max_norm:
        return
    norm = _norm([g for n, g in grads.items() if n is not None])
    scale = max_norm / (float(norm) + 1e-6)
    if scale < 1:
        grads.update({n: g * scale for n, g in grads.items() if n is not None})
