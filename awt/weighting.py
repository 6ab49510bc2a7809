"""Stage 2 of AWT: importance weights of image views and class prompts from prediction entropy.

Both weightings follow the paper: a view (or prompt) whose prediction is confident (low entropy of
the softmax over classes) gets more mass, via a softmax of the negative entropy with temperature 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def softmax_entropy(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits)`` along ``dim``; that dimension is removed."""
    log_p = torch.log_softmax(logits, dim=dim)
    return -(log_p.exp() * log_p).sum(dim)


def image_weights(mean_logits: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """View weights ``a``: (batch, views, classes) prompt-averaged logits -> (batch, views).

    ``H_v`` is the entropy of the class softmax of view ``v``; ``a = softmax_v(-H_v / temperature)``.
    """
    entropy = softmax_entropy(mean_logits.float(), dim=-1)
    return torch.softmax(-entropy / temperature, dim=-1)


def _exclusive_sum(x: torch.Tensor) -> torch.Tensor:
    """``out[..., c] = sum_{j != c} x[..., j]`` without subtracting (no cancellation for same-sign x)."""
    zero = torch.zeros_like(x[..., :1])
    prefix = torch.cat([zero, x[..., :-1]], dim=-1).cumsum(-1)
    suffix = torch.cat([x[..., 1:], zero], dim=-1).flip(-1).cumsum(-1).flip(-1)
    return prefix + suffix


def prompt_entropies(base: torch.Tensor, view0_logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each class's prompt predictions, in closed form.

    For class ``c`` and prompt ``p`` the paper takes the prompt-averaged logits of view 0, ``base``,
    replaces entry ``c`` by ``x = view0_logits[p, c]`` and measures the entropy of the softmax.
    Done literally that is a (prompts, classes, classes) tensor per image. Instead we split the
    distribution into {x} against the other classes: with ``R_c`` the log-sum-exp of the others
    and ``G_c`` the entropy of their own softmax, ``x`` gets ``pi = sigmoid(x - R_c)`` and
    ``H = binary_entropy(pi) + (1 - pi) * G_c``; with ``n = R_c - x``, ``binary_entropy(pi) =
    softplus(n) - (1 - pi) * n``, so ``H = softplus(n) + sigmoid(n) * (G_c - n)``: three passes
    over (prompts, classes), linear in the number of classes.

    Args:
        base: (batch, classes) prompt-averaged logits of view 0.
        view0_logits: (batch, prompts, classes) per-prompt logits of view 0.
    Returns:
        (batch, prompts, classes) entropies in nats.
    """
    base = base.float()
    x = view0_logits.float()
    if base.shape[-1] == 1:  # one class: the softmax is a point mass
        return torch.zeros_like(x)
    shift = base.amax(-1, keepdim=True)
    centred = base - shift  # <= 0
    e = centred.exp()
    others_mass = _exclusive_sum(e).clamp_min(torch.finfo(e.dtype).tiny)
    # sum_{j != c} e_j * (v_j - shift): every term <= 0, so the exclusive sum stays exact.
    others_moment = _exclusive_sum(e * centred)
    log_mass = others_mass.log()
    others_lse = shift + log_mass                                      # R_c
    others_entropy = (log_mass - others_moment / others_mass).clamp_min(0.0)  # G_c
    n = others_lse.unsqueeze(-2) - x
    return torch.addcmul(F.softplus(n), torch.sigmoid(n), others_entropy.unsqueeze(-2) - n)


def prompt_weights(
    base: torch.Tensor, view0_logits: torch.Tensor, temperature: float = 0.5, prompt_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Prompt weights ``b``: softmax over prompts of ``-H / temperature``, (batch, prompts, classes).

    ``prompt_mask`` (classes, prompts), if given, marks real prompts; the others get weight 0.
    """
    entropy = prompt_entropies(base, view0_logits)
    if prompt_mask is not None:
        entropy = entropy.masked_fill(~prompt_mask.T.unsqueeze(0), float("inf"))
    return torch.softmax(-entropy / temperature, dim=-2)
