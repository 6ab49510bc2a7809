"""The training-free rivals: each batched scorer against its literal per-image reference, against a
transcription of its authors' own scoring code, and the prompt sets the registry gives them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy.testing import assert_allclose

from awt import methods, rivals
from awt.oracles import rivals as R
from awt.bench.plan import effective_settings
from awt.prompt_sets import WAFFLE_PAIRS, Waffle, build_prompts
from awt.waffle import descriptor_clause, waffle_descriptors, word_list

RIVALS = {
    "zero": R.zero_single, "zero-ensemble": R.zero_single, "mta": R.mta_single, "dclip": R.description_single,
    "waffle": R.description_single, "autoclip": R.autoclip_single, "templates": R.templates_single,
}
# (batch, 1 + N views, prompts, classes): views != prompts, 2 to 1,000 classes
SHAPES = [(3, 7, 5, 2), (4, 17, 9, 10), (3, 51, 31, 100), (2, 11, 24, 1000), (5, 4, 2, 6), (3, 1, 3, 8)]
SCALE = 100.0


def clip_like(batch, views, prompts, classes, dim=48, seed=0, signal=0.5):
    """Unit features with CLIP-like cosines: prompts near their class, views near one class."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    text = F.normalize(centres[:, None] + 1.2 * torch.randn(classes, prompts, dim, generator=g) / dim**0.5, dim=-1)
    labels = torch.randint(0, classes, (batch,), generator=g)
    image = F.normalize(signal * centres[labels][:, None] + torch.randn(batch, views, dim, generator=g) / dim**0.5, dim=-1)
    return image, text


def ragged(text, seed=0):
    """Zero some classes' last prompts (at least one real prompt each) and give their mask."""
    g = torch.Generator().manual_seed(seed)
    classes, prompts, _ = text.shape
    counts = torch.randint(1, prompts + 1, (classes,), generator=g)
    mask = torch.arange(prompts)[None] < counts[:, None]
    return text * mask[..., None], mask


def inputs_of(name, image, text, mask):
    """What ``methods.score`` hands the method: view 0 alone, prompt 0 alone, as its entry says."""
    m = methods.get_method(name)
    image = image if m.random_views else image[:, :1]
    if m.prompts == methods.TEMPLATE:
        return image, text[:, :1], None
    return image, text, mask


def check(name, image, text, mask=None):
    ours = methods.score(name, image, text, mask, SCALE)
    ref = R.per_image(RIVALS[name], *inputs_of(name, image, text, mask), SCALE)
    assert ours.shape == ref.shape == (image.shape[0], text.shape[0])
    assert torch.isfinite(ours).all()
    # MTA's densities are exponentials of squared distances over bandwidths: with few views (one
    # neighbour sets a bandwidth) the batched float32 path and the reference's double-precision
    # sums part by up to 4e-5 relative (measured on an AVX-512 CPU).
    rtol = 2e-4 if name == "mta" else 0
    assert_allclose(ours.numpy(), ref.numpy(), atol=5e-4, rtol=rtol, err_msg=name)
    assert torch.equal(ours.argmax(1), ref.argmax(1)), name
    return float((ours - ref).abs().max())


# -- batched scorer == literal per-image reference ------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(RIVALS))
def test_matches_literal_reference(name, shape):
    image, text = clip_like(*shape, seed=sum(shape))
    check(name, image, text)


@pytest.mark.parametrize("name", ["zero-ensemble", "dclip", "waffle", "autoclip", "templates"])
@pytest.mark.parametrize("shape", [(3, 9, 6, 7), (2, 13, 12, 40)])
def test_ragged_prompts_match_literal_reference(name, shape):
    image, text = clip_like(*shape, seed=7)
    text, mask = ragged(text, seed=sum(shape))
    check(name, image, text, mask)


@pytest.mark.parametrize("name", list(RIVALS))
def test_each_image_independent_of_batch(name):
    image, text = clip_like(6, 13, 9, 30, seed=3)
    batched = methods.score(name, image, text, None, SCALE)
    alone = torch.cat([methods.score(name, image[i:i + 1], text, None, SCALE) for i in range(6)])
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    permuted = methods.score(name, image[perm], text, None, SCALE)
    assert_allclose(alone.numpy(), batched.numpy(), atol=1e-4, rtol=0)
    assert_allclose(permuted.numpy(), batched[perm].numpy(), atol=1e-4, rtol=0)
    assert torch.equal(alone.argmax(1), batched.argmax(1))
    assert torch.equal(methods.score(name, image, text, None, SCALE), batched)   # deterministic


