"""Run records: one JSON file per run, with its numbers, its effective settings and its provenance."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..files import atomic_write_text

if TYPE_CHECKING:
    from ..backbones import Backbone
    from .config import BenchConfig
    from .features import FeatureSet
    from .plan import Run
    from .prepare import PreparedDataset

RUN_FORMAT = "awt-bench-run"


def versions() -> dict[str, str]:
    """The versions that can change a run's numbers."""
    import numpy
    import open_clip

    from .. import __version__

    return {"awt": __version__, "torch": torch.__version__, "open_clip": getattr(open_clip, "__version__", "?"),
            "numpy": numpy.__version__, "python": platform.python_version(), "platform": platform.platform()}


def device_info(backbone: "Backbone") -> dict[str, str]:
    """Where a run ran: the device, its name, and the precision as resolved (``auto`` is fp16 on a
    GPU and fp32 on the CPU; the config's own word is in the record's ``config.backbone``)."""
    dev = backbone.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": str(dev), "device_name": name, "precision": backbone.precision}


def read_record(path: Path) -> dict | None:
    """The run record at ``path``, or None if it is missing, unreadable or not a run record."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and data.get("format") == RUN_FORMAT else None
    except (OSError, ValueError):
        return None


def write_record(path: Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def make_record(run: "Run", ds: "PreparedDataset", fs: "FeatureSet", backbone: "Backbone", config: "BenchConfig", *,
                started: datetime, metrics: dict[str, float], images: int, views_used: int, source: str,
                score_time: float, text_time: float, device: dict, versions: dict) -> dict:
    """The record of one finished run."""
    share = (views_used + 1) / (fs.views + 1)
    encode_time = fs.encode_seconds * share
    wall = encode_time + score_time
    bb, settings = run.backbone, config.settings
    return {
        "format": RUN_FORMAT, "version": 1, "key": run.key,
        "created": started.isoformat(timespec="seconds"),
        "backbone": bb.name, "model": backbone.name if bb.model_cfg is None else "inline model_cfg",
        "pretrained": bb.pretrained or backbone.pretrained or "none", "library": backbone.library,
        "revision": backbone.pretrained,
        "dataset": ds.spec.name, "method": run.method,
        **({"split_of": ds.spec.split_of, "split": ds.spec.split} if ds.spec.split is not None else {}),
        "views": run.views, "descriptions_per_class": run.descriptions_per_class, "seed": run.seed,
        "images": images, "unreadable": len(fs.errors), "classes": len(ds.prompt_names),
        "top1": round(metrics["top1"], 4), "top5": round(metrics["top5"], 4),
        "mean_per_class_recall": round(metrics["mean_per_class_recall"], 4),
        "wall_time_s": round(wall, 4), "images_per_s": round(images / wall, 3) if wall > 0 else None,
        "encode_time_s": round(encode_time, 4), "encode_time_estimated": share < 1,
        "score_time_s": round(score_time, 4), "text_time_s": round(text_time, 4),
        "feature_source": source, "decoding": settings.decoding.as_record(),
        "features": {"file": str(fs.path), "source": fs.source, "views_encoded": fs.views, "views_used": views_used,
                     "seed": fs.seed, "encode_seconds": round(fs.encode_seconds, 4), "encoded_now": fs.encoded},
        **device,
        "versions": versions,
        "dataset_info": {"source": ds.images.source, "format": ds.images.format, "total_images": ds.total_images,
                         "subset": ds.subset_note, "duplicate_names": ds.duplicate_names,
                         "unreadable": {str(i): r for i, r in sorted(fs.errors.items())[:20]}},
        "config": {
            "file": str(config.path), "name": config.name,
            "backbone": {"name": bb.name, "model": bb.model or None, "pretrained": bb.pretrained,
                         "precision": bb.precision, "model_cfg": bb.model_cfg, "preprocess_cfg": bb.preprocess_cfg},
            "dataset": {"name": ds.spec.name, "path": str(ds.spec.path), "format": ds.spec.format,
                        "template": ds.spec.template,
                        "descriptions": str(ds.spec.descriptions) if ds.spec.descriptions else None,
                        "limit": ds.spec.limit, "subset_seed": ds.spec.subset_seed, "clean_names": ds.spec.clean_names,
                        "allow_fewer_descriptions": ds.spec.allow_fewer_descriptions, "part": ds.spec.part,
                        "repeated_names": ds.spec.repeated_names, "split": ds.spec.split,
                        "video": asdict(ds.spec.video) if ds.spec.video else None},
            "method": run.method, "views": run.views, "descriptions_per_class": run.descriptions_per_class,
            "seed": run.seed, "batch_size": settings.batch_size, "device": settings.device,
            "workers": settings.workers, "awt": vars(settings.awt), "decoding": settings.decoding.as_record(),
        },
    }
