"""Training-free rivals of AWT, batched: each scores a whole batch from cached view and prompt features.

Shapes as everywhere in the engine: image views ``(batch, views, dim)`` (view 0 the plain centre
crop), class prompts ``(classes, prompts, dim)`` with an optional ``(classes, prompts)`` mask of the
real ones, ``(batch, classes)`` out. Every image's scores depend on that image alone: the iterative
methods (MTA's mean shift, AutoCLIP's bisection) keep a convergence state per image, and no loop
runs over images. The literal per-image versions are in :mod:`awt.oracles.rivals`.

The hyper-parameters default to the authors' published code (links in each docstring); a variant is
``functools.partial(zero_scores, gamma=0.1)`` registered as a method of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .scoring import mean_prompt

# -- shared ------------------------------------------------------------------------------------------


def class_embeddings(text: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One unit embedding per class: its only prompt, or the normalised mean of its (real) prompts,
    as CLIP's prompt ensembling builds it. (classes, prompts, dim) -> (classes, dim)."""
    text = text.float()
    if text.shape[1] == 1:
        return text[:, 0]
    return F.normalize(mean_prompt(text, mask), dim=-1)


def _description_weights(mask: torch.Tensor | None, classes: int, prompts: int, device) -> torch.Tensor:
    """(classes, prompts) weights averaging each class's description prompts (1..), not the bare
    template (prompt 0) -- unless a class has no description, then its template alone."""
    real = (torch.ones(classes, prompts, dtype=torch.bool, device=device) if mask is None
            else mask.to(device, torch.bool))
    desc = real.clone()
    if prompts > 1:
        desc[:, 0] = False
    none = ~desc.any(1)
    desc[none, 0] = True
    w = desc.float()
    return w / w.sum(1, keepdim=True)


# -- DCLIP and WaffleCLIP ------------------------------------------------------------------------------


def description_scores(image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None,
                       logit_scale: float) -> torch.Tensor:
    """Classification by description (Menon & Vondrick, ICLR 2023), and WaffleCLIP's scoring: view
    0's score for a class is the mean of its description logits ``s * cos(view 0, description)``.

    github.com/sachit-menon/classify_by_descriptions (``aggregate_similarity``, mean), as
    WaffleCLIP's ``base_main.py`` runs it (``--aggregate mean``, no merging of embeddings). The mean
    of the logits is the logit against the mean (unnormalised) description embedding.
    """
    img = image[:, 0].float()
    txt = text.to(img.device, torch.float32)
    w = _description_weights(mask, txt.shape[0], txt.shape[1], img.device)
    mean_desc = torch.einsum("cp,cpd->cd", w, txt)
    return float(logit_scale) * img @ mean_desc.T


# -- ZERO ----------------------------------------------------------------------------------------------

ZERO_GAMMA = 0.3   # github.com/FarinaMatteo/zero, ttas/zero.py: Zero.set_hyperparams, gamma = 0.3


def zero_scores(image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None, logit_scale: float,
                gamma: float = ZERO_GAMMA) -> torch.Tensor:
    """ZERO (Farina et al., NeurIPS 2024): keep the ``int(gamma * views)`` views of lowest prediction
    entropy, predict each at zero temperature, and count the votes.

    Follows github.com/FarinaMatteo/zero, ``ttas/zero.py: Zero.zero`` with ``confidence_filter`` and
    ``greedy_break``: probabilities ``softmax(s * cos)``, entropy ranking (stable: ties by view
    index; ``0 log 0 = 0``, where the authors' ``p.log()`` gives NaN once a probability underflows
    and so ranks the most confident views last), votes ``softmax(cos / eps)`` summed over the kept views (``eps`` = float32 epsilon, so a
    vote is one-hot but for exact ties), and a tie for the most votes broken by the first discarded
    view, in confidence order, whose prediction is among the tied classes (+1 to that class). Where
    none is, the tied class with the highest cosine in the first discarded view (or, when every view
    is kept, the most confident one) wins: the intent of the authors' ``break_sample_tie``, whose
    indexing (``logit[~ties]``) does not do it. At least one view is kept.

    Returns: (batch, classes) vote counts, as the authors' ``p_bar`` -- not logits.
    """
    img = image.float()
    cls = class_embeddings(text.to(img.device), mask)
    batch, views, _ = img.shape
    cos = img @ cls.T                                                      # (batch, views, classes)
    logp = (float(logit_scale) * cos).log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)                                  # (batch, views)
    order = entropy.argsort(dim=1, stable=True)
    keep = max(1, int(views * gamma))
    ranked = cos.gather(1, order[..., None].expand_as(cos))                 # views by confidence
    eps = torch.finfo(torch.float32).eps
    votes = (ranked[:, :keep] / eps).softmax(-1).sum(1)                     # (batch, classes)
    top = votes.max(1, keepdim=True).values
    tied = votes == top
    has_tie = tied.sum(1) > 1
    if bool(has_tie.any()):
        rest = ranked[:, keep:] if keep < views else ranked[:, :1]
        preds = rest.argmax(-1)                                             # (batch, rest)
        hit = tied.gather(1, preds)
        first = hit.float().argmax(1)                                       # first True (0 if none)
        greedy = preds.gather(1, first[:, None])[:, 0]
        fallback = rest[:, 0].masked_fill(~tied, float("-inf")).argmax(-1)
        winner = torch.where(hit.any(1) if keep < views else torch.zeros_like(has_tie), greedy, fallback)
        votes = votes + F.one_hot(winner, votes.shape[1]).to(votes.dtype) * has_tie[:, None]
    return votes