def test_zero_ties_are_broken_and_counted():
    # 7 views keep int(0.3 * 7) = 2: random features split them often, and the tie-break adds one vote
    image, text = clip_like(40, 7, 1, 5, seed=11)
    votes = methods.score("zero", image, text, None, SCALE)
    assert set(votes.sum(1).tolist()) <= {2.0, 3.0} and (votes.sum(1) == 3).any()
    assert (votes.max(1).values > votes.topk(2, 1).values[:, 1]).all()       # one winner per image


# -- against the authors' own scoring code, transcribed -------------------------------------------------
# Each function below follows the named function of the authors' repository line by line (their
# variable names, their order of operations), on features given directly.


def authors_zero(views_feats, z_txt, logit_scale, gamma=0.3):
    """github.com/FarinaMatteo/zero: ttas/zero.py Zero.zero, ttas/base.py confidence_filter,
    utils/tools.py greedy_break / break_sample_tie."""
    temp = 1 / logit_scale
    l = views_feats @ z_txt.t()
    p = (l / temp).softmax(1)
    batch_entropy = -(p * p.log()).sum(1)
    if torch.isnan(batch_entropy).any():     # a probability underflowed: 0 * log 0 is NaN here, 0 in ours
        return None, "underflow"
    full_idx = torch.argsort(batch_entropy, descending=False, stable=True)
    filt_idx = full_idx[:int(batch_entropy.size()[0] * gamma)]
    l_filt, sorted_idx = l[filt_idx], full_idx
    zero_temp = torch.finfo(l_filt.dtype).eps
    p_bar = (l_filt / zero_temp).softmax(1).sum(0)
    max_counts, scalar_pred = torch.max(p_bar, dim=-1)
    ties = [scalar_pred]
    for i in range(len(p_bar)):
        if i == scalar_pred:
            continue
        if p_bar[i] == max_counts:
            ties.append(i)
    what = "no tie"
    if len(ties) > 1:
        what = "tie"
        k = int(views_feats.size(0) * gamma)
        sorted_l = l[sorted_idx][k:]
        ties_tensor = torch.tensor(ties, dtype=torch.int)
        scalar_pred = None
        for pred in torch.argmax(sorted_l, dim=1):
            if pred in ties_tensor:
                scalar_pred = pred
                break
        if scalar_pred is None:     # break_sample_tie indexes with ~ties: not what it means, not compared
            return None, "fallback"
        p_bar[scalar_pred] += 1
    return p_bar, what


def test_zero_matches_authors_code():
    counts = {"compared": 0, "ties broken": 0, "underflow": 0, "fallback": 0}
    for shape in [(40, 7, 1, 5), (30, 10, 1, 4), (30, 64, 1, 10), (20, 51, 1, 100), (12, 64, 7, 1000)]:
        # weak class signal with few views (ties), and at 1,000 classes (no float32 underflow)
        image, text = clip_like(*shape, seed=shape[3], signal=0.5 if 10 < shape[1] and shape[3] < 1000 else 0.2)
        ours = methods.score("zero" if shape[2] == 1 else "zero-ensemble", image, text, None, SCALE)
        z_txt = rivals.class_embeddings(text)
        for i in range(shape[0]):
            theirs, what = authors_zero(image[i], z_txt, SCALE)
            if what in ("underflow", "fallback"):
                counts[what] += 1
                continue
            assert torch.equal(ours[i], theirs), (shape, i)
            counts["compared"] += 1
            counts["ties broken"] += what == "tie"
    assert counts["compared"] >= 110 and counts["ties broken"] >= 15, counts


