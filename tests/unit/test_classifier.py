"""The classifier end to end on real image files with a tiny random open_clip model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from PIL import Image

from awt import AWTClassifier, AWTError, ClassifierSpec
from awt.augment import crop_views, image_seed, pack_views, sample_views
from awt.images import load_image
from awt.loading import view_loader
from awt.oracles.awt import paper_awt_scores

EXAMPLES = ["astronaut.jpg", "cat.jpg", "coffee.jpg", "rocket.jpg"]
CLASSES = ["astronaut", "cat", "cup of coffee", "rocket", "airplane"]


@pytest.fixture(scope="module")
def example_files():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "awt" / "data" / "examples"
    return [str(root / f) for f in EXAMPLES]


@pytest.fixture(scope="module")
def clf(tiny_backbone, tmp_path_factory):
    descriptions = [[f"{name} detail {j}." for j in range(4)] for name in CLASSES]
    return AWTClassifier(tiny_backbone, ClassifierSpec(CLASSES, descriptions=descriptions, descriptions_per_class=3,
                                                       views=6, seed=7, cache_dir=tmp_path_factory.mktemp("cache")))


def _scores(results):
    return {r.image: [(p.index, round(p.score, 4)) for p in r.predictions] for r in results}


def test_prompts_follow_the_paper(clf):
    assert clf.prompts[1] == ["a photo of a cat.", "a photo of a cat. cat detail 0.", "a photo of a cat. cat detail 1.",
                              "a photo of a cat. cat detail 2."]
    assert clf.text_features.shape == (5, 4, 64)
    assert_allclose(clf.text_features.norm(dim=-1).numpy(), 1.0, atol=1e-5)


def _all_features(clf, files) -> torch.Tensor:
    """Every file's encoded views, (files, views, dim): the batches (1, 2, ... images) put together."""
    return torch.cat([b.features for b in clf.iter_image_features(files, batch_size=4, num_workers=0)])


def test_classify_matches_the_literal_method_on_the_same_features(clf, example_files):
    features = _all_features(clf, example_files)
    assert features.shape == (4, 7, 64)
    logits = clf.logit_scale * torch.einsum("bvd,cpd->bvpc", features, clf.text_features)
    ref = paper_awt_scores(logits, clf.logit_scale)
    assert_allclose(clf.scores(features).numpy(), ref.numpy(), atol=1e-3)
    results = clf.classify(example_files, top_k=5, batch_size=4, num_workers=0)
    for r, row in zip(results, ref):
        assert [p.index for p in r.predictions] == row.argsort(descending=True).tolist()
        assert [p.score for p in r.predictions] == sorted((p.score for p in r.predictions), reverse=True)


def test_results_do_not_depend_on_batch_size_order_or_workers(clf, example_files):
    one = _scores(clf.classify(example_files, batch_size=1, num_workers=0))
    four = _scores(clf.classify(example_files, batch_size=4, num_workers=0))
    reversed_ = _scores(clf.classify(example_files[::-1], batch_size=3, num_workers=2))
    for key in one:
        assert [i for i, _ in one[key]] == [i for i, _ in four[key]] == [i for i, _ in reversed_[key]]
        assert_allclose([s for _, s in one[key]], [s for _, s in four[key]], atol=2e-3)
        assert_allclose([s for _, s in one[key]], [s for _, s in reversed_[key]], atol=2e-3)


def test_loader_workers_are_kept_and_survive_abandoned_calls(clf, example_files, tmp_path):
    ref = _scores(clf.classify(example_files, batch_size=2, num_workers=0))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    inputs = example_files + [str(broken)]

    first = clf.classify(inputs, batch_size=2, num_workers=2)
    loader = view_loader(clf.backbone, 2)
    pids = loader.worker_pids()
    assert first[-1].error is not None and "not an image" in first[-1].error
    # an unfinished call (an open generator) and a call beside it, then a call after it closed
    stream = clf.iter_image_features(example_files, batch_size=2, num_workers=2)
    assert len(next(stream).indices) == 1  # batches ramp up: 1 image first
    beside = clf.classify(example_files[::-1], batch_size=2, num_workers=2)
    stream.close()
    after = clf.classify(inputs, batch_size=3, num_workers=2)
    assert loader.worker_pids() == pids and len(pids) == 2  # the same processes throughout
    for results in (first[:-1], beside, after[:-1]):
        got = _scores(results)
        for key in ref:
            assert [i for i, _ in got[key]] == [i for i, _ in ref[key]]
            assert_allclose([x for _, x in got[key]], [x for _, x in ref[key]], atol=2e-3)


def test_batch_sizes_ramp_up_then_stay():
    from awt.loading import batch_sizes

    assert batch_sizes(20, 8, ramp=True) == [1, 2, 4, 8, 5]
    assert batch_sizes(2, 8, ramp=True) == [1, 1]
    assert batch_sizes(10, 4, ramp=False) == [4, 4, 2]
    assert batch_sizes(0, 4, ramp=True) == []


