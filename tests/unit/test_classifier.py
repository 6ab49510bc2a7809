"""The classifier end to end on real image files with a tiny random open_clip model."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from PIL import Image

from awt import AWTClassifier, AWTError, ClassifierSpec
from awt.augment import image_seed, sample_views
from awt.images import load_image
from awt.loading import view_loader
from awt.oracles.awt import paper_awt_scores

CLASSES = ["astronaut", "cat", "cup of coffee", "rocket", "airplane"]


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
    # Ctrl-C reaches the whole process group: the workers leave it to the main process
    for pid in pids:
        os.kill(pid, signal.SIGINT)
    time.sleep(0.5)
    again = clf.classify(example_files, batch_size=2, num_workers=2)
    assert loader.worker_pids() == pids
    assert _scores(again) == _scores(after[:-1])
    for results in (first[:-1], beside, after[:-1]):
        got = _scores(results)
        for key in ref:
            assert [i for i, _ in got[key]] == [i for i, _ in ref[key]]
            assert_allclose([x for _, x in got[key]], [x for _, x in ref[key]], atol=2e-3)


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
