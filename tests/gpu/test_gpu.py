"""The CUDA path: copies on a side stream, views cut without waiting for the device, scores on a
side stream. Skipped without a GPU; run them wherever one is available."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from numpy.testing import assert_allclose

from awt import AWTClassifier, ClassifierSpec
from awt.augment import cut_views
from awt.backbones.openclip import CausalTextTower
from awt.loading import to_device, view_loader

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

EXAMPLES = Path(__file__).resolve().parents[2] / "awt" / "data" / "examples"
CLASSES = ["astronaut", "cat", "cup of coffee", "rocket", "airplane"]


@pytest.fixture(scope="module")
def files() -> list[str]:
    return [str(EXAMPLES / f) for f in ("astronaut.jpg", "cat.jpg", "coffee.jpg", "rocket.jpg")] * 3


@pytest.fixture(scope="module")
def backbones(tiny_backbone):
    """The tiny CPU model and the same weights on the GPU, in float32, without TF32."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    model = copy.deepcopy(tiny_backbone.model).cuda()
    # the text tower too: the CPU backbone's holds the CPU model's weights
    gpu = dataclasses.replace(tiny_backbone, model=model, text_tower=CausalTextTower.of(model),
                              device=torch.device("cuda"))
    yield tiny_backbone, gpu
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _classifiers(backbones, tmp_path):
    descriptions = [[f"{name} detail {j}." for j in range(4)] for name in CLASSES]
    return [AWTClassifier(bb, ClassifierSpec(CLASSES, descriptions=descriptions, descriptions_per_class=3, views=6,
                                             seed=3, cache_dir=tmp_path / bb.device.type)) for bb in backbones]


def test_copies_and_views_never_wait_for_the_device(backbones, files):
    cpu, gpu = backbones
    hosts = list(view_loader(gpu, 0)(files, 6, 0, 4))  # pinned by the loader
    assert all(h.packed.canvas.is_pinned() and h.packed.rois.is_pinned() for h in hosts)

    def views():
        return [cut_views(b.packed, gpu.image_size, gpu.mean, gpu.std, gpu.device) for b in to_device(iter(hosts), gpu.device)]

    views()  # first use: the normalising constants are copied once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation now raises
    try:
        on_gpu = views()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for host, out in zip(hosts, on_gpu):
        ref = cut_views(host.packed, cpu.image_size, cpu.mean, cpu.std, torch.device("cpu"))
        assert_allclose(out.cpu().numpy(), ref.numpy(), atol=1e-4)


def test_gpu_features_and_scores_match_the_cpu(backbones, files, tmp_path):
    clf_cpu, clf_gpu = _classifiers(backbones, tmp_path)
    ref = torch.cat([b.features for b in clf_cpu.iter_image_features(files, batch_size=4, num_workers=0)])
    for workers in (0, 2):  # in-process, and from loader workers through pinned memory
        got = torch.cat([b.features for b in clf_gpu.iter_image_features(files, batch_size=4, num_workers=workers)])
        assert_allclose(got.cpu().numpy(), ref.numpy(), atol=1e-4)
    expected = clf_cpu.classify(files, top_k=5, batch_size=4, num_workers=0)
    for batch_size, workers in ((4, 0), (5, 2), (12, 2)):
        results = clf_gpu.classify(files, top_k=5, batch_size=batch_size, num_workers=workers)
        for r, e in zip(results, expected):  # every class's score, whatever the order of near-ties
            got = {p.index: p.score for p in r.predictions}
            assert_allclose([got[p.index] for p in e.predictions], [p.score for p in e.predictions], atol=1e-2)