def authors_mta(image_features, text_features, logit_scale, lambda_y=0.2, lambda_q=4):
    """github.com/MaxZanella/MTA: mta.py solve_mta (gaussian_kernel inlined), features given."""
    def gaussian_kernel(mu, bandwidth, datapoints):
        dist = torch.norm(datapoints - mu, dim=-1, p=2)
        return torch.exp(-dist**2 / (2 * bandwidth**2))

    logits = image_features @ text_features.t() * logit_scale
    max_iter, temperature, th = 5, 1, 1e-6
    batch_size = image_features.shape[0]
    dist = torch.cdist(image_features, image_features)
    sorted_dist, _ = torch.sort(dist, dim=1)
    k = int(0.3 * (image_features.shape[0] - 1))
    selected_distances = sorted_dist[:, 1:k + 1]**2
    bandwidth = torch.sqrt(0.5 * torch.mean(selected_distances, dim=1))
    affinity_matrix = (logits / temperature).softmax(1) @ (logits / temperature).softmax(1).t()
    y = torch.ones(batch_size) / batch_size
    mode = image_features[0]
    it = 0
    while True:
        density = gaussian_kernel(mode, bandwidth, image_features)
        i = 0
        while True:
            i += 1
            old_y = y
            weighted_affinity = affinity_matrix * y.unsqueeze(0)
            y = F.softmax(1 / lambda_y * (density + lambda_q * torch.sum(weighted_affinity, dim=1)), dim=-1)
            if torch.norm(old_y - y) < th or i >= max_iter:
                break
        i = 0
        while True:
            i += 1
            old_mode = mode
            density = gaussian_kernel(mode, bandwidth, image_features)
            weighted_density = density * y
            mode = torch.sum(weighted_density.unsqueeze(1) * image_features, dim=0) / torch.sum(weighted_density)
            mode /= mode.norm(p=2, dim=-1)
            if torch.norm(old_mode - mode) < th or i >= max_iter:
                break
        it += 1
        if it >= max_iter:
            break
    return mode.unsqueeze(0) @ text_features.t() * logit_scale


@pytest.mark.parametrize("shape", [(4, 64, 10), (3, 51, 200)])
def test_mta_matches_authors_code(shape):
    batch, views, classes = shape
    image, text = clip_like(batch, views, 1, classes, seed=classes)
    ours = methods.score("mta", image, text, None, SCALE)
    theirs = torch.cat([authors_mta(image[i], text[:, 0], SCALE) for i in range(batch)])
    assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-3, rtol=0)
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def authors_descriptor_scores(image_encodings, description_encodings):
    """github.com/ExplainableML/WaffleCLIP: base_main.py's classification loop (aggregate 'mean', no
    merging), as DCLIP's; the class lists hold the descriptor prompts only."""
    image_description_similarity_cumulative = [None] * len(description_encodings)
    for i, v in enumerate(description_encodings):
        image_description_similarity_cumulative[i] = (image_encodings @ v.T).mean(dim=1)
    return torch.stack(image_description_similarity_cumulative, dim=1)


@pytest.mark.parametrize("name", ["dclip", "waffle"])
def test_descriptor_methods_match_authors_code(name):
    image, text = clip_like(8, 1, 31, 50, seed=5)
    ours = methods.score(name, image, text, None, SCALE)
    theirs = SCALE * authors_descriptor_scores(image[:, 0], [text[c, 1:] for c in range(50)])
    assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4, rtol=0)
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def authors_autoclip(cosine_similarities, beta=0.85):
    """github.com/boschresearch/autoclip: auto_clip_simulated.py autoclip_aggregation (tensors
    laid out (instance, 1, class, descriptor) as its (i, c, g, d))."""
    from scipy.optimize import bisect
    from scipy.special import softmax

    instance_multiple, n_classes, _, n_descriptors = cosine_similarities.shape
    weights_logits = torch.nn.parameter.Parameter(torch.zeros((instance_multiple, n_classes, n_descriptors)))
    weights = weights_logits.softmax(dim=2)
    logits = torch.sum(weights[:, None] * torch.from_numpy(cosine_similarities), -1)
    lse = torch.logsumexp(logits, axis=2).sum()
    grad_weights_logits = torch.autograd.grad(lse, weights_logits)[0]
    base_entropy = -(weights * torch.log2(weights)).sum(-1).detach().cpu().numpy()
    target_entropy_step = base_entropy * beta
    step_sizes = torch.ones((instance_multiple, n_classes))
    grad_np = grad_weights_logits.detach().cpu().numpy()
    weights_logits_np = weights_logits.detach().cpu().numpy()
    for i in range(instance_multiple):
        for j in range(n_classes):
            def f(step_size):
                weights_ = softmax(weights_logits_np[i, j] + step_size * grad_np[i, j], axis=-1)
                entropy = -(weights_ * np.log2(weights_ + 1e-10)).sum(-1)
                return entropy - target_entropy_step[i, j]
            step_sizes[i, j] = bisect(f=f, a=0.0, b=1e7, maxiter=100, xtol=1e-2, rtol=1e-2)
    weights_logits.data += step_sizes[:, :, None] * grad_weights_logits
    weights = weights_logits.softmax(dim=2)
    logits = torch.sum(weights[:, :, None] * torch.from_numpy(cosine_similarities), -1)
    return logits.detach().numpy()


