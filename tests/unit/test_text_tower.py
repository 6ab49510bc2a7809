"""Prompts at the speed of their tokens: a causal text tower stops at each batch's longest prompt,
with the same embeddings; a bidirectional one keeps the full context."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from awt.backbones import create_backbone
from awt.backbones.openclip import CausalTextTower
from awt.prompts import encode_prompts
from conftest import TINY_CONFIG

TEXTS = ["a photo of a cat.", "a photo of a dog. dogs have four legs and a tail that wags when they are happy.",
         "a photo of a rocket. a tall white rocket stands on the launch pad, venting steam before lift-off, "
         "with its service tower beside it.", "x", "a photo of a cup of coffee. it is brown."]


def _backbone(tmp_path, **text_cfg):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["model_cfg"]["text_cfg"].update(text_cfg)
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_backbone(f"local-dir:{tmp_path}", None, device="cpu")


def _full_length(backbone, texts):
    with torch.inference_mode():
        return F.normalize(backbone.model.encode_text(backbone.tokenizer(texts)).float(), dim=-1)


def test_causal_tower_is_cut_after_the_longest_prompt(tiny_backbone):
    tower = tiny_backbone.text_tower
    assert isinstance(tower, CausalTextTower)
    tokens = tiny_backbone.tokenizer(TEXTS)
    seen = []
    hook = tower.tower.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    try:
        ours = tiny_backbone.encode_texts(TEXTS)
    finally:
        hook.remove()
    longest = int((tokens != 0).sum(1).max())
    assert seen == [longest] and longest < tokens.shape[1]
    torch.testing.assert_close(ours, _full_length(tiny_backbone, TEXTS), atol=1e-5, rtol=0)


def test_bidirectional_tower_keeps_the_full_context(tmp_path):
    backbone = _backbone(tmp_path, no_causal_mask=True, pool_type="last")
    assert backbone.text_tower is None
    torch.testing.assert_close(backbone.encode_texts(TEXTS), _full_length(backbone, TEXTS), atol=1e-6, rtol=0)


@pytest.mark.parametrize("pool_type", ["argmax", "first"])
def test_pooling_decides(tmp_path, pool_type):
    backbone = _backbone(tmp_path, pool_type=pool_type)
    assert (backbone.text_tower is not None) == (pool_type == "argmax")
    torch.testing.assert_close(backbone.encode_texts(TEXTS), _full_length(backbone, TEXTS), atol=1e-5, rtol=0)


def test_length_batches_keep_the_prompt_order(tiny_backbone, monkeypatch):
    import awt.prompts

    monkeypatch.setattr(awt.prompts, "TEXT_BATCH", 2)   # several batches, each of similar lengths
    prompts = [[t] for t in TEXTS] + [[TEXTS[0], TEXTS[2]]]
    features, mask = encode_prompts(tiny_backbone, prompts)
    expected = _full_length(tiny_backbone, TEXTS)
    torch.testing.assert_close(features[: len(TEXTS), 0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(features[-1], expected[[0, 2]], atol=1e-5, rtol=0)
    assert mask.tolist()[-1] == [True, True] and mask.tolist()[0] == [True, False]
