"""Stage 3 of AWT: entropic optimal transport between weighted views and weighted prompts.

One Sinkhorn problem per (image, class) pair, all solved together. Problems come in groups (one
group per image, one member per class) and a group stops as the paper's code does: after the
iteration in which the mean absolute change of the row scaling ``u``, over all its members and
views, falls under ``tol``. A group's answer therefore never depends on the other groups in the batch.

The members of a group interact only through that mean, so the solver runs in windows: a block of
problems (sized to stay in cache on the CPU) runs ``w`` iterations while its kernel is hot, keeping
each iteration's ``u`` and each problem's sum of ``|u_t - u_{t-1}|``; once every block has run the
window, each group's mean change is known for all ``w`` iterations, and a group that fell under
``tol`` at iteration ``j`` takes ``u_j`` from that history (``v_j`` is ``u_j``'s column update).
Results are those of checking after every iteration; iterations past a stop are wasted, so the next
window's length is predicted from the geometric decay of the change. The host reads the device
once per window, never inside an iteration, and no mask is applied inside a window.

On the CPU a window's blocks are independent, so they run on a pool of threads (one per torch
thread), each block's products as NumPy's stacked matrix-vector products: BLAS ``gemv`` per
problem, about 3x faster at 51 x 51 than ``torch.bmm``, which treats a vector as a 1-column GEMM.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

# Bytes of kernel in one block on the CPU: a block's iterations then run in L2 (2 MiB per core
# here); with several threads 4x that, as each NumPy call hands the GIL over. On an accelerator a
# block is everything: each block costs kernel launches, not misses.
_BLOCK_BYTES = 1 << 19
_NUMPY_DEVICES = {"cpu"}    # where the windows run as NumPy calls (their memory is the tensors')
# Elements of ``u`` history kept for one window: bounds the window's length.
_HISTORY_ELEMENTS = 1 << 24
_FIRST_WINDOW = 3       # iterations before the first check; AWT's tolerance is met in 2-4 on CLIP's cosines
_MAX_WINDOW = 64


@dataclass
class Solution:
    """Sinkhorn scalings of a batch of problems: the plan of problem ``i`` is
    ``u[i, :, None] * kernel[i] * v[i, None, :]``."""

    u: torch.Tensor           # (..., views) row scaling
    v: torch.Tensor           # (..., prompts) column scaling
    iterations: torch.Tensor  # (groups,) iterations each group ran
    cost: torch.Tensor | None = None   # (...,) each plan's cost in kernel units, sum T * (-log K)
    windows: int = 0                   # windows run: passes over the kernel (its reads from memory)


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
        kernel: (groups, members, views, prompts) Gibbs kernels ``exp(-cost / eps)``, any strides
            with a unit one in the last dim.
        a: (groups, members, views) row marginals.
        b: (groups, members, prompts) column marginals.
        max_iter: iteration cap.
        tol: a group stops once ``mean_{members, views} |u_t - u_{t-1}| < tol``.
        check_every: iterations between host-side convergence checks (a fixed window); ``None``:
            windows predicted from the convergence rate. The result does not depend on it.
    Returns:
        ``u`` (groups, members, views), ``v`` (groups, members, prompts), the plan being
        ``u[..., :, None] * kernel * v[..., None, :]``, and the iterations each group ran, (groups,).
    """
    sol = solve_grouped(kernel, a, b, max_iter, tol, check_every, cost=False)
    return sol.u, sol.v, sol.iterations