@pytest.mark.parametrize("shape", [(6, 80, 10), (4, 80, 300), (5, 7, 3)])
def test_autoclip_matches_authors_code(shape):
    batch, prompts, classes = shape
    image, text = clip_like(batch, 1, prompts, classes, seed=prompts + classes)
    ours = methods.score("autoclip", image, text, None, SCALE)
    sim = torch.einsum("bd,cpd->bcp", image[:, 0], text).double().numpy()[:, None]   # (i, c=1, g, d)
    theirs = SCALE * authors_autoclip(sim)[:, 0]
    # their bisection runs on float64 similarities here, ours on float32 cosines: steps agree to 1e-2
    assert_allclose(ours.numpy(), theirs, atol=2e-3, rtol=0)
    assert (ours.argmax(1).numpy() == theirs.argmax(1)).all()
    # and the weights really moved away from uniform (the mean of the descriptors)
    assert not np.allclose(ours.numpy(), SCALE * sim[:, 0].mean(-1), atol=1e-3)


def method_prompts(name, classnames, template="a photo of a {}", descriptions=None, per_class=0, seed=0):
    """The prompts the registry's method ``name`` reads."""
    return methods.get_method(name).prompts.build(classnames, template, descriptions, per_class, seed)


def test_templates_match_open_clip_classifier():
    from open_clip.zero_shot_classifier import build_zero_shot_classifier
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    names = [f"class {i}" for i in range(12)]
    prompts = method_prompts("templates", names)
    image, text = clip_like(5, 1, 80, 12, seed=2)
    table = {p: text[c, j] for c, row in enumerate(prompts) for j, p in enumerate(row)}

    class Model:    # open_clip's interface: encode_text of tokens; the "tokens" index our table
        def encode_text(self, tokens, normalize=False):
            return torch.stack([text.reshape(-1, text.shape[-1])[int(t)] for t in tokens])

    order = {p: i for i, p in enumerate(table)}
    classifier = build_zero_shot_classifier(Model(), lambda texts: torch.tensor([order[t] for t in texts]),
                                            names, OPENAI_IMAGENET_TEMPLATES, num_classes_per_batch=5,
                                            device="cpu")
    theirs = SCALE * image[:, 0] @ classifier
    assert_allclose(methods.score("templates", image, text, None, SCALE).numpy(), theirs.numpy(), atol=1e-4)


# -- prompt sets and the registry -------------------------------------------------------------------


def test_authors_defaults():
    assert rivals.ZERO_GAMMA == 0.3
    assert (rivals.MTA_LAMBDA_Y, rivals.MTA_LAMBDA_Q, rivals.MTA_MAX_ITER, rivals.MTA_TOL) == (0.2, 4.0, 5, 1e-6)
    assert (rivals.AUTOCLIP_BETA, rivals.AUTOCLIP_BRACKET, rivals.AUTOCLIP_XTOL) == (0.85, (0.0, 1e7), 1e-2)
    assert WAFFLE_PAIRS == 15


def test_template_sets_come_from_open_clip():
    from open_clip import zero_shot_metadata as meta

    p80 = method_prompts("templates", ["cat", "dog"])
    assert len(p80[0]) == 80 and p80[1] == [t("dog") for t in meta.OPENAI_IMAGENET_TEMPLATES]
    p7 = method_prompts("zero-ensemble", ["cat"])
    assert p7[0] == [t("cat") for t in meta.SIMPLE_IMAGENET_TEMPLATES] and "itap of a cat." in p7[0]
    assert method_prompts("autoclip", ["cat"]) == method_prompts("templates", ["cat"])


