"""Stage 1, text side: a class set into prompts and their embeddings (computed once, cached)."""

from __future__ import annotations

import hashlib
import json
import os
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .errors import AWTError
from .files import WriteError, atomic_torch_save, check_cache_dir
from .progress import progress_bar

_log = logging.getLogger(__name__)


def text_cache_key(fingerprint: str, prompts: Sequence[Sequence[str]]) -> str:
    h = hashlib.blake2b(fingerprint.encode(), digest_size=20)
    h.update(json.dumps(prompts, ensure_ascii=False).encode())
    return h.hexdigest()


TEXT_BATCH = 256   # distinct prompts encoded at once


def encode_prompts(backbone, prompts: Sequence[Sequence[str]], cache_dir: str | os.PathLike | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of every class's prompts, from the disk cache when present.

    Each distinct prompt is encoded once, ``TEXT_BATCH`` at a time (with a progress bar, when the
    front end shows them: :mod:`awt.progress`).

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
            _log.warning(f"{e}; the prompt embeddings are not cached this time")
        if path is not None and path.is_file():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if cached.shape[:2] == mask.shape:
                    return cached.to(backbone.device), mask.to(backbone.device)
            except Exception:  # a damaged cache entry is recomputed, never trusted
                pass
    unique = list(dict.fromkeys(t for p in prompts for t in p))
    encoded = _encode_texts(backbone, unique)
    position = {t: i for i, t in enumerate(unique)}
    index = torch.tensor([position[t] for p in prompts for t in p], device=encoded.device)
    features = encoded.new_zeros(len(prompts), n_prompts, encoded.shape[-1])
    features[mask.to(encoded.device)] = encoded[index]
    if path is not None:
        try:
            atomic_torch_save(features.cpu(), path)
        except WriteError as e:   # the cache only saves time: go on without it
            _log.warning(f"{e}; the prompt embeddings are not cached this time")
    return features, mask.to(features.device)


def _encode_texts(backbone, texts: list[str]) -> torch.Tensor:
    # Batches of similar length: a text tower that stops at a batch's longest prompt then wastes
    # little on the shorter ones. Characters stand in for tokens; the order is restored after.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts = []
    with progress_bar(len(texts), "prompts", "prompt") as bar:
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


def encode_classes(backbone, spec, prompt_set=None) -> ClassPrompts:
    """The prompts of ``prompt_set`` (default: the set ``spec.method`` reads) built from ``spec``
    (a :class:`~awt.spec.ClassifierSpec`) and encoded (:func:`encode_prompts`, cached in
    ``spec.cache_dir``)."""
    from .methods import get_method

    prompt_set = prompt_set or get_method(spec.method).prompts
    prompts = spec.prompts(prompt_set)
    features, mask = encode_prompts(backbone, prompts, spec.cache_dir)
    return ClassPrompts(list(spec.classes), prompts, features, mask)
