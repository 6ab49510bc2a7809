"""The batched scorer against the paper's per-image loop, POT, and its own invariances."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F
from numpy.testing import assert_allclose

from awt import awt_scores, awt_scores_from_features, sinkhorn
from awt.oracles.awt import paper_awt_scores, paper_awt_single, paper_sinkhorn_iterations
from awt.scoring import (AWTConfig, awt_explain, awt_marginals, awt_problem, awt_problem_from_logits, clip_scores,
                         ensemble_scores, solve, transport_scores)
from awt.transport import Solution
from awt.weighting import prompt_entropies, softmax_entropy


def clip_like_features(batch, views, prompts, classes, dim=64, seed=0):
    """Unit features with CLIP-like cosines: views near one class, prompts near their class."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    text = F.normalize(centres[:, None] + 0.6 * torch.randn(classes, prompts, dim, generator=g) / dim**0.5 * 3, dim=-1)
    labels = torch.randint(0, classes, (batch,), generator=g)
    image = F.normalize(0.4 * centres[labels][:, None] + torch.randn(batch, views, dim, generator=g) / dim**0.5, dim=-1)
    return image, text


def random_logits(batch, views, prompts, classes, seed=0, scale=100.0):
    g = torch.Generator().manual_seed(seed)
    cos = (0.25 + 0.08 * torch.randn(batch, views, prompts, classes, generator=g)).clamp(-1, 1)
    return scale * cos


SHAPES = [(3, 7, 5, 2), (4, 17, 9, 10), (2, 51, 51, 100), (2, 11, 31, 1000), (5, 1, 4, 6), (3, 6, 1, 8)]


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_paper_loop_on_random_logits(shape):
    logits = random_logits(*shape, seed=sum(shape))
    ours = awt_scores(logits, 100.0)
    ref = paper_awt_scores(logits, 100.0)
    assert ours.shape == (shape[0], shape[3])
    assert_allclose(ours.numpy(), ref.numpy(), atol=2e-3, rtol=0)
    assert (ours.argmax(1) == ref.argmax(1)).all()


@pytest.mark.parametrize("shape", [(4, 51, 51, 10), (3, 9, 13, 200)])
def test_matches_paper_loop_on_clip_like_features(shape):
    image, text = clip_like_features(*shape)
    logits = 100.0 * torch.einsum("bvd,cpd->bvpc", image, text)
    ref = paper_awt_scores(logits, 100.0)
    assert_allclose(awt_scores(logits, 100.0).numpy(), ref.numpy(), atol=2e-3, rtol=0)
    from_features = awt_scores_from_features(image, text, 100.0)
    assert_allclose(from_features.numpy(), ref.numpy(), atol=2e-3, rtol=0)


def test_uniform_cosines_far_from_convergence_still_match():
    # Wide cosines make Sinkhorn stop on the iteration cap or the tolerance far from its fixed point:
    # the stopping rule itself must be the paper's (mean over all classes of one image).
    g = torch.Generator().manual_seed(3)
    logits = 100.0 * (torch.rand(6, 51, 51, 50, generator=g) * 2 - 1)
    assert_allclose(awt_scores(logits, 100.0).numpy(), paper_awt_scores(logits, 100.0).numpy(), atol=2e-3, rtol=0)


def test_each_image_independent_of_batch_and_order():
    logits = random_logits(6, 13, 7, 40, seed=5)
    batched = awt_scores(logits, 100.0)
    alone = torch.cat([awt_scores(logits[i : i + 1], 100.0) for i in range(6)])
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    permuted = awt_scores(logits[perm], 100.0)
    # Equal up to float rounding (BLAS may block a batched product differently for other sizes).
    assert_allclose(alone.numpy(), batched.numpy(), atol=1e-4, rtol=0)
    assert_allclose(permuted.numpy(), batched[perm].numpy(), atol=1e-4, rtol=0)
    assert torch.equal(alone.argsort(1), batched.argsort(1))


@pytest.mark.parametrize("chunk", [1, 7, 33, 1000])
def test_class_chunks_give_identical_results(chunk):
    image, text = clip_like_features(3, 9, 6, 33, seed=2)
    logits = 100.0 * torch.einsum("bvd,cpd->bvpc", image, text)
    full = awt_scores(logits, 100.0)
    assert_allclose(awt_scores(logits, 100.0, class_chunk=chunk).numpy(), full.numpy(), atol=1e-5, rtol=0)
    assert_allclose(awt_scores_from_features(image, text, 100.0, class_chunk=chunk).numpy(), full.numpy(), atol=1e-4)


