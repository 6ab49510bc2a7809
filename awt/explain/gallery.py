"""A gallery page: the images where AWT and CLIP disagree most, each linking to its report.

:func:`disagreements` picks them from both methods' scores; :func:`render_gallery` draws the page
(self-contained as the reports are: thumbnails inline, no script, nothing fetched).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch
from PIL import Image

from .report import data_uri

THUMB_SIDE = 220


@dataclass
class GalleryItem:
    """One image of the gallery."""

    image: str              # its path, as the dataset lists it
    report: str             # the report's address relative to the gallery page
    label: str | None       # the true class, when known
    awt: str                # AWT's prediction
    clip: str               # CLIP's prediction
    strength: float         # how strongly the two disagree (see :func:`disagreements`)
    thumbnail: Image.Image


def disagreements(awt_scores: torch.Tensor, clip_scores: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """The (row, strength) of the ``k`` rows where AWT's and CLIP's best classes differ most, strongest first.

    Both (images, classes) score tensors are turned into probabilities (their softmax: the scores
    carry the model's logit scale); with ``a`` AWT's class and ``c`` CLIP's, the strength is
    ``(P_awt[a] - P_awt[c]) + (P_clip[c] - P_clip[a])``, in (0, 2]: how sure each method is of its
    own class over the other's. Rows where they agree are left out.
    """
    p_awt, p_clip = awt_scores.float().softmax(-1), clip_scores.float().softmax(-1)
    a, c = p_awt.argmax(-1), p_clip.argmax(-1)
    rows = torch.arange(len(a))
    strength = (p_awt[rows, a] - p_awt[rows, c]) + (p_clip[rows, c] - p_clip[rows, a])
    differ = (a != c).nonzero().flatten()
    order = differ[strength[differ].argsort(descending=True, stable=True)][:k]
    return [(int(i), float(strength[i])) for i in order]


def _verdict(item: GalleryItem) -> tuple[str, str]:
    if item.label is None:
        return "unknown", "no label"
    if item.awt == item.label:
        return "win", "AWT right, CLIP wrong"
    if item.clip == item.label:
        return "loss", "AWT wrong, CLIP right"
    return "both", "both wrong"


_STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       background: #f4f6f9; }
main { max-width: 1200px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.35rem; margin: 0 0 4px; overflow-wrap: anywhere; }
.muted { color: #5d6678; font-size: .9rem; }
.items { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 14px; margin-top: 14px; }
a.item { display: block; background: #fff; border: 1px solid #dde2ea; border-radius: 10px; padding: 10px;
         color: inherit; text-decoration: none; }
a.item:hover { border-color: #91a7ff; }
a.item img { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 6px; display: block; background: #000; }
.tag { display: inline-block; border-radius: 999px; padding: 1px 10px; font-size: .8rem; font-weight: 600; margin: 6px 0; }
.win { background: #ebfbee; color: #2b8a3e; } .loss { background: #fff5f5; color: #c92a2a; }
.both, .unknown { background: #f1f3f5; color: #495057; }
p { margin: 2px 0; overflow-wrap: anywhere; }
@media (max-width: 760px) { main { padding: 10px; } .items { grid-template-columns: repeat(2, minmax(0, 1fr)); } }
"""


def render_gallery(title: str, items: list[GalleryItem], note: str = "") -> str:
    """The gallery page of ``items`` (strongest disagreement first) as one HTML document."""
    e = lambda x: html.escape(str(x), quote=True)  # noqa: E731
    cards = []
    for n, item in enumerate(items, 1):
        kind, words = _verdict(item)
        cards.append(
            f'<a class="item" href="{e(item.report)}"><img src="{data_uri(item.thumbnail, quality=80)}" '
            f'alt="{e(item.image)}"><span class="tag {kind}">{e(words)}</span>'
            f'<p><b>#{n}</b> <span class="muted">{e(item.image.rsplit("/", 1)[-1])}</span></p>'
            + (f"<p>label: <b>{e(item.label)}</b></p>" if item.label is not None else "")
            + f"<p>AWT: {e(item.awt)}</p><p>CLIP: {e(item.clip)}</p>"
            f'<p class="muted">disagreement {item.strength:.2f}</p></a>')
    wins = sum(_verdict(i)[0] == "win" for i in items)
    losses = sum(_verdict(i)[0] == "loss" for i in items)
    body = "".join(cards) if cards else "<p>AWT and CLIP agree on every image.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{e(title)}</title><style>{_STYLE}</style></head>
<body><main><h1>{e(title)}</h1>
<p class="muted">The {len(items)} images where AWT and CLIP disagree most: AWT wins {wins}, loses {losses}.
{e(note)} Each links to its report.</p>
<div class="items">{body}</div></main></body></html>
"""
