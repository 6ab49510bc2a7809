"""The factory: a model name in, a loaded :class:`~awt.backbones.base.Backbone` out, through the
library its name's prefix selects (open_clip by default, ``hf:`` for transformers).

A library is added by one :func:`register_loader` call, as open_clip's factory registers its models.
"""

from __future__ import annotations

import importlib
import os
from typing import Callable

import torch

from .. import defaults
from ..defaults import PRECISIONS
from ..errors import AWTError
from .base import Backbone
from .names import HF


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise AWTError(f"invalid device {device!r}: {e}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise AWTError(f"device {device!r} asked for, but CUDA is not available here", setting="device",
                       hint="use {device} cpu", kind="unavailable")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()  # torch.device does not check the index; the first use would fail
        have = "1 CUDA device: cuda:0" if count == 1 else f"{count} CUDA devices: cuda:0 to cuda:{count - 1}"
        raise AWTError(f"device {device!r} asked for, but CUDA device {resolved.index} is not available here ({have})")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA, fp32 elsewhere; an AWTError for unknown or impossible ones."""
    if precision not in PRECISIONS:
        raise AWTError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if device.type == "cpu" and precision in ("fp16", "amp"):
        raise AWTError(f"precision {precision} needs a GPU; use fp32 or bf16 on the CPU")
    return precision


#: model-name prefix -> "module:function" of its loader; the empty prefix is the default library.
_LOADERS: dict[str, str | Callable[..., Backbone]] = {"": "awt.backbones.openclip:load", HF: "awt.backbones.hf:load"}


def register_loader(prefix: str, loader: str | Callable[..., Backbone]) -> None:
    """Route model names starting with ``prefix`` (``hf:``) to ``loader(model, pretrained, device,
    precision, cache_dir)``; a ``"module:function"`` string is imported on first use."""
    _LOADERS[prefix] = loader


def _loader_for(model: str) -> Callable[..., Backbone]:
    prefix = max((p for p in _LOADERS if model.startswith(p)), key=len)
    loader = _LOADERS[prefix]
    if isinstance(loader, str):
        module, _, function = loader.partition(":")
        loader = getattr(importlib.import_module(module), function)
    return loader


def create_backbone(
    model: str = defaults.MODEL,
    pretrained: str | None = defaults.PRETRAINED,
    device: str | torch.device | None = None,
    precision: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> Backbone:
    """Load a dual encoder by name, through the library its name selects.

    Args:
        model: an open_clip name (``ViT-B-16``), ``hf-hub:org/repo`` or ``local-dir:/path`` (open_clip),
            or a name with another registered prefix.
        pretrained: weights: a tag, a checkpoint file, or ``none`` for random (seeded) weights.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda:1``, ...
        precision: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16``, ``bf16``, ``amp``, ``amp_bf16``.
        cache_dir: where the library keeps downloaded weights (its own default when None).
    """
    dev = resolve_device(device)
    return _loader_for(model)(model, pretrained, dev, resolve_precision(precision, dev), cache_dir)
