"""``awt classify``: images and videos in, ranked classes out, each result as soon as it is ready."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from .. import defaults
from ..errors import AWTError
from ..methods import METHODS
from . import options
from .flags import FLAGS
from .interrupts import defer_interrupts
from .text import json_line, printable


def _methods_epilog(width: int = 78) -> str:
    """The registry's methods, one per entry, wrapped to ``width`` columns (``\\b``: kept as laid out)."""
    import textwrap

    name_width = max(len(name) for name in METHODS) + 2
    lines = []
    for m in METHODS.values():
        lines += textwrap.wrap(m.summary, width, initial_indent=f"  {m.name:<{name_width}}",
                               subsequent_indent=" " * (2 + name_width))
    return "\b\nMethods:\n" + "\n".join(lines)


METHODS_EPILOG = _methods_epilog()


def classify(
    images: List[Path] = typer.Argument(..., readable=False, show_default=False,
                                        help="Image or video files, or directories (walked recursively)."),
    classes: Path = options.CLASSES,
    descriptions: Optional[Path] = options.DESCRIPTIONS,
    template: str = options.TEMPLATE,
    views: int = options.VIEWS,
    descriptions_per_class: Optional[int] = options.DESCRIPTIONS_PER_CLASS,
    allow_fewer_descriptions: bool = options.ALLOW_FEWER,
    model: str = options.MODEL,
    pretrained: str = options.PRETRAINED,
    device: str = options.DEVICE,
    precision: str = options.PRECISION,
    batch_size: int = typer.Option(defaults.BATCH_SIZE, min=1, help="Images per batch (each with N+1 views)."),
    workers: Optional[int] = typer.Option(None, min=0, help="Image decoding processes (default: by CPU count).",
                                          show_default=False),
    seed: int = options.SEED,
    top_k: int = typer.Option(defaults.TOP_K, min=1, help="Predictions shown per image."),
    method: str = options.METHOD,
    json_lines: bool = typer.Option(False, "--json", help="JSON Lines on stdout, one object per image."),
    cache_dir: Optional[Path] = options.CACHE_DIR,
    no_cache: bool = options.NO_CACHE,
    max_pixels: int = options.MAX_PIXELS,
    frames: int = options.FRAMES,
    crops: int = options.CROPS,
    clips: int = options.CLIPS,
) -> None:
    """Classify images and videos zero-shot among the classes in --classes."""
    from ..video_sampling import VideoSampling

    spec = options.build_spec(
        classes, descriptions, template=template, views=views, descriptions_per_class=descriptions_per_class,
        allow_fewer_descriptions=allow_fewer_descriptions, seed=seed, method=method, cache_dir=cache_dir,
        no_cache=no_cache, max_pixels=max_pixels, video=VideoSampling(frames, crops, clips))

    from .. import distributed
    from ..backbones import create_backbone
    from ..classifier import create_classifier
    from ..inputs import find_inputs

    paths = find_inputs([str(p) for p in images])
    if not paths:
        raise AWTError("no images or videos found in " + ", ".join(map(str, images)))
    distributed.init(device)   # one process unless started by torchrun
    try:
        backbone = create_backbone(model, pretrained, distributed.rank_device(device), precision)
        clf = create_classifier(spec, backbone)
        _print_results(clf, paths, top_k, batch_size, workers, json_lines)
    finally:
        distributed.finish()


def _print_results(clf, paths: list[str], top_k: int, batch_size: int, workers: int | None,
                   json_lines: bool) -> None:
    from tqdm.auto import tqdm

    from .. import distributed
    from ..classifier import iter_classify_ranks
    from ..progress import progress_bar

    main = distributed.ranks().main
    failed = done = 0
    shield = _Shield()
    # smoothing 0: the rate is the mean since the pace was first measured (below), not a moving
    # average that the first result's start-up (workers, the first encoding) would throw off
    bar = progress_bar(len(paths), "images", "img", smoothing=0)
    paced = False
    try:
        for result in iter_classify_ranks(clf, paths, top_k=top_k, batch_size=batch_size, num_workers=workers):
            with shield, tqdm.external_write_mode(file=sys.stdout):
                if result.error is not None:
                    failed += 1
                    hint = result.cause.hint_for(FLAGS) if result.cause is not None else None
                    reason = f"{result.error}; {hint}" if hint else result.error
                    print(f"error: {printable(result.image)}: {printable(reason)}", file=sys.stderr)
                if json_lines:
                    print(json_line(result.to_json()), flush=True)
                elif result.error is None:
                    names = [printable(p.name) for p in result.predictions]
                    width = max(map(len, names))
                    lines = [printable(result.image)] + [f"  {rank:>2}. {name:<{width}}  {p.score:8.3f}"
                                                         for rank, (name, p) in enumerate(zip(names, result.predictions), 1)]
                    print("\n".join(lines), flush=True)
                done += 1
            bar.update(1)
            if not paced:   # the time to the first result is start-up: the pace is measured from here on
                bar.initial, bar.start_t, paced = bar.n, time.time(), True
        defer_interrupts()   # every result is out: a Ctrl-C from here on meets only the teardown
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted after {done} of {len(paths)} images", file=sys.stderr)
        raise typer.Exit(130) from None
    bar.close()
    if distributed.ranks().active:   # rank 0 saw every result; the others end with 0, before it
        processes, failed = distributed.process_ids(), distributed.broadcast(failed)
        if failed and not main:
            return
        if failed:
            distributed.wait_for_exit(processes)
    if failed:
        print(f"{failed} of {len(paths)} input(s) could not be read", file=sys.stderr)
        raise typer.Exit(1)


class _Shield:
    """Holds back Ctrl-C while a result is printed and counted, so that the count in "interrupted
    after N of M images" is exactly what was printed; the interrupt comes right after."""

    def __init__(self) -> None:
        self.pending = False
        self.active = False
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.active:
                    self.pending = True
                elif callable(previous):
                    previous(signum, frame)
                else:
                    raise KeyboardInterrupt

            signal.signal(signal.SIGINT, handler)

    def __enter__(self) -> "_Shield":
        self.active = True
        return self

    def __exit__(self, *exc) -> None:
        self.active = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt
