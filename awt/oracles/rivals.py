"""The rivals of :mod:`awt.rivals` written literally, one image (and often one class) at a time.

Slow on purpose, plain loops over images, classes, views and iterations, with Python scalars for
the decisions: the yardstick the batched scorers are tested against, never used on the hot path.
Every function takes ``image (views, dim)`` of one image and ``text (classes, prompts, dim)`` with
an optional mask, and returns ``(classes,)``; :func:`per_image` stacks them for a batch.
"""

from __future__ import annotations

import math

import torch


def per_image(fn, image: torch.Tensor, text: torch.Tensor, mask, logit_scale: float, **kwargs) -> torch.Tensor:
    """The per-image loop: (batch, views, dim) -> (batch, classes)."""
    return torch.stack([fn(x, text, mask, logit_scale, **kwargs) for x in image])


def _real_prompts(text: torch.Tensor, mask, c: int) -> list[torch.Tensor]:
    return [text[c, p].float() for p in range(text.shape[1]) if mask is None or bool(mask[c, p])]


def class_embedding(text: torch.Tensor, mask, c: int) -> torch.Tensor:
    """Class ``c``'s unit embedding: its one prompt, or the normalised mean of its real prompts."""
    prompts = _real_prompts(text, mask, c)
    if text.shape[1] == 1:
        return prompts[0]
    mean = sum(prompts) / len(prompts)
    return mean / mean.norm()


# -- DCLIP / WaffleCLIP ------------------------------------------------------------------------------


def description_single(image: torch.Tensor, text: torch.Tensor, mask, logit_scale: float) -> torch.Tensor:
    """Mean over each class's description prompts (1..; the template if it has none) of s * cos."""
    view = image[0].float()
    out = []
    for c in range(text.shape[0]):
        cos = (text[c].float() @ view).tolist()                              # this class's prompts
        real = [p for p in range(text.shape[1]) if mask is None or bool(mask[c, p])]
        descriptions = [p for p in real if p > 0] or [0]
        out.append(sum(logit_scale * cos[p] for p in descriptions) / len(descriptions))
    return torch.tensor(out)


# -- ZERO --------------------------------------------------------------------------------------------


def _entropy(logits: list[float]) -> float:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return -sum((e / total) * ((x - top) - math.log(total)) for e, x in zip(exps, logits))


def zero_single(image: torch.Tensor, text: torch.Tensor, mask, logit_scale: float, gamma: float = 0.3) -> torch.Tensor:
    """ZERO for one image: vote counts of the most confident views, ties broken greedily."""
    embeddings = torch.stack([class_embedding(text, mask, c) for c in range(text.shape[0])])
    classes = len(embeddings)
    cos = [(embeddings @ v.float()).tolist() for v in image]                # [view][class]
    entropy = [_entropy([logit_scale * x for x in row]) for row in cos]
    order = sorted(range(len(cos)), key=lambda v: (entropy[v], v))          # most confident first
    keep = max(1, int(len(cos) * gamma))
    eps = torch.finfo(torch.float32).eps
    votes = torch.zeros(classes)
    for v in order[:keep]:
        votes += (torch.tensor(cos[v]) / eps).softmax(0)                    # a one-hot vote (split on exact ties)
    best = float(votes.max())
    ties = [c for c in range(classes) if float(votes[c]) == best]
    if len(ties) > 1:
        winner = None
        for v in order[keep:]:                                              # discarded views, most confident first
            pred = max(range(classes), key=lambda c: (cos[v][c], -c))
            if pred in ties:
                winner = pred
                break
        if winner is None:
            v = order[keep] if keep < len(order) else order[0]
            winner = max(ties, key=lambda c: (cos[v][c], -c))
        votes[winner] += 1
    return votes


# -- MTA ---------------------------------------------------------------------------------------------


