"""Dual-encoder backbones through open_clip: loading, preprocessing facts, and encoding."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import AWTError
from .images import ViewLoader

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
NO_WEIGHTS = {"", "none", "random"}
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "amp", "amp_bf16")
_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_CPU_ENCODE_CHUNK = 32


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise AWTError(f"invalid device {device!r}: {e}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise AWTError(f"device {device!r} asked for, but CUDA is not available here (use --device cpu)")
    return resolved


@dataclass
class Backbone:
    """An open_clip model with what AWT needs to know about it."""

    model: torch.nn.Module
    tokenizer: Callable
    preprocess: Callable            # PIL image -> (3, height, width) normalised tensor; view 0
    name: str
    pretrained: str | None          # tag or checkpoint path; None when randomly initialised
    device: torch.device
    precision: str
    image_size: tuple[int, int]     # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    logit_scale: float              # the multiplier s = exp(model.logit_scale)
    logit_bias: float | None
    fingerprint: str                # identifies the weights; keys the embedding caches
    _view_loaders: dict = field(default_factory=dict, repr=False, compare=False)

    def _autocast(self):
        if self.precision in ("amp", "amp_bf16"):
            dtype = torch.bfloat16 if self.precision == "amp_bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return torch.autocast(self.device.type, enabled=False)

    def view_loader(self, num_workers: int) -> ViewLoader:
        """This backbone's image loader with ``num_workers`` worker processes, started on first use
        and kept: every classifier and benchmark run on this backbone shares it."""
        if num_workers not in self._view_loaders:
            self._view_loaders[num_workers] = ViewLoader(
                self.preprocess, 4 * max(self.image_size), num_workers, pin_memory=self.device.type == "cuda")
        return self._view_loaders[num_workers]

    @property
    def input_dtype(self) -> torch.dtype:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, height, width) normalised pixels -> (n, dim) L2-normalised features (float32).

        On the CPU in chunks of 32: activations then stay in cache (ViT-B/32 on 2 cores: about 20%
        more views per second than 200 at once). A GPU takes them all at once.
        """
        pixels = pixels.to(self.device, self.input_dtype, non_blocking=True)
        step = _CPU_ENCODE_CHUNK if self.device.type == "cpu" else max(1, len(pixels))
        with self._autocast():
            parts = [self.model.encode_image(pixels[i : i + step]) for i in range(0, max(1, len(pixels)), step)]
        features = torch.cat(parts) if len(parts) > 1 else parts[0]
        return F.normalize(features.float(), dim=-1)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Texts -> (n, dim) L2-normalised features (float32)."""
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start:start + batch_size])).to(self.device)
            with self._autocast():
                out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        return torch.cat(out) if out else torch.empty(0, 0, device=self.device)


def _weights_fingerprint(model: torch.nn.Module, identity: str) -> str:
    """A cheap digest of the weights: a sample of every tensor, so random models differ too."""
    h = hashlib.blake2b(identity.encode(), digest_size=16)
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = torch.cat([flat[:256], flat[-256:]]).float().cpu().numpy()
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(sample.tobytes())
    return h.hexdigest()


def _local_dir_has_checkpoint(model_name: str) -> bool:
    path = Path(model_name[len("local-dir:"):])
    return path.is_dir() and any(p.suffix in _CHECKPOINT_SUFFIXES for p in path.iterdir())


def create_backbone(
    model: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    device: str | torch.device | None = None,
    precision: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> Backbone:
    """Load an open_clip model by any name open_clip accepts.

    Args:
        model: ``ViT-B-16``, ``hf-hub:org/repo`` or ``local-dir:/path`` (config + optional checkpoint).
        pretrained: a tag from ``open_clip.list_pretrained()``, a checkpoint file, or ``none``
            for random weights (seeded, so runs are reproducible). Ignored with a schema.
        precision: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16``, ``bf16``, ``amp``, ``amp_bf16``.
    """
    import open_clip

    dev = resolve_device(device)
    if precision not in PRECISIONS:
        raise AWTError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "fp16" if dev.type == "cuda" else "fp32"
    if dev.type == "cpu" and precision in ("fp16", "amp"):
        raise AWTError(f"precision {precision} needs a GPU; use fp32 or bf16 on the CPU")

    schema = next((s for s in ("local-dir:", "hf-hub:") if model.startswith(s)), None)
    tag = None if pretrained is None or str(pretrained).lower() in NO_WEIGHTS else str(pretrained)
    if schema is not None:
        tag = None
        random_weights = schema == "local-dir:" and not _local_dir_has_checkpoint(model)
    else:
        if model.replace("/", "-") not in open_clip.list_models():
            raise AWTError(f"unknown model {model!r}: not an open_clip model name (see open_clip.list_models()), "
                           "and not hf-hub:ORG/REPO or local-dir:PATH")
        if tag is not None and not os.path.isfile(tag):
            known = open_clip.list_pretrained_tags_by_model(model.replace("/", "-"))
            if tag not in known:
                looks_like_path = os.sep in tag or tag.endswith(_CHECKPOINT_SUFFIXES)
                what = "checkpoint file not found" if looks_like_path else f"unknown pretrained tag (known: {', '.join(known) or 'none'})"
                raise AWTError(f"model {model}: {what}: {tag!r}")
        random_weights = tag is None

    if random_weights:
        warnings.warn(f"{model}: no pretrained weights, using a randomly initialised model "
                      "(predictions are meaningless; fine for tests and speed measurements)", stacklevel=2)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a weightless model is the same model on every run
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=tag, precision="fp32" if precision.startswith("amp") else precision,
                device=dev, cache_dir=None if cache_dir is None else str(cache_dir),
            )
    except (FileNotFoundError, ValueError) as e:
        raise AWTError(f"model {model}: {e}") from None
    except RuntimeError as e:
        if tag is not None and not os.path.isfile(tag):
            raise AWTError(
                f"model {model}: could not download pretrained weights {tag!r} ({str(e).splitlines()[0]}); "
                f"without internet, download them elsewhere and pass --pretrained /path/to/checkpoint "
                f"or --model local-dir:/path/to/dir") from None
        raise AWTError(f"model {model}: {str(e).splitlines()[0]}") from None
    net.eval()
    tokenizer = open_clip.get_tokenizer(model)
    cfg = open_clip.get_model_preprocess_cfg(net)
    size = cfg.get("size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
    bias = getattr(net, "logit_bias", None)
    identity = f"{model}|{tag or 'random'}"
    return Backbone(
        model=net, tokenizer=tokenizer, preprocess=preprocess, name=model, pretrained=tag, device=dev,
        precision=precision, image_size=size, mean=mean, std=std,
        logit_scale=float(net.logit_scale.detach().float().exp().reshape(-1)[0]),
        logit_bias=None if bias is None else float(bias.detach().float().reshape(-1)[0]),
        fingerprint=_weights_fingerprint(net, identity),
    )
