"""The method registry: every scoring method declared once, with what it needs from the pipeline.

A method scores encoded features: image views ``(batch, 1 + views, dim)`` (view 0 the plain centre
crop) against class prompts ``(classes, prompts, dim)``, giving ``(batch, classes)``. Its entry says
whether it uses the random views and which prompt set it reads (:mod:`awt.prompt_sets`, where
prompts are built), so the command line, the classifier and the benchmark
planner derive everything from here. Adding a method means one :func:`register` call, one scoring
function, and its test.

This module imports no torch: ``awt --help`` lists the methods without paying for it. The scoring
functions import their numerics when first called.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable

from .errors import AWTError
from .prompt_sets import DESCRIPTIONS, TEMPLATE, TEMPLATES7, TEMPLATES80, WAFFLE, PromptSet

if TYPE_CHECKING:
    import torch

    from .scoring import AWTConfig

#: ``(image (batch, views, dim), text (classes, prompts, dim), mask (classes, prompts) | None,
#: logit_scale, config) -> (batch, classes)``
ScoreFn = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor | None", float, "AWTConfig"], "torch.Tensor"]


@dataclass(frozen=True)
class Method:
    name: str
    summary: str                  # one line, shown by the command line's help and in the README's table
    score: ScoreFn
    random_views: bool = True     # False: scored from view 0 alone (no random views are encoded)
    prompts: PromptSet = DESCRIPTIONS   # what it is scored against (awt.prompt_sets)
    paper: str = ""
    uses_awt_config: bool = False  # reads the AWT hyper-parameters (temperatures, epsilon, Sinkhorn)

    def __post_init__(self) -> None:
        if not isinstance(self.prompts, PromptSet):
            raise ValueError(f"method {self.name!r}: prompts must be a PromptSet (awt.prompt_sets), "
                             f"got {self.prompts!r}")

    @property
    def seeded(self) -> bool:
        """Whether the seed changes this method's scores: it reads the random views (drawn from the
        seed) or WaffleCLIP's descriptors (drawn from it too)."""
        return self.random_views or self.prompts.key(0, True, 0) != self.prompts.key(0, True, 1)

    def views_used(self, views: int) -> int:
        """Random views this method reads when ``views`` are encoded."""
        return views if self.random_views else 0


METHODS: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (``replace`` to redefine a name)."""
    if method.name in METHODS and not replace:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    METHODS.pop(name, None)


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name``; an AWTError listing the choices otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise AWTError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def score(method: str | Method, image: "torch.Tensor", text: "torch.Tensor", mask: "torch.Tensor | None",
          logit_scale: float, config: "AWTConfig | None" = None) -> "torch.Tensor":
    """``(batch, views, dim)`` image features and ``(classes, prompts, dim)`` prompt features ->
    ``(batch, classes)`` scores of ``method``; the views and prompts it does not use are ignored."""
    from .scoring import AWTConfig

    m = get_method(method) if isinstance(method, str) else method
    image = image.to(text.device)
    if not m.random_views:
        image = image[:, :1]
    text, mask = m.prompts.select(text, mask)
    return m.score(image, text, mask, float(logit_scale), config or AWTConfig())


# -- AWT and its ablations ----------------------------------------------------------------------

def _awt(image, text, mask, logit_scale, config, uniform: bool = False):
    """AWT; ``uniform``: its ablation with uniform view and prompt weights."""
    from .scoring import awt_scores_from_features

    return awt_scores_from_features(image, text, logit_scale, config, prompt_mask=mask, uniform=uniform)


def _clip(image, text, mask, logit_scale, config):
    from .scoring import clip_scores

    return clip_scores(image, text, logit_scale)


def _ensemble(image, text, mask, logit_scale, config):
    from .scoring import ensemble_scores

    return ensemble_scores(image, text, logit_scale, mask)


_AWT_PAPER = "Zhu et al., AWT, NeurIPS 2024"
register(Method("awt", "AWT: weighted views and prompts, optimal transport", _awt, paper=_AWT_PAPER,
                uses_awt_config=True))
register(Method("clip", "zero-shot CLIP: view 0 against the bare template", _clip, random_views=False,
                prompts=TEMPLATE, paper="Radford et al., CLIP, ICML 2021"))
register(Method("ensemble", "view 0 against the mean of each class's prompts", _ensemble, random_views=False,
                paper="Radford et al., CLIP, ICML 2021"))
register(Method("awt-uniform", "AWT ablation: uniform weights instead of entropy weighting", partial(_awt, uniform=True),
                paper=_AWT_PAPER, uses_awt_config=True))
register(Method("awt-image", "AWT ablation: random views, the bare template only", _awt, prompts=TEMPLATE,
                paper=_AWT_PAPER, uses_awt_config=True))
register(Method("awt-text", "AWT ablation: view 0 only, template and descriptions", _awt, random_views=False,
                paper=_AWT_PAPER, uses_awt_config=True))
register(Method("templates", "view 0 against the mean of CLIP's 80 ImageNet templates", _ensemble,
                random_views=False, prompts=TEMPLATES80, paper="Radford et al., CLIP, ICML 2021"))

# -- training-free rivals (awt/rivals.py) --------------------------------------------------------


def _rival(name: str) -> ScoreFn:
    def fn(image, text, mask, logit_scale, config):
        from . import rivals

        return getattr(rivals, name)(image, text, mask, logit_scale)

    fn.__name__ = name
    return fn


register(Method("zero", "ZERO: vote of the 30% most confident views at zero temperature, the template",
                _rival("zero_scores"), prompts=TEMPLATE, paper="Farina et al., ZERO, NeurIPS 2024"))
register(Method("zero-ensemble", "ZERO on CLIP's 7-template ensemble (the paper's +Ensemble)",
                _rival("zero_scores"), prompts=TEMPLATES7, paper="Farina et al., ZERO, NeurIPS 2024"))
register(Method("mta", "MTA: inlierness-weighted mean-shift mode of the views, against the template",
                _rival("mta_scores"), prompts=TEMPLATE, paper="Zanella & Ben Ayed, MTA, CVPR 2024"))
register(Method("dclip", "classification by description: the mean of a class's description logits",
                _rival("description_scores"), random_views=False, paper="Menon & Vondrick, DCLIP, ICLR 2023"))
register(Method("waffle", "WaffleCLIP: the mean over 15 random-word and 15 random-character descriptors",
                _rival("description_scores"), random_views=False, prompts=WAFFLE,
                paper="Roth et al., WaffleCLIP, ICCV 2023"))
register(Method("autoclip", "AutoCLIP: per-image template weights, one entropy-targeted gradient step",
                _rival("autoclip_scores"), random_views=False, prompts=TEMPLATES80,
                paper="Metzen et al., AutoCLIP, TMLR 2024"))
