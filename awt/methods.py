"""The method registry: every scoring method declared once, with what it needs from the pipeline.

A method scores encoded features: image views ``(batch, 1 + views, dim)`` (view 0 the plain centre
crop) against class prompts ``(classes, prompts, dim)``, giving ``(batch, classes)``. Its entry says
whether it uses the random views and which prompt set it reads (:data:`PROMPT_SETS`; built in one
place, :func:`awt.prompts.method_prompts`), so the command line, the classifier and the benchmark
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

if TYPE_CHECKING:
    import torch

    from .scoring import AWTConfig

# The prompt sets a method can read. Sets of the first three kinds start with the bare template
# (prompt 0); the template sets are the templates alone.
TEMPLATE = "template"          # prompt 0 only: descriptions change nothing
DESCRIPTIONS = "descriptions"  # the template and each class's M descriptions
WAFFLE = "waffle"              # the template and WaffleCLIP's random descriptors (the same for every class)
TEMPLATES80 = "templates80"    # CLIP's 80 hand-written ImageNet templates
TEMPLATES7 = "templates7"      # CLIP's 7-template subset of them (ZERO's "+Ensemble")
PROMPT_SETS = (TEMPLATE, DESCRIPTIONS, WAFFLE, TEMPLATES80, TEMPLATES7)
WAFFLE_PAIRS = 15              # WaffleCLIP's default --waffle_count: 15 (random words, random characters) pairs

#: ``(image (batch, views, dim), text (classes, prompts, dim), mask (classes, prompts) | None,
#: logit_scale, config) -> (batch, classes)``
ScoreFn = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor | None", float, "AWTConfig"], "torch.Tensor"]


@dataclass(frozen=True)
class Method:
    name: str
    summary: str                  # one line, shown by ``--help`` and in the README's table
    score: ScoreFn
    random_views: bool = True     # False: scored from view 0 alone (no random views are encoded)
    prompts: str = DESCRIPTIONS   # one of PROMPT_SETS
    paper: str = ""
    uses_awt_config: bool = False  # reads the AWT hyper-parameters (temperatures, epsilon, Sinkhorn)

    def __post_init__(self) -> None:
        if self.prompts not in PROMPT_SETS:
            raise ValueError(f"method {self.name!r}: prompts must be one of {', '.join(map(repr, PROMPT_SETS))}")

    def views_used(self, views: int) -> int:
        """Random views this method reads when ``views`` are encoded."""
        return views if self.random_views else 0

    def descriptions_used(self, per_class: int, has_descriptions: bool = True) -> int:
        """Descriptions per class this method reads when ``per_class`` are available: WaffleCLIP's
        random descriptors count as its descriptions (2 x 15, whatever ``per_class``); template sets
        read none."""
        if self.prompts == WAFFLE:
            return 2 * WAFFLE_PAIRS
        return per_class if (self.prompts == DESCRIPTIONS and has_descriptions) else 0

    def prompt_set(self, per_class: int, has_descriptions: bool = True, seed: int = 0) -> tuple:
        """The identity of the prompt set this method reads: methods with equal keys share one
        encoding. ``per_class`` and ``seed`` as the run's (the seed changes WaffleCLIP's words)."""
        used = self.descriptions_used(per_class, has_descriptions)
        if self.prompts in (TEMPLATE, DESCRIPTIONS):
            return (DESCRIPTIONS, used)      # a template method reads prompt 0 of the M = 0 set
        if self.prompts == WAFFLE:
            return (WAFFLE, used, seed)
        return (self.prompts,)


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
    if m.prompts == TEMPLATE:
        text, mask = text[:, :1], None
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


def _templates(image, text, mask, logit_scale, config):
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
register(Method("templates", "view 0 against the mean of CLIP's 80 ImageNet templates", _templates,
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
