"""The backbone interface: what the engine needs from a dual encoder, and the factory that loads one.

Every caller (classifier, benchmark, caches, throughput script) goes through :class:`Backbone`:
images and texts in, L2-normalised features out, plus the preprocessing facts that the batched view
cutting needs, the logit scale, and a fingerprint of the weights that keys the caches. A library is
added by one :func:`register_loader` call; ``open_clip`` is the default (:mod:`awt.backbone_open_clip`).
"""

from __future__ import annotations

import abc
import hashlib
import importlib
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from . import defaults
from .defaults import PRECISIONS
from .errors import AWTError
from .images import Decoding, ViewLoader

NO_WEIGHTS = {"", "none", "random"}


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


@dataclass(eq=False)
class Backbone(abc.ABC):
    """A loaded dual encoder and what AWT needs to know about it.

    Implementations fill the fields and define :meth:`encode_images` and :meth:`encode_texts`.
    """

    name: str                       # as asked for, e.g. ``ViT-B-16`` or ``hf:google/siglip-base-patch16-224``
    library: str                    # ``open_clip``, ``transformers``, ...
    pretrained: str | None          # tag, revision or checkpoint; None when randomly initialised
    device: torch.device
    precision: str                  # fp32, fp16, bf16, amp, amp_bf16
    preprocess: Callable            # PIL image -> (3, height, width) normalised tensor: view 0
    image_size: tuple[int, int]     # (height, width) of the encoder's input
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    logit_scale: float              # the multiplier s = exp(learned log scale)
    logit_bias: float | None        # SigLIP's bias: shifts every class equally, kept out of the scores
    fingerprint: str                # identifies library, model and weights; keys the embedding caches
    _view_loaders: dict = field(default_factory=dict, repr=False)

    @abc.abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, height, width) normalised pixels -> (n, dim) L2-normalised float32 features."""

    @abc.abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """n texts -> (n, dim) L2-normalised float32 features on the backbone's device."""

    def info(self) -> dict[str, str | None]:
        """What identifies this backbone in a run record."""
        return {"library": self.library, "model": self.name, "pretrained": self.pretrained,
                "precision": self.precision, "fingerprint": self.fingerprint}

    @property
    def input_dtype(self) -> torch.dtype:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)

    def autocast(self):
        """The autocast context of the ``amp`` precisions (disabled otherwise)."""
        if self.precision in ("amp", "amp_bf16"):
            dtype = torch.bfloat16 if self.precision == "amp_bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return torch.autocast(self.device.type, enabled=False)

    def view_loader(self, num_workers: int, decoding: Decoding = Decoding()) -> ViewLoader:
        """This backbone's image loader with ``num_workers`` worker processes, reading files as
        ``decoding`` says, started on first use and kept: every classifier and benchmark run on
        this backbone with the same two shares it."""
        key = (num_workers, decoding)
        if key not in self._view_loaders:
            self._view_loaders[key] = ViewLoader(
                self.preprocess, 4 * max(self.image_size), num_workers, pin_memory=self.device.type == "cuda",
                decoding=decoding)
        return self._view_loaders[key]


def weights_fingerprint(model: torch.nn.Module, identity: str) -> str:
    """A cheap digest of the weights: a sample of every tensor, so random models differ too."""
    h = hashlib.blake2b(identity.encode(), digest_size=16)
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = torch.cat([flat[:256], flat[-256:]]).float().cpu().numpy()
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(sample.tobytes())
    return h.hexdigest()


#: model-name prefix -> "module:function" of its loader; the empty prefix is the default library.
_LOADERS: dict[str, str | Callable[..., Backbone]] = {"": "awt.backbone_open_clip:load", "hf:": "awt.backbone_hf:load"}


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