# -- MTA -----------------------------------------------------------------------------------------------

MTA_LAMBDA_Y = 0.2      # github.com/MaxZanella/MTA, main.py: --lambda_y default 0.2 (entropic term)
MTA_LAMBDA_Q = 4.0      # main.py: --lambda_q default 4 (quadratic term)
MTA_MAX_ITER = 5        # mta.py: solve_mta, max_iter = 5 (outer loop and both inner loops)
MTA_TOL = 1e-6          # mta.py: th = 1e-6 (inner loops)
MTA_NEIGHBOURS = 0.3    # mta.py: bandwidth from the int(0.3 * (views - 1)) nearest views


def mta_bandwidths(img: torch.Tensor, fraction: float = MTA_NEIGHBOURS) -> torch.Tensor:
    """(batch, views, dim) -> (batch, views): each view's Gaussian bandwidth, ``sqrt(0.5 * mean
    squared distance to its k nearest other views)``, ``k = int(fraction * (views - 1))`` (at least 1)."""
    views = img.shape[1]
    k = max(1, int(fraction * (views - 1)))
    dist = torch.cdist(img, img)
    nearest = dist.sort(-1).values[..., 1:k + 1] ** 2
    return torch.sqrt(0.5 * nearest.mean(-1))


def mta_scores(image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None, logit_scale: float,
               lambda_y: float = MTA_LAMBDA_Y, lambda_q: float = MTA_LAMBDA_Q, max_iter: int = MTA_MAX_ITER,
               tol: float = MTA_TOL) -> torch.Tensor:
    """MeanShift for test-time augmentation (Zanella & Ben Ayed, CVPR 2024): the mode of the view
    embeddings under inlierness-weighted Gaussian kernels, scored against the class embeddings.

    Follows github.com/MaxZanella/MTA, ``mta.py: solve_mta``: affinities from the views'
    ``softmax(s * cos)`` predictions, per-view bandwidths, inlierness ``y`` (uniform at first) and
    mode (view 0 at first) updated in turn for ``max_iter`` rounds, each inner loop stopping after
    ``max_iter`` steps or when its update moves less than ``tol`` -- per image. One view: view 0.
    """
    img = image.float()
    cls = class_embeddings(text.to(img.device), mask)
    s = float(logit_scale)
    batch, views, _ = img.shape
    if views == 1:
        return s * img[:, 0] @ cls.T
    probs = (s * img @ cls.T).softmax(-1)                                  # (batch, views, classes)
    affinity = probs @ probs.transpose(1, 2)                                # (batch, views, views)
    two_bw2 = 2 * mta_bandwidths(img) ** 2

    def density(mode: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((img - mode[:, None]).norm(dim=-1) ** 2) / two_bw2)

    y = img.new_full((batch, views), 1.0 / views)
    mode = img[:, 0]
    for _ in range(max_iter):
        dens = density(mode)
        active = torch.ones(batch, dtype=torch.bool, device=img.device)
        for _ in range(max_iter):
            new = ((dens + lambda_q * (affinity @ y[..., None])[..., 0]) * (1.0 / lambda_y)).softmax(-1)
            moved = (y - new).norm(dim=-1)
            y = torch.where(active[:, None], new, y)
            active = active & ~(moved < tol)
            if not bool(active.any()):
                break
        active = torch.ones(batch, dtype=torch.bool, device=img.device)
        for _ in range(max_iter):
            w = density(mode) * y
            new = (w[..., None] * img).sum(1) / w.sum(1, keepdim=True)
            new = new / new.norm(dim=-1, keepdim=True)
            moved = (mode - new).norm(dim=-1)
            mode = torch.where(active[:, None], new, mode)
            active = active & ~(moved < tol)
            if not bool(active.any()):
                break
    return s * mode @ cls.T


# -- AutoCLIP ------------------------------------------------------------------------------------------

AUTOCLIP_BETA = 0.85            # github.com/boschresearch/autoclip, auto_clip_simulated.py: beta = 0.85
AUTOCLIP_BRACKET = (0.0, 1e7)   # autoclip_aggregation: bisect(a=0.0, b=1e7, maxiter=100, xtol=1e-2, rtol=1e-2)
AUTOCLIP_MAXITER = 100
AUTOCLIP_XTOL = 1e-2
AUTOCLIP_RTOL = 1e-2


