"""The compiled CPU window (awt.transport_cpu) against the torch window and a literal per-problem loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from awt import transport
from awt.oracles.awt import paper_sinkhorn_iterations
from awt.transport import solve_grouped
from awt.transport_cpu import _exp


def test_exp_matches_numpy_to_float32_rounding():
    x = np.concatenate([np.linspace(-87.3, 88.0, 200_003, dtype=np.float32),
                        np.float32([-1e4, -100.0, -87.31, 0.0, np.nan])])
    out = np.empty_like(x)
    _exp(x, np.float32(0.0), out)
    normal = x > -87.3
    expected = np.exp(x.astype(np.float64))
    assert np.abs(out[normal] / expected[normal] - 1).max() < 3e-7       # about 2 ulp
    assert (out[(x <= -87.3)] == 0).all()                                # under float32's normal range
    assert np.isnan(out[-1])                                             # NaN is kept, not zeroed
    low = (x - np.float32(5.0))[:-1]
    shifted = np.empty_like(low)
    _exp(low, np.float32(5.0), shifted)
    inside = low + 5 > -87.3
    assert np.abs(shifted[inside] / np.exp(low[inside].astype(np.float64) + 5) - 1).max() < 3e-7


def _problems(groups, members, views, prompts, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(groups, members, views, prompts, generator=g) * 2 - 1) / 0.1       # cos / eps
    a = torch.softmax(torch.randn(groups, members, views, generator=g), -1)
    b = torch.softmax(torch.randn(groups, members, prompts, generator=g), -1)
    return x, a, b


def _stored(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` (groups, members, views, prompts) in other memory orders, same values."""
    groups, members, views, prompts = x.shape
    if layout == "contiguous":
        return x.contiguous()
    if layout == "prompts-major":       # the CPU scorer's: (members, prompts, groups, views)
        return x.permute(1, 3, 0, 2).contiguous().permute(2, 0, 3, 1)
    if layout == "views-major":         # (groups, views, members, prompts)
        return x.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    raise ValueError(layout)


@pytest.mark.parametrize("layout", ["contiguous", "prompts-major", "views-major"])
@pytest.mark.parametrize("shape", [(3, 5, 7, 4), (2, 4, 3, 9), (1, 6, 51, 51)])
def test_compiled_window_equals_torch_window(layout, shape, monkeypatch):
    x, a, b = _problems(*shape, seed=sum(shape))
    stored = _stored(x, layout)
    assert transport._compiled_layout(stored) is not None
    for window in (1, 3):
        compiled = solve_grouped(stored, a, b, max_iter=7, tol=0.0, window=window, log_offset=-10.0)
        with monkeypatch.context() as m:
            m.setattr(transport, "_COMPILED_DEVICES", set())
            reference = solve_grouped(x, a, b, max_iter=7, tol=0.0, window=window, log_offset=-10.0)
        assert_allclose(compiled.u.numpy(), reference.u.numpy(), rtol=2e-5)
        assert_allclose(compiled.v.numpy(), reference.v.numpy(), rtol=2e-5)
        assert_allclose(compiled.cost.numpy(), reference.cost.numpy(), rtol=2e-5)
        assert (compiled.iterations == 7).all()


def test_compiled_window_stops_each_group_as_the_literal_loop():
    groups, members, views, prompts = 4, 6, 9, 5
    x, a, b = _problems(groups, members, views, prompts, seed=3)
    x = x * torch.linspace(0.3, 1.5, groups)[:, None, None, None]        # groups converge at different speeds
    a = a[:, :1].expand(groups, members, views)                          # AWT: one view weighting per image
    stored = _stored(x, "prompts-major")
    for window in (None, 1, 2, 5):
        sol = solve_grouped(stored, a, b, window=window, log_offset=-10.0)
        for g in range(groups):
            kernel = torch.exp(x[g] - 10.0)
            plan, iterations = paper_sinkhorn_iterations(kernel, a[g], b[g])
            assert int(sol.iterations[g]) == iterations
            mine = sol.u[g][..., :, None] * kernel * sol.v[g][..., None, :]
            assert_allclose(mine.numpy(), plan.numpy(), rtol=1e-4, atol=1e-9)
            cost = -(plan * (x[g] - 10.0)).sum((-1, -2))
            assert_allclose(sol.cost[g].numpy(), cost.numpy(), rtol=1e-5)
    assert len(set(sol.iterations.tolist())) > 1