def test_views_are_reproducible_and_seeded_by_content(clf, example_files):
    image = np.asarray(load_image(example_files[0]))
    b1, f1 = sample_views(*image.shape[:2], 10, image_seed(image, 0))
    b2, f2 = sample_views(*image.shape[:2], 10, image_seed(image.copy(), 0))
    b3, _ = sample_views(*image.shape[:2], 10, image_seed(image, 1))
    assert np.array_equal(b1, b2) and np.array_equal(f1, f2)
    assert not np.array_equal(b1, b3)
    h, w = image.shape[:2]
    widths, heights = b1[:, 2] - b1[:, 0], b1[:, 3] - b1[:, 1]
    assert (b1[:, :2] >= 0).all() and (b1[:, 2] <= w).all() and (b1[:, 3] <= h).all()
    area = widths * heights / (h * w)
    assert (area >= 0.08 - 0.01).all() and (area <= 1.0).all()
    assert ((widths / heights >= 0.74) & (widths / heights <= 1.36)).all()
    # A PIL image and its file give the same views, hence the same scores.
    from_pil = clf.classify([Image.open(example_files[0])], num_workers=0)[0].predictions
    from_file = clf.classify([example_files[0]], num_workers=0)[0].predictions
    assert [(p.index, round(p.score, 4)) for p in from_pil] == [(p.index, round(p.score, 4)) for p in from_file]


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
    from awt.augment import resize_weights

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


def test_cpu_encoding_in_chunks_equals_one_pass(tiny_backbone):
    h, w = tiny_backbone.image_size
    pixels = torch.randn(70, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        whole = torch.nn.functional.normalize(tiny_backbone.model.encode_image(pixels).float(), dim=-1)
    assert_allclose(tiny_backbone.encode_images(pixels).numpy(), whole.numpy(), atol=1e-5)


def test_baselines_and_ablations(clf, example_files):
    f, t, s = _all_features(clf, example_files), clf.text_features, clf.logit_scale
    assert_allclose(clf.scores(f, "clip").numpy(), (s * f[:, 0] @ t[:, 0].T).numpy(), atol=1e-4)
    ens = torch.nn.functional.normalize(t.mean(1), dim=-1)
    assert_allclose(clf.scores(f, "ensemble").numpy(), (s * f[:, 0] @ ens.T).numpy(), atol=1e-4)
    logits = s * torch.einsum("bvd,cpd->bvpc", f, t)
    assert_allclose(clf.scores(f, "awt-image").numpy(), paper_awt_scores(logits[:, :, :1], s).numpy(), atol=1e-3)
    assert_allclose(clf.scores(f, "awt-text").numpy(), paper_awt_scores(logits[:, :1], s).numpy(), atol=1e-3)
    assert not torch.allclose(clf.scores(f, "awt-uniform"), clf.scores(f, "awt"))
    with pytest.raises(AWTError, match="unknown method"):
        clf.scores(f, "nope")
    # The baselines need no random views: classify computes view 0 only, with the same answer.
    clip = clf.classify(example_files, method="clip", num_workers=0)
    expected = clf.scores(f, "clip").argmax(1).tolist()
    assert [r.predictions[0].index for r in clip] == expected


def test_text_embeddings_are_cached_on_disk(tiny_backbone, tmp_path):
    calls = []
    original = tiny_backbone.encode_texts

    def counting(texts):
        calls.append(len(texts))
        return original(texts)

    tiny_backbone.encode_texts = counting
    try:
        first = AWTClassifier(tiny_backbone, ClassifierSpec(CLASSES, cache_dir=tmp_path, views=0))
        second = AWTClassifier(tiny_backbone, ClassifierSpec(CLASSES, cache_dir=tmp_path, views=0))
        other = AWTClassifier(tiny_backbone, ClassifierSpec(CLASSES, template="a picture of a {}", cache_dir=tmp_path,
                                                            views=0))
    finally:
        del tiny_backbone.encode_texts
    assert calls == [5, 5]  # the second classifier read the cache; another template is another entry
    assert torch.equal(first.text_features, second.text_features)
    assert not torch.equal(first.text_features, other.text_features)
    assert len(list((tmp_path / "text").glob("*.pt"))) == 2
    assert not list((tmp_path / "text").glob("*.tmp"))


def test_duplicate_class_names_stay_distinct(tiny_backbone, example_files, tmp_path):
    names = ["missile", "cat", "missile"]
    descriptions = [["a rocket-like weapon."], ["a small feline."], ["a projectile in flight."]]
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(names, descriptions=descriptions, descriptions_per_class=1, views=2,
                                                      cache_dir=tmp_path))
    assert clf.prompts[0] != clf.prompts[2]
    preds = clf.classify(example_files[:1], top_k=3, num_workers=0)[0].predictions
    assert sorted(p.index for p in preds) == [0, 1, 2]
    assert [p.name for p in preds].count("missile") == 2


def test_too_few_descriptions_is_an_error_naming_the_class(tiny_backbone, tmp_path):
    descriptions = [["one.", "two."], ["one."]]
    with pytest.raises(AWTError, match="'dog' \\(1\\)"):
        ClassifierSpec(["cat", "dog"], descriptions=descriptions, descriptions_per_class=2, cache_dir=None)
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(["cat", "dog"], descriptions=descriptions, descriptions_per_class=2,
                                                      allow_fewer_descriptions=True, cache_dir=None, views=1))
    assert clf.classes.mask.tolist() == [[True, True, True], [True, True, False]]
    assert float(clf.text_features[1, 2].abs().sum()) == 0.0


def test_unreadable_inputs_are_reported_and_the_rest_classified(clf, example_files, tmp_path):
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("hello")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(example_files[0], "rb").read()[:5000])
    inputs = [example_files[0], str(tmp_path / "missing.png"), str(bad), str(truncated), example_files[1]]
    results = clf.classify(inputs, batch_size=2, num_workers=0)
    assert [r.error is None for r in results] == [True, False, False, False, True]
    assert "no such file" in results[1].error
    assert "not an image" in results[2].error
    assert "truncated" in results[3].error
    assert results[4].predictions is not None
