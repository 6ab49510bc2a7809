"""Prompt sets: the text a method scores images against, one object per kind.

A method's registry entry holds its prompt set (:attr:`awt.methods.Method.prompts`). The set says
how its prompts are built from a class set (the one place prompts are written), how many of the
class descriptions it reads, which part of the encoded set the method sees, and the key under which
encoded prompts are shared: two methods whose sets have equal keys share one encoding, in the
classifier and in the benchmark alike.

Pure Python (no torch): the command line reads the registry for its help.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from . import defaults
from .errors import AWTError

WAFFLE_PAIRS = 15   # WaffleCLIP's default --waffle_count: 15 (random words, random characters) pairs


def check_template(template: str) -> str:
    """``template`` itself, if it has exactly one ``{}`` (the class name) and no other braces."""
    rest = template.replace("{}", "")
    if template.count("{}") != 1 or "{" in rest or "}" in rest:
        raise AWTError(f"template {template!r} must contain exactly one '{{}}' for the class name, and no other braces",
                       setting="template")
    return template


def _head(template: str, name: str) -> str:
    """The authors' joining: the template with the name in, without a final ``.``."""
    return (template[:-1] if template.endswith(".") else template).replace("{}", name)


def build_prompts(
    classnames: Sequence[str],
    template: str = defaults.TEMPLATE,
    descriptions: Sequence[Sequence[str]] | None = None,
    per_class: int = defaults.DESCRIPTIONS_PER_CLASS,
    allow_fewer: bool = False,
) -> list[list[str]]:
    """Prompts of each class: the template with the name in place of ``{}``, ``+ "."``, then
    ``... + ". " + description_j`` for its first ``per_class`` descriptions (the authors' joining,
    string for string).

    A class with fewer than ``per_class`` descriptions is an error naming it, unless
    ``allow_fewer``, in which case it uses what it has (its missing prompts are masked out).
    """
    check_template(template)
    check_descriptions(classnames, descriptions, per_class, allow_fewer)
    prompts = []
    for i, name in enumerate(classnames):
        head = _head(template, name)
        descs = [] if descriptions is None or per_class <= 0 else list(descriptions[i])[:per_class]
        prompts.append([head + "."] + [f"{head}. {d}" for d in descs])
    return prompts


def check_descriptions(classnames: Sequence[str], descriptions: Sequence[Sequence[str]] | None, per_class: int,
                       allow_fewer: bool = False) -> None:
    """An AWTError unless every class has ``per_class`` descriptions (or ``allow_fewer``), naming
    the classes that have fewer."""
    if per_class < 0:
        raise AWTError(f"descriptions per class must be >= 0, got {per_class}", setting="descriptions_per_class")
    if descriptions is None:
        return
    if len(descriptions) != len(classnames):
        raise AWTError(f"{len(descriptions)} description lists for {len(classnames)} classes", setting="descriptions")
    short = [(n, len(d)) for n, d in zip(classnames, descriptions) if len(d) < per_class]
    if short and not allow_fewer:
        listed = ", ".join(f"{n!r} ({k})" for n, k in short[:5]) + (f" and {len(short) - 5} more" if len(short) > 5 else "")
        raise AWTError(f"{len(short)} class(es) have fewer than {per_class} descriptions: {listed}",
                       setting="descriptions_per_class",
                       hint="lower {descriptions_per_class} or allow it with {allow_fewer_descriptions}")


@dataclass(frozen=True)
class PromptSet:
    """A kind of prompt set. Subclasses say how it is built; ``name`` is its key's first part."""

    name: str

    @property
    def reads_descriptions(self) -> bool:
        """Whether it reads the class set's own descriptions (WaffleCLIP's descriptors are not)."""
        return False

    def used(self, per_class: int, has_descriptions: bool = True) -> int:
        """Descriptions per class it reads when ``per_class`` are available."""
        return 0

    def key(self, per_class: int, has_descriptions: bool = True, seed: int = 0) -> tuple:
        """The identity of the encoded set: equal keys share one encoding."""
        return (self.name,)

    def size(self, per_class: int) -> int:
        """Prompts per class (at most), with ``per_class`` descriptions available."""
        raise NotImplementedError

    def build(self, classnames: Sequence[str], template: str = defaults.TEMPLATE,
              descriptions: Sequence[Sequence[str]] | None = None, per_class: int = 0, seed: int = 0,
              allow_fewer: bool = False) -> list[list[str]]:
        """Each class's prompts."""
        raise NotImplementedError

    def select(self, text, mask):
        """What a method reads of the encoded set: (classes, prompts, dim) features and their mask."""
        return text, mask


