"""The explanation report in a real browser (the system's headless Chromium, see tests/support/browser.py):
laid out at laptop and phone widths, its pictures drawn, nothing fetched, no console errors.

``AWT_SCREENSHOTS=DIR`` keeps the screenshots."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from awt import AWTClassifier, ClassifierSpec
from support.browser import launch_browser, shot, watch

EXAMPLES = Path(__file__).resolve().parents[2] / "awt" / "data" / "examples"


@pytest.fixture(scope="module")
def browser():
    yield from launch_browser()


@pytest.fixture(scope="module")
def report(tiny_backbone, labeled_images, tmp_path_factory):
    from awt.descriptions import load_descriptions
    from awt.explain import write_report

    d = tmp_path_factory.mktemp("report")
    names = labeled_images.classnames + ["dog", "airplane"]
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(names, load_descriptions(labeled_images.descriptions),
                                                      descriptions_per_class=5, views=8, cache_dir=d / "cache"))
    ex = clf.explain(str(EXAMPLES / "astronaut.jpg"), top_k=3)
    write_report(ex, d / "report.html")
    return ex, d / "report.html"


def _panning_video(path: Path, frames: int = 48, size: tuple[int, int] = (256, 144)) -> Path:
    """A real video (6 s): a camera panning across a photo, left to right, with PyAV's libx264."""
    import av

    with Image.open(EXAMPLES / "astronaut.jpg") as photo:
        photo = photo.convert("RGB").resize((512, 512))
    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k in range(frames):
            x = round((512 - w * 2) * k / (frames - 1))
            view = photo.crop((x, 100, x + w * 2, 100 + h * 2)).resize((w, h))
            for packet in stream.encode(av.VideoFrame.from_image(view)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def video_report(tiny_backbone, labeled_images, tmp_path_factory):
    from awt.descriptions import load_descriptions
    from awt.explain import write_report

    d = tmp_path_factory.mktemp("video-report")
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(labeled_images.classnames,
                                                      load_descriptions(labeled_images.descriptions),
                                                      descriptions_per_class=4, cache_dir=d / "cache"))
    ex = clf.explain(str(_panning_video(d / "pan.mp4")), top_k=2)   # 8 frames x 3 crops x 4 clips
    write_report(ex, d / "report.html")
    return ex, d / "report.html"


def _picture(page, selector: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator(selector).first.screenshot())).convert("RGB"), dtype=float)


@pytest.mark.parametrize("width", [1280, 390])
def test_the_report_reads_at_laptop_and_phone_width(browser, report, tmp_path, width):
    ex, path = report
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems, requested = watch(page)
    page.goto(path.as_uri())
    picture = shot(page, tmp_path, f"explain-report-{width}.png")
    assert problems == []
    assert requested == [path.as_uri()]   # the pictures are inline (data: URIs are not requests)
    assert page.evaluate("document.documentElement.scrollWidth") <= width   # nothing wider than the screen
    assert page.locator("section.card").count() == 2 + len(ex.classes) + (ex.rival is not None)
    headings = page.locator("section.card h2").all_inner_texts()
    assert [h.split(" AWT score")[0] for h in headings[1:1 + len(ex.classes)]] == \
        [f"#{c.rank} {c.name}" for c in ex.classes]
    # the image, a view's crop (an SVG reference to it) and a heat map are drawn, not blank
    for selector in ("svg.figure", ".thumb svg", ".heat img", "td.crop svg"):
        box = page.locator(selector).first.bounding_box()
        assert box and box["width"] > 40 and box["height"] > 40, selector
        assert _picture(page, selector).std(axis=(0, 1)).mean() > 10, selector
    if width == 390:   # on a phone the figure and the tables stack
        figure, table = page.locator("svg.figure").nth(1).bounding_box(), page.locator("section.card table").nth(1).bounding_box()
        assert table["y"] > figure["y"] + figure["height"] - 1
    with Image.open(picture) as image:
        assert image.size[0] == width and image.size[1] > 1500
    page.close()


def test_the_gallery_links_to_its_reports(browser, report, tmp_path):
    from awt.explain.gallery import GalleryItem, render_gallery

    ex, path = report
    thumb = ex.source.copy()
    thumb.thumbnail((220, 220))
    items = [GalleryItem(ex.image, path.as_uri(), "astronaut", ex.classes[0].name, "<i>cat</i>", 1.5, thumb),
             GalleryItem("b.jpg", path.as_uri(), None, "rocket", "cat", 0.5, thumb)]
    page_file = tmp_path / "index.html"
    page_file.write_text(render_gallery("AWT against CLIP: tiny on <ex4>", items, "16 images."))
    page = browser.new_page(viewport={"width": 390, "height": 844})
    problems, requested = watch(page)
    page.goto(page_file.as_uri())
    shot(page, tmp_path, "explain-gallery-390.png")
    assert page.locator("a.item").count() == 2 and page.inner_text("h1") == "AWT against CLIP: tiny on <ex4>"
    assert "CLIP: <i>cat</i>" in page.inner_text("a.item >> nth=0")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert _picture(page, "a.item img").std(axis=(0, 1)).mean() > 10
    page.click("a.item >> nth=0")
    page.wait_for_load_state()
    assert page.url == path.as_uri() and page.locator("section.card").count() >= 3
    assert problems == [] and requested == [page_file.as_uri(), path.as_uri()]
    page.close()


@pytest.mark.parametrize("width", [1280, 390])
def test_a_video_report_shows_its_frames_and_crops(browser, video_report, tmp_path, width):
    ex, path = video_report
    assert ex.video and len(ex.views) == 96
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems, requested = watch(page)
    page.goto(path.as_uri())
    shot(page, tmp_path, f"explain-video-report-{width}.png")
    assert problems == [] and requested == [path.as_uri()]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert "sampled frames" in page.inner_text("section.card h2 >> nth=0")
    assert " at " in page.inner_text(".thumb figcaption >> nth=0")     # a view's time in the video
    for selector in ("svg.figure", ".thumb svg", ".heat img"):
        assert _picture(page, selector).std(axis=(0, 1)).mean() > 10, selector
    page.close()