def test_kernel_given_directly_and_tiny_epsilon(monkeypatch):
    x, a, b = _problems(2, 3, 6, 5, seed=5)
    kernel = torch.exp(x - 10.0)
    direct = solve_grouped(kernel, a, b, max_iter=9, tol=0.0)               # no exponent: the values are K
    exponent = solve_grouped(x, a, b, max_iter=9, tol=0.0, log_offset=-10.0)
    assert_allclose((direct.u[..., :, None] * direct.v[..., None, :]).numpy(),
                    (exponent.u[..., :, None] * exponent.v[..., None, :]).numpy(), rtol=1e-4)
    assert_allclose(direct.cost.numpy(), exponent.cost.numpy(), rtol=1e-4)
    # eps = 1/200: exp(X) would overflow, so the kernel is exp(X - 200) itself, and values under
    # float32's range are 0 as in the paper's code (and in the torch window)
    cos = 0.3 + 0.7 * torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(8))
    cos[..., 0] = 0.95                                                   # no row underflows whole
    tiny = solve_grouped(_stored(200 * cos, "prompts-major"), a, b, max_iter=9, tol=0.0, log_offset=-200.0)
    assert (torch.exp(200 * cos - 200) == 0).any() and torch.isfinite(tiny.cost).all()
    with monkeypatch.context() as m:
        m.setattr(transport, "_COMPILED_DEVICES", set())
        reference = solve_grouped(200 * cos, a, b, max_iter=9, tol=0.0, log_offset=-200.0)
    assert_allclose(tiny.u.numpy(), reference.u.numpy(), rtol=1e-4)
    assert_allclose(tiny.cost.numpy(), reference.cost.numpy(), rtol=1e-4)


def test_nan_reaches_the_scalings():
    x, a, b = _problems(2, 3, 6, 5, seed=6)
    x[1, 2, 0, 0] = float("nan")
    sol = solve_grouped(_stored(x, "prompts-major"), a, b, max_iter=5, tol=0.0, log_offset=-10.0)
    assert torch.isnan(sol.u[1, 2]).any() and torch.isnan(sol.cost[1, 2])
    assert torch.isfinite(sol.u[0]).all() and torch.isfinite(sol.cost[0]).all()


def test_tiles_and_threads_do_not_change_a_bit():
    x, a, b = _problems(5, 40, 7, 6, seed=7)
    stored = _stored(x, "prompts-major")
    first = solve_grouped(stored, a, b, log_offset=-10.0)
    threads = torch.get_num_threads()
    try:
        for block, count in ((1, threads), (13, 1), (10_000, 2)):
            torch.set_num_threads(count)
            other = solve_grouped(stored, a, b, block=block, log_offset=-10.0)
            assert torch.equal(other.u, first.u) and torch.equal(other.v, first.v)
            assert torch.equal(other.cost, first.cost) and torch.equal(other.iterations, first.iterations)
    finally:
        torch.set_num_threads(threads)


def test_openmp_team_and_thread_pool_give_the_same_bits(monkeypatch):
    x, a, b = _problems(6, 30, 9, 7, seed=8)
    a = a[:, :1].expand_as(a)                                    # stride 0, as the scorer's view weights
    x = x * torch.linspace(0.3, 1.5, 6)[:, None, None, None]     # groups stop at different iterations
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = {}
        for runner in ("team", "pool"):
            with monkeypatch.context() as m:
                if runner == "pool":
                    m.setattr(transport, "_team", lambda: None)
                elif transport._team() is None:
                    pytest.skip("torch here runs without a GNU-compatible OpenMP runtime")
                for layout in ("prompts-major", "views-major", "contiguous"):
                    for cost in (True, False):
                        results[runner, layout, cost] = solve_grouped(_stored(x, layout), a, b, block=17, cost=cost,
                                                                      log_offset=-10.0)
    finally:
        torch.set_num_threads(threads)
    for (runner, layout, cost), team in results.items():
        if runner == "team":
            pool = results["pool", layout, cost]
            assert torch.equal(team.u, pool.u) and torch.equal(team.v, pool.v)
            assert torch.equal(team.iterations, pool.iterations) and len(set(team.iterations.tolist())) > 1
            assert (team.cost is None and not cost) or torch.equal(team.cost, pool.cost)


def test_solves_from_several_threads_at_once_keep_their_bits():
    """Each calling thread leads an OpenMP team of its own (as a server's request threads would)."""
    from concurrent.futures import ThreadPoolExecutor

    problems = [_problems(4, 25, 8, 6, seed=20 + i) for i in range(4)]
    stored = [(_stored(x, "prompts-major"), a, b) for x, a, b in problems]
    alone = [solve_grouped(x, a, b, block=9, log_offset=-10.0) for x, a, b in stored]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: solve_grouped(*p, block=9, log_offset=-10.0), stored * 3))
    for i, sol in enumerate(together):
        ref = alone[i % 4]
        assert torch.equal(sol.u, ref.u) and torch.equal(sol.cost, ref.cost)


def test_without_numba_the_torch_window_runs_with_a_warning(monkeypatch):
    import sys

    x, a, b = _problems(3, 4, 7, 5, seed=9)
    stored = _stored(x, "prompts-major")
    compiled = solve_grouped(stored, a, b, log_offset=-10.0)
    monkeypatch.setitem(sys.modules, "awt.transport_cpu", None)       # as if numba could not be imported
    transport._compiled.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="compiled CPU solver is unavailable"):
            fallback = solve_grouped(stored, a, b, log_offset=-10.0)
    finally:
        monkeypatch.undo()
        transport._compiled.cache_clear()
    assert transport._compiled() is not None
    assert torch.equal(fallback.iterations, compiled.iterations)
    assert_allclose(fallback.cost.numpy(), compiled.cost.numpy(), rtol=2e-5)
    assert_allclose(fallback.u.numpy(), compiled.u.numpy(), rtol=2e-5)
