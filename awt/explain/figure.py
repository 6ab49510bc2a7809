"""An explanation as a figure for a paper (matplotlib, the ``explain`` extra): one row per top-k
class, the image with its views outlined by their part of the class's score beside the plan's heat
map, its prompts (heaviest first) labelled with their weights."""

from __future__ import annotations

import importlib.util
import os
import textwrap

from ..errors import AWTError
from ..files import atomic_write
from .compute import Explanation
from .report import plan_order

LABEL_CHARS = 48   # a prompt's label on the heat map, at most
FORMATS = ("png", "pdf", "svg")


def check_figure_support(path: str | os.PathLike | None = None) -> None:
    """An AWTError (one line) when matplotlib, which draws the figure, is not installed, or when
    ``path``'s suffix names no format it writes here."""
    if path is not None:
        fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
        if fmt not in FORMATS:
            raise AWTError(f"{os.fspath(path)}: a figure is written as {', '.join(FORMATS)} (by the file's suffix), "
                           f"not {fmt or 'a file without a suffix'}", setting="png")
    if importlib.util.find_spec("matplotlib") is None:
        raise AWTError("a figure needs matplotlib, which is not installed: pip install 'awt[explain]'", setting="png")


def _label(c, p: int) -> str:
    text, head = c.prompts[p], c.prompts[0]
    if p > 0 and text.startswith(head[:-1] + ". "):
        text = text[len(head) + 1:]
    short = textwrap.shorten(text, LABEL_CHARS, placeholder="...")
    return f"{short} ({float(c.prompt_weights[p]):.2f})"


def save_figure(ex: Explanation, path: str | os.PathLike, dpi: int = 200) -> None:
    """Draw ``ex`` (its top-k classes) and write it to ``path`` (PNG, PDF or SVG by its suffix), atomically."""
    check_figure_support(path)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    classes = ex.classes
    fig, axes = plt.subplots(len(classes), 2, figsize=(10, 3.6 * len(classes)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.5]})
    for row, c in enumerate(classes):
        left, right = axes[row]
        left.imshow(ex.source)
        scores = c.view_scores.tolist()
        low, high = min(scores), max(scores)
        for v, s in sorted(zip(ex.views, scores), key=lambda x: x[1]):
            t = (s - low) / (high - low) if high > low else 1.0
            x0, y0, x1, y1 = v.box
            left.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.5 + 2.5 * t,
                                     ec=plt.cm.Oranges(0.3 + 0.7 * t), alpha=0.4 + 0.6 * t))
        left.set_axis_off()
        left.set_title(f"#{c.rank} {c.name}: AWT {c.score:.2f}, CLIP {c.clip_score:.2f}", fontsize=9, loc="left")
        views, prompts = plan_order(ex, c)
        plan = c.plan[views][:, prompts].T.numpy()
        image = right.imshow(plan, aspect="auto", cmap="viridis", interpolation="nearest")
        right.set_yticks(range(len(prompts)), [_label(c, p) for p in prompts], fontsize=6)
        step = max(1, len(views) // 16)
        right.set_xticks(range(0, len(views), step), [str(views[i]) for i in range(0, len(views), step)])
        right.set_xlabel("views (their numbers), heaviest first", fontsize=7)
        right.tick_params(axis="x", labelsize=6)
        right.set_title("transport plan T (prompts x views)", fontsize=8, loc="left")
        fig.colorbar(image, ax=right, fraction=0.04, pad=0.02).ax.tick_params(labelsize=6)
    verdict = "changed" if ex.changed else "kept"
    fig.suptitle(f"{os.path.basename(ex.image)}: AWT {classes[0].name}, CLIP {ex.clip_name} (AWT {verdict} it)",
                 fontsize=10)
    fig.tight_layout()
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))
    finally:
        plt.close(fig)
