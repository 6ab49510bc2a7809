"""The backbone interface: what the engine needs from a dual encoder.

Every caller (classifier, benchmark, caches, throughput script) goes through :class:`Backbone`:
images and texts in, L2-normalised features out, plus the preprocessing facts that the batched view
cutting needs, the logit scale, and a fingerprint of the weights that keys the caches. The base
class owns what every library shares (chunking, autocast, normalisation); a library's subclass
(:mod:`~awt.backbones.openclip`, :mod:`~awt.backbones.hf`) says how its model encodes one chunk.
"""

from __future__ import annotations

import abc
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

_log = logging.getLogger("awt.backbones")

CPU_IMAGE_CHUNK = 32   # views encoded at once on the CPU: activations stay in cache
TEXT_BATCH = 256       # prompts tokenized and encoded at once


@dataclass(eq=False)
class Backbone(abc.ABC):
    """A loaded dual encoder and what AWT needs to know about it.

    Implementations fill the fields and say how their model encodes one chunk: :meth:`_image_features`,
    :meth:`_tokenize` and :meth:`_text_features`; the base class chunks, casts and normalises.
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

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, height, width) normalised pixels -> (n, dim) L2-normalised float32 features.

        On the CPU in chunks of 32: activations then stay in cache (ViT-B/32 on 2 cores: about 20%
        more views per second than 200 at once). A GPU takes them all at once.
        """
        pixels = pixels.to(self.device, self.input_dtype, non_blocking=True)
        step = CPU_IMAGE_CHUNK if self.device.type == "cpu" else max(1, len(pixels))
        with self.autocast():
            parts = [_rows(self._image_features, pixels[i : i + step]) for i in range(0, max(1, len(pixels)), step)]
        features = torch.cat(parts) if len(parts) > 1 else parts[0]
        return F.normalize(features.float(), dim=-1)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], **options: Any) -> torch.Tensor:
        """n texts -> (n, dim) L2-normalised float32 features on the backbone's device, ``TEXT_BATCH``
        at a time; ``options`` go to the tokenizer (:meth:`_tokenize`)."""
        out = []
        for start in range(0, len(texts), TEXT_BATCH):
            tokens = self._tokenize(list(texts[start:start + TEXT_BATCH]), **options)
            with self.autocast():
                out.append(F.normalize(self._text_features(tokens).float(), dim=-1))
        return torch.cat(out) if out else torch.empty(0, 0, device=self.device)

    @abc.abstractmethod
    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, height, width) pixels of the input dtype -> (n, dim) features, not normalised."""

    @abc.abstractmethod
    def _tokenize(self, texts: list[str], **options: Any) -> Any:
        """Texts -> what :meth:`_text_features` takes, on the device."""

    @abc.abstractmethod
    def _text_features(self, tokens: Any) -> torch.Tensor:
        """Tokens -> (n, dim) features, not normalised."""

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




def warn_random_weights(model: str, note: str = "") -> None:
    """The one warning for a model built without pretrained weights (said once it is built)."""
    _log.warning(f"{model}: no pretrained weights, using a randomly initialised model{note} "
                 "(predictions are meaningless; fine for tests and speed measurements)")


def _rows(encode: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """``encode(pixels)``, a lone row encoded beside a copy of itself: a one-row product runs
    through the BLAS's matrix-vector path, whose rounding differs from the matrix-matrix path
    (by 6e-8 on AVX-512 CPUs), and an image's features must not depend on its batch."""
    if pixels.shape[0] != 1 or pixels.device.type != "cpu":
        return encode(pixels)
    return encode(pixels.expand(2, *pixels.shape[1:]))[:1]
