"""Stage 1, text side: a class set into prompts and their embeddings (computed once, cached)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from . import defaults
from .errors import AWTError
from .files import WriteError, atomic_torch_save

DEFAULT_TEMPLATE = defaults.TEMPLATE
DEFAULT_DESCRIPTIONS = defaults.DESCRIPTIONS_PER_CLASS


def build_prompts(
    classnames: Sequence[str],
    template: str = DEFAULT_TEMPLATE,
    descriptions: Sequence[Sequence[str]] | None = None,
    per_class: int = DEFAULT_DESCRIPTIONS,
    allow_fewer: bool = False,
) -> list[list[str]]:
    """Prompts of each class: the template with the name in place of ``{}``, ``+ "."``, then ``... + ". " + description_j``
    for its first ``per_class`` descriptions.

    A class with fewer than ``per_class`` descriptions is an error naming it, unless
    ``allow_fewer``, in which case it uses what it has (its missing prompts are masked out).
    """
    check_template(template)
    if per_class < 0:
        raise AWTError(f"descriptions per class must be >= 0, got {per_class}")
    if descriptions is not None and len(descriptions) != len(classnames):
        raise AWTError(f"{len(descriptions)} description lists for {len(classnames)} classes")
    short = []
    prompts = []
    for i, name in enumerate(classnames):
        # the authors' joining, string for string: the template without a final ".", then ". " and
        # each description as it is
        head = (template[:-1] if template.endswith(".") else template).replace("{}", name)
        descs = [] if descriptions is None or per_class <= 0 else list(descriptions[i])[:per_class]
        if descriptions is not None and per_class > 0 and len(descs) < per_class:
            short.append((name, len(descs)))
        prompts.append([head + "."] + [f"{head}. {d}" for d in descs])
    if short and not allow_fewer:
        listed = ", ".join(f"{n!r} ({k})" for n, k in short[:5]) + (f" and {len(short) - 5} more" if len(short) > 5 else "")
        raise AWTError(f"{len(short)} class(es) have fewer than {per_class} descriptions: {listed}; "
                       "lower --descriptions-per-class or pass --allow-fewer-descriptions")
    return prompts


def method_prompts(
    method,
    classnames: Sequence[str],
    template: str = DEFAULT_TEMPLATE,
    descriptions: Sequence[Sequence[str]] | None = None,
    per_class: int = DEFAULT_DESCRIPTIONS,
    seed: int = 0,
    allow_fewer: bool = False,
) -> list[list[str]]:
    """The prompts of the set ``method`` (a name or :class:`~awt.methods.Method`) reads -- the one
    place a method's prompts are built.

    ``template``/``descriptions``: the bare template, then ``per_class`` descriptions
    (:func:`build_prompts`; none for a template method). ``waffle``: the bare template, then
    WaffleCLIP's random descriptors drawn with ``seed`` (:mod:`awt.waffle`). ``templates80`` /
    ``templates7``: CLIP's ImageNet templates as open_clip ships them (``OPENAI_IMAGENET_TEMPLATES``,
    ``SIMPLE_IMAGENET_TEMPLATES``), each filled with the class name; ``template`` is not used.
    """
    from . import methods as m

    method = m.get_method(method) if isinstance(method, str) else method
    if method.prompts in (m.TEMPLATE, m.DESCRIPTIONS):
        used = method.descriptions_used(per_class, descriptions is not None)
        return build_prompts(classnames, template, descriptions if used else None, used, allow_fewer)
    if method.prompts == m.WAFFLE:
        from .waffle import waffle_prompts

        check_template(template)
        return waffle_prompts(classnames, template, m.WAFFLE_PAIRS, seed)
    from open_clip import zero_shot_metadata as meta

    templates = meta.OPENAI_IMAGENET_TEMPLATES if method.prompts == m.TEMPLATES80 else meta.SIMPLE_IMAGENET_TEMPLATES
    return [[t(name) for t in templates] for name in classnames]


def check_template(template: str) -> str:
    """``template`` itself, if it has exactly one ``{}`` (the class name) and no other braces."""
    if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.replace("{}", "").count("}"):
        raise AWTError(f"template {template!r} must contain exactly one '{{}}' for the class name, and no other braces")
    return template


def check_cache_dir(cache_dir: str | os.PathLike) -> Path:
    """Create ``cache_dir`` if needed; an AWTError if it cannot hold cache files (checked before the
    work whose result it would keep)."""
    path = Path(cache_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise AWTError(f"{path}: cache directory is a file") from None
    except OSError as e:
        raise AWTError(f"{path}: cannot create cache directory: {e.strerror or e}") from None
    if not path.is_dir():
        raise AWTError(f"{path}: cache directory is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise AWTError(f"{path}: cache directory is not writable (pass another --cache-dir or --no-cache)")
    return path


def default_cache_dir() -> Path:
    """``$AWT_CACHE_DIR``, else ``$XDG_CACHE_HOME/awt``, else ``~/.cache/awt``."""
    if os.environ.get(defaults.CACHE_ENV):
        return Path(os.environ[defaults.CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "awt"


def text_cache_key(fingerprint: str, prompts: Sequence[Sequence[str]]) -> str:
    h = hashlib.blake2b(fingerprint.encode(), digest_size=20)
    h.update(json.dumps(prompts, ensure_ascii=False).encode())
    return h.hexdigest()


TEXT_BATCH = 256   # distinct prompts encoded at once


def encode_prompts(backbone, prompts: Sequence[Sequence[str]], cache_dir: str | os.PathLike | None = None,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of every class's prompts, from the disk cache when present.

    Each distinct prompt is encoded once, ``TEXT_BATCH`` at a time (a progress bar on stderr with
    ``progress``, when it is a terminal).

    Returns:
        features (classes, prompts, dim) L2-normalised, float32, on the backbone's device (rows of
        a class with fewer prompts are zero), and mask (classes, prompts) bool of real prompts.
    """
    n_prompts = max(len(p) for p in prompts)
    mask = torch.zeros(len(prompts), n_prompts, dtype=torch.bool)
    for i, p in enumerate(prompts):
        mask[i, : len(p)] = True
    path = None
    if cache_dir is not None:
        try:
            path = check_cache_dir(Path(cache_dir) / "text") / f"{text_cache_key(backbone.fingerprint, prompts)}.pt"
        except AWTError as e:   # the cache only saves time: go on without it
            warnings.warn(f"{e}; the prompt embeddings are not cached this time")
        if path is not None and path.is_file():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if cached.shape[:2] == mask.shape:
                    return cached.to(backbone.device), mask.to(backbone.device)
            except Exception:  # a damaged cache entry is recomputed, never trusted
                pass
    unique = list(dict.fromkeys(t for p in prompts for t in p))
    encoded = _encode_texts(backbone, unique, progress)
    position = {t: i for i, t in enumerate(unique)}
    index = torch.tensor([position[t] for p in prompts for t in p], device=encoded.device)
    features = encoded.new_zeros(len(prompts), n_prompts, encoded.shape[-1])
    features[mask.to(encoded.device)] = encoded[index]
    if path is not None:
        try:
            atomic_torch_save(features.cpu(), path)
        except WriteError as e:   # the cache only saves time: go on without it
            warnings.warn(f"{e}; the prompt embeddings are not cached this time")
    return features, mask.to(features.device)


