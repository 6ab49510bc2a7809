"""What decided an image's classes: the views, the prompts, and the transport plan between them.

:func:`explain` encodes an image exactly as :meth:`~awt.classifier.AWTClassifier.classify` does,
solves its transport problems over every class (the stopping rule averages over them, so the plan
read here is the one that scored the image), and keeps the best ``top_k`` classes: their prompts and
weights, their plan (views x prompts), and their score split over views and over prompts (the sums of
``s * T * cos``). Beside them: CLIP's prediction (view 0 against the bare template) and what moved
AWT's decision away from it, or ahead of its runner-up.

Each view's box (and flip) comes from :mod:`awt.explain.views`: an image's are drawn again as the
loader workers drew them, a video's are crops of its sampled frames, shown as one mosaic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ..errors import AWTError
from ..images import ImageInput
from ..inputs import is_video
from ..methods import get_method
from ..scoring import awt_explain, clip_scores
from .views import View, image_views, video_views

# Methods whose scores are a transport plan's, and whether their marginals are uniform.
_TRANSPORT_METHODS = {"awt": False, "awt-image": False, "awt-text": False, "awt-uniform": True}
TOP_PAIRS = 8   # (view, prompt) pairs kept per class, heaviest first


@dataclass
class Pair:
    """A (view, prompt) cell of a class's plan."""

    view: int
    prompt: int
    mass: float            # T[view, prompt]
    cosine: float          # cos(view, prompt)


@dataclass
class ClassExplanation:
    """One class's transport: ``score == view_scores.sum() == prompt_scores.sum()`` (to float rounding)."""

    index: int             # class index (label order)
    name: str
    rank: int              # 1 for AWT's best class; 0 for a class explained only as the decision's rival
    score: float           # AWT's score, the classifier's own
    clip_score: float      # view 0 against the bare template
    prompts: list[str]     # the class's real prompts: the template first, then its descriptions
    prompt_weights: torch.Tensor   # (prompts,) b, summing to 1
    prompt_scores: torch.Tensor    # (prompts,) s * sum_v T * cos
    view_scores: torch.Tensor      # (views,) s * sum_p T * cos
    plan: torch.Tensor             # (views, prompts) T: rows sum to the view weights, columns to b
    cosine: torch.Tensor           # (views, prompts)
    pairs: list[Pair] = field(default_factory=list)   # the heaviest cells, heaviest first


@dataclass
class Decision:
    """Why AWT picked ``winner`` over ``rival`` (CLIP's pick when AWT changed it, else AWT's runner-up).

    ``margin = score[winner] - score[rival]`` splits exactly over views (``view_scores`` of the
    winner minus the rival's) and over each class's prompts (a winner's prompt counts
    ``prompt_score - weight * score[rival]``, a rival's ``weight * score[winner] - prompt_score``).
    Each list holds (index, share of the margin), largest first.
    """

    winner: int
    rival: int
    margin: float
    views: list[tuple[int, float]]
    winner_prompts: list[tuple[int, float]]
    rival_prompts: list[tuple[int, float]]


@dataclass
class Explanation:
    """What scored one image; built by :func:`explain` (``clf.explain(image)``)."""

    image: str
    method: str
    logit_scale: float
    source: Image.Image | None = field(repr=False)   # the pixels the views were cut from (RGB)
    views: list[View]
    classes: list[ClassExplanation]         # AWT's top-k, best first
    scores: torch.Tensor = field(repr=False)   # (classes,) every class's AWT score, as classify gives them
    clip_index: int = 0                     # CLIP's prediction (view 0, the template)
    clip_name: str = ""
    decision: Decision | None = None
    rival: ClassExplanation | None = None   # the decision's rival when it is not among ``classes``
    iterations: int = 0                     # Sinkhorn iterations of the image's problems
    model: str = ""                         # the backbone's name
    video: bool = False                     # a video: its views are crops of its sampled frames

    @property
    def awt_index(self) -> int:
        return self.classes[0].index

    @property
    def changed(self) -> bool:
        """Whether AWT's prediction differs from CLIP's."""
        return self.awt_index != self.clip_index

    def explained(self, index: int) -> ClassExplanation:
        """The explanation of class ``index`` (a top-k class or the rival)."""
        for c in self.classes + ([self.rival] if self.rival else []):
            if c.index == index:
                return c
        raise KeyError(index)

    def to_json(self) -> dict[str, Any]:
        """The numbers behind a report: views (box, flip, weight), and per class its prompts with
        weights and score splits, its plan and cosines (rows: views, columns: prompts), its heaviest pairs."""
        r = lambda x: round(float(x), 6)  # noqa: E731
        rows = lambda t: [[r(x) for x in row] for row in t.tolist()]  # noqa: E731

        def one(c: ClassExplanation) -> dict[str, Any]:
            return {"class": c.name, "index": c.index, "rank": c.rank, "score": r(c.score), "clip_score": r(c.clip_score),
                    "prompts": [{"text": t, "weight": r(w), "score": r(s)} for t, w, s in
                                zip(c.prompts, c.prompt_weights.tolist(), c.prompt_scores.tolist())],
                    "view_scores": [r(x) for x in c.view_scores.tolist()], "plan": rows(c.plan),
                    "cosine": rows(c.cosine),
                    "pairs": [{"view": p.view, "prompt": p.prompt, "mass": r(p.mass), "cosine": r(p.cosine)}
                              for p in c.pairs]}

        d = self.decision
        doc = {"image": self.image, "model": self.model, "method": self.method, "logit_scale": r(self.logit_scale),
               "size": list(self.source.size) if self.source is not None else None,
               "video": self.video,
               "views": [{"index": v.index, "box": [r(x) for x in v.box], "flip": v.flip, "weight": r(v.weight),
                          **({"frame": v.frame, "time": round(v.time, 4)} if v.frame is not None else {})}
                         for v in self.views],
               "awt": {"class": self.classes[0].name, "index": self.awt_index, "score": r(self.classes[0].score)},
               "clip": {"class": self.clip_name, "index": self.clip_index}, "changed": self.changed,
               "iterations": self.iterations, "classes": [one(c) for c in self.classes],
               "rival": one(self.rival) if self.rival else None}
        if d is not None:
            doc["decision"] = {"winner": d.winner, "rival": d.rival, "margin": r(d.margin),
                               "views": [[i, r(x)] for i, x in d.views],
                               "winner_prompts": [[i, r(x)] for i, x in d.winner_prompts],
                               "rival_prompts": [[i, r(x)] for i, x in d.rival_prompts]}
        return doc


