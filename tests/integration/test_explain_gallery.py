"""`awt bench ... --explain K`: after a sweep, the images where AWT and CLIP disagree most, explained
and linked from a gallery page; the picks checked against both methods' own classification."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from typer.testing import CliRunner

from awt import AWTClassifier
from awt.explain.gallery import disagreements
from support.bench_configs import small_config


def test_disagreements_by_hand():
    awt = torch.tensor([[5.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0]])
    clip = torch.tensor([[0.0, 5.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.1, 0.0]])
    picked = disagreements(awt, clip, 5)
    # row 1 agrees; row 0 is the surest on both sides (1.96); row 2 (0.36 + 0.36) beats row 3, where AWT is
    # surer (0.68) but CLIP hardly prefers its class (0.03)
    assert [row for row, _ in picked] == [0, 2, 3]
    p, q = awt.softmax(-1), clip.softmax(-1)
    assert picked[0][1] == pytest.approx((p[0, 0] - p[0, 1] + q[0, 1] - q[0, 0]).item(), abs=1e-6)
    assert disagreements(awt, clip, 1) == picked[:1]


def test_bench_explain_writes_a_gallery_of_the_disagreements(tmp_path, labeled_images, tiny_model_name,
                                                              tiny_backbone):
    from awt.bench.config import load_config
    from awt.bench.plan import plan_runs
    from awt.bench.prepare import prepare_dataset
    from awt.bench.runner import class_spec
    from awt.cli import app

    config = small_config(tmp_path, labeled_images, tiny_model_name, views=3, descriptions_per_class=6)
    text = config.read_text()
    config.write_text(re.sub(r"methods:\n(- .*\n)+", "methods:\n- awt\n- clip\n", text))
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = CliRunner().invoke(app, ["bench", str(config), "--output", str(out), "--quiet", "--explain", "3"])
    assert r.exit_code == 0, r.output
    folder = out / "explain" / "tiny" / "ex4"
    page = (folder / "index.html").read_text()
    # the images where the two classifiers disagree, from their own classify
    cfg = load_config(config)
    run = next(x for x in plan_runs(cfg) if x.method == "awt")
    ds = prepare_dataset(run.dataset, 6, cfg.path)
    clf = AWTClassifier(tiny_backbone, class_spec(run, ds, out / "cache", cfg.settings.awt))
    paths = ds.images.paths
    awt = [x.predictions[0].index for x in clf.classify(paths, top_k=1, num_workers=0)]
    clip = [x.predictions[0].index for x in clf.classify(paths, top_k=1, method="clip", num_workers=0)]
    differ = {p for p, a, c in zip(paths, awt, clip) if a != c}
    assert differ   # the tiny model and these photos: AWT and CLIP disagree on some
    links = re.findall(r'<a class="item" href="([^"]+)"', page)
    assert len(links) == min(3, len(differ))
    shown = re.findall(r'alt="([^"]+)"', page)
    assert set(shown) <= differ and len(shown) == len(links)
    for link, path in zip(links, shown):
        report = (folder / link).read_text()
        assert "AWT changed CLIP&#39;s prediction" in report
        i = paths.index(path)
        assert f"AWT: {ds.prompt_names[awt[i]]}" in report and f"CLIP: {ds.prompt_names[clip[i]]}" in report
    assert "default-src 'none'" in page and "<script" not in page
