"""Stage 1 of AWT, text side: class names, prompts, and their embeddings (computed once, cached)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from .classes import duplicate_names, read_class_file, warn_duplicates  # noqa: F401 (re-exported)
from .errors import AWTError

DEFAULT_TEMPLATE = "a photo of a {}"


def build_prompts(
    classnames: Sequence[str],
    template: str = DEFAULT_TEMPLATE,
    descriptions: Sequence[Sequence[str]] | None = None,
    per_class: int = 50,
    allow_fewer: bool = False,
) -> list[list[str]]:
    """Prompts of each class: ``template.format(name) + "."``, then ``... + ". " + description_j``
    for its first ``per_class`` descriptions.

    A class with fewer than ``per_class`` descriptions is an error naming it, unless
    ``allow_fewer``, in which case it uses what it has (its missing prompts are masked out).
    """
    if "{}" not in template:
        raise AWTError(f"template {template!r} has no '{{}}' for the class name")
    if descriptions is not None and len(descriptions) != len(classnames):
        raise AWTError(f"{len(descriptions)} description lists for {len(classnames)} classes")
    short = []
    prompts = []
    for i, name in enumerate(classnames):
        head = template.format(name).rstrip().rstrip(".")
        descs = [] if descriptions is None or per_class <= 0 else list(descriptions[i])[:per_class]
        if descriptions is not None and per_class > 0 and len(descs) < per_class:
            short.append((name, len(descs)))
        prompts.append([head + "."] + [f"{head}. {d.strip()}" for d in descs])
    if short and not allow_fewer:
        listed = ", ".join(f"{n!r} ({k})" for n, k in short[:5]) + (f" and {len(short) - 5} more" if len(short) > 5 else "")
        raise AWTError(f"{len(short)} class(es) have fewer than {per_class} descriptions: {listed}; "
                       "lower --descriptions-per-class or pass --allow-fewer-descriptions")
    return prompts


def default_cache_dir() -> Path:
    """``$AWT_CACHE_DIR``, else ``$XDG_CACHE_HOME/awt``, else ``~/.cache/awt``."""
    if os.environ.get("AWT_CACHE_DIR"):
        return Path(os.environ["AWT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "awt"


def atomic_torch_save(obj, path: Path) -> None:
    """Save so that ``path`` is either absent or complete: temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def text_cache_key(fingerprint: str, prompts: Sequence[Sequence[str]]) -> str:
    h = hashlib.blake2b(fingerprint.encode(), digest_size=20)
    h.update(json.dumps(prompts, ensure_ascii=False).encode())
    return h.hexdigest()


def encode_prompts(backbone, prompts: Sequence[Sequence[str]], cache_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of every class's prompts, from the disk cache when present.

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
        path = Path(cache_dir) / "text" / f"{text_cache_key(backbone.fingerprint, prompts)}.pt"
        if path.is_file():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if cached.shape[:2] == mask.shape:
                    return cached.to(backbone.device), mask.to(backbone.device)
            except Exception:  # a damaged cache entry is recomputed, never trusted
                pass
    unique = list(dict.fromkeys(t for p in prompts for t in p))
    encoded = backbone.encode_texts(unique)
    position = {t: i for i, t in enumerate(unique)}
    index = torch.tensor([position[t] for p in prompts for t in p], device=encoded.device)
    features = encoded.new_zeros(len(prompts), n_prompts, encoded.shape[-1])
    features[mask.to(encoded.device)] = encoded[index]
    if path is not None:
        atomic_torch_save(features.cpu(), path)
    return features, mask.to(features.device)
