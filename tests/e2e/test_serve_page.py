"""The page of `awt serve` in a real browser: the system's headless Chromium, driven by Playwright.

Skipped, with the reason, where no Chromium is installed (``apt-get install chromium``) or Playwright
is missing (tests/support/browser.py); nothing else depends on it. ``AWT_SCREENSHOTS=DIR`` keeps the screenshots there.
"""

from __future__ import annotations

import base64

import pytest

from support.browser import launch_browser, shot as _shot, watch


@pytest.fixture(scope="module")
def browser():
    yield from launch_browser()


def test_the_page_classifies_dropped_and_chosen_images(browser, served, labeled_images, tmp_path):
    base = f"http://127.0.0.1:{served.port}"
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    problems, requested = watch(page)
    page.goto(base + "/")
    page.wait_for_function("document.querySelector('#set').options.length > 0 && "
                           "document.querySelector('#method').options.length > 0")
    assert "(4 classes, default)" in page.inner_text("#set")

    # two images chosen with the file input, scored against the server's own class set
    paths = [labeled_images.rows[0][0], labeled_images.rows[9][0]]
    page.set_input_files("#files", [str(p) for p in paths])
    page.click("#go")
    page.wait_for_selector(".card:nth-child(2) .ranks li")
    shown = page.eval_on_selector_all(".card", "cards => cards.map(c => [c.querySelector('h2').textContent, "
                                      "[...c.querySelectorAll('.ranks li')].map(li => li.children[1].textContent)])")
    expected = served.classify([(p.name, p.read_bytes()) for p in paths]).json()["results"]
    assert shown == [[r["image"], [p["class"] for p in r["predictions"]]] for r in expected]
    # Explain: the report of the first image, in a sandboxed frame on the page
    page.click(".card:nth-child(1) .explain")
    page.wait_for_selector(".card:nth-child(1) .explanation iframe")
    frame = page.frame_locator(".card:nth-child(1) .explanation iframe")
    assert frame.locator("h1").inner_text().startswith("Why ")
    assert frame.locator("section.card").count() >= 3 and frame.locator("svg.figure").count() >= 2
    assert "2 images in" in page.inner_text("#status")
    first = _shot(page, tmp_path, "serve-page-1280.png")

    # an image dropped on the page, typed classes
    data = base64.b64encode(labeled_images.rows[12][0].read_bytes()).decode()
    dropped = page.evaluate_handle(
        "data => { const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0)); const t = new DataTransfer(); "
        "t.items.add(new File([bytes], 'dropped.png', {type: 'image/png'})); return t; }", data)
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    page.check("input[name=source][value=typed]")
    page.fill("#classes", "rocket\nastronaut\n")
    page.select_option("#method", "clip")
    page.click("#go")
    page.wait_for_function("document.querySelectorAll('.card').length === 1 && "
                           "document.querySelector('.card h2').textContent === 'dropped.png'")
    ranked = page.eval_on_selector_all(".card .ranks li", "lis => lis.map(li => li.children[1].textContent)")
    assert sorted(ranked) == ["astronaut", "rocket"]
    assert "(clip)" in page.inner_text("#status")

    # a file that is not an image: its error, on the page, in one line (the browser itself logs the
    # answer's status, 422, as a failed resource: that line, and nothing else)
    assert problems == []
    page.set_input_files("#files", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not pixels"}])
    page.click("#go")
    page.wait_for_selector(".card .error:not([hidden])")
    assert page.inner_text(".card .error") == "not an image (or an unsupported format)"
    assert [p for p in problems if "status of 422" not in p] == [] and len(problems) == 1
    problems.clear()

    page.set_input_files("#files", [str(p) for p in paths])
    page.click("#go")
    page.wait_for_selector(".card:nth-child(2) .ranks li")
    page.set_viewport_size({"width": 390, "height": 844})
    phone = _shot(page, tmp_path, "serve-page-390.png")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390   # nothing wider than a phone
    assert first.stat().st_size > 10_000 and phone.stat().st_size > 10_000
    assert problems == []
    assert all(url.startswith(base + "/") or url.startswith("blob:") or url.startswith("data:") for url in requested), \
        requested
    page.close()
