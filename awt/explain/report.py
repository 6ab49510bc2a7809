"""An explanation as one self-contained HTML file: no script, no request, every image inline.

The image is embedded once (a JPEG data URI inside the first SVG figure); every other picture of it,
a view's crop beside its sentence or a box drawn on it, refers to that element with SVG ``<use>``, so
thumbnails cost a few bytes each and the report's size grows with the top-k classes, not with the
class set. The plan's heat map is a small PNG (one pixel per cell, scaled up without smoothing).
All text (class names, prompts, file names) is escaped; a Content-Security-Policy forbids any fetch.
"""

from __future__ import annotations

import base64
import html
import io
import os
from importlib import resources
from string import Template

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..files import atomic_write_text
from .compute import ClassExplanation, Explanation, View

IMAGE_SIDE = 768        # the embedded image's longer side at most (pixels)
MOSAIC_SIDE = 1600      # a video's mosaic of frames: its longer side at most
THUMBNAILS = 6          # heaviest views shown as crops
ROWS = 8                # rows of the tables of views and pairs
# viridis at five stops: dark for an empty cell, yellow for the heaviest
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _f(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def data_uri(image: Image.Image, fmt: str = "JPEG", **save) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def viridis(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (shape + (3,)) on viridis' five stops, linearly between them."""
    x = np.clip(values, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.minimum(np.floor(x).astype(int), len(_VIRIDIS) - 2)
    t = (x - low)[..., None]
    return np.round(_VIRIDIS[low] * (1 - t) + _VIRIDIS[low + 1] * t).astype(np.uint8)


def plan_order(ex: Explanation, c: ClassExplanation) -> tuple[list[int], list[int]]:
    """The heat map's rows (views, heaviest first) and columns (the class's prompts, heaviest first)."""
    a = torch.tensor([v.weight for v in ex.views])
    return a.argsort(descending=True, stable=True).tolist(), c.prompt_weights.argsort(descending=True, stable=True).tolist()


def heat_map(ex: Explanation, c: ClassExplanation) -> Image.Image:
    """The plan (views x prompts, sorted by weight) as an image, one pixel per cell, the heaviest cell yellow."""
    rows, cols = plan_order(ex, c)
    plan = c.plan[rows][:, cols].numpy()
    top = float(plan.max()) or 1.0
    return Image.fromarray(viridis(plan / top), "RGB")


def _weight_colour(t: float) -> str:
    """Pale yellow (light views) to deep orange (the heaviest)."""
    low, high = np.array([255, 236, 153]), np.array([232, 89, 12])
    r, g, b = np.round(low + (high - low) * min(max(t, 0.0), 1.0)).astype(int)
    return f"rgb({r},{g},{b})"


def _crop(view: View, size: int | None = None, label: str = "") -> str:
    """A view's crop: an SVG whose viewBox is its box over the embedded image (mirrored when flipped)."""
    x0, y0, x1, y1 = view.box
    use = '<use href="#src"/>'
    if view.flip:
        use = f'<g transform="matrix(-1 0 0 1 {x0 + x1:.2f} 0)">{use}</g>'
    dims = f' width="{size}" height="{size}"' if size else ""
    return (f'<svg viewBox="{x0:.2f} {y0:.2f} {x1 - x0:.2f} {y1 - y0:.2f}"{dims} role="img" '
            f'aria-label="{_e(label or f"view {view.index}")}">{use}</svg>')


def _figure(ex: Explanation, strength: list[float], first: bool, label: str) -> str:
    """The image with every view's box; ``strength`` (per view, 0-1) sets its outline's width and colour."""
    w, h = ex.source.size
    if first:
        scale = min(1.0, (MOSAIC_SIDE if ex.video else IMAGE_SIDE) / max(w, h))
        shown = ex.source if scale == 1.0 else ex.source.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                                 Image.Resampling.LANCZOS)
        picture = f'<image id="src" href="{data_uri(shown, quality=85)}" x="0" y="0" width="{w}" height="{h}"/>'
    else:
        picture = '<use href="#src"/>'
    order = sorted(range(len(ex.views)), key=lambda i: strength[i])
    boxes, labels = [], []
    font = min(max(w, h) / 28, min(w, h) / 9)
    for rank, i in enumerate(reversed(order)):
        v, t = ex.views[i], strength[i]
        x0, y0, x1, y1 = v.box
        boxes.insert(0, f'<rect class="view" x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" '
                        f'stroke="{_weight_colour(t)}" stroke-width="{0.6 + 3.4 * t:.2f}" stroke-opacity="{0.35 + 0.65 * t:.2f}">'
                        f'<title>view {v.index}: weight {_f(v.weight)}</title></rect>')
        if rank < 5:
            labels.append(f'<text x="{x0 + font * 0.3:.1f}" y="{y0 + font * 1.05:.1f}" font-size="{font:.1f}">{v.index}</text>')
    return (f'<svg class="figure" viewBox="0 0 {w} {h}" role="img" aria-label="{_e(label)}">{picture}'
            + "".join(boxes) + "".join(labels) + "</svg>")


def _when(view: View) -> str:
    """A video view's time (`` at 1.20 s``); nothing for an image's."""
    return f" at {view.time:.2f} s" if view.time is not None else ""


def _spread(values: list[float]) -> list[float]:
    """Values mapped to 0 (the smallest) .. 1 (the largest), so that close weights still show their order."""
    low, high = min(values, default=0.0), max(values, default=0.0)
    return [(x - low) / (high - low) if high > low else 1.0 for x in values]


def _prompt_html(c: ClassExplanation, p: int) -> str:
    """A prompt, its template part muted: ``a photo of a cat.`` + the description."""
    text, head = c.prompts[p], c.prompts[0]
    if p > 0 and text.startswith(head[:-1] + ". "):
        return f'<span class="muted">{_e(head)}</span> {_e(text[len(head) + 1:])}'
    return _e(text)


def _bar(value: float, top: float) -> str:
    width = 100 * abs(value) / top if top > 0 else 0
    return f'<span class="bar{" neg" if value < 0 else ""}" style="width:{width:.1f}%"></span>'


def _decision(ex: Explanation) -> tuple[str, str]:
    d = ex.decision
    if d is None:
        return "One class", "<p>The class set has one class: nothing to decide between.</p>"
    winner, rival = ex.explained(d.winner), ex.explained(d.rival)
    why = "AWT changed CLIP's prediction" if ex.changed else "Ahead of the runner-up"
    title = f"{why}: {winner.name} over {rival.name}"
    views = [(i, x) for i, x in d.views if x > 0][:4]
    top = max([abs(x) for _, x in d.views] or [1.0])
    rows = "".join(f'<tr><td class="crop">{_crop(ex.views[i], 64)}</td><td>view {i}{_when(ex.views[i])} (weight {_f(ex.views[i].weight)})'
                   f'{_bar(x, top)}</td><td class="num">+{_f(x)}</td></tr>' for i, x in views)

    def prompts(c: ClassExplanation, shares: list[tuple[int, float]], sign: str) -> str:
        picked = [(p, x) for p, x in shares if x > 0][:3]
        return "".join(f'<tr><td class="text" colspan="2">{_prompt_html(c, p)}</td><td class="num">{sign}{_f(x)}</td></tr>'
                       for p, x in picked)

    body = (f'<p>Score margin <b>{_f(d.margin)}</b> ({_e(winner.name)} {_f(winner.score)}, {_e(rival.name)} '
            f'{_f(rival.score)}), split over views and over each class&#39;s prompts:</p>'
            f'<table><tr><th colspan="2">Views that favour {_e(winner.name)}</th><th class="num">share</th></tr>{rows}'
            f'<tr><th colspan="2">Prompts of {_e(winner.name)} that pulled ahead</th><th></th></tr>'
            f'{prompts(winner, d.winner_prompts, "+")}'
            f'<tr><th colspan="2">Prompts of {_e(rival.name)} that fell short</th><th></th></tr>'
            f'{prompts(rival, d.rival_prompts, "+")}</table>')
    return _e(title), body


def _class_card(ex: Explanation, c: ClassExplanation) -> str:
    strength = _spread(c.view_scores.tolist())
    figure = _figure(ex, strength, False, f"views of {c.name}, outlined by their part of its score")
    order = c.prompt_weights.argsort(descending=True, stable=True).tolist()
    top_w = float(c.prompt_weights.max())
    prompts = "".join(f'<tr><td class="num">{_f(float(c.prompt_weights[p]))}{_bar(float(c.prompt_weights[p]), top_w)}</td>'
                      f'<td class="text">{_prompt_html(c, p)}</td><td class="num">{_f(float(c.prompt_scores[p]))}</td></tr>'
                      for p in order)
    pairs = "".join(f'<tr><td class="crop">{_crop(ex.views[q.view], 64)}</td><td class="text">{_prompt_html(c, q.prompt)}'
                    f'<br><span class="muted">view {q.view}</span></td><td class="num">{_f(q.mass, 4)}</td>'
                    f'<td class="num">{_f(q.cosine)}</td></tr>' for q in c.pairs[:ROWS])
    by_score = c.view_scores.argsort(descending=True, stable=True).tolist()[:ROWS]
    top_v = float(c.view_scores.abs().max()) or 1.0
    views = "".join(f'<tr><td class="crop">{_crop(ex.views[i], 64)}</td><td>view {i}{_bar(float(c.view_scores[i]), top_v)}'
                    f'</td><td class="num">{_f(ex.views[i].weight)}</td><td class="num">{_f(float(c.view_scores[i]))}</td></tr>'
                    for i in by_score)
    rows, cols = len(ex.views), len(c.prompts)
    heat = data_uri(heat_map(ex, c), "PNG", optimize=True)
    top_mass = float(c.plan.max())
    rank = f"#{c.rank}" if c.rank else "CLIP&#39;s pick"
    return f"""<section class="card">
  <h2>{rank} {_e(c.name)} <span class="muted">AWT score {_f(c.score)} &middot; CLIP score {_f(c.clip_score)}</span></h2>
  <div class="grid">
    <div>
      {figure}
      <p class="muted">Outlines: each view&#39;s part of this class&#39;s score (s &times; &Sigma;<sub>prompts</sub> T &times; cos),
      from {_f(float(c.view_scores.min()))} (pale, thin) to {_f(float(c.view_scores.max()))} (orange, thick).</p>
      <h3>The plan T ({rows} views &times; {cols} prompts)</h3>
      <div class="heat"><img style="aspect-ratio: {min(max(cols / rows, 0.75), 3):.3f}" src="{heat}" alt="transport plan of {_e(c.name)}: rows views, columns prompts, both heaviest first"></div>
      <div class="scale"></div><div class="scale-labels"><span>0</span><span>{_f(top_mass, 4)}</span></div>
      <p class="muted">Rows: views, heaviest first; columns: prompts, heaviest first (the order of the table).</p>
    </div>
    <div>
      <h3>Prompts by weight</h3>
      <table><tr><th class="num">weight</th><th>prompt</th><th class="num">score</th></tr>{prompts}</table>
      <h3>Heaviest pairs</h3>
      <table><tr><th>view</th><th>prompt</th><th class="num">mass</th><th class="num">cos</th></tr>{pairs}</table>
      <h3>Score {_f(c.score)} over views</h3>
      <table><tr><th>view</th><th></th><th class="num">weight</th><th class="num">score</th></tr>{views}</table>
    </div>
  </div>
</section>"""


def render_report(ex: Explanation) -> str:
    """The report of ``ex`` as one HTML document (a string)."""
    if ex.source is None:
        raise ValueError("an explanation without its source image cannot be drawn")
    weights = _spread([v.weight for v in ex.views])
    heaviest = sorted(range(len(ex.views)), key=lambda i: -ex.views[i].weight)[:THUMBNAILS]
    thumbs = "".join(f'<figure class="thumb">{_crop(ex.views[i])}<figcaption>view {i}{" &harr;" if ex.views[i].flip else ""}'
                     f'{_when(ex.views[i])} &middot; {_f(ex.views[i].weight)}</figcaption></figure>' for i in heaviest)
    awt, clip = ex.classes[0], ex.clip_name
    verdict = (f'<span class="pill awt">AWT: {_e(awt.name)} ({_f(awt.score)})</span>'
               f'<span class="pill clip">CLIP: {_e(clip)}</span>'
               + ('<span class="pill changed">AWT changed CLIP&#39;s prediction</span>' if ex.changed
                  else '<span class="pill same">AWT agrees with CLIP</span>'))
    prompts = len(awt.prompts)
    settings = (f"{_e(ex.model)} &middot; method {_e(ex.method)} &middot; {len(ex.views)} views &times; {prompts} "
                f"prompts &middot; {ex.scores.numel()} classes &middot; {ex.iterations} Sinkhorn iterations")
    decision_title, decision = _decision(ex)
    cards = [_class_card(ex, c) for c in ex.classes + ([ex.rival] if ex.rival else [])]
    template = Template(resources.files(__package__).joinpath("templates").joinpath("report.html").read_text(encoding="utf-8"))
    return template.substitute(
        title=_e(f"Why {awt.name}? {os.path.basename(ex.image) or ex.image}"), verdict=verdict, settings=settings,
        views_figure=_figure(ex, weights, True, "the image with every view's box, outlined by its weight"),
        thumbnails=thumbs, decision_title=decision_title, decision=decision, classes="\n".join(cards),
        views_layout="stack" if ex.video else "grid",
        views_title="The sampled frames (a row per clip) and the views cut from them" if ex.video
        else "The views and their weights",
        views_caption="Each box is a view the encoder saw, a square crop of a frame (view 0: the centre crop of the "
        "middle frame of the middle clip)" if ex.video
        else "Each box is a view the encoder saw (view 0: the plain centre crop)",
        version=_e(__version__), weight_range=f"{_f(min(v.weight for v in ex.views))} (pale, thin) to "
        f"{_f(max(v.weight for v in ex.views))} (orange, thick)")


def write_report(ex: Explanation, path: str | os.PathLike) -> int:
    """Write the report of ``ex`` to ``path`` (atomically); returns its size in bytes."""
    text = render_report(ex)
    atomic_write_text(path, text)
    return len(text.encode("utf-8"))
