"""After a sweep: per (backbone, dataset), the images where AWT and CLIP disagree most, explained.

For every backbone and dataset of the config with an ``awt`` run, the run's feature set (from the
cache the sweep filled) is scored by AWT and by CLIP (view 0, the template: the explanation's own
CLIP), the ``k`` images where the two disagree most are explained (:func:`awt.explain.explain`,
the run's classes, M, views, seed and decoding), and a gallery page links their reports::

    OUTPUT/explain/<backbone>/<dataset>/index.html       the gallery
    OUTPUT/explain/<backbone>/<dataset>/NN_<image>.html  one report per image
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

import torch

from ..classifier import AWTClassifier
from ..explain import write_report
from ..explain.gallery import THUMB_SIDE, GalleryItem, disagreements, render_gallery
from ..files import atomic_write_text
from ..scoring import clip_scores
from .config import BenchConfig
from .features import compute_features
from .plan import plan_runs
from .prepare import load_backbone, prepare_dataset
from .runner import class_spec

_log = logging.getLogger("awt.bench")
_CHUNK = 256   # images scored at once


def _file_name(rank: int, path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:60] or "image"
    return f"{rank:02d}_{stem}.html"


def explain_sweep(config: BenchConfig, output: str | os.PathLike, k: int, top_k: int = 3) -> list[Path]:
    """Write a gallery of the ``k`` strongest AWT/CLIP disagreements for every (backbone, dataset)
    with an ``awt`` run (run the sweep first: its features are read from the cache). Returns the pages."""
    output = Path(output)
    settings = config.settings
    cache_dir = settings.cache_dir or (output / "cache")
    runs = {}
    for run in plan_runs(config):
        if run.method == "awt":
            runs.setdefault((run.backbone.name, run.dataset.name), run)
    if not runs:
        _log.info("no awt run in the config: no gallery to make")
    pages = []
    backbones = {}
    for (bb_name, ds_name), run in runs.items():
        if run.dataset.video is not None:
            _log.info(f"{bb_name}/{ds_name}: a video dataset; galleries are made for image datasets only")
            continue
        ds = prepare_dataset(run.dataset, run.descriptions_per_class, config.path)
        if bb_name not in backbones:
            backbones.clear()   # one model in memory at a time
            backbones[bb_name] = load_backbone(run.backbone, settings, cache_dir)
        backbone = backbones[bb_name]
        spec = dataclasses.replace(class_spec(run, ds, cache_dir, settings.awt), decoding=settings.decoding)
        clf = AWTClassifier(backbone, spec)
        fs = compute_features(backbone, ds.images.paths, views=run.views, seed=run.seed, cache_dir=cache_dir,
                              batch_size=settings.batch_size, workers=settings.workers,
                              shard_batches=settings.shard_batches, description=f"features {run.label}",
                              decoding=settings.decoding,
                              meta={"backbone": bb_name, "dataset": ds_name, "model": backbone.name})
        rows = fs.valid.nonzero().flatten().tolist()
        feats = fs.features[rows, : run.views + 1]
        awt, clip = [], []
        with torch.inference_mode():
            for start in range(0, len(rows), _CHUNK):
                chunk = feats[start:start + _CHUNK].float()
                awt.append(clf.scores(chunk).cpu())
                clip.append(clip_scores(chunk.to(clf.text_features.device), clf.text_features, clf.logit_scale).cpu())
        picked = disagreements(torch.cat(awt), torch.cat(clip), k) if rows else []
        folder = output / "explain" / bb_name / ds_name
        folder.mkdir(parents=True, exist_ok=True)
        items = []
        for rank, (row, strength) in enumerate(picked, 1):
            index = rows[row]
            path = ds.images.paths[index]
            ex = clf.explain(path, top_k=top_k)
            name = _file_name(rank, path)
            write_report(ex, folder / name)
            thumb = ex.source.copy()
            thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
            label = ds.images.labels[index]
            items.append(GalleryItem(path, name, ds.prompt_names[label] if label is not None else None,
                                     ex.classes[0].name, ex.clip_name, strength, thumb))
        page = folder / "index.html"
        note = f"{len(rows)} images, {run.views} views, M = {run.descriptions_per_class}, seed {run.seed}."
        atomic_write_text(page, render_gallery(f"AWT against CLIP: {bb_name} on {ds_name}", items, note))
        _log.info(f"{bb_name}/{ds_name}: {len(items)} disagreement(s) explained -> {page}")
        pages.append(page)
    return pages