def mta_single(image: torch.Tensor, text: torch.Tensor, mask, logit_scale: float, lambda_y: float = 0.2,
               lambda_q: float = 4.0, max_iter: int = 5, tol: float = 1e-6, fraction: float = 0.3) -> torch.Tensor:
    """MTA for one image, with the loops of ``solve_mta`` and explicit sums over views."""
    cls = torch.stack([class_embedding(text, mask, c) for c in range(text.shape[0])])
    x = image.float()
    views = x.shape[0]
    if views == 1:
        return logit_scale * cls @ x[0]
    probs = [(logit_scale * cls @ x[v]).softmax(0) for v in range(views)]
    affinity = [[float(probs[i] @ probs[j]) for j in range(views)] for i in range(views)]
    k = max(1, int(fraction * (views - 1)))
    dist = torch.cdist(x, x)
    bandwidth = []
    for v in range(views):
        nearest = sorted(dist[v].tolist())[1:k + 1]
        bandwidth.append(math.sqrt(0.5 * sum(d * d for d in nearest) / k))

    def density(mode: torch.Tensor) -> list[float]:
        return [math.exp(-float((x[v] - mode).norm()) ** 2 / (2 * bandwidth[v] ** 2)) for v in range(views)]

    y = [1.0 / views] * views
    mode = x[0]
    for _ in range(max_iter):
        dens = density(mode)
        for _ in range(max_iter):
            z = [(dens[i] + lambda_q * sum(affinity[i][j] * y[j] for j in range(views))) / lambda_y for i in range(views)]
            top = max(z)
            e = [math.exp(t - top) for t in z]
            new = [t / sum(e) for t in e]
            moved = math.sqrt(sum((a - b) ** 2 for a, b in zip(y, new)))
            y = new
            if moved < tol:
                break
        for _ in range(max_iter):
            dens = density(mode)
            w = [dens[v] * y[v] for v in range(views)]
            new = sum(w[v] * x[v] for v in range(views)) / sum(w)
            new = new / new.norm()
            moved = float((mode - new).norm())
            mode = new
            if moved < tol:
                break
    return logit_scale * cls @ mode


# -- AutoCLIP ----------------------------------------------------------------------------------------


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    e = [math.exp(v - top) for v in values]
    return [v / sum(e) for v in e]


def _bits(weights: list[float]) -> float:
    return -sum(w * math.log2(w + 1e-10) for w in weights)


def autoclip_single(image: torch.Tensor, text: torch.Tensor, mask, logit_scale: float, beta: float = 0.85,
                    bracket=(0.0, 1e7), maxiter: int = 100, xtol: float = 1e-2, rtol: float = 1e-2) -> torch.Tensor:
    """AutoCLIP for one image: the gradient written out as sums, scipy's bisection as a loop."""
    view = image[0].float()
    classes, prompts = text.shape[:2]
    sim = [(text[c].float() @ view).tolist() for c in range(classes)]       # [class][descriptor] cosines
    real = [[mask is None or bool(mask[c, d]) for d in range(prompts)] for c in range(classes)]
    if prompts == 1:
        return torch.tensor([logit_scale * sim[c][0] for c in range(classes)])
    w = 1.0 / prompts
    total = [sum(w for d in range(prompts) if real[c][d]) for c in range(classes)]     # each class's weight mass
    logits = [sum(w * sim[c][d] for d in range(prompts) if real[c][d]) / total[c] for c in range(classes)]
    p = _softmax(logits)
    grad = []     # d/d rho_d of logsumexp_c(logits), rho the weight logits (all 0: uniform weights)
    for d in range(prompts):
        g = 0.0
        for c in range(classes):
            if real[c][d]:
                g += p[c] * w * (sim[c][d] - logits[c]) / total[c]
        grad.append(g)
    target = beta * _bits([w] * prompts)

    def f(step: float) -> float:
        return _bits(_softmax([step * g for g in grad])) - target

    a, b = bracket
    fa, fb = f(a), f(b)
    if fa * fb > 0:
        step = 0.0
    elif fa == 0:
        step = a
    elif fb == 0:
        step = b
    else:
        dm = b - a
        step = None
        for _ in range(maxiter):
            dm *= 0.5
            xm = a + dm
            fm = f(xm)
            if fm * fa >= 0:
                a = xm
            if fm == 0 or abs(dm) < xtol + rtol * abs(xm):
                step = xm
                break
        if step is None:
            step = a
    weights = (torch.tensor(step, dtype=torch.float32) * torch.tensor(grad, dtype=torch.float32)).softmax(0).tolist()
    out = []
    for c in range(classes):
        num = sum(weights[d] * sim[c][d] for d in range(prompts) if real[c][d])
        den = sum(weights[d] for d in range(prompts) if real[c][d])
        out.append(logit_scale * num / den)
    return torch.tensor(out)


# -- prompt ensembles (CLIP's templates) -------------------------------------------------------------


def templates_single(image: torch.Tensor, text: torch.Tensor, mask, logit_scale: float) -> torch.Tensor:
    """View 0 against each class's normalised mean prompt embedding."""
    view = image[0].float()
    return torch.tensor([logit_scale * float(view @ class_embedding(text, mask, c)) for c in range(text.shape[0])])