def test_description_and_template_sets():
    desc = [["d1", "d2", "d3"], ["e1", "e2", "e3"]]
    assert method_prompts("dclip", ["cat", "dog"], "a photo of a {}.", desc, 2) == \
        build_prompts(["cat", "dog"], "a photo of a {}.", desc, 2)
    for name in ("zero", "mta", "clip"):
        assert method_prompts(name, ["cat", "dog"], "a photo of a {}.", desc, 2) == [["a photo of a cat."],
                                                                                     ["a photo of a dog."]]


def test_waffle_prompts_are_seeded_and_shared():
    names = ["golden retriever", "cat", "red-tailed hawk", "sea lion"]
    a = method_prompts("waffle", names, "a photo of a {}.", seed=3)
    assert a == method_prompts("waffle", names, "a photo of a {}.", seed=3)
    assert a != method_prompts("waffle", names, "a photo of a {}.", seed=4)
    assert all(len(p) == 31 for p in a) and a[1][0] == "a photo of a cat."
    tails = [[p.split(", ", 1)[1] for p in row[1:]] for row in a]
    assert all(t == tails[0] for t in tails)                      # the same descriptors for every class
    assert all(p.startswith("a photo of a sea lion, which ") and p.endswith(".") for p in a[3][1:])
    d = waffle_descriptors(names, 15, seed=3)
    # words per descriptor: the names' mean word count, 1.75 -> 2
    assert all(len(w.split(" ")) == 2 for w in d[0::2])
    # and characters shaped like them: ceil(mean longest word 6.5) = 7, rounded up to 8 = 2 groups of 4
    assert all(len(c.split(", ")) == 2 and all(len(g) == 4 for g in c.split(", ")) for c in d[1::2])
    assert len(word_list()) > 20000 and all(w.isalpha() for w in word_list()[:100])


def test_descriptor_clause_is_dclips_rule():
    # ExplainableML/WaffleCLIP waffle_tools.py make_descriptor_sentence
    assert descriptor_clause("a long tail") == "which is a long tail"
    assert descriptor_clause("apple pie") == "which is apple pie"
    assert descriptor_clause("has four legs") == "which has four legs"
    assert descriptor_clause("often seen in pairs") == "which often seen in pairs"
    assert descriptor_clause("used for cutting") == "which is used for cutting"
    assert descriptor_clause("Xk3, p9q") == "which has Xk3, p9q"
    assert Waffle("waffle", 1).build(["cat"], "a photo of a {}", seed=0)[0][0] == "a photo of a cat."


def test_effective_settings_and_prompt_set_keys():
    assert effective_settings("waffle", 50, 10, False) == (0, 30)
    assert effective_settings("templates", 50, 50, True) == (0, 0)
    assert effective_settings("zero", 50, 50, True) == (50, 0)
    assert effective_settings("mta", 50, 50, True) == (50, 0)
    assert effective_settings("dclip", 50, 50, True) == (0, 50)
    assert effective_settings("autoclip", 50, 50, True) == (0, 0)
    key = lambda name, seed=0: methods.get_method(name).prompts.key(50, True, seed)   # noqa: E731
    assert key("zero") == key("mta") == key("clip") == ("descriptions", 0)
    assert key("dclip") == key("awt") == ("descriptions", 50)
    assert key("waffle", 1) != key("waffle", 2)
    assert key("templates") == key("autoclip") != key("zero-ensemble")


def test_rivals_config_is_the_paper_protocol_with_every_method():
    import yaml

    configs = Path(__file__).resolve().parents[2] / "benchmarks" / "configs"
    rivals_cfg = yaml.safe_load((configs / "rivals.yaml").read_text())
    paper = yaml.safe_load((configs / "paper.yaml").read_text())
    assert rivals_cfg["datasets"] == paper["datasets"] and len(rivals_cfg["datasets"]) == 18
    # the same settings, but for WaffleCLIP's seven draws (replicate_key_runs.sh: --reps=7)
    assert rivals_cfg["settings"].pop("repeats") == {"waffle": 7}
    assert rivals_cfg["settings"] == paper["settings"] and rivals_cfg["backbones"] == paper["backbones"]
    assert rivals_cfg["methods"] == "all"


def test_smoke_config_runs_every_method(shared_dir):
    from awt.bench.config import load_config

    configs = Path(__file__).resolve().parents[2] / "benchmarks" / "configs"
    assert load_config(configs / "smoke.yaml").methods == methods.method_names()   # its dataset is in ../shared
