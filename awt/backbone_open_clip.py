"""open_clip models as :class:`~awt.backbone.Backbone`: OpenAI CLIP, OpenCLIP, EVA-CLIP, SigLIP, MobileCLIP."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .backbone import NO_WEIGHTS, Backbone, weights_fingerprint
from .errors import AWTError

CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_CPU_ENCODE_CHUNK = 32
_TEXT_BATCH = 256


class CausalTextTower:
    """A text tower with a causal mask and end-of-text pooling (CLIP, OpenCLIP), run on tokens cut
    after the longest prompt of the batch.

    With a causal mask, no position attends to a later one, and the pooled end-of-text token sits
    within the prompt: the padding after it cannot change the feature, so it is not computed.
    """

    def __init__(self, tower: torch.nn.Module, pool_type: str, eos_id: int | None):
        self.tower, self.pool_type, self.eos_id = tower, pool_type, eos_id

    @classmethod
    def of(cls, model: torch.nn.Module) -> "CausalTextTower | None":
        """The model's text tower if its structure allows cutting the padding, else None (SigLIP's
        bidirectional tower, class-token pooling, padding masks, Hugging Face text towers)."""
        tower = getattr(model, "text", model)   # CustomTextCLIP keeps it apart; CLIP inline
        pool = getattr(tower, "pool_type", getattr(model, "text_pool_type", None))
        eos = getattr(tower, "eos_id", getattr(model, "text_eos_id", None))
        parts = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
        if not all(hasattr(tower, p) for p in parts) or getattr(tower, "attn_mask", None) is None:
            return None
        if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
            return None
        if pool not in ("argmax", "eos") or (pool == "eos" and eos is None):
            return None
        return cls(tower, pool, eos)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, context) tokens, padded with 0 -> (n, dim) unnormalised features."""
        from open_clip.transformer import text_global_pool

        t = self.tower
        length = int((tokens != 0).any(0).nonzero().max()) + 1 if tokens.numel() else 1
        tokens = tokens[:, :length]
        cast = t.transformer.get_cast_dtype()
        x = t.token_embedding(tokens).to(cast) + t.positional_embedding[:length].to(cast)
        x = t.transformer(x, attn_mask=t.attn_mask[:length, :length])
        x = text_global_pool(t.ln_final(x), tokens, self.pool_type, eos_token_id=self.eos_id)
        projection = t.text_projection
        if projection is None:
            return x
        return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


@dataclass(eq=False)
class OpenCLIPBackbone(Backbone):
    model: torch.nn.Module = None
    tokenizer: Callable = None
    text_tower: CausalTextTower | None = None   # None: every prompt runs at the full context length

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, height, width) normalised pixels -> (n, dim) L2-normalised features (float32).

        On the CPU in chunks of 32: activations then stay in cache (ViT-B/32 on 2 cores: about 20%
        more views per second than 200 at once). A GPU takes them all at once.
        """
        pixels = pixels.to(self.device, self.input_dtype, non_blocking=True)
        step = _CPU_ENCODE_CHUNK if self.device.type == "cpu" else max(1, len(pixels))
        with self.autocast():
            parts = [_encode_rows(self.model.encode_image, pixels[i : i + step])
                     for i in range(0, max(1, len(pixels)), step)]
        features = torch.cat(parts) if len(parts) > 1 else parts[0]
        return F.normalize(features.float(), dim=-1)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> (n, dim) L2-normalised features (float32). A causal text tower runs each batch
        only up to its longest prompt (:class:`CausalTextTower`)."""
        encode = self.text_tower or self.model.encode_text
        out = []
        for start in range(0, len(texts), _TEXT_BATCH):
            tokens = self.tokenizer(list(texts[start:start + _TEXT_BATCH])).to(self.device)
            with self.autocast():
                out.append(F.normalize(encode(tokens).float(), dim=-1))
        return torch.cat(out) if out else torch.empty(0, 0, device=self.device)


def _encode_rows(encode: Callable, pixels: torch.Tensor) -> torch.Tensor:
    """``encode(pixels)``, a lone row encoded beside a copy of itself: a one-row product runs
    through the BLAS's matrix-vector path, whose rounding differs from the matrix-matrix path
    (by 6e-8 on AVX-512 CPUs), and an image's features must not depend on its batch."""
    if pixels.shape[0] != 1 or pixels.device.type != "cpu":
        return encode(pixels)
    return encode(pixels.expand(2, *pixels.shape[1:]))[:1]


_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # what open_clip asks the hub for


