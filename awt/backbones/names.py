"""How models are named: the prefixes that route a name to its library, the checkpoint files a
name can point at, and how a name written in a config file becomes one that loads anywhere.

Pure Python (no torch): configs are checked with it before any model loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import AWTError

LOCAL_DIR = "local-dir:"   # open_clip: a folder with open_clip_config.json and, optionally, weights
HF_HUB = "hf-hub:"         # open_clip: a Hugging Face Hub repository in open_clip's format
HF = "hf:"                 # transformers: a Hub repository, or a folder written by save_pretrained
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
NO_WEIGHTS = {"", "none", "random"}   # pretrained values that ask for random weights


def random_weights_asked(pretrained: str | None) -> bool:
    """Whether ``pretrained`` asks for random weights (None, ``none``, ``random``)."""
    return pretrained is None or str(pretrained).lower() in NO_WEIGHTS


def looks_like_path(value: str) -> bool:
    """Whether a pretrained value names a file rather than a tag."""
    return "/" in value or os.sep in value or value.endswith(CHECKPOINT_SUFFIXES)


def _default_locate(written: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(written)))


def resolve_model(model: str, pretrained: str | None,
                  locate: Callable[[str], Path] = _default_locate) -> tuple[str, str | None]:
    """``(model, pretrained)`` as written (in a config file) made to load from anywhere: the folders
    of ``local-dir:`` and ``hf:`` names and checkpoint files turned into absolute paths by ``locate``
    (a path as written -> where it is) and checked to exist. AWTErrors name the setting at fault
    (``model`` or ``pretrained``); a name without a prefix needs ``pretrained`` (a tag, a checkpoint,
    or ``none``)."""
    if model.startswith(LOCAL_DIR):
        folder = locate(model[len(LOCAL_DIR):])
        if not folder.is_dir():
            raise AWTError(f"{folder} not found", setting="model", kind="missing")
        model = f"{LOCAL_DIR}{folder}"
    elif model.startswith(HF):   # transformers: pretrained is a revision, the default branch when absent
        local = model[len(HF):]
        if local.startswith((".", "/", "~")):
            folder = locate(local)
            if not folder.is_dir():
                raise AWTError(f"{folder} not found", setting="model", kind="missing")
            model = f"{HF}{folder}"
    elif pretrained is None and not model.startswith(HF_HUB):
        raise AWTError("required: a pretrained tag, a checkpoint file, or none", setting="pretrained")
    if pretrained is not None and looks_like_path(str(pretrained)) and not model.startswith(HF):
        checkpoint = locate(str(pretrained))
        if not checkpoint.is_file():
            raise AWTError(f"checkpoint {checkpoint} not found", setting="pretrained", kind="missing")
        pretrained = str(checkpoint)
    return model, pretrained