def test_closed_form_prompt_entropy_equals_literal():
    g = torch.Generator().manual_seed(0)
    base = 30 * torch.randn(3, 50, generator=g)
    base[0, 7] += 200.0  # one class dominating: the others' mass underflows a naive subtraction
    x = base.unsqueeze(1) + 20 * torch.randn(3, 9, 50, generator=g)
    replaced = base[:, None, None, :].expand(3, 9, 50, 50).clone()
    idx = torch.arange(50)
    replaced[:, :, idx, idx] = x
    literal = softmax_entropy(replaced.double(), dim=-1)
    assert_allclose(prompt_entropies(base, x).double().numpy(), literal.numpy(), atol=2e-4)


def test_single_class_has_uniform_prompt_weights():
    logits = random_logits(2, 5, 4, 1)
    assert_allclose(awt_scores(logits, 100.0).numpy(), paper_awt_scores(logits, 100.0).numpy(), atol=1e-4)


def test_sinkhorn_agrees_with_pot():
    g = torch.Generator().manual_seed(1)
    n, views, prompts = 12, 9, 7
    cost = torch.rand(n, views, prompts, generator=g) * 0.6
    a = torch.softmax(torch.randn(n, views, generator=g).double(), -1)
    b = torch.softmax(torch.randn(n, prompts, generator=g).double(), -1)
    kernel = torch.exp(-cost.double() / 0.1)
    u, v, iters = sinkhorn(kernel.unsqueeze(1), a.unsqueeze(1), b.unsqueeze(1), max_iter=5000, tol=1e-9)
    plan = (u[:, 0, :, None] * kernel * v[:, 0, None, :]).numpy()
    pot_batch = ot.solve_batch(cost.double().numpy(), reg=0.1, a=a.numpy(), b=b.numpy(), max_iter=5000, tol=1e-12,
                               method="sinkhorn", reg_type="entropy").plan
    assert_allclose(plan, pot_batch, atol=1e-7)
    for i in range(n):  # and the classic single-problem solver
        single = ot.sinkhorn(a[i].numpy(), b[i].numpy(), cost[i].double().numpy(), 0.1, numItermax=5000, stopThr=1e-12)
        assert_allclose(plan[i], single, atol=1e-7)
    assert_allclose(plan.sum(2), a.numpy(), atol=1e-6)
    assert_allclose(plan.sum(1), b.numpy(), atol=1e-10)
    assert (iters < 5000).all()


def test_sinkhorn_per_group_stopping_is_batch_independent():
    g = torch.Generator().manual_seed(4)
    kernel = torch.exp(-(torch.rand(5, 8, 6, 4, generator=g) * 2) / 0.1)
    a = torch.full((5, 8, 6), 1 / 6)
    b = torch.full((5, 8, 4), 1 / 4)
    u, v, iters = sinkhorn(kernel, a, b, check_every=3)
    for i in range(5):
        ui, vi, it = sinkhorn(kernel[i : i + 1], a[i : i + 1], b[i : i + 1], check_every=7)
        assert iters[i] == it[0]
        assert_allclose(u[i].numpy(), ui[0].numpy(), rtol=1e-5)
        assert_allclose(v[i].numpy(), vi[0].numpy(), rtol=1e-5)
    assert len(set(iters.tolist())) > 1  # groups really stopped at different iterations


def test_prompt_mask_equals_ragged_literal_computation():
    image, text = clip_like_features(2, 6, 5, 4, seed=9)
    counts = [5, 3, 5, 2]
    padded = text.clone()
    mask = torch.zeros(4, 5, dtype=torch.bool)
    for c, k in enumerate(counts):
        padded[c, k:] = 0.0
        mask[c, :k] = True
    config = AWTConfig(tol=0.0, max_iter=60)  # fixed iterations: classes decouple, so each can be checked alone
    masked = awt_scores_from_features(image, padded, 100.0, config, prompt_mask=mask)
    for bi in range(2):
        real = [text[c, : counts[c]] for c in range(4)]
        mean_logits = torch.stack([100 * image[bi] @ r.mean(0) for r in real], -1)     # (views, classes)
        a = torch.softmax(-softmax_entropy(mean_logits) / 0.5, 0)
        for c in range(4):
            z = 100 * image[bi] @ real[c].T                                          # (views, prompts)
            entropies = []
            for p in range(counts[c]):
                row = mean_logits[0].clone()
                row[c] = z[0, p]
                entropies.append(softmax_entropy(row))
            b = torch.softmax(-torch.stack(entropies) / 0.5, 0)
            kernel = torch.exp(-(1 - z / 100) / 0.1)
            u, v, _ = sinkhorn(kernel[None, None], a[None, None], b[None, None], max_iter=60, tol=0.0)
            plan = u[0, 0, :, None] * kernel * v[0, 0, None, :]
            assert abs(float((plan * z).sum()) - float(masked[bi, c])) < 1e-3


