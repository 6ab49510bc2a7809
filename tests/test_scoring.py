"""The batched scorer against the paper's per-image loop, POT, and its own invariances."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F
from numpy.testing import assert_allclose

from awt import awt_scores, awt_scores_from_features, sinkhorn
from awt.reference import paper_awt_scores
from awt.scoring import AWTConfig, clip_scores, ensemble_scores
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
    scores = awt_scores(logits, 100.0, uniform_weights=True)
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
