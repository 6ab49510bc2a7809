"""Run planning: every distinct run of a config, with the settings the method really uses.

A run is one (backbone, dataset, method, views, descriptions per class, seed); a method listed in
``settings.repeats`` runs over that many consecutive seeds from each configured seed (WaffleCLIP's
seven draws). Runs record their
*effective* settings, from the method registry: a method that reads view 0 alone says ``views: 0``;
one that reads the template alone or CLIP's templates, or a dataset without descriptions, says
``descriptions_per_class: 0``; on a video dataset a multi-view method says ``views: 95``, the
video's 8 x 3 x 4 frame crops besides view 0; WaffleCLIP says ``descriptions_per_class: 30``, its random
descriptors, whatever M is swept; so sweeping a setting never repeats a run that it cannot change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..methods import get_method
from ..video_sampling import VideoSampling
from .config import BackboneSpec, BenchConfig, DatasetSpec, Settings

RUN_VERSION = 1


@dataclass
class Run:
    backbone: BackboneSpec
    dataset: DatasetSpec
    method: str
    views: int                       # effective: 0 for methods that read view 0 alone
    descriptions_per_class: int      # effective: 0 for template-only methods or without descriptions
    seed: int
    key: str = ""

    @property
    def label(self) -> str:
        return (f"{self.backbone.name}/{self.dataset.name}/{self.method} "
                f"views={self.views} M={self.descriptions_per_class} seed={self.seed}")

    def relpath(self) -> Path:
        return (Path("runs") / self.backbone.name / self.dataset.name /
                f"{self.method}_v{self.views}_m{self.descriptions_per_class}_s{self.seed}.json")


def effective_settings(method: str, views: int, per_class: int, has_descriptions: bool,
                       video: VideoSampling | None = None) -> tuple[int, int]:
    """(views, descriptions per class) that ``method`` really uses. On a ``video`` dataset the
    views are the video's (frames x crops x clips, less view 0), whatever ``views`` says."""
    m = get_method(method)
    return m.views_used(video.views - 1 if video else views), m.prompts.used(per_class, has_descriptions)


def method_seeds(method: str, settings: Settings) -> list[int]:
    """The seeds ``method`` runs with: each configured seed, followed, for a method repeated ``n``
    times (``settings.repeats``), by the ``n - 1`` seeds after it."""
    n = settings.repeats.get(method, 1)
    return list(dict.fromkeys(seed + i for seed in settings.seed for i in range(n)))


def plan_runs(config: BenchConfig) -> list[Run]:
    """Every distinct run of the config, ordered backbone, dataset, method, views, M, seed."""
    runs: dict[tuple, Run] = {}
    s = config.settings
    for bb in config.backbones:
        for ds in config.datasets:
            for method in config.methods:
                for views in s.views:
                    for per_class in s.descriptions_per_class:
                        for seed in method_seeds(method, s):
                            v, m = effective_settings(method, views, per_class, ds.descriptions is not None,
                                                      ds.video)
                            ident = (bb.name, ds.name, method, v, m, seed)
                            if ident not in runs:
                                run = Run(bb, ds, method, v, m, seed)
                                run.key = run_key(run, s)
                                runs[ident] = run
    return list(runs.values())


def resolved_precision(precision: str, device: str) -> str:
    """``auto`` as create_backbone reads it: fp16 on a GPU, fp32 elsewhere."""
    from ..backbones import resolve_device, resolve_precision

    return resolve_precision(precision, resolve_device(device))


def run_key(run: Run, settings: Settings) -> str:
    """Digest of everything that can change a run's numbers (not batch size or workers; the device
    only through the precision it implies)."""
    backbone = dict(run.backbone.identity, precision=resolved_precision(run.backbone.precision, settings.device))
    awt = vars(settings.awt) if get_method(run.method).uses_awt_config else None
    ident = {"version": RUN_VERSION, "backbone": backbone, "dataset": run.dataset.identity,
             "method": run.method, "views": run.views, "descriptions_per_class": run.descriptions_per_class,
             "seed": run.seed, "awt": awt}
    if settings.decoding.key():   # only when not the default: keys made before it existed stay valid
        ident["decoding"] = settings.decoding.key()
    return hashlib.blake2b(json.dumps(ident, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()
