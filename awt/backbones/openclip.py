"""open_clip models as :class:`~awt.backbone.Backbone`: OpenAI CLIP, OpenCLIP, EVA-CLIP, SigLIP, MobileCLIP."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import torch

from .base import Backbone, warn_random_weights, weights_fingerprint
from .names import CHECKPOINT_SUFFIXES, HF_HUB, LOCAL_DIR, NO_WEIGHTS
from ..errors import AWTError, first_line



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

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.device)

    def _text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """A causal text tower runs each batch only up to its longest prompt (:class:`CausalTextTower`)."""
        return (self.text_tower or self.model.encode_text)(tokens)


_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # what open_clip asks the hub for
# What open_clip reads from a local-dir: folder as its weights (open_clip.factory._find_checkpoint_in_dir)
_LOCAL_DIR_SUFFIXES = (".safetensors", ".bin", ".pth")


def _weights_cached(cfg: dict, cache_dir: str | os.PathLike | None) -> bool:
    """Whether open_clip will find these pretrained weights on disk, without the network."""
    from . import hub

    if cfg.get("file"):
        return os.path.isfile(cfg["file"])
    repo = cfg.get("hf_hub", "")
    if repo:
        repo, filename = os.path.split(repo)
        return any(hub.cached(repo, name, cache_dir) for name in ((filename,) if filename else _HUB_FILES))
    url = cfg.get("url", "")
    folder = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "clip"
    return bool(url) and (folder / os.path.basename(url)).is_file()


def check_weights_available(model: str, tag: str, cache_dir: str | os.PathLike | None) -> None:
    """Fail in seconds, with one line, when pretrained weights are neither on disk nor reachable
    (rather than after the hub client's minute of retries)."""
    import open_clip

    from . import hub

    cfg = open_clip.get_pretrained_cfg(model.replace("/", "-"), tag)
    if not cfg or _weights_cached(cfg, cache_dir):
        return
    if cfg.get("hf_hub"):
        where = hub.unreachable_reason()
    else:
        where = None if hub.host_reachable(cfg["url"]) else f"{urlsplit(cfg['url']).hostname} cannot be reached"
    if where is not None:
        raise AWTError(
            f"model {model}: pretrained weights {tag!r} are not in the local cache and {where}; download them "
            "once with internet (any awt command does)", setting="pretrained", kind="unavailable",
            hint="or pass {pretrained} /path/to/checkpoint (see 'Offline' in the README)")


def _check_hub_repo(model: str, cache_dir: str | os.PathLike | None) -> bool:
    """For ``hf-hub:ORG/REPO``: True when the Hub cannot be reached but the repository is cached (load
    it offline), False when the Hub can be reached; an AWTError in seconds when it is neither."""
    from . import hub

    why = hub.unreachable_reason()
    if why is None:
        return False
    repo = model[len(HF_HUB):]
    if hub.cached(repo, "open_clip_config.json", cache_dir):
        return True
    raise AWTError(f"model {model}: not in the local Hugging Face cache and {why}; download it once with internet, "
                   "or copy the repository's files to a folder and load it as local-dir:PATH")


def _local_dir_config(model: str) -> tuple[Path, str | None]:
    """The folder of ``local-dir:PATH`` and its checkpoint's name (None: random weights), after the
    checks that open_clip would fail with a traceback or a misleading warning."""
    import json

    folder = Path(model[len(LOCAL_DIR):]).expanduser()
    config = folder / "open_clip_config.json"
    if not folder.is_dir():
        raise AWTError(f"model {model}: folder {folder} not found")
    if not config.is_file():
        raise AWTError(f"model {model}: {config} not found (a local-dir: folder holds open_clip_config.json and, "
                       "optionally, the weights)")
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AWTError(f"model {model}: {config} is not readable JSON ({first_line(e)})") from None
    cfg = doc.get("model_cfg") if isinstance(doc, dict) else None
    if not isinstance(cfg, dict):
        raise AWTError(f"model {model}: {config} has no 'model_cfg' mapping (an open_clip model config: embed_dim, "
                       "vision_cfg, text_cfg)")
    from dataclasses import fields

    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    for part, cls in (("vision_cfg", CLIPVisionCfg), ("text_cfg", CLIPTextCfg)):
        known = [f.name for f in fields(cls)]
        sub = cfg.get(part)
        if not isinstance(sub, dict):
            raise AWTError(f"model {model}: {config}: model_cfg has no '{part}' mapping")
        unknown = sorted(set(sub) - set(known))
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], known, n=1)
            raise AWTError(f"model {model}: {config}: model_cfg.{part}: unknown key {unknown[0]!r}"
                           + (f" (did you mean {close[0]!r}?)" if close else f" (open_clip knows: {', '.join(known)})"))
    checkpoints = sorted(p.name for p in folder.iterdir() if p.suffix in _LOCAL_DIR_SUFFIXES and p.is_file())
    return folder, (checkpoints[0] if checkpoints else None)