def solve_grouped(
    kernel: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    max_iter: int = 100,
    tol: float = 1e-2,
    window: int | None = None,
    block: int | None = None,
    cost: bool = True,
    log_offset: float | None = None,
) -> Solution:
    """:func:`sinkhorn` returning a :class:`Solution`, with each plan's cost when ``cost``.

    Args:
        kernel: (groups, members, views, prompts), any strides with a unit one in the last dim.
            With ``log_offset`` it holds ``X``, the kernel being ``exp(X + log_offset)``: exponentiated
            a block at a time while the block is in cache, and the cost then needs no logarithm.
        a: (groups, members, views); b: (groups, members, prompts); both may be broadcast views.
        window: fixed iterations per window (``None``: predicted); block: problems per block
            (``None``: cache-sized on the CPU, all on an accelerator). Neither changes the result.
    Returns:
        ``u`` (groups, members, views), ``v`` (groups, members, prompts), ``iterations`` (groups,),
        ``cost`` (groups, members) or None.
    """
    groups, members, views, prompts = kernel.shape
    device, dtype = kernel.device, kernel.dtype
    n = groups * members
    on_cpu = device.type in _NUMPY_DEVICES
    threads = torch.get_num_threads() if on_cpu else 1
    if block is None:
        per_block = _BLOCK_BYTES * (4 if threads > 1 else 1) // (views * prompts * kernel.element_size())
        # at least two blocks per thread, so that the threads share the work
        block = max(1, min(per_block, -(-n // (2 * threads)))) if on_cpu else n
    blocks = _Blocks(kernel, block)
    a = a.to(dtype).expand(groups, members, views).reshape(n, views).contiguous()
    b = b.to(dtype).expand(groups, members, prompts).reshape(n, prompts).contiguous()
    # K = exp(X + c) is used as exp(X) with v scaled by exp(c): u and the stopping rule are the
    # same, and one pass over each block is saved (while exp(X) cannot overflow: X + c <= 0, as
    # cos <= 1 gives, and c > -80).
    exp_shift = None if log_offset is None else (0.0 if log_offset > -80 else log_offset)
    v_scale = 1.0 if log_offset is None else math.exp(log_offset - exp_shift)
    u = torch.ones(n, views, dtype=dtype, device=device)
    v = torch.full((n, prompts), v_scale, dtype=dtype, device=device)
    costs = torch.zeros(n, dtype=dtype, device=device) if cost else None
    iterations = torch.full((groups,), max_iter, dtype=torch.long)
    active = torch.arange(groups)          # host side: the groups still iterating
    max_window = max(1, min(_MAX_WINDOW, _HISTORY_ELEMENTS // max(1, n * views)))
    w = window or _FIRST_WINDOW
    done = windows = 0
    mass = b.sum(-1)                       # sum T after a column update
    with ThreadPoolExecutor(threads) if threads > 1 else _Serial() as pool:
        while len(active) and done < max_iter:
            w = max(1, min(w, max_iter - done, max_window))
            history = torch.empty(w, n, views, dtype=dtype, device=device)
            run = _window_numpy if on_cpu else _window_torch
            jobs = [(k, exp_shift, a[rows], b[rows], v[rows], history[:, rows], None if costs is None else costs[rows])
                    for k, rows in blocks.of(active)]
            list(pool.map(lambda job: run(*job), jobs))
            # per problem, sum over views of |u_t - u_{t-1}|; then each active group's mean at each
            # iteration: the one host sync of the window
            change = torch.empty(w, n, dtype=dtype, device=device)
            for start, stop in _runs(active, members):
                rows = slice(start, stop)
                torch.sum(torch.sub(history[0, rows], u[rows]).abs_(), -1, out=change[0, rows])
                torch.sum(torch.sub(history[1:, rows], history[:-1, rows]).abs_(), -1, out=change[1:, rows])
                u[rows] = history[-1, rows]
                if costs is not None and log_offset is not None:
                    costs[rows] += log_offset * mass[rows]
                if costs is not None:
                    costs[rows].neg_()
            mean = change.view(w, groups, members)[:, active.to(device)].sum(-1, dtype=torch.float64).cpu()
            mean /= members * views
            under = mean < tol
            stopped = under.any(0)
            first = torch.where(stopped, under.float().argmax(0), w - 1)
            iterations[active[stopped]] = done + first[stopped] + 1
            for j in first[stopped & (first < w - 1)].unique().tolist():   # stopped inside the window
                for k, rows in blocks.of(active[stopped & (first == j)]):
                    u[rows] = history[j, rows]
                    kk = k if exp_shift is None else gibbs(k, exp_shift)
                    torch.div(b[rows], torch.bmm(u[rows].unsqueeze(1), kk).squeeze(1), out=v[rows])
                    if costs is not None:
                        costs[rows] = _cost(kk, k if exp_shift is not None else kk.log(), u[rows], v[rows],
                                            b[rows], log_offset)
            done += w
            windows += 1
            if window is None:
                w = _next_window(mean[:, ~stopped], tol, w, max_iter - done)
            active = active[~stopped]
    if v_scale != 1.0:
        v /= v_scale
    return Solution(u.view(groups, members, views), v.view(groups, members, prompts), iterations.to(device),
                    None if costs is None else costs.view(groups, members), windows)


class _Scratch(threading.local):
    """Per-thread buffers for a block's kernel (fresh memory would cost a page fault per 4 KiB)."""

    buffer: np.ndarray | None = None

    def take(self, shape: tuple, dtype) -> np.ndarray:
        size = math.prod(shape)
        if self.buffer is None or self.buffer.size < size or self.buffer.dtype != dtype:
            self.buffer = np.empty(size, dtype)
        return self.buffer[:size].reshape(shape)


_SCRATCH = _Scratch()


def _window_numpy(k, shift, a, b, v, history, dot) -> None:
    """``w = len(history)`` iterations on one block, in place: ``history[t]`` gets ``u_t``, ``v``
    the last column scaling, ``dot`` (if given) ``sum T log K`` of the last plan, less its
    ``log_offset * sum T``. The kernel is ``k``, or ``exp(k + shift)`` when ``shift`` is given.
    NumPy views share the tensors' memory; each call hands the GIL to the other threads."""
    k, a, b, v, history = (x.detach().numpy() for x in (k, a, b, v, history))
    if shift is None:
        kernel = k
    else:
        kernel = _SCRATCH.take(k.shape, k.dtype)
        np.exp(k if shift == 0 else np.add(k, k.dtype.type(shift), out=kernel), out=kernel)
    for t in range(len(history)):
        np.divide(a, np.matmul(kernel, v[..., None])[..., 0], out=history[t])
        np.divide(b, np.matmul(history[t][:, None], kernel)[:, 0], out=v)
    if dot is not None:
        weighted = np.log(kernel) * kernel if shift is None else np.multiply(kernel, k, out=kernel)   # K log K
        row = np.matmul(history[-1][:, None], weighted)                   # (block, 1, prompts)
        dot.numpy()[...] = np.matmul(row, v[..., None])[:, 0, 0]


def _window_torch(k, shift, a, b, v, history, dot) -> None:
    """:func:`_window_numpy` in torch, for accelerators."""
    kernel = k if shift is None else gibbs(k, shift)
    for t in range(len(history)):
        torch.div(a, torch.bmm(kernel, v.unsqueeze(-1)).squeeze(-1), out=history[t])
        torch.div(b, torch.bmm(history[t].unsqueeze(1), kernel).squeeze(1), out=v)
    if dot is not None:
        weighted = kernel * (kernel.log() if shift is None else k)
        dot.copy_((torch.bmm(history[-1].unsqueeze(1), weighted).squeeze(1) * v).sum(-1))


def gibbs(x: torch.Tensor, log_offset: float) -> torch.Tensor:
    """The kernel ``exp(x + log_offset)`` held as ``x``."""
    return torch.add(x, log_offset).exp_()


class _Serial:
    """A one-thread stand-in for the executor."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    @staticmethod
    def map(fn, items):
        return map(fn, items)


def plan_costs(kernel: torch.Tensor, u: torch.Tensor, v: torch.Tensor, b: torch.Tensor,
               log_offset: float | None = None, block: int | None = None) -> torch.Tensor:
    """:func:`plan_cost` of (groups, members, views, prompts) kernels and their (groups, members,
    views), (groups, members, prompts) scalings and column marginals, a block at a time -> (groups, members)."""
    groups, members, views, prompts = kernel.shape
    out = torch.empty(groups * members, dtype=kernel.dtype, device=kernel.device)
    u, v, b = u.reshape(-1, views), v.reshape(-1, prompts), b.expand(groups, members, prompts).reshape(-1, prompts)
    block = block or max(1, _BLOCK_BYTES * 8 // (views * prompts * kernel.element_size()))
    for k, rows in _Blocks(kernel, block).of(torch.arange(groups)):
        out[rows] = plan_cost(k, u[rows], v[rows], b[rows], log_offset)
    return out.view(groups, members)


def plan_cost(kernel: torch.Tensor, u: torch.Tensor, v: torch.Tensor, b: torch.Tensor,
              log_offset: float | None = None) -> torch.Tensor:
    """``sum_{v,p} T * (-log K)`` of each plan ``T = diag(u) K diag(v)`` after a column update
    (``sum T = sum b``): kernel (n, views, prompts) (``X`` with ``K = exp(X + log_offset)`` when
    ``log_offset`` is given), u (n, views), v and b (n, prompts) -> (n,). With ``K = exp(-C / eps)``
    that is ``<T, C> / eps``."""
    if log_offset is None:
        return _cost(kernel, kernel.log(), u, v, b, None)
    return _cost(gibbs(kernel, log_offset), kernel, u, v, b, log_offset)


def _cost(kernel, x, u, v, b, offset) -> torch.Tensor:
    dot = (torch.bmm(u.unsqueeze(1), kernel * x).squeeze(1) * v).sum(-1)
    return -dot if offset is None else -(dot + offset * b.sum(-1))


def _runs(groups: torch.Tensor, members: int) -> list[tuple[int, int]]:
    """Flat [start, stop) problem ranges of the runs of consecutive groups in ``groups``."""
    out: list[list[int]] = []
    for g in groups.tolist():
        if out and out[-1][1] == g * members:
            out[-1][1] = (g + 1) * members
        else:
            out.append([g * members, (g + 1) * members])
    return [(start, stop) for start, stop in out]


class _Blocks:
    """Blocks of problems as 3-D views (problems, views, prompts) of a 4-D kernel, with the flat
    slice of ``(group, member)`` they cover. Several groups share a block only when their members
    lie one stride apart in memory; otherwise a block is a run of one group's members."""

    def __init__(self, kernel: torch.Tensor, block: int) -> None:
        groups, members = kernel.shape[:2]
        self.kernel, self.members, self.block = kernel, members, max(1, block)
        flat = groups == 1 or kernel.stride(0) == members * kernel.stride(1)
        self.flat_kernel = kernel.flatten(0, 1) if flat else None

    def of(self, groups: torch.Tensor) -> list[tuple[torch.Tensor, slice]]:
        m, out = self.members, []
        spans = _runs(groups, m) if self.flat_kernel is not None else [(g * m, (g + 1) * m) for g in groups.tolist()]
        for first, last in spans:
            for start in range(first, last, self.block):
                stop = min(start + self.block, last)
                if self.flat_kernel is not None:
                    k = self.flat_kernel[start:stop]
                else:
                    k = self.kernel[first // m, start - first : stop - first]
                out.append((k, slice(start, stop)))
        return out


def _next_window(mean: torch.Tensor, tol: float, w: int, left: int) -> int:
    """Iterations until the slowest group's mean change falls under ``tol``, assuming it keeps
    decaying by the ratio of its last two values; ``2 w`` when that ratio says nothing."""
    if tol <= 0:
        return left
    if mean.shape[1] == 0:
        return w
    if mean.shape[0] < 2:
        return 2 * w
    ratio = mean[-1] / mean[-2]
    if not bool(((ratio > 0) & (ratio < 1)).all()):
        return 2 * w
    need = torch.log(tol / mean[-1]) / torch.log(ratio)
    return int(math.ceil(float(need.max()))) if bool(torch.isfinite(need).all()) else 2 * w
