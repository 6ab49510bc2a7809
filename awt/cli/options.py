"""The options that ``awt classify``, ``awt explain`` and ``awt serve`` share: the class set, the
model and the method's settings, declared once (typer reads an option's declaration from a
parameter's default, so one declaration serves every command), and the one way classify and
explain build their spec from them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import defaults

CLASSES = typer.Option(..., "--classes", help="Class names, one per line ('#' comments, blank lines ignored).",
                       show_default=False)
DESCRIPTIONS = typer.Option(None, "--descriptions", help="Descriptions JSON: {class: [sentences]} or an `awt describe` "
                            "cache.", show_default=False)
TEMPLATE = typer.Option(defaults.TEMPLATE, "--template", help="Prompt template; '{}' is the class name.")
VIEWS = typer.Option(defaults.VIEWS, "--views", min=0, help="Random augmented views per image (N); view 0 is the "
                     "plain centre crop.")
DESCRIPTIONS_PER_CLASS = typer.Option(
    None, "--descriptions-per-class", min=0, help="Descriptions used per class (M). Default: the cache's own M for an "
    f"`awt describe` cache, else {defaults.DESCRIPTIONS_PER_CLASS}.", show_default=False)
ALLOW_FEWER = typer.Option(False, "--allow-fewer-descriptions", help="Use what a class has when it has fewer than M.")
MODEL = typer.Option(defaults.MODEL, "--model", help="open_clip model: name, hf-hub:ORG/REPO or local-dir:PATH; "
                     "transformers model: hf:ORG/REPO or hf:PATH (pip install 'awt[hf]').")
PRETRAINED = typer.Option(defaults.PRETRAINED, "--pretrained", help="Pretrained tag, checkpoint file, or 'none' for "
                          "random weights; for hf: models a Hub revision (default branch unless given).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ...")
PRECISION = typer.Option("auto", "--precision", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16, amp, "
                         "amp_bf16.")
SEED = typer.Option(defaults.SEED, "--seed", min=0, help="Seed of the random views (with each image's pixels).")
METHOD = typer.Option(defaults.METHOD, "--method", help="Scoring method (listed below).")
CACHE_DIR = typer.Option(None, "--cache-dir", help=f"Embedding cache folder (default ${defaults.CACHE_ENV} or "
                         "~/.cache/awt).", show_default=False)
NO_CACHE = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache.")
MAX_PIXELS = typer.Option(defaults.MAX_PIXELS, "--max-pixels", min=0, help="Refuse images (and video frames) of more "
                          "pixels than this (width x height, as stored) as possible decompression bombs; 0: no limit. "
                          "Large JPEGs are decoded at reduced size whatever the limit.")
FRAMES = typer.Option(defaults.VIDEO_FRAMES, "--frames", min=1, help="Video: frames per clip (views: frames x crops "
                      "x clips; view 0 is the centre crop of the middle frame of the middle clip).")
CROPS = typer.Option(defaults.VIDEO_CROPS, "--crops", min=1, max=3, help="Video: square crops per frame, across its "
                     "long side.")
CLIPS = typer.Option(defaults.VIDEO_CLIPS, "--clips", min=1, help="Video: clips spread over the video.")


def build_spec(classes: Path, descriptions: Optional[Path], *, template: str, views: int,
               descriptions_per_class: Optional[int], allow_fewer_descriptions: bool, seed: int, method: str,
               cache_dir: Optional[Path], no_cache: bool, max_pixels: int, **more):
    """The :class:`~awt.spec.ClassifierSpec` of the shared options (every check that needs no
    model happens here, before one loads); ``more``: other spec fields (``video=...``)."""
    from ..files import default_cache_dir
    from ..images import Decoding
    from ..spec import ClassifierSpec

    return ClassifierSpec.from_files(
        classes, descriptions, descriptions_per_class=descriptions_per_class,
        allow_fewer_descriptions=allow_fewer_descriptions, template=template, method=method, views=views, seed=seed,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
        decoding=Decoding(max_pixels=max_pixels or None), **more)
