"""What the GPU check's steps share: their result file, and the plan's device and models."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from gpu_data import write_tiny_model


class Result(dict):
    """A step's result, written atomically to its file on every ``save`` (a crash or a time-out
    then keeps what was done)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def save(self, **items) -> None:
        from awt.files import atomic_write_text

        self.update(items)
        atomic_write_text(self.path, json.dumps(self, indent=1, default=str))


def plan_device(plan: dict):
    import torch

    return torch.device(plan["device"])


def model_name(plan: dict, name: str) -> str:
    """An open_clip model name, or a tiny config written to the scratch folder (``tiny-*``)."""
    if name.startswith("tiny-"):
        return write_tiny_model(Path(plan["scratch"]) / "models" / name, name)
    return name


def random_backbone(plan: dict, name: str, device: str, precision: str):
    """``name`` with random weights (seeded: the same on every device) through ``awt.create_backbone``."""
    from awt.backbones import create_backbone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "randomly initialised": on purpose
        return create_backbone(model_name(plan, name), "none", device, precision)
