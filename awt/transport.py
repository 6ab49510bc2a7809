"""Stage 3 of AWT: entropic optimal transport between weighted views and weighted prompts.

One Sinkhorn problem per (image, class) pair, all solved together. Problems come in groups (one
group per image, one member per class) and a group stops as the paper's code does: after the
iteration in which the mean absolute change of the row scaling, over all its members and views,
falls under ``tol``. A group's answer therefore never depends on the other groups in the batch.
Convergence is read on the host only every ``check_every`` iterations; in between, finished groups
are frozen with a mask, and at each check they leave the working set.
"""

from __future__ import annotations

import torch


def sinkhorn(
    kernel: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    max_iter: int = 100,
    tol: float = 1e-2,
    check_every: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grouped, batched Sinkhorn scaling with per-group early stopping.

    Args:
        kernel: (groups, members, views, prompts) Gibbs kernels ``exp(-cost / eps)``.
        a: (groups, members, views) row marginals.
        b: (groups, members, prompts) column marginals.
        max_iter: iteration cap.
        tol: a group stops once ``mean_{members, views} |u_t - u_{t-1}| < tol``.
        check_every: iterations between host-side convergence checks; ``None``: every iteration
            on the CPU (where a check costs nothing), every 4 on an accelerator.
    Returns:
        ``u`` (groups, members, views), ``v`` (groups, members, prompts), the plan being
        ``u[..., :, None] * kernel * v[..., None, :]``, and the iterations each group ran, (groups,).
    """
    groups, members, views, prompts = kernel.shape
    device = kernel.device
    if check_every is None:
        check_every = 1 if device.type == "cpu" else 4
    u_out = torch.ones_like(a)
    v_out = torch.ones_like(b)
    iters_out = torch.zeros(groups, dtype=torch.long, device=device)

    idx = torch.arange(groups, device=device)
    k_w = kernel.reshape(-1, views, prompts)
    a_w, b_w = a.reshape(-1, views), b.reshape(-1, prompts)
    u_w, v_w = torch.ones_like(a_w), torch.ones_like(b_w)
    iters_w = iters_out.clone()
    active = torch.ones(groups, dtype=torch.bool, device=device)

    done_iters = 0
    while done_iters < max_iter:
        for _ in range(min(check_every, max_iter - done_iters)):
            u_new = a_w / torch.bmm(k_w, v_w.unsqueeze(-1)).squeeze(-1)
            v_new = b_w / torch.matmul(u_new.unsqueeze(1), k_w).squeeze(1)  # K^T u as a row times K
            err = (u_new - u_w).abs().view(-1, members * views).mean(-1)
            keep = active.repeat_interleave(members).unsqueeze(-1)
            u_w = torch.where(keep, u_new, u_w)
            v_w = torch.where(keep, v_new, v_w)
            iters_w += active
            active = active & (err >= tol)
        done_iters += min(check_every, max_iter - done_iters)
        n_active = int(active.sum())  # the one host sync per block
        if n_active == 0 or done_iters >= max_iter:
            break
        if n_active <= 0.75 * active.numel():  # drop finished groups from the working set
            finished = ~active
            u_out[idx[finished]] = u_w.view(-1, members, views)[finished]
            v_out[idx[finished]] = v_w.view(-1, members, prompts)[finished]
            iters_out[idx[finished]] = iters_w[finished]
            idx, iters_w = idx[active], iters_w[active]
            k_w = k_w.view(-1, members, views, prompts)[active].view(-1, views, prompts)
            a_w = a_w.view(-1, members, views)[active].view(-1, views)
            b_w = b_w.view(-1, members, prompts)[active].view(-1, prompts)
            u_w = u_w.view(-1, members, views)[active].view(-1, views)
            v_w = v_w.view(-1, members, prompts)[active].view(-1, prompts)
            active = active[active]

    u_out[idx] = u_w.view(-1, members, views)
    v_out[idx] = v_w.view(-1, members, prompts)
    iters_out[idx] = iters_w
    return u_out, v_out, iters_out
