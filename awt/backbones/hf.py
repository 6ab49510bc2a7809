"""Hugging Face ``transformers`` dual encoders as :class:`~awt.backbone.Backbone`: models named ``hf:ORG/REPO``
or ``hf:/path/to/dir`` (a folder written by ``save_pretrained``).

Families: CLIP, SigLIP (and the fixed-resolution SigLIP 2 checkpoints, which are SigLIP models with a
Gemma tokenizer), SigLIP 2 NaFlex, ALIGN, AltCLIP, Chinese-CLIP, BLIP (its contrastive heads) and
MetaCLIP 2. Each runs with its own conventions, read from its own config and processor:

- view 0 is the family's image processor's output (resize, crop, rescale, mean, std, interpolation);
  the random crops are cut by :func:`awt.augment.cut_views` at the processor's output size, with the
  processor's rescaling and normalisation (measured from the processor itself, so ALIGN's ``[-1, 1]``
  rescaling is right), resampled bilinearly as for every backbone.
- texts are tokenized by the family's tokenizer: padded to ``max_length`` for SigLIP (trained so) and
  lower-cased (its authors' preprocessing), padded to the longest prompt elsewhere (an attention mask
  or a causal mask makes the padding inert), truncated at the tokenizer's length.
- the logit scale is the family's: ``logit_scale.exp()`` (CLIP, AltCLIP, Chinese-CLIP, MetaCLIP 2,
  BLIP, SigLIP), ``1 / temperature`` (ALIGN); SigLIP's bias is kept apart (``logit_bias``).

``pretrained`` is the Hub revision (branch, tag or commit; ``None``, or the command line's default
``openai``, mean the repository's default branch), or ``none`` for random weights built from the
config. ``get_image_features`` / ``get_text_features`` return a tensor in transformers 4 and a model
output in 5; both are read.

transformers is imported here only, so only ``hf:`` models need it (``pip install 'awt[hf]'``).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .. import defaults
from .base import Backbone, warn_random_weights, weights_fingerprint
from .names import HF, NO_WEIGHTS
from ..errors import AWTError, first_line

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class Family:
    """How one model family is run."""

    name: str
    padding: str                 # "max_length" or "longest"
    lower_case: bool = False
    attention_mask: bool = True  # False: the text tower gets input_ids alone (SigLIP, as it was trained)
    scale: str = "logit_scale"   # "logit_scale" (exp of the parameter), "temperature" (1 / it)


#: config.model_type -> family. Another model type is refused with one line naming these.
FAMILIES: dict[str, Family] = {
    "clip": Family("CLIP", "longest"),
    "siglip": Family("SigLIP", "max_length", lower_case=True, attention_mask=False),   # SigLIP 2 fixed-res too
    "siglip2": Family("SigLIP 2 (NaFlex)", "max_length", lower_case=True, attention_mask=False),
    "align": Family("ALIGN", "longest", scale="temperature"),
    "altclip": Family("AltCLIP", "longest"),
    "chinese_clip": Family("Chinese-CLIP", "longest"),
    "blip": Family("BLIP", "longest"),
    "metaclip_2": Family("MetaCLIP 2", "longest"),
}


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise AWTError("hf: models need the transformers library: pip install 'awt[hf]'") from None
    return transformers


def _affine(image_processor: Any, call) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...]]:
    """The processor's output size and its pixel normalisation as ``(x / 255 - mean) / std``, measured
    on constant black and white images (whatever rescale factor, offset and normalisation it applies)."""
    from PIL import Image

    outs = [call(Image.new("RGB", (64, 48), (v, v, v))) for v in (0, 255)]
    size = tuple(int(s) for s in outs[0].shape[-2:])
    v0 = outs[0][:, outs[0].shape[1] // 2, outs[0].shape[2] // 2].double()
    v1 = outs[1][:, outs[1].shape[1] // 2, outs[1].shape[2] // 2].double()
    std = 1.0 / (v1 - v0)
    mean = -v0 * std
    return size, tuple(float(m) for m in mean), tuple(float(s) for s in std)


class ProcessorView0:
    """PIL image -> (3, H, W) float32 tensor: the family's own image processor (view 0). Picklable,
    so loader workers run it."""

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor

    def __call__(self, image) -> torch.Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0].float()


class NaFlexView0:
    """SigLIP 2 NaFlex: the whole image resized to a fixed square of ``grid`` x ``grid`` patches with
    the processor's resampling, then its rescaling and normalisation. AWT needs one input size for all
    views; NaFlex keeps each image's aspect ratio instead, so this equals the processor on square images."""

    def __init__(self, image_processor: Any, grid: int):
        self.image_processor, self.grid = image_processor, grid
        self.patch = int(image_processor.patch_size)

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image

        side = self.grid * self.patch
        image = image.resize((side, side), Image.Resampling(int(self.image_processor.resample)))
        out = self.image_processor(images=image, return_tensors="pt", max_num_patches=self.grid * self.grid)
        return unpatchify(out["pixel_values"][0].float(), self.grid, self.grid, self.patch)


def patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """(n, 3, H, W) -> (n, H/p * W/p, p * p * 3), the SigLIP 2 processor's patch layout (channels last)."""
    n, c, h, w = pixels.shape
    x = pixels.reshape(n, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(n, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, gh: int, gw: int, patch: int) -> torch.Tensor:
    """(gh * gw [+ padding], p * p * 3) -> (3, gh * p, gw * p)."""
    x = patches[: gh * gw].reshape(gh, gw, patch, patch, 3).permute(4, 0, 2, 1, 3)
    return x.reshape(3, gh * patch, gw * patch)


def _pooled(out: Any) -> torch.Tensor:
    """The projected embedding from ``get_*_features``: a tensor (transformers 4) or an output whose
    ``pooler_output`` holds it (transformers 5)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise AWTError(f"unexpected output of get_*_features: {type(out).__name__}")
    return pooled


@dataclass(eq=False)
class HFBackbone(Backbone):
    model: torch.nn.Module = None
    tokenizer: Any = None
    family: Family = None
    max_length: int = 77
    text_keys: tuple[str, ...] = ("input_ids", "attention_mask")
    retrieval: bool = False      # BLIP's BlipForImageTextRetrieval: its contrastive heads
    patch: int | None = None     # SigLIP 2 NaFlex: patch size (images go in as patches)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.retrieval:
            hidden = m.vision_model(pixel_values=pixels)[0]
            return m.vision_proj(hidden[:, 0, :])
        if self.patch is not None:
            n, _, h, w = pixels.shape
            shapes = torch.tensor([[h // self.patch, w // self.patch]], device=pixels.device).expand(n, 2)
            patches = patchify(pixels, self.patch)
            mask = torch.ones(patches.shape[:2], dtype=torch.long, device=pixels.device)
            return _pooled(m.get_image_features(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes))
        return _pooled(m.get_image_features(pixel_values=pixels))

    def _tokenize(self, texts: Sequence[str], padding: str | None = None) -> dict[str, torch.Tensor]:
        """The family's tokenization of ``texts``: what its text tower gets (``padding`` overrides the
        family's, e.g. ``max_length`` to measure what padding to the longest prompt saves)."""
        texts = [t.lower() for t in texts] if self.family.lower_case else list(texts)
        tokens = self.tokenizer(texts, padding=padding or self.family.padding, truncation=True,
                                max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in tokens.items() if k in self.text_keys}

    def _text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        m = self.model
        if self.retrieval:
            hidden = m.text_encoder(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"))[0]
            return m.text_proj(hidden[:, 0, :])
        return _pooled(m.get_text_features(**tokens))


def _has_weights(path: Path) -> bool:
    return any((path / f).is_file() for f in _WEIGHT_FILES)


# What save_pretrained writes for a tokenizer (besides tokenizer_config.json, which alone is not one)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "merges.txt", "spiece.model", "tokenizer.model",
                    "sentencepiece.bpe.model", "vocab.model")
# Two prompts that differ in one word: a working tokenizer gives them different tokens
_PROBES = ("a photo of a cat.", "a photo of a dog.")


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in _TOKENIZER_FILES) or any(path.glob("*.model"))