def _weights_cached(cfg: dict, cache_dir: str | os.PathLike | None) -> bool:
    """Whether open_clip will find these pretrained weights on disk, without the network."""
    if cfg.get("file"):
        return os.path.isfile(cfg["file"])
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        for name in (filename,) if filename else _HUB_FILES:
            if isinstance(try_to_load_from_cache(repo, name, cache_dir=cache_dir), str):
                return True
        return False
    url = cfg.get("url", "")
    folder = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "clip"
    return bool(url) and (folder / os.path.basename(url)).is_file()


def _host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_weights_available(model: str, tag: str, cache_dir: str | os.PathLike | None) -> None:
    """Fail in seconds, with one line, when pretrained weights are neither on disk nor reachable
    (rather than after the hub client's minute of retries)."""
    import open_clip
    from urllib.parse import urlsplit

    cfg = open_clip.get_pretrained_cfg(model.replace("/", "-"), tag)
    if not cfg or _weights_cached(cfg, cache_dir):
        return
    hub = bool(cfg.get("hf_hub"))
    if hub and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        reachable, where = False, "HF_HUB_OFFLINE is set"
    else:
        host = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co") if hub else cfg["url"]).hostname
        reachable, where = _host_reachable(host), f"{host} cannot be reached"
    if not reachable:
        raise AWTError(
            f"model {model}: pretrained weights {tag!r} are not in the local cache and {where}; download them "
            "once with internet (any awt command does), or pass --pretrained /path/to/checkpoint "
            "(see 'Offline' in the README)")


def _local_dir_has_checkpoint(model_name: str) -> bool:
    path = Path(model_name[len("local-dir:"):])
    return path.is_dir() and any(p.suffix in CHECKPOINT_SUFFIXES for p in path.iterdir())


def load(model: str, pretrained: str | None, device: torch.device, precision: str,
         cache_dir: str | os.PathLike | None = None) -> OpenCLIPBackbone:
    """Load an open_clip model by any name open_clip accepts.

    ``model``: ``ViT-B-16``, ``hf-hub:org/repo`` or ``local-dir:/path`` (config + optional
    checkpoint); ``pretrained``: a tag from ``open_clip.list_pretrained()``, a checkpoint file, or
    ``none`` for random weights (seeded, so runs are reproducible); ignored with a schema.
    """
    import open_clip

    schema = next((s for s in ("local-dir:", "hf-hub:") if model.startswith(s)), None)
    tag = None if pretrained is None or str(pretrained).lower() in NO_WEIGHTS else str(pretrained)
    if schema is not None:
        tag = None
        random_weights = schema == "local-dir:" and not _local_dir_has_checkpoint(model)
    else:
        if model.replace("/", "-") not in open_clip.list_models():
            raise AWTError(f"unknown model {model!r}: not an open_clip model name (see `awt models`), "
                           "and not hf-hub:ORG/REPO or local-dir:PATH")
        if tag is not None and not os.path.isfile(tag):
            known = open_clip.list_pretrained_tags_by_model(model.replace("/", "-"))
            if tag not in known:
                looks_like_path = os.sep in tag or tag.endswith(CHECKPOINT_SUFFIXES)
                what = "checkpoint file not found" if looks_like_path else f"unknown pretrained tag (known: {', '.join(known) or 'none'})"
                raise AWTError(f"model {model}: {what}: {tag!r}")
        random_weights = tag is None

    if tag is not None and not os.path.isfile(tag):
        check_weights_available(model, tag, cache_dir)
    if random_weights:
        warnings.warn(f"{model}: no pretrained weights, using a randomly initialised model "
                      "(predictions are meaningless; fine for tests and speed measurements)", stacklevel=3)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a weightless model is the same model on every run
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=tag, precision="fp32" if precision.startswith("amp") else precision,
                device=device, cache_dir=None if cache_dir is None else str(cache_dir),
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
    cfg = open_clip.get_model_preprocess_cfg(net)
    size = cfg.get("size", 224)
    bias = getattr(net, "logit_bias", None)
    return OpenCLIPBackbone(
        name=model, library="open_clip", pretrained=tag, device=device, precision=precision, preprocess=preprocess,
        image_size=(size, size) if isinstance(size, int) else tuple(size),
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        logit_scale=float(net.logit_scale.detach().float().exp().reshape(-1)[0]),
        logit_bias=None if bias is None else float(bias.detach().float().reshape(-1)[0]),
        fingerprint=weights_fingerprint(net, f"{model}|{tag or 'random'}"),
        model=net, tokenizer=open_clip.get_tokenizer(model), text_tower=CausalTextTower.of(net),
    )