@dataclass(frozen=True)
class Described(PromptSet):
    """The template, then each class's first M descriptions; ``template_only``: prompt 0 alone,
    read from the M = 0 encoding (descriptions change nothing)."""

    template_only: bool = False

    @property
    def reads_descriptions(self) -> bool:
        return not self.template_only

    def used(self, per_class: int, has_descriptions: bool = True) -> int:
        return 0 if self.template_only or not has_descriptions else per_class

    def key(self, per_class: int, has_descriptions: bool = True, seed: int = 0) -> tuple:
        return ("descriptions", self.used(per_class, has_descriptions))

    def size(self, per_class: int) -> int:
        return 1 + self.used(per_class)

    def build(self, classnames, template=defaults.TEMPLATE, descriptions=None, per_class=0, seed=0,
              allow_fewer=False):
        used = self.used(per_class, descriptions is not None)
        return build_prompts(classnames, template, descriptions if used else None, used, allow_fewer)

    def select(self, text, mask):
        return (text[:, :1], None) if self.template_only else (text, mask)


@dataclass(frozen=True)
class Waffle(PromptSet):
    """The template, then WaffleCLIP's ``2 x pairs`` random descriptors drawn with the run's seed,
    the same for every class (:mod:`awt.waffle`); they count as its descriptions."""

    pairs: int = WAFFLE_PAIRS

    def used(self, per_class: int, has_descriptions: bool = True) -> int:
        return 2 * self.pairs

    def key(self, per_class: int, has_descriptions: bool = True, seed: int = 0) -> tuple:
        return (self.name, 2 * self.pairs, seed)

    def size(self, per_class: int) -> int:
        return 1 + 2 * self.pairs

    def build(self, classnames, template=defaults.TEMPLATE, descriptions=None, per_class=0, seed=0,
              allow_fewer=False):
        from .waffle import descriptor_clause, waffle_descriptors

        check_template(template)
        clauses = [descriptor_clause(d) for d in waffle_descriptors(classnames, self.pairs, seed)]
        return [[_head(template, n) + "."] + [f"{_head(template, n)}, {c}." for c in clauses] for n in classnames]


@dataclass(frozen=True)
class Templates(PromptSet):
    """A fixed list of hand-written templates, each filled with the class name (the class set's
    own template is not used): one of open_clip's ``zero_shot_metadata`` lists."""

    source: str = "OPENAI_IMAGENET_TEMPLATES"
    count: int = 80

    def size(self, per_class: int) -> int:
        return self.count

    def build(self, classnames, template=defaults.TEMPLATE, descriptions=None, per_class=0, seed=0,
              allow_fewer=False):
        from open_clip import zero_shot_metadata

        templates = getattr(zero_shot_metadata, self.source)
        return [[t(name) for t in templates] for name in classnames]


TEMPLATE = Described("template", template_only=True)   # prompt 0 only
DESCRIPTIONS = Described("descriptions")               # the template and each class's M descriptions
WAFFLE = Waffle("waffle")                              # the template and WaffleCLIP's random descriptors
TEMPLATES80 = Templates("templates80", "OPENAI_IMAGENET_TEMPLATES", 80)  # CLIP's 80 ImageNet templates
TEMPLATES7 = Templates("templates7", "SIMPLE_IMAGENET_TEMPLATES", 7)     # their 7-template subset (ZERO's +Ensemble)
PROMPT_SETS = {s.name: s for s in (TEMPLATE, DESCRIPTIONS, WAFFLE, TEMPLATES80, TEMPLATES7)}
