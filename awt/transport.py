"""Stage 3 of AWT: entropic optimal transport between weighted views and weighted prompts.

One Sinkhorn problem per (image, class) pair, all solved together. Problems come in groups (one
group per image, one member per class) and a group stops as the paper's code does: after the
iteration in which the mean absolute change of the row scaling ``u``, over all its members and
views, falls under ``tol``. A group's answer therefore never depends on the other groups in the batch.

The members of a group interact only through that mean, so the solver runs in windows: every
problem runs ``w`` iterations while its kernel is in cache, keeping each iteration's ``u`` and its
sum of ``|u_t - u_{t-1}|``; once the window has run, each group's mean change is known for all
``w`` iterations, and a group that fell under ``tol`` at iteration ``j`` takes ``u_j`` from that
history (``v_j`` is ``u_j``'s column update). Results are those of checking after every iteration;
iterations past a stop are wasted, so the next window's length is predicted from the geometric
decay of the change. The host reads the device once per window, never inside an iteration, and no
mask is applied inside a window.

On the CPU (float32) a window is compiled (:mod:`awt.transport_cpu`): one problem at a time, its
kernel made, iterated and costed in L1, in tiles that the threads of torch's OpenMP team take in
turn (a pool of threads of our own where that runtime cannot be found). Elsewhere a window is a few batched
torch products over all its problems at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

_TILES_PER_THREAD = 2      # CPU: tiles a window is cut into, per thread (balance against per-call cost)
_BLOCK_BYTES = 1 << 21     # kernel bytes per tile where the cost of finished plans is recomputed
_COMPILED_DEVICES = {"cpu"}  # where float32 windows run compiled (awt.transport_cpu), on the tensors' memory
# Elements of ``u`` history kept for one window: bounds the window's length.
_HISTORY_ELEMENTS = 1 << 24
_FIRST_WINDOW = 3       # iterations before the first check; AWT's tolerance is met in 2-4 on CLIP's cosines
_MAX_WINDOW = 64


class Workspace(threading.local):
    """A float32 CPU buffer kept for the next call of the same thread: fresh memory costs a page
    fault per 4 KiB, several times the cost of writing it."""

    buffer: torch.Tensor | None = None

    def take(self, numel: int) -> torch.Tensor:
        if self.buffer is None or self.buffer.numel() < numel:
            self.buffer = None
            with torch.inference_mode(False):   # a normal tensor: writable in and out of inference mode
                self.buffer = torch.empty(numel)
        return self.buffer[:numel]


_HISTORY = Workspace()       # a window's u history on the CPU


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
            (fastest with a unit one in either of the last two dims).
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
        kernel: (groups, members, views, prompts), any strides (fastest with a unit one in either
            of the last two dims). With ``log_offset`` it holds ``X``, the kernel being
            ``exp(X + log_offset)``: exponentiated a problem at a time while it is in cache, and
            the cost then needs no logarithm.
        a: (groups, members, views); b: (groups, members, prompts); both may be broadcast views.
        window: fixed iterations per window (``None``: predicted); block: problems per tile
            (``None``: on the CPU, the work cut into ``_TILES_PER_THREAD`` tiles per thread; on an
            accelerator, all). Neither changes the result.
    Returns:
        ``u`` (groups, members, views), ``v`` (groups, members, prompts), ``iterations`` (groups,),
        ``cost`` (groups, members) or None.
    """
    groups, members, views, prompts = kernel.shape
    device, dtype = kernel.device, kernel.dtype
    n = groups * members
    compiled = _compiled_layout(kernel)
    threads = torch.get_num_threads() if compiled is not None else 1
    if block is None:       # compiled: a problem at a time stays in cache, so tiles only share the work
        block = max(1, -(-n // (_TILES_PER_THREAD * threads))) if compiled is not None else n
    a = a.to(dtype).expand(groups, members, views)
    b = b.to(dtype).expand(groups, members, prompts)
    # K = exp(X + c) is used as exp(X) with v scaled by exp(c): u and the stopping rule are the
    # same (while exp(X) cannot overflow: X + c <= 0, as cos <= 1 gives, and c > -80).
    exp_shift = None if log_offset is None else (0.0 if log_offset > -80 else log_offset)
    v_scale = 1.0 if log_offset is None else math.exp(log_offset - exp_shift)
    # the state in the kernel's order: where a member's problems lie side by side (groups
    # innermost), the compiled window walks members outermost, so its state is stored so too
    members_major = compiled is not None and kernel.stride(0) < kernel.stride(1)

    def state(before: tuple, after: tuple, fill: float | None = None) -> torch.Tensor:
        """(*before, groups, members, *after), stored members first where members_major."""
        pair = (members, groups) if members_major else (groups, members)
        out = torch.full((*before, *pair, *after), 0.0 if fill is None else fill, dtype=dtype, device=device)
        return out.transpose(len(before), len(before) + 1) if members_major else out

    u = state((), (views,), 1.0)
    v = state((), (prompts,), v_scale)
    # the cost in the windows needs X (``log K`` would cost a logarithm per value)
    costs = state((), ()) if cost and log_offset is not None else None
    iterations = torch.full((groups,), max_iter, dtype=torch.long)
    active = torch.arange(groups)          # host side: the groups still iterating
    max_window = max(1, min(_MAX_WINDOW, _HISTORY_ELEMENTS // max(1, n * views)))
    w = window or _FIRST_WINDOW
    done = windows = 0
    mass = b.sum(-1)                       # sum T after a column update
    # compiled windows: torch's OpenMP team runs them where it can be had (its threads are awake),
    # else a pool of threads of our own
    team = _team() if compiled is not None and threads > 1 else None
    with ThreadPoolExecutor(threads) if threads > 1 and team is None else contextlib.nullcontext() as pool:
        while len(active) and done < max_iter:
            w = max(1, min(w, max_iter - done, max_window))
            if compiled is not None:          # a kept buffer: fresh memory costs page faults
                history = _HISTORY.take(w * groups * members * views)
                history = (history.view(w, members, groups, views).transpose(1, 2) if members_major
                           else history.view(w, groups, members, views))
            else:
                history = state((w,), (views,))
            change = state((w,), ())                  # sum over views of |u_t - u_{t-1}|
            tiles = _tiles(active, members, block)
            if compiled is not None:
                _window_compiled(team or pool, threads, compiled, exp_shift, kernel, a, b, u, v, history, change,
                                 costs, tiles)
            else:
                for t in tiles:
                    _window_torch(exp_shift, kernel[t], a[t], b[t], u[t], v[t], history[(slice(None), *t)],
                                  change[(slice(None), *t)], None if costs is None else costs[t])
            # each active group's mean change at each iteration: the one host sync of the window
            mean = change[:, active.to(device)].sum(-1, dtype=torch.float64).cpu()
            mean /= members * views
            under = mean < tol
            stopped = under.any(0)
            first = torch.where(stopped, under.float().argmax(0), w - 1)
            iterations[active[stopped]] = done + first[stopped] + 1
            for j in first[stopped & (first < w - 1)].unique().tolist():   # stopped inside the window
                for t in _tiles(active[stopped & (first == j)], members, block):
                    u[t] = history[(j, *t)]
                    k = kernel[t] if exp_shift is None else gibbs(kernel[t], exp_shift)
                    torch.div(b[t], torch.einsum("gcv,gcvp->gcp", u[t], k), out=v[t])
                    if costs is not None:
                        costs[t] = _plan_sum(u[t], k * kernel[t], v[t])       # sum T X
            done += w
            windows += 1
            if window is None:
                w = _next_window(mean[:, ~stopped], tol, w, max_iter - done)
            active = active[~stopped]
    if v_scale != 1.0:
        v /= v_scale
    if costs is not None:                  # -sum T log K = -(sum T X + log_offset * sum T)
        costs.add_(log_offset * mass).neg_()
    elif cost:
        costs = plan_costs(kernel, u, v, b)
    return Solution(u, v, iterations.to(device), costs, windows)


def _compiled_layout(kernel: torch.Tensor) -> bool | None:
    """Whether the compiled CPU window reads ``kernel``'s problems transposed (unit stride in
    views) or not (unit stride in prompts); None where it does not run (another device or dtype,
    or no compiled window to be had)."""
    if kernel.device.type not in _COMPILED_DEVICES or kernel.dtype != torch.float32 or _compiled() is None:
        return None
    if kernel.stride(3) == 1:
        return False
    if kernel.stride(2) == 1:
        return True
    return None


@functools.cache
def _compiled():
    """:func:`awt.transport_cpu.window_tiles`, compiled (or loaded from numba's cache) on first use;
    None, with a warning, where numba cannot be imported or cannot compile (the torch window then runs)."""
    try:
        from .transport_cpu import window_tiles
    except Exception as e:   # numba missing, or no cache folder it can write and no compiler state
        warnings.warn(f"the compiled CPU solver is unavailable ({type(e).__name__}: {e}); "
                      "using the torch one, several times slower", RuntimeWarning, stacklevel=2)
        return None
    return window_tiles


@functools.cache
def _team():
    """``GOMP_parallel`` of the OpenMP runtime torch's CPU kernels run on, or None (no such runtime
    loaded, e.g. a torch built without OpenMP, or no ``/proc/self/maps`` to find it in)."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as maps:
            loaded = {line.split(None, 5)[-1].strip() for line in maps if line.count(" ") >= 5}
    except OSError:
        return None
    runtimes = sorted((path for path in loaded if os.path.basename(path).startswith(("libgomp", "libomp", "libiomp5"))),
                      key=lambda path: not path.startswith(os.path.dirname(torch.__file__)))   # torch's own first
    for path in runtimes:
        try:
            parallel = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0)).GOMP_parallel
        except (OSError, AttributeError):
            continue
        parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        parallel.restype = None
        return parallel
    return None


def _window_compiled(runner, threads: int, transposed: bool, shift: float | None, kernel, a, b, u, v, history,
                     change, costs, tiles: list[tuple[slice, slice]]) -> None:
    """:func:`awt.transport_cpu.window_tiles` on ``tiles``, described once by addresses, shapes and
    strides (the tensors' own memory, no copies), its tiles taken in turn by up to ``threads``
    threads: an OpenMP team's (``runner`` is ``GOMP_parallel``), a pool's (an executor), or the
    calling thread alone (None). Each call releases the GIL."""
    from . import transport_cpu as cpu

    d = np.zeros(cpu.HEAD + 4 * len(tiles), np.int64)
    d[cpu.TILES], d[cpu.TRANSPOSED], d[cpu.EXPONENT] = len(tiles), transposed, shift is not None
    d[cpu.SHIFT:cpu.SHIFT + 1].view(np.float64)[0] = shift or 0.0
    row = kernel.stride(3) if transposed else kernel.stride(2)
    d[cpu.KERNEL:cpu.KERNEL + 6] = (kernel.untyped_storage().data_ptr(), kernel.untyped_storage().nbytes() // 4,
                                    kernel.storage_offset(), kernel.stride(0), kernel.stride(1), row)
    dot = costs if costs is not None else u.new_empty(u.shape[0], 0)
    for i, t in enumerate((a, b, u, v, history, change, dot)):
        at = cpu.STATE + i * cpu.FIELDS
        spanned = 0 if t.numel() == 0 else 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
        d[at:at + 2] = t.data_ptr(), spanned
        d[at + 2:at + 2 + t.dim()] = t.shape
        d[at + 6:at + 6 + t.dim()] = [s * t.element_size() for s in t.stride()]
    for i, (g, c) in enumerate(tiles):
        d[cpu.HEAD + 4 * i:cpu.HEAD + 4 * i + 4] = g.start, g.stop, c.start, c.stop
    threads = min(threads, len(tiles))
    if runner is None or threads == 1:
        cpu.window_tiles.ctypes(d.ctypes.data)
    elif isinstance(runner, ThreadPoolExecutor):
        list(runner.map(lambda _: cpu.window_tiles.ctypes(d.ctypes.data), range(threads)))
    else:
        runner(cpu.window_tiles.address, d.ctypes.data, threads, 0)


def _tiles(groups: torch.Tensor, members: int, block: int) -> list[tuple[slice, slice]]:
    """(groups, members) index boxes covering the runs of consecutive ``groups`` and all members,
    each about ``block`` problems."""
    out = []
    for first, last in _runs(groups):
        run = last - first
        across = min(members, max(1, block // run))         # members per tile
        down = min(run, max(1, block // across))             # groups per tile
        for g in range(first, last, down):
            for c in range(0, members, across):
                out.append((slice(g, min(g + down, last)), slice(c, min(c + across, members))))
    return out


def _runs(groups: torch.Tensor) -> list[tuple[int, int]]:
    """[first, last) ranges of the runs of consecutive values in ``groups``."""
    out: list[list[int]] = []
    for g in groups.tolist():
        if out and out[-1][1] == g:
            out[-1][1] = g + 1
        else:
            out.append([g, g + 1])
    return [(first, last) for first, last in out]


def _window_torch(shift, kernel, a, b, u, v, history, change, dot) -> None:
    """:func:`awt.transport_cpu.window` in torch, for accelerators (and other dtypes), on one tile:
    kernel (g, c, views, prompts), history (w, g, c, views), change (w, g, c)."""
    g, c, views, prompts = kernel.shape
    x = kernel.reshape(g * c, views, prompts)
    k = x if shift is None else gibbs(x, shift)
    a2, b2 = a.reshape(g * c, views), b.reshape(g * c, prompts)
    vv = v.reshape(g * c, prompts).clone()
    prev = u.reshape(g * c, views)
    for t in range(len(history)):
        step = torch.div(a2, torch.bmm(k, vv.unsqueeze(-1)).squeeze(-1))
        torch.div(b2, torch.bmm(step.unsqueeze(1), k).squeeze(1), out=vv)
        change[t] = torch.sub(step, prev).abs_().sum(-1).view(g, c)
        history[t] = step.view(g, c, views)
        prev = step
    u.copy_(prev.view(g, c, views))
    v.copy_(vv.view(g, c, prompts))
    if dot is not None:     # sum T X
        dot.copy_(_plan_sum(prev, k * x, vv).view(g, c))


def gibbs(x: torch.Tensor, log_offset: float) -> torch.Tensor:
    """The kernel ``exp(x + log_offset)`` held as ``x``."""
    return torch.add(x, log_offset).exp_()


def plan_costs(kernel: torch.Tensor, u: torch.Tensor, v: torch.Tensor, b: torch.Tensor,
               log_offset: float | None = None, block: int | None = None) -> torch.Tensor:
    """:func:`plan_cost` of (groups, members, views, prompts) kernels and their (groups, members,
    views), (groups, members, prompts) scalings and column marginals, a tile at a time -> (groups, members)."""
    groups, members, views, prompts = kernel.shape
    out = torch.empty(groups, members, dtype=kernel.dtype, device=kernel.device)
    b = b.expand(groups, members, prompts)
    block = block or max(1, _BLOCK_BYTES * 2 // (views * prompts * kernel.element_size()))
    for t in _tiles(torch.arange(groups), members, block):
        out[t] = plan_cost(kernel[t], u[t], v[t], b[t], log_offset)
    return out


def plan_cost(kernel: torch.Tensor, u: torch.Tensor, v: torch.Tensor, b: torch.Tensor,
              log_offset: float | None = None) -> torch.Tensor:
    """``sum_{v,p} T * (-log K)`` of each plan ``T = diag(u) K diag(v)`` after a column update
    (``sum T = sum b``): kernel (..., views, prompts) (``X`` with ``K = exp(X + log_offset)`` when
    ``log_offset`` is given), u (..., views), v and b (..., prompts) -> (...). With
    ``K = exp(-C / eps)`` that is ``<T, C> / eps``."""
    if log_offset is None:
        return -_plan_sum(u, torch.special.xlogy(kernel, kernel), v)
    k = gibbs(kernel, log_offset)
    return -(_plan_sum(u, k * kernel, v) + log_offset * b.sum(-1))


def _plan_sum(u: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_{r,p} u_r m_rp v_p``: with ``m = K * X`` the plan's ``sum T X``. u (..., views),
    m (..., views, prompts), v (..., prompts) -> (...)."""
    return torch.einsum("...r,...rp,...p->...", u, m, v)


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