def test_uniform_weights_ablation_uses_uniform_marginals():
    logits = random_logits(2, 5, 4, 3)
    scores = awt_scores(logits, 100.0, uniform=True)
    assert not torch.allclose(scores, awt_scores(logits, 100.0))
    z = logits[0, :, :, 0]
    kernel = torch.exp(-(1 - z / 100) / 0.1)
    plan = ot.sinkhorn(np.full(5, 0.2), np.full(4, 0.25), (1 - z / 100).double().numpy(), 0.1, numItermax=100, stopThr=1e-12)
    assert abs(float((torch.from_numpy(plan) * z.double()).sum()) - float(scores[0, 0])) < 0.05
    del kernel


def test_baselines():
    image, text = clip_like_features(3, 4, 5, 6)
    assert_allclose(clip_scores(image, text, 50.0).numpy(), (50.0 * image[:, 0] @ text[:, 0].T).numpy(), atol=1e-5)
    mean = F.normalize(text.mean(1), dim=-1)
    assert_allclose(ensemble_scores(image, text, 50.0).numpy(), (50.0 * image[:, 0] @ mean.T).numpy(), atol=1e-5)


def test_config_defaults_are_the_papers():
    c = AWTConfig()
    assert (c.image_temperature, c.text_temperature, c.epsilon, c.max_iter, c.tol) == (0.5, 0.5, 0.1, 100, 1e-2)


# -- the split scorer: problem, solve, score, and the plan explain reads ---------------------------


