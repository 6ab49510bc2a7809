"""The paper's algorithm written literally, one image at a time.

Slow on purpose: it builds the (prompts, classes, classes) tensor for the prompt weights and syncs
with the host after every Sinkhorn iteration, as the reference code does. It is the yardstick for
tests and for ``benchmarks/throughput.py``, never used on the hot path.
"""

from __future__ import annotations

import torch


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    p = logits.softmax(-1)
    return -(p * logits.log_softmax(-1)).sum(-1)


def paper_sinkhorn(kernel: torch.Tensor, a: torch.Tensor, b: torch.Tensor, max_iter: int = 100, tol: float = 1e-2) -> torch.Tensor:
    """Sinkhorn for one image and all its classes: kernel (classes, views, prompts),
    a (classes, views), b (classes, prompts) -> plan (classes, views, prompts).

    Stops when the mean over all classes and views of ``|u_t - u_{t-1}|`` falls under ``tol``.
    """
    u = torch.ones_like(a)
    v = torch.ones_like(b)
    for _ in range(max_iter):
        u0 = u
        u = a / torch.matmul(kernel, v.unsqueeze(-1)).squeeze(-1)
        v = b / torch.matmul(kernel.permute(0, 2, 1).contiguous(), u.unsqueeze(-1)).squeeze(-1)
        if (u - u0).abs().mean().item() < tol:
            break
    return u.unsqueeze(-1) * kernel * v.unsqueeze(-2)


def paper_awt_scores_single(
    logits: torch.Tensor,
    logit_scale: float,
    image_temperature: float = 0.5,
    text_temperature: float = 0.5,
    epsilon: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-2,
) -> torch.Tensor:
    """AWT scores of one image: logits (views, prompts, classes) -> (classes,)."""
    logits = logits.float()
    views, prompts, classes = logits.shape
    mean_logits = logits.mean(1)                                   # (views, classes)
    a = torch.softmax(-_entropy(mean_logits) / image_temperature, dim=0)

    base = mean_logits[0]                                          # (classes,)
    replaced = base.expand(prompts, classes, classes).clone()      # [p, c, :] = base with c replaced
    diag = torch.arange(classes)
    replaced[:, diag, diag] = logits[0]                            # logits[0][p, c]
    b = torch.softmax(-_entropy(replaced) / text_temperature, dim=0)  # (prompts, classes)

    z = logits.permute(2, 0, 1)                                    # (classes, views, prompts)
    kernel = torch.exp(-(1.0 - z / logit_scale) / epsilon)
    plan = paper_sinkhorn(kernel, a.expand(classes, views), b.T, max_iter, tol)
    return (plan * z).sum((1, 2))


def paper_awt_scores(logits: torch.Tensor, logit_scale: float, **kwargs) -> torch.Tensor:
    """The per-image loop: logits (batch, views, prompts, classes) -> (batch, classes)."""
    return torch.stack([paper_awt_scores_single(x, logit_scale, **kwargs) for x in logits])
