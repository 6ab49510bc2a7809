"""``awt explain``: one image in, a report of what decided its classes out (HTML, JSON, a figure)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .. import defaults
from ..errors import AWTError
from . import options
from .text import printable


def _check_output(path: Path, what: str) -> None:
    """A file can be written at ``path``: its folder exists, and it is not a folder itself."""
    if path.is_dir():
        raise AWTError(f"{path}: is a folder; give a file name for {what}", setting=what)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise AWTError(f"cannot write {path}: its folder {parent} does not exist", setting=what)


def _check_distinct(outputs: list[tuple[Path, str]], inputs: list[tuple[Optional[Path], str]]) -> None:
    """No output overwrites an input or another output."""
    seen: dict[str, str] = {os.path.realpath(p): name for p, name in inputs if p is not None}
    for path, what in outputs:
        key = os.path.realpath(path)
        if key in seen:
            raise AWTError(f"--{what} {path}: is also {seen[key]}; give it a file of its own", setting=what)
        seen[key] = f"--{what}"


def explain(
    image: Path = typer.Argument(..., readable=False, show_default=False, help="The image (or video) to explain."),
    classes: Path = options.CLASSES,
    descriptions: Optional[Path] = options.DESCRIPTIONS,
    top_k: int = typer.Option(3, "--top-k", min=1, help="Classes explained: AWT's best K."),
    out: Optional[Path] = typer.Option(None, "--out", help="The HTML report (one self-contained file).",
                                       show_default=False),
    json_out: Optional[str] = typer.Option(None, "--json", help="The numbers behind it as JSON: a file, or - for "
                                           "stdout.", show_default=False),
    png: Optional[Path] = typer.Option(None, "--png", help="A figure for a paper: .png, .pdf or .svg (needs "
                                       "matplotlib: pip install 'awt[explain]').", show_default=False),
    template: str = options.TEMPLATE,
    views: int = options.VIEWS,
    descriptions_per_class: Optional[int] = options.DESCRIPTIONS_PER_CLASS,
    allow_fewer_descriptions: bool = options.ALLOW_FEWER,
    model: str = options.MODEL,
    pretrained: str = options.PRETRAINED,
    device: str = options.DEVICE,
    precision: str = options.PRECISION,
    seed: int = options.SEED,
    method: str = typer.Option(defaults.METHOD, "--method", help="AWT or one of its ablations: awt, awt-uniform, "
                               "awt-image, awt-text (the others have no transport plan)."),
    cache_dir: Optional[Path] = options.CACHE_DIR,
    no_cache: bool = options.NO_CACHE,
    max_pixels: int = options.MAX_PIXELS,
    frames: int = options.FRAMES,
    crops: int = options.CROPS,
    clips: int = options.CLIPS,
) -> None:
    """Show which views and which descriptions decided an image's classes, and the transport plan between them."""
    from ..explain import check_explainable, check_figure_support
    from ..video_sampling import VideoSampling

    if out is None and json_out is None and png is None:
        raise AWTError("nothing to write: give --out report.html, --json FILE (or - for stdout) or --png FILE")
    if out is not None and str(out) == "-":
        raise AWTError("--out - : the report is a file (give report.html); --json - writes the numbers to stdout",
                       setting="out")
    outputs = [(path, what) for path, what in ((out, "out"), (png, "png"),
                                               (None if json_out in (None, "-") else Path(json_out), "json"))
               if path is not None]
    for path, what in outputs:
        _check_output(path, what)
    _check_distinct(outputs, [(image, "the input"), (classes, "--classes"), (descriptions, "--descriptions")])
    check_explainable(method)
    if png is not None:
        check_figure_support(png)
    spec = options.build_spec(
        classes, descriptions, template=template, views=views, descriptions_per_class=descriptions_per_class,
        allow_fewer_descriptions=allow_fewer_descriptions, seed=seed, method=method, cache_dir=cache_dir,
        no_cache=no_cache, max_pixels=max_pixels, video=VideoSampling(frames, crops, clips))
    from ..inputs import is_video

    # an unreadable input is said before a model loads
    if is_video(image):
        from ..videos import probe_video

        probe_video(image, max_pixels=spec.decoding.max_pixels)
    else:
        from ..images import load_image

        load_image(image, max_pixels=spec.decoding.max_pixels)

    from ..backbones import create_backbone
    from ..classifier import create_classifier
    from ..explain import save_figure, write_report
    from ..files import atomic_write_text

    clf = create_classifier(spec, create_backbone(model, pretrained, device, precision))
    ex = clf.explain(image, top_k=top_k)
    said = []
    if out is not None:
        size = write_report(ex, out)
        said.append(f"report {out} ({size / 1024:.0f} KiB)")
    if png is not None:
        save_figure(ex, png)
        said.append(f"figure {png}")
    if json_out is not None:
        text = json.dumps(ex.to_json(), ensure_ascii=False)
        if json_out == "-":
            print(text, flush=True)
        else:
            atomic_write_text(json_out, text + "\n")
            said.append(f"numbers {json_out}")
    top = ex.classes[0]
    verdict = f"changed CLIP's {ex.clip_name}" if ex.changed else "agrees with CLIP"
    line = f"{os.fspath(image)}: AWT {top.name} ({top.score:.3f}), {verdict}" + (f"; {', '.join(said)}" if said else "")
    print(printable(line), file=sys.stderr if json_out == "-" else sys.stdout, flush=True)