def wide_logits(batch, views, prompts, classes, seed):
    """Cosines spread over [-1, 1]: images stop after different numbers of iterations."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.linspace(0.2, 1.0, batch)[:, None, None, None]
    return 100.0 * (torch.rand(batch, views, prompts, classes, generator=g) * 2 - 1) * spread


@pytest.mark.parametrize("shape", [(4, 9, 5, 30), (3, 5, 12, 7), (2, 51, 51, 40)])
def test_each_image_runs_the_references_iterations(shape):
    logits = wide_logits(*shape, seed=sum(shape))
    problem = awt_problem_from_logits(logits, 100.0)
    for window in (None, 1, 4):   # when the host looks does not change when an image stops
        iterations = solve(problem, window=window).iterations.tolist()
        assert iterations == [paper_awt_single(x, 100.0).iterations for x in logits]
    assert len(set(iterations)) > 1 or shape[1] == 51


def test_plan_equals_the_references_plan_where_views_differ_from_prompts():
    image, text = clip_like_features(3, 7, 5, 12, seed=11)
    logits = 100.0 * torch.einsum("bvd,cpd->bvpc", image, text)
    chosen = torch.tensor([[0, 5, 11], [3, 3, 7], [11, 2, 9]])
    ex = awt_explain(image, text, None, 100.0, AWTConfig(), chosen)
    assert ex.plan.shape == (3, 3, 7, 5) and ex.b.shape == (3, 3, 5) and ex.a.shape == (3, 7)
    assert_allclose(ex.score.numpy(), awt_scores_from_features(image, text, 100.0).gather(1, chosen).numpy(), atol=1e-5)
    for i in range(3):
        ref = paper_awt_single(logits[i], 100.0)
        assert int(ex.iterations[i]) == ref.iterations
        assert_allclose(ex.plan[i].numpy(), ref.plan[chosen[i]].numpy(), atol=1e-7, rtol=1e-4)
        assert_allclose(ex.a[i].numpy(), ref.a.numpy(), atol=1e-6)
        assert_allclose(ex.b[i].numpy(), ref.b[chosen[i]].numpy(), atol=1e-6)
        assert_allclose(ex.score[i].numpy(), ref.scores[chosen[i]].numpy(), atol=1e-4)
    # the splits of the score over views and over prompts
    assert_allclose(ex.view_scores.sum(-1).numpy(), ex.score.numpy(), atol=1e-4)
    assert_allclose(ex.prompt_scores.sum(-1).numpy(), ex.score.numpy(), atol=1e-4)
    assert_allclose(ex.plan.sum(-2).numpy(), ex.b.numpy(), atol=1e-6)          # a column update came last
    assert_allclose(ex.cosine.numpy(), torch.einsum("bvd,bkpd->bkvp", image, text[chosen]).numpy(), atol=1e-5)


def test_explain_with_ragged_prompts_reads_the_scored_plan():
    image, text = clip_like_features(2, 6, 5, 4, seed=9)
    counts = [5, 3, 5, 2]
    mask = torch.arange(5)[None, :] < torch.tensor(counts)[:, None]
    text = text * mask[..., None]
    ex = awt_explain(image, text, mask, 100.0, AWTConfig(), [1, 3])
    scores = awt_scores_from_features(image, text, 100.0, prompt_mask=mask)
    assert_allclose(ex.score.numpy(), scores[:, [1, 3]].numpy(), atol=1e-5)
    assert (ex.plan[:, 0, :, 3:] == 0).all() and (ex.plan[:, 1, :, 2:] == 0).all()   # padding gets no mass
    assert (ex.b[:, 1, 2:] == 0).all()
    # the plan is the literal Sinkhorn's on the same marginals, stopped by the mean over all 4 classes
    logits = 100.0 * torch.einsum("bvd,cpd->bvpc", image, text)
    real = logits * mask.T
    a, b = awt_marginals(real.sum(2) / mask.sum(1), logits[:, 0], AWTConfig(), mask)
    for i in range(2):
        kernel = torch.exp((logits[i].permute(2, 0, 1) / 100.0 - 1) / 0.1)
        plan, iterations = paper_sinkhorn_iterations(kernel, a[i].expand(4, 6), b[i].T)
        assert iterations == int(ex.iterations[i])
        assert_allclose(ex.plan[i].numpy(), plan[[1, 3]].numpy(), atol=1e-7, rtol=1e-4)


def test_uniform_weights_are_an_argument_of_the_method():
    from awt.bench.config import config_keys
    from awt.methods import get_method, score

    assert config_keys(AWTConfig) == ("image_temperature", "text_temperature", "epsilon", "max_iter", "tol")
    image, text = clip_like_features(2, 5, 4, 6, seed=3)
    logits = 100.0 * torch.einsum("bvd,cpd->bvpc", image, text)
    ex = awt_explain(image, text, None, 100.0, AWTConfig(), [0], uniform=True)
    assert_allclose(ex.a.numpy(), np.full((2, 5), 0.2), atol=1e-7)
    assert_allclose(ex.b.numpy(), np.full((2, 1, 4), 0.25), atol=1e-7)
    registry = score(get_method("awt-uniform"), image, text, None, 100.0)
    ref = torch.stack([paper_awt_single(x, 100.0, uniform_weights=True).scores for x in logits])
    assert_allclose(registry.numpy(), ref.numpy(), atol=1e-4)
    assert_allclose(awt_scores(logits, 100.0, uniform=True).numpy(), ref.numpy(), atol=1e-4)


def test_score_is_the_plans_whether_the_solver_kept_its_cost_or_not():
    image, text = clip_like_features(3, 8, 6, 20, seed=4)
    problem = awt_problem(image, text, 100.0, class_chunk=7)
    sol = solve(problem, block=5)
    plan = sol.u[..., :, None] * problem.kernel() * sol.v[..., None, :]
    direct = 100.0 * (plan * problem.cosines()).sum((-1, -2))
    assert_allclose(transport_scores(problem, sol).numpy(), direct.numpy(), atol=1e-4)
    recomputed = transport_scores(problem, Solution(sol.u, sol.v, sol.iterations))
    assert_allclose(recomputed.numpy(), direct.numpy(), atol=1e-4)
    # the logits path builds the same problem
    logits = 100.0 * torch.einsum("bvd,cpd->bvpc", image, text)
    other = awt_problem_from_logits(logits, 100.0)
    assert_allclose(other.scaled_cosines.numpy(), problem.scaled_cosines.numpy(), atol=1e-4)
    assert_allclose(other.b.numpy(), problem.b.numpy(), atol=1e-6)


def test_authors_awt_code_transcribed():
    """AWT_zero_shot/evaluate.py of the authors (get_entropy_weight, Sinkhorn, optimal_transport),
    restated for one image on the CPU in float32, against the batched scorer."""
    def entropy(x):
        return -(x.softmax(-1) * x.log_softmax(-1)).sum(-1)

    def authors(output, scale):                      # output: (views, prompts, classes) logits
        image_w = torch.softmax(-entropy(output.mean(1)) / 0.5, -1)
        n_des, n_cls = output.shape[1:]
        anchor = output[0].mean(0)[None, None, :].repeat(n_des, n_cls, 1)
        anchor.scatter_(2, torch.arange(n_cls)[None, :, None].repeat(n_des, 1, 1), output[0].unsqueeze(-1))
        text_w = torch.softmax(-entropy(anchor).t() / 0.5, -1)
        kk = torch.exp(-(1.0 - output.permute(2, 0, 1) / scale) / 0.1)
        r, c = torch.ones_like(image_w), torch.ones_like(text_w)
        for _ in range(100):
            r0 = r
            r = image_w / torch.matmul(kk, c.unsqueeze(-1)).squeeze(-1)
            c = text_w / torch.matmul(kk.permute(0, 2, 1).contiguous(), r.unsqueeze(-1)).squeeze(-1)
            if (r - r0).abs().mean().item() < 1e-2:
                break
        plan = torch.matmul(r.unsqueeze(-1), c.unsqueeze(-2)) * kk
        return (plan.permute(1, 2, 0) * output).sum((0, 1))

    image, text = clip_like_features(3, 11, 6, 25, seed=8)
    logits = 100.0 * torch.einsum("bvd,cpd->bvpc", image, text)
    theirs = torch.stack([authors(x, 100.0) for x in logits])
    ours = awt_scores_from_features(image, text, 100.0)
    assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4)
    assert (ours.argmax(1) == theirs.argmax(1)).all()


def test_accelerator_layout_and_torch_windows_give_the_same_scores(monkeypatch):
    """The paths a GPU takes (classes-major kernel, windows in torch), run here on the CPU."""
    import awt.scoring as scoring
    import awt.transport as transport

    image, text = clip_like_features(3, 9, 7, 15, seed=6)
    logits = wide_logits(3, 9, 7, 15, seed=2)
    cpu = (awt_scores_from_features(image, text, 100.0), awt_scores(logits, 100.0))
    iterations = solve(awt_problem_from_logits(logits, 100.0)).iterations
    monkeypatch.setattr(scoring, "_PROMPTS_MAJOR_DEVICES", set())
    monkeypatch.setattr(transport, "_COMPILED_DEVICES", set())
    problem = awt_problem(image, text, 100.0)
    assert problem.scaled_cosines.is_contiguous()               # (batch, classes, views, prompts)
    assert_allclose(awt_scores_from_features(image, text, 100.0).numpy(), cpu[0].numpy(), atol=1e-4)
    assert_allclose(awt_scores(logits, 100.0).numpy(), cpu[1].numpy(), atol=1e-4)
    assert torch.equal(solve(awt_problem_from_logits(logits, 100.0)).iterations, iterations)


@pytest.mark.parametrize("batch", [1, 2, 3, 5])
def test_cpu_kernel_rows_are_padded_to_whole_vectors_and_the_padding_never_counts(batch):
    image, text = clip_like_features(batch, 13, 6, 9, seed=batch)            # rows of 13, 26, 39, 65 values
    problem = awt_problem(image, text, 100.0)
    kernel = problem.scaled_cosines                                         # (batch, classes, views, prompts)
    assert kernel.stride(3) % 16 == 0 and kernel.stride(3) >= batch * 13    # a (class, prompt) row, padded
    assert_allclose(kernel.numpy(), torch.einsum("bvd,cpd->bcvp", image, text).numpy() / 0.1, atol=1e-5)
    alone = torch.cat([awt_scores_from_features(image[i:i + 1], text, 100.0) for i in range(batch)])
    assert_allclose(awt_scores_from_features(image, text, 100.0).numpy(), alone.numpy(), rtol=1e-5)


def test_scorer_buffer_serves_calls_in_and_out_of_inference_mode(monkeypatch):
    import awt.scoring as scoring

    monkeypatch.setattr(scoring._WORKSPACE, "buffer", None)     # made by the first call, in inference mode
    image, text = clip_like_features(2, 5, 4, 6, seed=1)
    with torch.inference_mode():
        inside = awt_scores_from_features(image, text, 100.0)
    assert torch.equal(awt_scores_from_features(image, text, 100.0), inside)
    with torch.inference_mode():
        assert torch.equal(awt_scores_from_features(image, text, 100.0), inside)
