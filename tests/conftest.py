"""Shared fixtures: a tiny randomly initialised open_clip model, and the real data in ../shared."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# A ViT/text-transformer pair small enough for CPU tests; the real tokenizer (49408 tokens).
TINY_CONFIG = {
    "model_cfg": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
}


def write_tiny_model(directory: Path) -> str:
    """Write a ``local-dir:`` model folder (config only: random weights); returns the model name."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(json.dumps(TINY_CONFIG))
    return f"local-dir:{directory}"


@pytest.fixture(scope="session")
def tiny_model_name(tmp_path_factory) -> str:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_backbone(tiny_model_name):
    from awt.backbone import create_backbone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_backbone(tiny_model_name, None, device="cpu")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def caltech_dir(shared_dir) -> Path:
    path = shared_dir / "data" / "caltech101"
    if not (path / "labels.csv").is_file():
        pytest.skip(f"{path}/labels.csv not found")
    return path