def check_explainable(method: str) -> None:
    """An AWTError unless ``method`` scores by transport (checked before any model loads)."""
    get_method(method)
    if method not in _TRANSPORT_METHODS:
        raise AWTError(f"method {method!r} has no transport plan to explain; explain one of "
                       f"{', '.join(_TRANSPORT_METHODS)}", setting="method")


def _describe(item: ImageInput) -> str:
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<{type(item).__name__}>"


def _pairs(plan: torch.Tensor, cosine: torch.Tensor, count: int) -> list[Pair]:
    flat = plan.flatten()
    top = flat.topk(min(count, flat.numel())).indices.tolist()
    prompts = plan.shape[1]
    return [Pair(i // prompts, i % prompts, float(flat[i]), float(cosine.flatten()[i])) for i in top]


def _ranked(values: torch.Tensor) -> list[tuple[int, float]]:
    order = values.argsort(descending=True).tolist()
    return [(i, float(values[i])) for i in order]


def explain(clf, image: ImageInput, top_k: int = 3, method: str | None = None) -> Explanation:
    """Explain ``image``'s best ``top_k`` classes under ``clf``'s spec and ``method`` (default: the
    spec's; AWT or one of its ablations). Raises the image's AWTError when it cannot be read.

    Returns:
        :class:`Explanation`: views (1 + N) with boxes, flips and weights; for each of the top-k
        classes its P real prompts with weights, the plan (1 + N, P), cosines, score splits and
        heaviest pairs; every class's score (equal to ``classify``'s); CLIP's prediction and the decision.
    """
    method = method or clf.spec.method
    check_explainable(method)
    if top_k < 1:
        raise AWTError(f"top_k must be >= 1, got {top_k}", setting="top_k")
    m = get_method(method)
    n_random = m.views_used(clf.spec.views)
    video = is_video(image)
    batch = next(iter(clf.iter_image_features([image], num_workers=0, views=n_random,
                                              video_view0_only=not m.random_views)))
    if batch.errors:
        raise batch.errors[0][1]
    prompt_set = clf.classes_for(method)
    text, mask = m.prompts.select(prompt_set.features, prompt_set.mask)
    features = batch.features.to(text.device)
    if not m.random_views:
        features = features[:, :1]
    n_classes = text.shape[0]
    k = min(top_k, n_classes)
    clip = clip_scores(features, text, clf.logit_scale)[0]
    clip_top = int(clip.argmax())

    def pick(scores: torch.Tensor) -> torch.Tensor:   # the top k, the runner-up, and CLIP's pick
        best = scores[0].topk(min(max(k, 2), n_classes)).indices.tolist()
        chosen = best[:k] + [i for i in best[k:] + [clip_top] if i not in best[:k]]
        return torch.tensor([list(dict.fromkeys(chosen))])

    ex = awt_explain(features, text, mask, clf.logit_scale, clf.spec.awt, pick, uniform=_TRANSPORT_METHODS[method])
    source, views = video_views(clf, image, not m.random_views) if video else image_views(clf, image, n_random)
    a = ex.a[0].float().cpu()
    for view, weight in zip(views, a.tolist()):
        view.weight = weight
    texts = prompt_set.prompts
    explained = []
    for j, index in enumerate(ex.classes[0].tolist()):
        real = int(mask[index].sum()) if mask is not None else text.shape[1]
        prompts = (texts[index] if texts is not None else [f"prompt {p}" for p in range(real)])[:real]
        plan, cosine = ex.plan[0, j, :, :real].float().cpu(), ex.cosine[0, j, :, :real].float().cpu()
        explained.append(ClassExplanation(
            index, clf.classnames[index], j + 1 if j < k else 0, float(ex.score[0, j]), float(clip[index]), list(prompts),
            ex.b[0, j, :real].float().cpu(), ex.prompt_scores[0, j, :real].float().cpu(),
            ex.view_scores[0, j].float().cpu(), plan, cosine, _pairs(plan, cosine, TOP_PAIRS)))
    top, winner = explained[:k], explained[0]
    others = [c for c in explained if c.index != winner.index]   # CLIP's pick first when it differs, else the runner-up
    rival = next((c for c in others if c.index == clip_top), others[0] if others else None)
    decision = None if rival is None else Decision(
        winner.index, rival.index, winner.score - rival.score, _ranked(winner.view_scores - rival.view_scores),
        _ranked(winner.prompt_scores - winner.prompt_weights * rival.score),
        _ranked(rival.prompt_weights * winner.score - rival.prompt_scores))
    return Explanation(_describe(image), method, float(clf.logit_scale), source, views, top,
                       ex.all_scores[0].float().cpu(), clip_top, clf.classnames[clip_top], decision,
                       rival if rival is not None and not rival.rank else None, int(ex.iterations[0]),
                       clf.backbone.name, video)
