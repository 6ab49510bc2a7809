"""The views' recipe and their cutting (awt/augment.py): PIL's crops matched, bit-identical whatever
the batch, banded resize weights."""

from __future__ import annotations

import numpy as np
import torch
from numpy.testing import assert_allclose
from PIL import Image

from awt.augment import crop_views, pack_views, resize_weights
from awt.images import load_image


def test_views_equal_pil_random_resized_crops(example_files):
    # torchvision's RandomResizedCrop on a PIL image is crop + resize(BILINEAR), then the flip:
    # the batched views match it to within PIL's 8-bit rounding, for up- and downscaling,
    # and an image packed beside a larger one gives the same views as alone.
    big = load_image(example_files[1])
    small = load_image(example_files[2]).resize((90, 70))
    boxes = [torch.tensor([[0, 0, 100, 80], [50, 20, 250, 220.0], [3, 7, 300, 240]]),
             torch.tensor([[5, 5, 60, 50], [0, 0, 90, 70.0], [30, 10, 41, 19]])]
    flips = [torch.tensor([False, True, False]), torch.tensor([True, False, True])]
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    tensors = [torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) for im in (big, small)]
    out = crop_views(tensors, boxes, flips, (32, 32), mean, std, torch.device("cpu"))
    assert out.shape == (2, 3, 3, 32, 32)
    assert pack_views(tensors, boxes, flips).longest == (297.0, 233.0)  # the weights' bounds, known on the host
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    for i, im in enumerate([big, small]):
        alone = crop_views(tensors[i : i + 1], boxes[i : i + 1], flips[i : i + 1], (32, 32), mean, std, torch.device("cpu"))
        assert_allclose(out[i].numpy(), alone[0].numpy(), atol=1e-5)
        for j in range(3):
            ref = im.crop(tuple(int(x) for x in boxes[i][j])).resize((32, 32), Image.BILINEAR)
            ref = ref.transpose(Image.FLIP_LEFT_RIGHT) if flips[i][j] else ref
            ref = (torch.from_numpy(np.asarray(ref).copy()).permute(2, 0, 1) / 255 - m) / s
            levels = ((out[i, j] - ref) * s * 255).abs()
            assert float(levels.max()) <= 1.01 and float(levels.mean()) < 0.5


def test_views_do_not_depend_on_the_batch_bit_for_bit():
    # Each image is resampled against its own padded size, so the company of larger images (or of
    # the same size, packed apart) changes no bit of its views: a BLAS product's rounding depends on
    # its inner dimension, and features must not depend on the batch or the rank.
    g = torch.Generator().manual_seed(0)
    sizes = [(70, 90), (300, 200), (65, 100), (130, 129)]   # padded: 128x128, 320x256, 128x128, 192x192
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]
    boxes = [torch.tensor([[0, 0, w, h], [w // 4, h // 5, w // 2 + 3, h - 2]], dtype=torch.float32) for h, w in sizes]
    flips = [torch.tensor([False, True])] * len(images)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    packed = pack_views(images, boxes, flips)
    assert packed.groups == ((0, 2, 128, 128), (2, 3, 192, 192), (3, 4, 320, 256)) and packed.order_host == (0, 2, 3, 1)
    together = crop_views(images, boxes, flips, (24, 24), mean, std, torch.device("cpu"))
    for i in range(len(images)):
        alone = crop_views(images[i:i + 1], boxes[i:i + 1], flips[i:i + 1], (24, 24), mean, std, torch.device("cpu"))
        assert torch.equal(together[i], alone[0])


def test_resize_weights_are_banded_normalised_and_flip():
    start, length = torch.tensor([0.0, 10.0, 3.0]), torch.tensor([40.0, 7.0, 60.0])
    w = resize_weights(start, length, 16, 64, flip=torch.tensor([False, False, True]))
    assert w.shape == (3, 16, 64)
    assert_allclose(w.sum(-1).numpy(), 1.0, atol=1e-6)
    inside = (torch.arange(64)[None] >= start[:, None]) & (torch.arange(64)[None] < (start + length)[:, None])
    assert float(w.masked_select(~inside[:, None, :].expand_as(w)).abs().max()) == 0.0  # nothing outside the crop
    assert int((w[0] > 0).sum(-1).max()) <= 2 * 3 + 2                                    # 40 -> 16: support 2.5
    unflipped = resize_weights(start[2:], length[2:], 16, 64)
    assert_allclose(w[2].numpy(), unflipped[0].flip(0).numpy(), atol=1e-6)
    # the float16 weights of the GPU path round the same weights
    half = resize_weights(start, length, 16, 64, flip=torch.tensor([False, False, True]), dtype=torch.float16)
    assert half.dtype == torch.float16 and float((half.float() - w).abs().max()) < 1e-3
