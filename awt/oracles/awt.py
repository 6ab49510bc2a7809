"""The paper's algorithm written literally, one image at a time.

Slow on purpose: it builds the (prompts, classes, classes) tensor for the prompt weights and syncs
with the host after every Sinkhorn iteration, as the reference code does. It is the yardstick for
tests and for ``benchmarks/throughput.py``, never used on the hot path.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    p = logits.softmax(-1)
    return -(p * logits.log_softmax(-1)).sum(-1)


def paper_sinkhorn_iterations(kernel: torch.Tensor, a: torch.Tensor, b: torch.Tensor, max_iter: int = 100,
                              tol: float = 1e-2) -> tuple[torch.Tensor, int]:
    """Sinkhorn for one image and all its classes: kernel (classes, views, prompts),
    a (classes, views), b (classes, prompts) -> (plan (classes, views, prompts), iterations run).

    Stops when the mean over all classes and views of ``|u_t - u_{t-1}|`` falls under ``tol``.
    """
    u = torch.ones_like(a)
    v = torch.ones_like(b)
    iterations = 0
    for _ in range(max_iter):
        u0 = u
        u = a / torch.matmul(kernel, v.unsqueeze(-1)).squeeze(-1)
        v = b / torch.matmul(kernel.permute(0, 2, 1).contiguous(), u.unsqueeze(-1)).squeeze(-1)
        iterations += 1
        if (u - u0).abs().mean().item() < tol:
            break
    return u.unsqueeze(-1) * kernel * v.unsqueeze(-2), iterations


def paper_sinkhorn(kernel: torch.Tensor, a: torch.Tensor, b: torch.Tensor, max_iter: int = 100, tol: float = 1e-2) -> torch.Tensor:
    """The plan alone of :func:`paper_sinkhorn_iterations`."""
    return paper_sinkhorn_iterations(kernel, a, b, max_iter, tol)[0]


class PaperAWT(NamedTuple):
    """Everything the literal scorer computes for one image."""

    scores: torch.Tensor   # (classes,)
    a: torch.Tensor        # (views,) view weights
    b: torch.Tensor        # (classes, prompts) prompt weights
    plan: torch.Tensor     # (classes, views, prompts)
    iterations: int


def paper_awt_single(
    logits: torch.Tensor,
    logit_scale: float,
    image_temperature: float = 0.5,
    text_temperature: float = 0.5,
    epsilon: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-2,
    uniform_weights: bool = False,
) -> PaperAWT:
    """AWT of one image, literally: logits (views, prompts, classes) -> :class:`PaperAWT`.
    ``uniform_weights``: the ablation's marginals ``1/views`` and ``1/prompts``."""
    logits = logits.float()
    views, prompts, classes = logits.shape
    mean_logits = logits.mean(1)                                   # (views, classes)
    a = torch.softmax(-_entropy(mean_logits) / image_temperature, dim=0)

    base = mean_logits[0]                                          # (classes,)
    replaced = base.expand(prompts, classes, classes).clone()      # [p, c, :] = base with c replaced
    diag = torch.arange(classes)
    replaced[:, diag, diag] = logits[0]                            # logits[0][p, c]
    b = torch.softmax(-_entropy(replaced) / text_temperature, dim=0)  # (prompts, classes)

    if uniform_weights:
        a = torch.full((views,), 1.0 / views)
        b = torch.full((prompts, classes), 1.0 / prompts)

    z = logits.permute(2, 0, 1)                                    # (classes, views, prompts)
    kernel = torch.exp(-(1.0 - z / logit_scale) / epsilon)
    plan, iterations = paper_sinkhorn_iterations(kernel, a.expand(classes, views), b.T, max_iter, tol)
    return PaperAWT((plan * z).sum((1, 2)), a, b.T.contiguous(), plan, iterations)


def paper_awt_scores_single(logits: torch.Tensor, logit_scale: float, **kwargs) -> torch.Tensor:
    """AWT scores of one image: logits (views, prompts, classes) -> (classes,)."""
    return paper_awt_single(logits, logit_scale, **kwargs).scores


def paper_awt_scores(logits: torch.Tensor, logit_scale: float, **kwargs) -> torch.Tensor:
    """The per-image loop: logits (batch, views, prompts, classes) -> (batch, classes)."""
    return torch.stack([paper_awt_scores_single(x, logit_scale, **kwargs) for x in logits])