def _checkpoint_problem(path: str) -> str | None:
    """What is wrong with a checkpoint file that can be told from its first bytes, or None: a
    PyTorch file is a zip archive (or a pickle, before torch 1.6), a safetensors file a header
    length and a JSON header, a big_vision one a NumPy file."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    if not head:
        return "the file is empty"
    if head.startswith((b"PK\x03\x04", b"\x80", b"\x93NUMPY")):
        return None
    if len(head) > 8 and head[8:9] == b"{":   # safetensors: u64 header size, then '{'
        return None
    return "not a PyTorch or safetensors checkpoint"


def _load_failure(model: str, checkpoint: str | None, error: Exception) -> AWTError:
    """One line for whatever open_clip raised while building ``model`` and reading its weights."""
    reason = first_line(error)
    if checkpoint is None:
        if isinstance(error, (KeyError, TypeError)):   # a config key missing, or one open_clip does not know
            reason = f"its config does not describe an open_clip model ({type(error).__name__}: {reason})"
        return AWTError(f"model {model}: {reason}")
    if "safetensor" in type(error).__name__.lower() or "zip archive" in reason or "invalid load key" in reason:
        reason = f"the file is damaged or truncated ({reason})"
    elif isinstance(error, (RuntimeError, AssertionError, KeyError, ValueError)):
        reason = f"its weights do not fit this model (another architecture?): {reason}"
    return AWTError(f"model {model}: cannot load checkpoint {checkpoint}: {reason}")


def load(model: str, pretrained: str | None, device: torch.device, precision: str,
         cache_dir: str | os.PathLike | None = None) -> OpenCLIPBackbone:
    """Load an open_clip model by any name open_clip accepts.

    ``model``: ``ViT-B-16``, ``hf-hub:org/repo`` or ``local-dir:/path`` (config + optional
    checkpoint); ``pretrained``: a tag from ``open_clip.list_pretrained()``, a checkpoint file, or
    ``none`` for random weights (seeded, so runs are reproducible). A model with a schema takes its
    weights from its folder or repository: another ``pretrained`` than the default or ``none`` is refused.
    """
    import open_clip

    from .. import defaults
    from . import hub

    schema = next((s for s in (LOCAL_DIR, HF_HUB) if model.startswith(s)), None)
    tag = None if pretrained is None or str(pretrained).lower() in NO_WEIGHTS else str(pretrained)
    checkpoint = None
    offline = False
    if schema is not None:
        if tag is not None and tag != defaults.PRETRAINED:
            raise AWTError(f"model {model}: a {schema} model takes its weights from its "
                           f"{'folder' if schema == LOCAL_DIR else 'repository'}; pretrained {tag!r} would be "
                           "ignored (put the checkpoint in the folder as open_clip_model.safetensors, or load it "
                           "with the model's name)")
        tag = None
        if schema == LOCAL_DIR:
            folder, found = _local_dir_config(model)
            checkpoint = None if found is None else str(folder / found)
            random_weights = found is None
            ignored = [p.name for p in folder.glob("*.pt")] if random_weights else []
        else:
            offline = _check_hub_repo(model, cache_dir)
            random_weights, ignored = False, []
    else:
        if model.replace("/", "-") not in open_clip.list_models():
            raise AWTError(f"unknown model {model!r}: not an open_clip model name (see `awt models`), "
                           "and not hf-hub:ORG/REPO or local-dir:PATH")
        if tag is not None and os.path.isdir(tag):
            raise AWTError(f"model {model}: pretrained {tag!r} is a directory, not a checkpoint file (a folder with "
                           "open_clip_config.json and weights loads as local-dir:PATH)")
        if tag is not None and not os.path.isfile(tag):
            known = open_clip.list_pretrained_tags_by_model(model.replace("/", "-"))
            if tag not in known:
                looks_like_path = os.sep in tag or tag.endswith(CHECKPOINT_SUFFIXES)
                what = "checkpoint file not found" if looks_like_path else f"unknown pretrained tag (known: {', '.join(known) or 'none'})"
                raise AWTError(f"model {model}: {what}: {tag!r}")
        if tag is not None and os.path.isfile(tag):
            checkpoint = tag
        random_weights, ignored = tag is None, []

    if checkpoint is not None:
        problem = _checkpoint_problem(checkpoint)
        if problem:
            raise AWTError(f"model {model}: cannot load checkpoint {checkpoint}: {problem}")
    if tag is not None and not os.path.isfile(tag):
        check_weights_available(model, tag, cache_dir)
    try:
        with torch.random.fork_rng(devices=[]), (hub.offline() if offline else contextlib.nullcontext()):
            torch.manual_seed(0)  # a weightless model is the same model on every run
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=tag, precision="fp32" if precision.startswith("amp") else precision,
                device=device, cache_dir=None if cache_dir is None else str(cache_dir),
            )
    except Exception as e:
        if tag is not None and checkpoint is None and isinstance(e, RuntimeError):
            raise AWTError(
                f"model {model}: could not download pretrained weights {tag!r} ({first_line(e)})", kind="unavailable",
                setting="pretrained", hint="without internet, download them elsewhere and pass {pretrained} "
                "/path/to/checkpoint or {model} local-dir:/path/to/dir") from None
        raise _load_failure(model, checkpoint, e) from None
    if random_weights:   # said once the model is built: no warning before an error
        note = f" ({', '.join(ignored)}: open_clip reads .safetensors, .bin or .pth files here)" if ignored else ""
        warn_random_weights(model, note)
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