def autoclip_gradient(sim: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient of ``logsumexp_c(sum_d w_d sim[c, d])`` with respect to the weight logits ``rho``
    (``w = softmax(rho)``) at ``rho = 0``, in closed form. sim (batch, classes, prompts) cosines;
    a class's masked prompts are left out of its weighted mean. -> (batch, prompts)."""
    prompts = sim.shape[-1]
    w = sim.new_full((prompts,), 1.0 / prompts)
    if mask is None:
        logits = sim.mean(-1)                                              # (batch, classes)
        p = logits.softmax(-1)
        return w * torch.einsum("bc,bcd->bd", p, sim - logits[..., None])
    m = mask.to(sim.device, sim.dtype)                                      # (classes, prompts)
    total = (m * w).sum(-1)                                                # (classes,)
    logits = (sim * m * w).sum(-1) / total
    p = logits.softmax(-1)
    return w * torch.einsum("bc,bcd->bd", p / total, m * (sim - logits[..., None]))


def weight_entropy_bits(step: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of ``softmax(step * grad)``, as AutoCLIP measures it (``log2(w + 1e-10)``)."""
    w = (step[:, None] * grad).softmax(-1)
    return -(w * torch.log2(w + 1e-10)).sum(-1)


def bisect_steps(grad: torch.Tensor, target: torch.Tensor, bracket=AUTOCLIP_BRACKET, maxiter: int = AUTOCLIP_MAXITER,
                 xtol: float = AUTOCLIP_XTOL, rtol: float = AUTOCLIP_RTOL) -> torch.Tensor:
    """Each row's step size with ``entropy(softmax(step * grad)) = target``, by scipy's ``bisect``
    (its C loop: halve, keep the half whose ends change sign, stop when the half-width is under
    ``xtol + rtol * |midpoint|``), every row at once, float64. Rows whose bracket ends have the same
    sign (scipy raises) take step 0: uniform weights."""
    grad, target = grad.double(), target.double()
    n = grad.shape[0]
    lo = grad.new_full((n,), bracket[0])
    f_lo = weight_entropy_bits(lo, grad) - target
    f_hi = weight_entropy_bits(grad.new_full((n,), bracket[1]), grad) - target
    result = torch.where(f_hi == 0, grad.new_full((n,), bracket[1]), lo)
    active = (f_lo * f_hi <= 0) & (f_lo != 0) & (f_hi != 0)
    dm = grad.new_full((n,), bracket[1] - bracket[0])
    for _ in range(maxiter):
        if not bool(active.any()):
            break
        dm = dm * 0.5
        mid = lo + dm
        f_mid = weight_entropy_bits(mid, grad) - target
        lo = torch.where(active & (f_mid * f_lo >= 0), mid, lo)
        done = active & ((f_mid == 0) | (dm.abs() < xtol + rtol * mid.abs()))
        result = torch.where(done, mid, result)
        active = active & ~done
    return torch.where(active, lo, result)        # unconverged after maxiter: scipy's last lower end


def autoclip_scores(image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None, logit_scale: float,
                    beta: float = AUTOCLIP_BETA) -> torch.Tensor:
    """AutoCLIP (Metzen et al., TMLR 2024): view 0's class score is a per-image weighted mean of its
    descriptor similarities, the weights ``softmax(step * g)`` one gradient-ascent step from uniform
    on ``logsumexp`` of the class scores, the step found by bisection so that the weights' entropy
    is ``beta`` times that of uniform weights.

    Follows github.com/boschresearch/autoclip, ``auto_clip_simulated.py: autoclip_aggregation``:
    cosine similarities (no logit scale) inside the ``logsumexp``, entropies in bits, scipy's
    ``bisect`` on [0, 1e7] with ``xtol = rtol = 1e-2``. The step is solved in float64.
    Returns ``s * sum_d w_d cos(view 0, descriptor d of the class)``.
    """
    img = image[:, 0].float()
    txt = text.to(img.device, torch.float32)
    classes, prompts, dim = txt.shape
    sim = (img @ txt.reshape(-1, dim).T).view(-1, classes, prompts)         # (batch, classes, prompts)
    if prompts == 1:
        return float(logit_scale) * sim[..., 0]
    grad = autoclip_gradient(sim.double(), mask)                              # float64: the bisection's input
    uniform = torch.full((1, prompts), 1.0 / prompts, dtype=torch.float64)
    target = beta * -(uniform * torch.log2(uniform)).sum(-1)
    step = bisect_steps(grad, target.to(grad.device).expand(grad.shape[0]))
    weights = (step.float()[:, None] * grad.float()).softmax(-1)                   # (batch, prompts)
    if mask is None:
        return float(logit_scale) * torch.einsum("bd,bcd->bc", weights, sim)
    m = mask.to(img.device, torch.float32)
    wm = weights[:, None, :] * m                                            # (batch, classes, prompts)
    return float(logit_scale) * (wm * sim).sum(-1) / wm.sum(-1)