def _check_tokenizer(model: str, tokenizer: Any) -> None:
    """Refuse a tokenizer that gives every text the same tokens (built without its vocabulary):
    every class would get the same score."""
    try:
        ids = [list(tokenizer(t)["input_ids"]) for t in _PROBES]
    except Exception as e:
        raise AWTError(f"model {model}: its tokenizer fails on plain text ({first_line(e)})") from None
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    words = [[i for i in seq if i not in special] for seq in ids]
    if ids[0] == ids[1] or not all(words):
        raise AWTError(f"model {model}: its tokenizer is degenerate: it gives {_PROBES[0]!r} and {_PROBES[1]!r} "
                       f"{'the same tokens' if ids[0] == ids[1] else 'no word tokens'} (every class would get the "
                       "same score); save the tokenizer with the model (processor.save_pretrained)")



@contextlib.contextmanager
def _quiet(transformers) -> Iterator[None]:
    """transformers' own log lines and progress bars off while a model loads: they would repeat, as
    warnings or bars on stderr, what an error here says in one line (or nothing the user can act on)."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()   # one line per tensor group on stderr otherwise
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _remote_kwargs(model: str, source: str, revision: str | None, cache_dir: str | os.PathLike | None) -> dict:
    """``local_files_only`` when the Hub cannot be reached but the model is cached; an AWTError in
    seconds when it is neither (rather than the hub client's minute of retries)."""
    from . import hub

    why = hub.unreachable_reason()
    if why is None:
        return {}
    if hub.cached(source, "config.json", cache_dir, revision):
        return {"local_files_only": True}
    raise AWTError(f"model {model}: not in the local Hugging Face cache and {why}; download it once with internet, "
                   "or save it with save_pretrained elsewhere and load the folder (hf:/path/to/dir)")


def _load_processor(transformers, source: str, kwargs: dict) -> tuple[Any, Any]:
    """(tokenizer, image processor) of a model: its processor, else the two loaded apart."""
    try:
        processor = transformers.AutoProcessor.from_pretrained(source, **kwargs)
        tokenizer = getattr(processor, "tokenizer", None)
        image_processor = getattr(processor, "image_processor", None)
    except (OSError, ValueError, TypeError, KeyError):
        tokenizer = image_processor = None
    if tokenizer is None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    if image_processor is None:
        image_processor = transformers.AutoImageProcessor.from_pretrained(source, **kwargs)
    return tokenizer, image_processor


def _text_length(tokenizer: Any, config: Any) -> int:
    """The tokenizer's length, bounded by the text tower's positions."""
    text_cfg = getattr(config, "text_config", config)
    positions = getattr(text_cfg, "max_position_embeddings", None) or 512
    if getattr(config, "model_type", "") in ("altclip",) or getattr(text_cfg, "model_type", "") in ("roberta", "xlm-roberta"):
        positions -= 2   # RoBERTa-style positions start after the padding index
    length = getattr(tokenizer, "model_max_length", None)
    if not isinstance(length, int) or length <= 0 or length > 100_000:
        length = positions
    return int(min(length, positions))


def load(model: str, pretrained: str | None, device: torch.device, precision: str,
         cache_dir: str | os.PathLike | None = None) -> HFBackbone:
    """Load ``hf:ORG/REPO`` or ``hf:/path/to/dir`` through transformers.

    ``pretrained``: the Hub revision (branch, tag or commit); ``None`` or ``openai`` (the command
    line's default) for the default branch; ``none`` for random weights built from the config.
    """
    source = model[len(HF):]
    if not source:
        raise AWTError("hf: needs a model: hf:ORG/REPO or hf:/path/to/dir")
    local = Path(source).expanduser()
    is_local = local.is_dir()
    if is_local:
        source = str(local.resolve())
    elif source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1):
        raise AWTError(f"model {model}: folder {source} not found (hf: takes ORG/REPO or a folder from save_pretrained)")
    tag = None if pretrained is None else str(pretrained)
    random_weights = tag is not None and tag.lower() in NO_WEIGHTS
    if is_local and not (tag is None or random_weights or tag == defaults.PRETRAINED):
        raise AWTError(f"model {model}: a folder holds one version of a model; pretrained {tag!r} (a Hub revision) "
                       "does not apply to it")
    revision = None if tag is None or random_weights or tag == defaults.PRETRAINED or is_local else tag
    kwargs: dict[str, Any] = {"cache_dir": None if cache_dir is None else str(cache_dir)}
    if revision is not None:
        kwargs["revision"] = revision
    if not is_local:
        kwargs.update(_remote_kwargs(model, source, revision, cache_dir))
    transformers = _import_transformers()
    try:
        with _quiet(transformers):
            config = transformers.AutoConfig.from_pretrained(source, **kwargs)
    except Exception as e:
        raise AWTError(f"model {model}: {first_line(e)}") from None
    model_type = getattr(config, "model_type", "")
    family = FAMILIES.get(model_type)
    if family is None:
        arch = ", ".join(getattr(config, "architectures", None) or []) or f"model type {model_type!r}"
        raise AWTError(f"model {model}: {arch} is not a supported dual encoder; supported families: "
                       + ", ".join(f.name for f in FAMILIES.values()))
    if is_local and not random_weights and not _has_weights(local):
        raise AWTError(f"model {model}: no weights in {local} ({' or '.join(_WEIGHT_FILES[::2])}); a model without "
                       "weights is random, and random weights must be asked for (pretrained 'none')")
    if is_local and not _has_tokenizer(local):
        raise AWTError(f"model {model}: no tokenizer in {local} ({', '.join(_TOKENIZER_FILES[:4])}, ...); save the "
                       "processor beside the model (processor.save_pretrained)")
    retrieval = model_type == "blip" and "BlipForImageTextRetrieval" in (getattr(config, "architectures", None) or [])
    cls = transformers.BlipForImageTextRetrieval if retrieval else transformers.AutoModel
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    with _quiet(transformers):
        try:
            tokenizer, image_processor = _load_processor(transformers, source, kwargs)
        except Exception as e:
            raise AWTError(f"model {model}: cannot load its tokenizer or image processor: {first_line(e)}") from None
        _check_tokenizer(model, tokenizer)
        if random_weights:
            warn_random_weights(model)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*BlipModel.*deprecated.*")
                if random_weights:
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(0)
                        net = (cls.from_config(config) if cls is transformers.AutoModel else cls(config)).to(dtype)
                else:
                    net = cls.from_pretrained(source, dtype=dtype, **kwargs) if _accepts_dtype(transformers) \
                        else cls.from_pretrained(source, torch_dtype=dtype, **kwargs)
        except Exception as e:
            where = next((f for f in _WEIGHT_FILES if (local / f).is_file()), "weights") if is_local else "weights"
            raise AWTError(f"model {model}: cannot load its weights ({where}): {first_line(e)}") from None
    net.to(device).eval()

    patch = None
    if model_type == "siglip2":
        patch = int(image_processor.patch_size)
        grid = int(np.sqrt(int(image_processor.max_num_patches)))
        preprocess = NaFlexView0(image_processor, grid)
    else:
        preprocess = ProcessorView0(image_processor)
    size, mean, std = _affine(image_processor, preprocess)

    if family.scale == "temperature":
        scale = 1.0 / float(net.temperature.detach().float().reshape(-1)[0])
    elif retrieval:   # transformers' BLIP retrieval checkpoints carry no temperature: BLIP's initial 1 / 0.07
        scale = float(np.exp(config.logit_scale_init_value))
    else:
        scale = float(net.logit_scale.detach().float().exp().reshape(-1)[0])
    bias = getattr(net, "logit_bias", None)

    if retrieval:
        text_keys = ("input_ids", "attention_mask")
    else:
        accepted = set(inspect.signature(net.get_text_features).parameters)
        text_keys = tuple(k for k in ("input_ids", "attention_mask", "token_type_ids") if k in accepted)
    if not family.attention_mask:
        text_keys = ("input_ids",)
    commit = getattr(config, "_commit_hash", None)
    resolved = None if random_weights else (commit or revision or ("local" if is_local else "main"))
    identity = f"transformers|{source}|{resolved or 'random'}"
    return HFBackbone(
        name=model, library="transformers", pretrained=resolved, device=device, precision=precision,
        preprocess=preprocess, image_size=size, mean=mean, std=std, logit_scale=scale,
        logit_bias=None if bias is None else float(bias.detach().float().reshape(-1)[0]),
        fingerprint=weights_fingerprint(net, identity),
        model=net, tokenizer=tokenizer, family=family, max_length=_text_length(tokenizer, config),
        text_keys=text_keys, retrieval=retrieval, patch=patch,
    )


def _accepts_dtype(transformers) -> bool:
    """transformers 5 takes ``dtype=``; 4 before 4.56 only ``torch_dtype=``."""
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return (major, minor) >= (4, 56)