def _encode_texts(backbone, texts: list[str], progress: bool) -> torch.Tensor:
    from tqdm.auto import tqdm

    # Batches of similar length: a text tower that stops at a batch's longest prompt then wastes
    # little on the shorter ones. Characters stand in for tokens; the order is restored after.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts = []
    with tqdm(total=len(texts), desc="prompts", unit="prompt", file=sys.stderr, dynamic_ncols=True, leave=False,
              disable=None if progress else True) as bar:
        for start in range(0, len(texts), TEXT_BATCH):
            parts.append(backbone.encode_texts([texts[i] for i in order[start:start + TEXT_BATCH]]))
            bar.update(len(parts[-1]))
    encoded = torch.cat(parts)
    restored = torch.empty_like(encoded)
    restored[torch.tensor(order, device=encoded.device)] = encoded
    return restored


@dataclass
class ClassPrompts:
    """A class set's prompts and their embeddings."""

    names: list[str]
    prompts: list[list[str]] | None     # None when the features were given as they are
    features: torch.Tensor              # (classes, prompts, dim) L2-normalised, zero rows where padded
    mask: torch.Tensor | None           # (classes, prompts) bool, real prompts; None: all are real

    def __len__(self) -> int:
        return len(self.names)


def align_descriptions(classnames: Sequence[str], descriptions) -> list[list[str]] | None:
    """Each class's descriptions in class order, from a :class:`~awt.descriptions.DescriptionSet`
    (by index where it is a cache of these classes), a ``{name: [sentences]}`` mapping, or lists."""
    if descriptions is None:
        return None
    if hasattr(descriptions, "for_classes"):
        return descriptions.for_classes(classnames)
    if isinstance(descriptions, Mapping):
        missing = [n for n in classnames if n not in descriptions]
        if missing:
            raise AWTError(f"no descriptions for {len(missing)} class(es): {', '.join(map(repr, missing[:5]))}")
        return [list(descriptions[n]) for n in classnames]
    return [list(d) for d in descriptions]


def encode_classes(
    backbone,
    classnames: Sequence[str],
    *,
    template: str = DEFAULT_TEMPLATE,
    descriptions=None,
    descriptions_per_class: int = DEFAULT_DESCRIPTIONS,
    allow_fewer_descriptions: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    method=None,
    seed: int = 0,
) -> ClassPrompts:
    """Build every class's prompts and encode them (:func:`encode_prompts`): the template and
    descriptions (:func:`build_prompts`), or, given a ``method``, the set it reads
    (:func:`method_prompts`; ``seed`` draws WaffleCLIP's words)."""
    if not classnames:
        raise AWTError("no classes given")
    names = list(classnames)
    aligned = align_descriptions(names, descriptions)
    if method is None:
        prompts = build_prompts(names, template, aligned, descriptions_per_class, allow_fewer_descriptions)
    else:
        prompts = method_prompts(method, names, template, aligned, descriptions_per_class, seed,
                                 allow_fewer_descriptions)
    features, mask = encode_prompts(backbone, prompts, cache_dir, progress)
    return ClassPrompts(names, prompts, features, mask)
