"""The description of a classifier: one object from which every front end builds its own.

:class:`ClassifierSpec` holds what decides a classifier's results, besides the model: the classes,
their descriptions and how many are used, the template, the method and its settings, the views and
their seed, how images are decoded, how a video's frames are sampled, and where encoded prompts are
cached. The command line, ``awt explain``, ``awt serve`` and the benchmark each fill one in and
build from it, so a rule (the number of descriptions a file gives, M = 0 without descriptions, a
cache folder checked before any model loads) has one home.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import defaults
from .errors import AWTError
from .files import check_cache_dir, default_cache_dir
from .images import Decoding
from .methods import get_method
from .prompt_sets import PromptSet, check_descriptions, check_template
from .scoring import AWTConfig
from .video_sampling import VideoSampling

_log = logging.getLogger(__name__)


def align_descriptions(classnames: Sequence[str], descriptions) -> tuple[tuple[str, ...], ...] | None:
    """Each class's descriptions in class order, from a :class:`~awt.descriptions.DescriptionSet`
    (by index where it lists these classes in this order), a ``{name: [sentences]}`` mapping, or
    one list per class."""
    if descriptions is None:
        return None
    if hasattr(descriptions, "for_classes"):
        aligned = descriptions.for_classes(classnames)
    elif isinstance(descriptions, Mapping):
        missing = [n for n in classnames if n not in descriptions]
        if missing:
            raise AWTError(f"no descriptions for {len(missing)} class(es): {', '.join(map(repr, missing[:5]))}",
                           setting="descriptions")
        aligned = [descriptions[n] for n in classnames]
    else:
        aligned = list(descriptions)
        if len(aligned) != len(classnames):
            raise AWTError(f"{len(aligned)} description lists for {len(classnames)} classes", setting="descriptions")
    return tuple(tuple(d) for d in aligned)


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything but the model that decides a classifier's results.

    Built as ``ClassifierSpec(classes=["cat", "dog"], descriptions=load_descriptions(path))``: the
    constructor aligns the descriptions with the classes and resolves the number used per class
    (``descriptions_per_class=None``: the number an ``awt describe`` file was made for, else the
    default; always 0 without descriptions). Every check that needs no model is made here.
    """

    classes: Sequence[str]
    descriptions: Any = None             # DescriptionSet, {name: [sentences]}, or one list per class
    descriptions_per_class: int | None = None
    allow_fewer_descriptions: bool = False
    template: str = defaults.TEMPLATE
    method: str = defaults.METHOD
    views: int = defaults.VIEWS          # N random views per image besides view 0
    seed: int = defaults.SEED            # with each image's pixels, seeds its views
    awt: AWTConfig = AWTConfig()
    cache_dir: Path | None = field(default_factory=default_cache_dir)   # None: no prompt cache
    decoding: Decoding = Decoding()      # how files are read (awt.images.Decoding); max_pixels bounds video frames
    video: VideoSampling = VideoSampling()   # which frame crops make a video's views (awt.video_sampling)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 -- frozen
        classes = tuple(str(c) for c in self.classes)
        if not classes:
            raise AWTError("no classes given", setting="classes")
        set_("classes", classes)
        described = self.descriptions
        m = self.descriptions_per_class
        if m is None:
            own = getattr(described, "per_class", None)
            m = own if own else (defaults.DESCRIPTIONS_PER_CLASS if described is not None else 0)
        if m < 0:
            raise AWTError(f"descriptions per class must be >= 0, got {m}", setting="descriptions_per_class")
        set_("descriptions", align_descriptions(classes, described))
        set_("descriptions_per_class", m if self.descriptions is not None else 0)
        check_template(self.template)
        if get_method(self.method).prompts.reads_descriptions:
            check_descriptions(classes, self.descriptions, self.descriptions_per_class, self.allow_fewer_descriptions)
        get_method(self.method)
        if self.views < 0:
            raise AWTError(f"views must be >= 0, got {self.views}", setting="views")
        if self.seed < 0:
            raise AWTError(f"seed must be >= 0, got {self.seed}", setting="seed")
        if not isinstance(self.video, VideoSampling):
            raise AWTError(f"video must be a VideoSampling, got {self.video!r}", setting="video")
        if self.cache_dir is not None:
            set_("cache_dir", check_cache_dir(self.cache_dir))

    @classmethod
    def from_files(cls, classes: str | os.PathLike, descriptions: str | os.PathLike | None = None,
                   **settings) -> "ClassifierSpec":
        """A spec from a class file (one name per line, or ``<key>\\t<name>``) and a descriptions file
        (``{name: [sentences]}`` or an ``awt describe`` file); duplicate names warn once and stay
        distinct classes. ``settings``: the other fields."""
        from .classes import read_class_file, warn_duplicates

        names = read_class_file(classes)
        warn_duplicates(names, str(classes))
        desc = None
        if descriptions is not None:
            from .descriptions import load_descriptions

            desc = load_descriptions(descriptions)
        elif get_method(settings.get("method", defaults.METHOD)).prompts.used(1):
            _log.warning("no descriptions given: using the template alone (M=0)")
        return cls(names, desc, **settings)

    # -- the prompt sets methods read -----------------------------------------------------------

    def prompt_key(self, prompt_set: PromptSet) -> tuple:
        """The identity of ``prompt_set`` built from this spec: equal keys share one encoding."""
        return prompt_set.key(self.descriptions_per_class, self.descriptions is not None, self.seed)

    def prompts(self, prompt_set: PromptSet) -> list[list[str]]:
        """Each class's prompts in ``prompt_set``."""
        return prompt_set.build(self.classes, self.template, self.descriptions, self.descriptions_per_class,
                                self.seed, self.allow_fewer_descriptions)

    def key(self) -> str:
        """A digest of every field that can change a result (a class set's identity in ``awt serve``)."""
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cache_dir"}
        doc["awt"], doc["decoding"], doc["video"] = vars(self.awt), self.decoding.as_record(), asdict(self.video)
        text = json.dumps(doc, sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
