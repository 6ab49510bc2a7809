"""The backbone's shared encode loop (awt/backbones/base.py); each family against its own
processor and model: tests/integration/test_hf_backbones.py."""

from __future__ import annotations

import torch
from numpy.testing import assert_allclose


def test_cpu_encoding_in_chunks_equals_one_pass(tiny_backbone):
    h, w = tiny_backbone.image_size
    pixels = torch.randn(70, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        whole = torch.nn.functional.normalize(tiny_backbone.model.encode_image(pixels).float(), dim=-1)
    assert_allclose(tiny_backbone.encode_images(pixels).numpy(), whole.numpy(), atol=1e-5)
