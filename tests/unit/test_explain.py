"""`clf.explain(image)`: the plan that scored the image, its marginals and splits, the loader's own views.

Real photos through the real pipeline on the tiny model; 6 views x 4 prompts (views != prompts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from awt import AWTClassifier, ClassifierSpec
from awt.augment import cut_views, pack_views
from awt.errors import AWTError
from awt.loading import ViewSource, view_source_side

EXAMPLES = Path(__file__).resolve().parents[2] / "awt" / "data" / "examples"
NAMES = ["cat", "rocket", "cup of coffee", "astronaut", "dog", "airplane", "canoe"]
DESCRIPTIONS = [[f"A photo showing the {n}, detail {j}." for j in range(4)] for n in NAMES]


def _classifier(backbone, tmp_path, method="awt", views=5) -> AWTClassifier:
    return AWTClassifier(backbone, ClassifierSpec(NAMES, descriptions=DESCRIPTIONS, descriptions_per_class=3,
                                                  views=views, method=method, cache_dir=tmp_path))


@pytest.fixture(scope="module")
def clf(tiny_backbone, tmp_path_factory):
    return _classifier(tiny_backbone, tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("name", ["rocket.jpg", "cat.jpg"])
def test_scores_equal_classify_and_the_plan_has_the_weights_as_marginals(clf, name):
    image = str(EXAMPLES / name)
    ex = clf.explain(image, top_k=3)
    [result] = clf.classify([image], top_k=len(NAMES), num_workers=0)
    by_class = {p.index: p.score for p in result.predictions}
    assert ex.scores.shape == (len(NAMES),)
    assert torch.allclose(ex.scores, torch.tensor([by_class[i] for i in range(len(NAMES))]), atol=1e-5, rtol=0)
    assert [c.index for c in ex.classes] == [p.index for p in result.predictions[:3]]
    assert [c.rank for c in ex.classes] == [1, 2, 3]
    a = torch.tensor([v.weight for v in ex.views])
    assert len(ex.views) == 6 and abs(float(a.sum()) - 1) < 1e-5
    for c in ex.classes:
        assert c.plan.shape == c.cosine.shape == (6, 4) and len(c.prompts) == 4
        assert c.prompts[0] == f"a photo of a {c.name}." and c.prompts[1] == f"a photo of a {c.name}. {DESCRIPTIONS[c.index][0]}"
        assert abs(c.score - by_class[c.index]) < 1e-5
        assert torch.allclose(c.plan.sum(0), c.prompt_weights, atol=1e-5)   # columns: the prompt weights
        assert torch.allclose(c.plan.sum(1), a, atol=1e-5)                  # rows: the view weights
        assert abs(float(c.prompt_weights.sum()) - 1) < 1e-5
        # the splits are sums of s * T * cos, and each adds up to the score
        weighted = ex.logit_scale * c.plan * c.cosine
        assert torch.allclose(c.view_scores, weighted.sum(1), atol=1e-5)
        assert torch.allclose(c.prompt_scores, weighted.sum(0), atol=1e-5)
        assert abs(float(c.view_scores.sum()) - c.score) < 1e-4 and abs(float(c.prompt_scores.sum()) - c.score) < 1e-4
        masses = [p.mass for p in c.pairs]
        assert masses == sorted(masses, reverse=True) and masses[0] == pytest.approx(float(c.plan.max()))
        assert all(p.cosine == pytest.approx(float(c.cosine[p.view, p.prompt])) for p in c.pairs)
    # CLIP's prediction is the clip method's, and the decision's margin splits exactly
    [plain] = clf.classify([image], top_k=1, method="clip", num_workers=0)
    assert ex.clip_index == plain.predictions[0].index
    assert ex.changed == (ex.clip_index != ex.classes[0].index)
    d = ex.decision
    rival = ex.explained(d.rival)
    assert d.rival == (ex.clip_index if ex.changed else ex.classes[1].index)
    assert d.margin == pytest.approx(ex.classes[0].score - rival.score, abs=1e-5)
    for shares in (d.views, d.winner_prompts, d.rival_prompts):
        assert sum(x for _, x in shares) == pytest.approx(d.margin, abs=1e-4)
    doc = json.loads(json.dumps(ex.to_json()))
    assert doc["awt"]["index"] == ex.classes[0].index and len(doc["classes"]) == 3
    assert len(doc["classes"][0]["plan"]) == 6 and len(doc["classes"][0]["plan"][0]) == 4


def test_views_are_the_loaders_and_cut_from_them_give_the_encoded_features(clf, tiny_backbone):
    image = str(EXAMPLES / "coffee.jpg")
    ex = clf.explain(image, top_k=1)
    sample = ViewSource(tiny_backbone.preprocess, view_source_side(tiny_backbone), clf.spec.decoding)[
        (0, image, 5, clf.spec.seed)]
    assert torch.equal(torch.tensor([v.box for v in ex.views[1:]]), sample.boxes)
    assert [v.flip for v in ex.views[1:]] == sample.flips.tolist()
    assert ex.source.size == (sample.pixels.shape[2], sample.pixels.shape[1])
    # the crops cut from the explanation's source and boxes are the views the classifier encoded
    source = torch.from_numpy(__import__("numpy").asarray(ex.source).copy()).permute(2, 0, 1).contiguous()
    packed = pack_views([source], [torch.tensor([v.box for v in ex.views[1:]])],
                        [torch.tensor([v.flip for v in ex.views[1:]])])
    crops = cut_views(packed, tiny_backbone.image_size, tiny_backbone.mean, tiny_backbone.std, tiny_backbone.device)
    encoded = tiny_backbone.encode_images(crops.flatten(0, 1))
    features = next(clf.iter_image_features([image], num_workers=0)).features[0]
    assert torch.allclose(encoded, features[1:], atol=1e-5)
    # view 0, the centre square of the shorter side
    w, h = ex.source.size
    x0, y0, x1, y1 = ex.views[0].box
    assert (x1 - x0) == pytest.approx(min(w, h), abs=0.5) and (y1 - y0) == pytest.approx(min(w, h), abs=0.5)
    assert (x0 + x1) / 2 == pytest.approx(w / 2) and (y0 + y1) / 2 == pytest.approx(h / 2)


def test_ablations_and_what_cannot_be_explained(tiny_backbone, tmp_path):
    text_only = _classifier(tiny_backbone, tmp_path, method="awt-text").explain(str(EXAMPLES / "cat.jpg"), top_k=2)
    assert len(text_only.views) == 1 and text_only.classes[0].plan.shape == (1, 4)
    uniform = _classifier(tiny_backbone, tmp_path, method="awt-uniform", views=2).explain(str(EXAMPLES / "cat.jpg"))
    assert all(v.weight == pytest.approx(1 / 3) for v in uniform.views)
    assert torch.allclose(uniform.classes[0].prompt_weights, torch.full((4,), 0.25))
    with pytest.raises(AWTError, match="method 'clip' has no transport plan to explain"):
        _classifier(tiny_backbone, tmp_path, method="clip").explain(str(EXAMPLES / "cat.jpg"))
    from awt.explain import render_report

    single = AWTClassifier(tiny_backbone, ClassifierSpec(["cat"], views=2, cache_dir=tmp_path)).explain(
        str(EXAMPLES / "cat.jpg"), top_k=3)
    assert len(single.classes) == 1 and single.decision is None and not single.changed
    assert "nothing to decide between" in render_report(single)
    clf = _classifier(tiny_backbone, tmp_path, views=2)
    with pytest.raises(AWTError, match="no such file"):
        clf.explain(str(tmp_path / "missing.jpg"))


def test_the_report_is_one_escaped_file_with_nothing_to_fetch(tiny_backbone, tmp_path):
    from awt.explain import render_report, save_figure, write_report

    names = ['<b>"bold" & co</b>', "rocket", "cat"]
    descriptions = [["<script>alert(1)</script> & a <i>tag</i>"] * 3, ["A rocket on its pad."] * 3,
                    ["A cat on a mat."] * 3]
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(names, descriptions=descriptions, descriptions_per_class=2,
                                                      views=4, cache_dir=tmp_path))
    ex = clf.explain(str(EXAMPLES / "rocket.jpg"), top_k=3)
    text = render_report(ex)
    assert "<script" not in text and '<b>"bold"' not in text and "<i>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; a &lt;i&gt;tag&lt;/i&gt;" in text
    assert "&lt;b&gt;&quot;bold&quot; &amp; co&lt;/b&gt;" in text
    # one embedded image, every other picture of it a reference; no address outside the file
    assert text.count("data:image/jpeg;base64,") == 1 and text.count('<use href="#src"/>') >= 3 * 5
    assert text.count("data:image/png;base64,") == len(ex.classes) + (ex.rival is not None)
    assert "http:" not in text.replace("http-equiv", "") and "https:" not in text and "src=\"/" not in text
    assert "default-src 'none'" in text
    size = write_report(ex, tmp_path / "report.html")
    assert size == (tmp_path / "report.html").stat().st_size < 200_000
    pytest.importorskip("matplotlib")
    save_figure(ex, tmp_path / "figure.png", dpi=60)
    from PIL import Image

    with Image.open(tmp_path / "figure.png") as figure:
        assert figure.format == "PNG" and figure.size[1] > figure.size[0] / 2


def test_a_video_is_explained_with_its_frame_crops_as_views(tiny_backbone, tmp_path):
    from awt.explain import render_report
    from awt.explain.views import GAP
    from awt.video_sampling import VideoSampling
    from awt.videos import sample_video
    from support.video_files import write_video

    sampling = VideoSampling(frames=3, crops=3, clips=2)        # 18 views: frames x crops x clips
    video = str(write_video(tmp_path / "clip.mp4", 40, 25, 96, 64))
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(NAMES, descriptions=DESCRIPTIONS, descriptions_per_class=3,
                                                      video=sampling, cache_dir=tmp_path))
    ex = clf.explain(video, top_k=2)
    [result] = clf.classify([video], top_k=len(NAMES), num_workers=0)
    assert torch.allclose(ex.scores, torch.tensor([dict((p.index, p.score) for p in result.predictions)[i]
                                                   for i in range(len(NAMES))]), atol=1e-5)
    assert ex.video and len(ex.views) == 18 and ex.classes[0].plan.shape == (18, 4)
    assert torch.allclose(ex.classes[0].plan.sum(1), torch.tensor([v.weight for v in ex.views]), atol=1e-5)
    # the mosaic: 2 rows (clips) of 3 frames, scaled to a shorter side of 64; view 0 the centre crop of the
    # middle frame of the middle clip, and each view's box inside its own frame, holding that frame's number
    sampled = sample_video(video, sampling, 64)
    assert ex.source.size == (3 * 96 + 2 * GAP, 2 * 64 + GAP)
    assert ex.views[0].frame == 1 * 3 + 1 and ex.views[0].box == (16.0 + 1 * (96 + GAP), 64.0 + GAP, 80.0 + 1 * (96 + GAP),
                                                                   128.0 + GAP)
    mosaic = torch.from_numpy(__import__("numpy").asarray(ex.source).copy()).permute(2, 0, 1)
    for v in ex.views:
        x0, y0, x1, y1 = (int(c) for c in v.box)
        assert (x1 - x0, y1 - y0) == (64, 64) and x0 // (96 + GAP) == v.frame % 3 and y0 // (64 + GAP) == v.frame // 3
        frame = sampled.frames[v.frame]
        fy, fx = (v.frame // 3) * (64 + GAP), (v.frame % 3) * (96 + GAP)
        assert torch.equal(mosaic[:, fy:fy + 64, fx:fx + 96], frame) and v.time == sampled.times.flat[v.frame]
    # the crops cut from the mosaic at those boxes are the views the classifier encoded
    packed = pack_views([mosaic.contiguous()], [torch.tensor([v.box for v in ex.views])],
                        [torch.zeros(len(ex.views), dtype=torch.bool)])
    crops = cut_views(packed, tiny_backbone.image_size, tiny_backbone.mean, tiny_backbone.std, tiny_backbone.device)
    features = next(clf.iter_image_features([video], num_workers=0)).features[0]
    assert torch.allclose(tiny_backbone.encode_images(crops.flatten(0, 1)), features, atol=1e-5)
    assert json.loads(json.dumps(ex.to_json()))["views"][0]["frame"] == 4
    assert "clip.mp4" in render_report(ex)
