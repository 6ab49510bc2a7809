"""The sweep: one config in, a record per run on disk, one comparable table out.

A run is one (backbone, dataset, method, views, descriptions per class, seed). Runs record their
*effective* settings: the view-0 methods (``clip``, ``ensemble``, ``awt-text``) use no random views
and say ``views: 0``; the template-only methods (``clip``, ``awt-image``) use no descriptions and say
``descriptions_per_class: 0``; so sweeping a setting never repeats a run that it cannot change.

Per (backbone, dataset, seed), image features are encoded once, for each number of views a
multi-view method asks for, and every method is scored from them; the view-0 methods take view 0 of
a set already there (view 0, the plain centre crop, does not depend on the views or the seed).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..classifier import METHODS, VIEW0_METHODS, AWTClassifier
from ..errors import AWTError
from ..prompts import DEFAULT_TEMPLATE, warn_duplicates
from ..scoring import AWTConfig
from .datasets import FORMATS, LabeledImages, clean_classname, read_dataset, stratified_subset
from .features import FeatureSet, atomic_write_text, compute_features, feature_key

RUN_FORMAT = "awt-bench-run"
RUN_VERSION = 1
TEMPLATE_ONLY_METHODS = ("clip", "awt-image")   # prompt 0 only: descriptions change nothing
MULTIVIEW_METHODS = tuple(m for m in METHODS if m not in VIEW0_METHODS)

TOP_KEYS = ("name", "description", "data_root", "descriptions_root", "methods", "settings", "backbones", "datasets")
SETTINGS_KEYS = ("views", "descriptions_per_class", "seed", "limit", "subset_seed", "batch_size", "device",
                 "precision", "workers", "cache_dir", "shard_batches", "allow_fewer_descriptions", "clean_names", "awt")
AWT_KEYS = ("image_temperature", "text_temperature", "epsilon", "max_iter", "tol")
BACKBONE_KEYS = ("name", "model", "pretrained", "precision", "model_cfg", "preprocess_cfg")
DATASET_KEYS = ("name", "path", "format", "image_dir", "classnames", "classname_column", "part", "template",
                "descriptions", "limit", "subset_seed", "clean_names", "allow_fewer_descriptions")
_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_DEFAULT_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                       "interpolation": "bicubic", "resize_mode": "shortest"}


# -- metrics ----------------------------------------------------------------------------------------

def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Percentage of rows whose label is among their ``k`` best scores (all classes when fewer than ``k``)."""
    if len(labels) == 0:
        return float("nan")
    k = max(1, min(k, scores.shape[1]))
    top = scores.topk(k, dim=1).indices
    return 100.0 * float((top == labels.view(-1, 1).to(top.device)).any(1).float().mean())


def mean_per_class_recall(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present in ``labels`` of the share of their images predicted right (%)."""
    if len(labels) == 0:
        return float("nan")
    labels = labels.to(predicted.device)
    recalls = [float((predicted[labels == c] == c).float().mean()) for c in labels.unique().tolist()]
    return 100.0 * sum(recalls) / len(recalls)


def metrics_from_topk(top: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top-1, top-5 and mean per-class recall (%) from each image's ranked (up to 5) class indices."""
    if len(labels) == 0:
        return {"top1": float("nan"), "top5": float("nan"), "mean_per_class_recall": float("nan")}
    labels = labels.view(-1, 1).to(top.device)
    return {
        "top1": 100.0 * float((top[:, :1] == labels).any(1).float().mean()),
        "top5": 100.0 * float((top[:, :5] == labels).any(1).float().mean()),
        "mean_per_class_recall": mean_per_class_recall(top[:, 0], labels.flatten()),
    }


def compute_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Metrics of a (images, classes) score matrix against integer labels."""
    k = min(5, scores.shape[1])
    return metrics_from_topk(scores.topk(k, dim=1).indices, labels)


# -- the config --------------------------------------------------------------------------------------

@dataclass
class BackboneSpec:
    name: str
    model: str                      # what create_backbone gets (an inline config becomes local-dir: later)
    pretrained: str | None
    precision: str
    model_cfg: dict | None = None
    preprocess_cfg: dict | None = None
    identity: dict = field(default_factory=dict)   # as written, for run keys


@dataclass
class DatasetSpec:
    name: str
    path: Path
    format: str
    template: str
    descriptions: Path | None
    limit: int | None
    subset_seed: int
    clean_names: bool
    allow_fewer_descriptions: bool
    image_dir: Path | None = None
    classnames: Path | None = None
    classname_column: str | None = None
    part: str = "test"
    identity: dict = field(default_factory=dict)


@dataclass
class Settings:
    views: list[int]
    descriptions_per_class: list[int]
    seeds: list[int]
    batch_size: int = 8
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None
    cache_dir: Path | None = None
    shard_batches: int = 16
    awt: AWTConfig = AWTConfig()


@dataclass
class BenchConfig:
    path: Path
    name: str
    methods: list[str]
    backbones: list[BackboneSpec]
    datasets: list[DatasetSpec]
    settings: Settings
    raw: dict


def _fail(path: Path, key: str, message: str) -> AWTError:
    return AWTError(f"{path}: {key}: {message}")


def _check_keys(obj: Any, known: Sequence[str], where: str, path: Path) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise _fail(path, where or "config", f"must be a mapping, got {type(obj).__name__}")
    for k in obj:
        if k not in known:
            key = f"{where}.{k}" if where else str(k)
            raise _fail(path, key, f"unknown key (known: {', '.join(known)})")
    return obj


def _entries(top: dict, section: str, known: Sequence[str], path: Path) -> list[tuple[str, dict]]:
    """The mappings of a non-empty list section, each with its key (``datasets[2]``), keys checked."""
    raw = top.get(section)
    if not isinstance(raw, list) or not raw:
        raise _fail(path, section, "must be a non-empty list")
    return [(f"{section}[{i}]", _check_keys(item, known, f"{section}[{i}]", path)) for i, item in enumerate(raw)]


def _as_int(value: Any, key: str, path: Path, minimum: int | None = None, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, key, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise _fail(path, key, f"must be >= {minimum}, got {value}")
    return value


def _as_int_list(value: Any, key: str, path: Path, minimum: int) -> list[int]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _fail(path, key, "must not be empty")
    out = [_as_int(v, key, path, minimum) for v in values]
    return list(dict.fromkeys(out))


def _as_bool(value: Any, key: str, path: Path) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, key, f"must be true or false, got {value!r}")
    return value


def _as_str(value: Any, key: str, path: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, key, f"must be a non-empty string, got {value!r}")
    return value


def _resolve(value: str, base: Path, key: str = "", config: Path | None = None) -> Path:
    """``~`` and ``$VARS`` expanded; relative to ``base``."""
    expanded = os.path.expandvars(os.path.expanduser(value))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset and config is not None:
        raise _fail(config, key, f"environment variable {unset[0]} is not set (in {value!r}); set it or write the path")
    p = Path(expanded)
    return p if p.is_absolute() else base / p


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def _looks_like_path(value: str) -> bool:
    return "/" in value or os.sep in value or value.endswith(_CHECKPOINT_SUFFIXES)


def load_config(path: str | os.PathLike, device: str | None = None) -> BenchConfig:
    """Read and check a benchmark config; relative paths are relative to the config file's folder.

    Every problem is an AWTError naming the file and the key (``datasets[1].descriptions: ... not found``).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise AWTError(f"{path}: benchmark config not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AWTError(f"{path}: not a readable YAML file: {first}") from None
    top = _check_keys(raw, TOP_KEYS, "", path)
    if not top:
        raise AWTError(f"{path}: empty config")
    base = path.resolve().parent
    data_root = (_resolve(_as_str(top["data_root"], "data_root", path), base, "data_root", path)
                 if top.get("data_root") is not None else base)
    if not data_root.is_dir():
        raise _fail(path, "data_root", f"{data_root} not found")
    desc_root = (_resolve(_as_str(top["descriptions_root"], "descriptions_root", path), base, "descriptions_root", path)
                 if top.get("descriptions_root") is not None else base)

    # methods
    methods_raw = top.get("methods", list(METHODS))
    if methods_raw == "all":
        methods_raw = list(METHODS)
    if isinstance(methods_raw, str):
        methods_raw = [methods_raw]
    if not isinstance(methods_raw, list) or not methods_raw:
        raise _fail(path, "methods", f"must be a list of methods ({', '.join(METHODS)}) or 'all'")
    for i, m in enumerate(methods_raw):
        if m not in METHODS:
            raise _fail(path, f"methods[{i}]", f"unknown method {m!r} (choose from {', '.join(METHODS)})")
    methods = list(dict.fromkeys(methods_raw))

    # settings
    s = _check_keys(top.get("settings"), SETTINGS_KEYS, "settings", path)
    awt_raw = _check_keys(s.get("awt"), AWT_KEYS, "settings.awt", path)
    try:
        awt_cfg = AWTConfig(**{k: (int(v) if k == "max_iter" else float(v)) for k, v in awt_raw.items()})
    except (TypeError, ValueError) as e:
        raise _fail(path, "settings.awt", str(e)) from None
    settings = Settings(
        views=_as_int_list(s.get("views", 50), "settings.views", path, 0),
        descriptions_per_class=_as_int_list(s.get("descriptions_per_class", 50), "settings.descriptions_per_class", path, 0),
        seeds=_as_int_list(s.get("seed", 0), "settings.seed", path, 0),
        batch_size=_as_int(s.get("batch_size", 8), "settings.batch_size", path, 1),
        device=device or _as_str(s.get("device", "auto"), "settings.device", path),
        precision=_as_str(s.get("precision", "auto"), "settings.precision", path),
        workers=_as_int(s.get("workers"), "settings.workers", path, 0, allow_none=True),
        cache_dir=(_resolve(_as_str(s["cache_dir"], "settings.cache_dir", path), base, "settings.cache_dir", path)
                   if s.get("cache_dir") else None),
        shard_batches=_as_int(s.get("shard_batches", 16), "settings.shard_batches", path, 1),
        awt=awt_cfg,
    )
    from ..backbone import PRECISIONS, resolve_device

    try:
        resolve_device(settings.device)
    except AWTError as e:
        raise _fail(path, "settings.device", str(e)) from None
    default_limit = _as_int(s.get("limit"), "settings.limit", path, 1, allow_none=True)
    default_subset_seed = _as_int(s.get("subset_seed", 0), "settings.subset_seed", path, 0)
    default_clean = _as_bool(s.get("clean_names", True), "settings.clean_names", path)
    default_fewer = _as_bool(s.get("allow_fewer_descriptions", False), "settings.allow_fewer_descriptions", path)

    # backbones
    backbones: list[BackboneSpec] = []
    for key, b in _entries(top, "backbones", BACKBONE_KEYS, path):
        precision = _as_str(b.get("precision", settings.precision), f"{key}.precision", path)
        if precision not in PRECISIONS:
            where = f"{key}.precision" if "precision" in b else "settings.precision"
            raise _fail(path, where, f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
        if b.get("model_cfg") is not None:
            if b.get("model") is not None:
                raise _fail(path, key, "give either model or model_cfg, not both")
            if not isinstance(b["model_cfg"], dict):
                raise _fail(path, f"{key}.model_cfg", "must be a mapping (an open_clip model config)")
            if b.get("preprocess_cfg") is not None and not isinstance(b["preprocess_cfg"], dict):
                raise _fail(path, f"{key}.preprocess_cfg", "must be a mapping")
            identity = {"model_cfg": b["model_cfg"], "preprocess_cfg": b.get("preprocess_cfg"), "precision": precision}
            digest = hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=4).hexdigest()
            name = _slug(str(b.get("name") or f"inline-{digest}"))
            backbones.append(BackboneSpec(name, "", None, precision, b["model_cfg"], b.get("preprocess_cfg"), identity))
            continue
        if b.get("preprocess_cfg") is not None:
            raise _fail(path, f"{key}.preprocess_cfg", "only goes with model_cfg")
        model = _as_str(b.get("model"), f"{key}.model", path)
        pretrained = b.get("pretrained")
        if model.startswith("local-dir:"):
            local = _resolve(model[len("local-dir:"):], base, f"{key}.model", path)
            if not local.is_dir():
                raise _fail(path, f"{key}.model", f"{local} not found")
            model = f"local-dir:{local}"
        elif pretrained is None and not model.startswith("hf-hub:"):
            raise _fail(path, f"{key}.pretrained", "required: a pretrained tag, a checkpoint file, or none")
        if pretrained is not None:
            pretrained = _as_str(str(pretrained), f"{key}.pretrained", path)
            if _looks_like_path(pretrained):
                ckpt = _resolve(pretrained, base, f"{key}.pretrained", path)
                if not ckpt.is_file():
                    raise _fail(path, f"{key}.pretrained", f"checkpoint {ckpt} not found")
                pretrained = str(ckpt)
        identity = {"model": b.get("model"), "pretrained": b.get("pretrained"), "precision": precision}
        name = _slug(str(b.get("name") or (model.split(":", 1)[-1].rsplit("/", 1)[-1] + f"-{pretrained or 'none'}")))
        backbones.append(BackboneSpec(name, model, pretrained, precision, None, None, identity))
    _unique([b.name for b in backbones], "backbones", path)

    # datasets
    datasets: list[DatasetSpec] = []
    for key, d in _entries(top, "datasets", DATASET_KEYS, path):
        where = f"{key}" + (f" ({d['name']})" if isinstance(d.get("name"), str) else "")
        ds_path = _resolve(_as_str(d.get("path"), f"{where}.path", path), data_root, f"{where}.path", path)
        if not ds_path.exists():
            raise _fail(path, f"{where}.path", f"{ds_path} not found")
        fmt = d.get("format", "auto")
        if fmt not in FORMATS:
            raise _fail(path, f"{where}.format", f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
        template = _as_str(d.get("template", DEFAULT_TEMPLATE), f"{where}.template", path)
        if "{}" not in template:
            raise _fail(path, f"{where}.template", f"{template!r} has no '{{}}' for the class name")
        desc = None
        if d.get("descriptions") is not None:
            desc = _resolve(_as_str(d["descriptions"], f"{where}.descriptions", path), desc_root,
                            f"{where}.descriptions", path)
            if not desc.is_file():
                raise _fail(path, f"{where}.descriptions", f"descriptions file {desc} not found")
        extra_paths = {}
        for k in ("image_dir", "classnames"):
            if d.get(k) is not None:
                p = _resolve(_as_str(d[k], f"{where}.{k}", path), data_root, f"{where}.{k}", path)
                if not p.exists():
                    raise _fail(path, f"{where}.{k}", f"{p} not found")
                extra_paths[k] = p
        name = _slug(str(d.get("name") or ds_path.stem))
        spec = DatasetSpec(
            name=name, path=ds_path, format=fmt, template=template, descriptions=desc,
            limit=_as_int(d.get("limit", default_limit), f"{where}.limit", path, 1, allow_none=True),
            subset_seed=_as_int(d.get("subset_seed", default_subset_seed), f"{where}.subset_seed", path, 0),
            clean_names=_as_bool(d.get("clean_names", default_clean), f"{where}.clean_names", path),
            allow_fewer_descriptions=_as_bool(d.get("allow_fewer_descriptions", default_fewer),
                                              f"{where}.allow_fewer_descriptions", path),
            image_dir=extra_paths.get("image_dir"), classnames=extra_paths.get("classnames"),
            classname_column=d.get("classname_column"), part=str(d.get("part", "test")),
        )
        spec.identity = {
            "path": d.get("path"), "format": fmt, "image_dir": d.get("image_dir"), "classnames": d.get("classnames"),
            "classname_column": spec.classname_column, "part": spec.part, "template": template,
            "descriptions": d.get("descriptions"), "descriptions_sha": _file_digest(desc) if desc else None,
            "limit": spec.limit, "subset_seed": spec.subset_seed, "clean_names": spec.clean_names,
            "allow_fewer_descriptions": spec.allow_fewer_descriptions,
        }
        datasets.append(spec)
    _unique([d.name for d in datasets], "datasets", path)
    name = str(top.get("name") or path.stem)
    return BenchConfig(path, name, methods, backbones, datasets, settings, raw)


def _unique(names: list[str], key: str, path: Path) -> None:
    seen = set()
    for i, n in enumerate(names):
        if n in seen:
            raise _fail(path, f"{key}[{i}].name", f"{n!r} is used twice; give each entry its own name")
        seen.add(n)


def _file_digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=12).hexdigest()


# -- the plan ----------------------------------------------------------------------------------------

@dataclass
class Run:
    backbone: BackboneSpec
    dataset: DatasetSpec
    method: str
    views: int                       # effective: 0 for the view-0 methods
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


def effective_settings(method: str, views: int, per_class: int, has_descriptions: bool) -> tuple[int, int]:
    v = 0 if method in VIEW0_METHODS else views
    m = 0 if (method in TEMPLATE_ONLY_METHODS or not has_descriptions) else per_class
    return v, m


def plan_runs(config: BenchConfig) -> list[Run]:
    """Every distinct run of the config, ordered backbone, dataset, method, views, M, seed."""
    runs: dict[tuple, Run] = {}
    s = config.settings
    for bb in config.backbones:
        for ds in config.datasets:
            for method in config.methods:
                for views in s.views:
                    for per_class in s.descriptions_per_class:
                        for seed in s.seeds:
                            v, m = effective_settings(method, views, per_class, ds.descriptions is not None)
                            ident = (bb.name, ds.name, method, v, m, seed)
                            if ident not in runs:
                                run = Run(bb, ds, method, v, m, seed)
                                run.key = run_key(run, s)
                                runs[ident] = run
    return list(runs.values())


def resolved_precision(precision: str, device: str) -> str:
    """``auto`` as create_backbone reads it: fp16 on a GPU, fp32 elsewhere."""
    if precision != "auto":
        return precision
    from ..backbone import resolve_device

    return "fp16" if resolve_device(device).type == "cuda" else "fp32"


def run_key(run: Run, settings: Settings) -> str:
    """Digest of everything that can change a run's numbers (not batch size or workers; the device
    only through the precision it implies)."""
    backbone = dict(run.backbone.identity, precision=resolved_precision(run.backbone.precision, settings.device))
    ident = {"version": RUN_VERSION, "backbone": backbone, "dataset": run.dataset.identity,
             "method": run.method, "views": run.views, "descriptions_per_class": run.descriptions_per_class,
             "seed": run.seed, "awt": vars(settings.awt) if run.method.startswith("awt") else None}
    return hashlib.blake2b(json.dumps(ident, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


# -- preparing datasets and backbones ----------------------------------------------------------------

@dataclass
class PreparedDataset:
    spec: DatasetSpec
    images: LabeledImages            # the (limited) images scored
    total_images: int
    prompt_names: list[str]
    descriptions: list[list[str]] | None
    subset_note: str


def prepare_dataset(spec: DatasetSpec, per_class_needed: int, config_path: Path) -> PreparedDataset:
    full = read_dataset(spec.path, spec.format, image_dir=spec.image_dir, classnames=spec.classnames,
                        classname_column=spec.classname_column, part=spec.part)
    if spec.limit is not None and spec.limit < len(full):
        images = full.subset(stratified_subset(full.paths, full.labels, spec.limit, spec.subset_seed))
        covered = len(set(images.labels))
        note = (f"{len(images)} of {len(full)} images, class-stratified round robin (subset_seed "
                f"{spec.subset_seed}), {covered} of {len(full.classnames)} classes")
    else:
        images, note = full, f"all {len(full)} images"
    warn_duplicates(full.classnames, spec.name)
    prompt_names = [clean_classname(n) for n in full.classnames] if spec.clean_names else list(full.classnames)
    aligned = None
    if spec.descriptions is not None:
        from ..descriptions import load_descriptions

        aligned = load_descriptions(spec.descriptions).for_classes(full.classnames)
        if per_class_needed and not spec.allow_fewer_descriptions:
            short = [(n, len(d)) for n, d in zip(full.classnames, aligned) if len(d) < per_class_needed]
            if short:
                listed = ", ".join(f"{n!r} ({k})" for n, k in short[:5])
                raise AWTError(f"{config_path}: datasets ({spec.name}).descriptions: {len(short)} class(es) have fewer "
                               f"than {per_class_needed} descriptions in {spec.descriptions}: {listed}; lower "
                               "settings.descriptions_per_class or set allow_fewer_descriptions: true")
    return PreparedDataset(spec, images, len(full), prompt_names, aligned, note)


def _write_inline_model(spec: BackboneSpec, cache_dir: Path) -> str:
    doc = {"model_cfg": spec.model_cfg, "preprocess_cfg": spec.preprocess_cfg or _DEFAULT_PREPROCESS}
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    digest = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    folder = cache_dir / "models" / f"{spec.name}-{digest}"
    target = folder / "open_clip_config.json"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        atomic_write_text(target, text)
    return f"local-dir:{folder.resolve()}"


def load_backbone(spec: BackboneSpec, settings: Settings, cache_dir: Path):
    from ..backbone import create_backbone

    model = _write_inline_model(spec, cache_dir) if spec.model_cfg is not None else spec.model
    return create_backbone(model, spec.pretrained, settings.device, spec.precision)


# -- running -----------------------------------------------------------------------------------------

@dataclass
class BenchResult:
    records: list[dict]               # one per planned run, in plan order
    ran: list[str]                    # labels of runs made now
    skipped: list[str]                # labels of runs found on disk
    feature_sets: list[dict]          # each feature set used now: where it came from
    files: dict[str, Path]            # summary files written
    seconds: float


def _versions() -> dict[str, str]:
    import numpy
    import open_clip

    from .. import __version__

    return {"awt": __version__, "torch": torch.__version__, "open_clip": getattr(open_clip, "__version__", "?"),
            "numpy": numpy.__version__, "python": platform.python_version(), "platform": platform.platform()}


def _device_info(backbone) -> dict[str, str]:
    dev = backbone.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": str(dev), "device_name": name, "precision": backbone.precision}


def _read_record(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and data.get("format") == RUN_FORMAT else None
    except (OSError, ValueError):
        return None


def run_bench(
    config: BenchConfig,
    output: str | os.PathLike,
    *,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> BenchResult:
    """Run every run of ``config`` that is not on disk yet (all of them with ``force``), then summarise."""
    from .report import write_summary

    started = time.perf_counter()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    settings = config.settings
    cache_dir = settings.cache_dir or (output / "cache")
    plan = plan_runs(config)
    records: dict[str, dict] = {}
    pending: list[Run] = []
    ran, skipped = [], []
    for run in plan:
        path = output / run.relpath()
        old = _read_record(path) if path.is_file() else None
        if old is not None and old.get("key") == run.key and not force:
            records[run.key] = old
            skipped.append(run.label)
            continue
        if old is not None and old.get("key") != run.key and not force:
            log(f"rerun {run.label}: its settings changed since {path} was written")
        pending.append(run)
    log(f"{config.name}: {len(plan)} runs, {len(skipped)} already on disk, {len(pending)} to run"
        + (" (--force)" if force and plan else ""))
    for label in skipped:
        log(f"skip {label}: on disk")

    feature_log: list[dict] = []
    if pending:
        # read every dataset (and its descriptions) first: a bad path fails before any model loads
        prepared: dict[str, PreparedDataset] = {}
        for run in pending:
            if run.dataset.name not in prepared:
                need = max([r.descriptions_per_class for r in pending if r.dataset.name == run.dataset.name])
                prepared[run.dataset.name] = prepare_dataset(run.dataset, need, config.path)
                log(f"dataset {run.dataset.name}: {prepared[run.dataset.name].subset_note}, "
                    f"{len(prepared[run.dataset.name].prompt_names)} classes")
                if run.dataset.descriptions is None:
                    log(f"note: dataset {run.dataset.name} has no descriptions: every method uses the template "
                        "alone (M=0)")
        versions = _versions()
        try:
            _run_pending(pending, prepared, config, settings, cache_dir, output, records, ran, progress, log,
                         feature_log, versions)
        except KeyboardInterrupt:
            log(f"interrupted: {len(ran)} run(s) finished now and are on disk; encoded features are kept -- "
                "run the same command again to go on")
            raise
    ordered = [records[r.key] for r in plan if r.key in records]
    files = write_summary(output, ordered, config)
    return BenchResult(ordered, ran, skipped, feature_log, files, time.perf_counter() - started)


def _run_pending(pending: list[Run], prepared: dict, config: BenchConfig, settings: Settings, cache_dir: Path,
                 output: Path, records: dict, ran: list, progress: bool, log: Callable[[str], None],
                 feature_log: list, versions: dict) -> None:
    for bb_spec in _ordered({r.backbone.name: r.backbone for r in pending}):
        bb_runs = [r for r in pending if r.backbone.name == bb_spec.name]
        t = time.perf_counter()
        backbone = load_backbone(bb_spec, settings, cache_dir)
        device = _device_info(backbone)
        log(f"backbone {bb_spec.name}: {backbone.name} on {device['device']} ({device['precision']}), "
            f"loaded in {time.perf_counter() - t:.1f} s")
        state = {"batch_size": settings.batch_size}
        for ds_name in _ordered({r.dataset.name: r.dataset.name for r in bb_runs}):
            ds = prepared[ds_name]
            classifiers: dict[int, tuple[AWTClassifier, float]] = {}
            for seed in _ordered({r.seed: r.seed for r in bb_runs if r.dataset.name == ds_name}):
                group = [r for r in bb_runs if r.dataset.name == ds_name and r.seed == seed]
                sets: dict[int, FeatureSet] = {}
                used: set[int] = set()
                for run in group:
                    fs, first_use = _features_for(run, group, sets, used, backbone, ds, settings, cache_dir,
                                                  state, progress, log, feature_log)
                    record = _execute(run, ds, fs, first_use, backbone, classifiers, settings, cache_dir,
                                      device, versions, config, progress)
                    atomic_write_text(output / run.relpath(), json.dumps(record, indent=1, ensure_ascii=False) + "\n")
                    records[run.key] = record
                    ran.append(run.label)
                    log(f"done {run.label}: top-1 {record['top1']:.2f}  top-5 {record['top5']:.2f}  "
                        f"recall {record['mean_per_class_recall']:.2f}  ({record['images']} images, "
                        f"features {record['feature_source']}, scored in {record['score_time_s']:.2f} s)")
        del backbone
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _ordered(mapping: dict) -> list:
    return list(mapping.values())


def _features_for(run: Run, group: list[Run], sets: dict[int, FeatureSet], used: set[int], backbone,
                  ds: PreparedDataset, settings: Settings, cache_dir: Path, state: dict, progress: bool,
                  log: Callable[[str], None], feature_log: list[dict]) -> tuple[FeatureSet, bool]:
    """The feature set ``run`` scores from, encoding it if neither memory nor disk holds it."""
    if run.method in VIEW0_METHODS:
        # view 0 is the same in every set of this seed: take one in memory, else one on disk, else encode 0 views
        multi = [r.views for r in group if r.method not in VIEW0_METHODS]
        if sets:
            views = next(iter(sets))
        elif multi:
            views = multi[0]
        else:
            on_disk = [v for v in settings.views if (cache_dir / "features" / (
                feature_key(backbone.fingerprint, ds.images.paths, v, run.seed) + ".pt")).is_file()]
            views = on_disk[0] if on_disk else 0
    else:
        views = run.views
    if views not in sets:
        what = f"features {run.backbone.name}/{run.dataset.name} views={views} seed={run.seed}"
        t = time.perf_counter()
        fs = compute_features(
            backbone, ds.images.paths, views=views, seed=run.seed, cache_dir=cache_dir,
            batch_size=state["batch_size"], workers=settings.workers, shard_batches=settings.shard_batches,
            progress=progress, description=what, log=log,
            meta={"backbone": run.backbone.name, "dataset": run.dataset.name, "model": backbone.name},
        )
        state["batch_size"] = fs.batch_size  # an out-of-memory halving holds for the rest of the sweep
        took = time.perf_counter() - t
        if fs.source == "cached":
            log(f"{what}: loaded from cache ({len(fs)} images) {fs.path}")
        else:
            log(f"{what}: {fs.source} -- encoded {fs.encoded} images x {views + 1} views in {took:.1f} s "
                f"({fs.encoded / max(took, 1e-9):.1f} images/s) -> {fs.path}")
        feature_log.append({"backbone": run.backbone.name, "dataset": run.dataset.name, "views": views,
                            "seed": run.seed, "source": fs.source, "encoded": fs.encoded, "file": str(fs.path)})
        sets[views] = fs
    first_use = views not in used
    used.add(views)
    return sets[views], first_use


def _execute(run: Run, ds: PreparedDataset, fs: FeatureSet, first_use: bool, backbone,
             classifiers: dict, settings: Settings, cache_dir: Path, device: dict, versions: dict,
             config: BenchConfig, progress: bool = False) -> dict:
    from tqdm.auto import tqdm

    started = datetime.now(timezone.utc)
    m = run.descriptions_per_class
    if m not in classifiers:
        t = time.perf_counter()
        clf = AWTClassifier(
            backbone, ds.prompt_names, template=ds.spec.template,
            descriptions=ds.descriptions if (m > 0 and ds.descriptions is not None) else None,
            descriptions_per_class=m, allow_fewer_descriptions=ds.spec.allow_fewer_descriptions,
            views=0, seed=run.seed, config=settings.awt, cache_dir=cache_dir,
        )
        classifiers[m] = (clf, time.perf_counter() - t)
    clf, text_time = classifiers[m]

    valid = fs.valid
    labels = torch.tensor(ds.images.labels, dtype=torch.long)[valid]
    used_views = run.views if run.method not in VIEW0_METHODS else 0
    feats = fs.features[:, : used_views + 1]
    if not bool(valid.all()):
        feats = feats[valid]
    k = min(5, len(ds.prompt_names))
    tops = []
    chunk = 256
    with torch.inference_mode():
        if feats.shape[0]:
            clf.scores(feats[:1].float(), run.method)  # warm-up: first-call costs stay out of the timing
            if backbone.device.type == "cuda":
                torch.cuda.synchronize(backbone.device)
        t = time.perf_counter()
        starts = range(0, feats.shape[0], chunk)
        for start in tqdm(starts, desc=f"score {run.label}", unit="chunk", file=sys.stderr, leave=False,
                          disable=not progress or len(starts) < 4, dynamic_ncols=True):
            scores = clf.scores(feats[start:start + chunk].float(), run.method)
            tops.append(scores.topk(k, dim=1).indices.cpu())
        if backbone.device.type == "cuda":
            torch.cuda.synchronize(backbone.device)
    score_time = time.perf_counter() - t
    top = torch.cat(tops) if tops else torch.empty(0, k, dtype=torch.long)
    metrics = metrics_from_topk(top, labels)
    n = int(labels.numel())
    share = (used_views + 1) / (fs.views + 1)
    encode_time = fs.encode_seconds * share
    wall = encode_time + score_time
    if fs.source == "cached":
        source = "cached"
    else:
        source = fs.source if first_use else "reused"
    bb = run.backbone
    return {
        "format": RUN_FORMAT, "version": RUN_VERSION, "key": run.key,
        "created": started.isoformat(timespec="seconds"),
        "backbone": bb.name, "model": backbone.name if bb.model_cfg is None else "inline model_cfg",
        "pretrained": bb.pretrained or "none",
        "dataset": ds.spec.name, "method": run.method,
        "views": run.views, "descriptions_per_class": run.descriptions_per_class, "seed": run.seed,
        "images": n, "unreadable": len(fs.errors), "classes": len(ds.prompt_names),
        "top1": round(metrics["top1"], 4), "top5": round(metrics["top5"], 4),
        "mean_per_class_recall": round(metrics["mean_per_class_recall"], 4),
        "wall_time_s": round(wall, 4), "images_per_s": round(n / wall, 3) if wall > 0 else None,
        "encode_time_s": round(encode_time, 4), "encode_time_estimated": share < 1,
        "score_time_s": round(score_time, 4), "text_time_s": round(text_time, 4),
        "feature_source": source,
        "features": {"file": str(fs.path), "source": fs.source, "views_encoded": fs.views, "views_used": used_views,
                     "seed": fs.seed, "encode_seconds": round(fs.encode_seconds, 4), "encoded_now": fs.encoded},
        **device,
        "versions": versions,
        "dataset_info": {"source": ds.images.source, "format": ds.images.format, "total_images": ds.total_images,
                         "subset": ds.subset_note, "unreadable": {str(i): r for i, r in sorted(fs.errors.items())[:20]}},
        "config": {
            "file": str(config.path), "name": config.name,
            "backbone": {"name": bb.name, "model": bb.model or None, "pretrained": bb.pretrained,
                         "precision": bb.precision, "model_cfg": bb.model_cfg, "preprocess_cfg": bb.preprocess_cfg},
            "dataset": {"name": ds.spec.name, "path": str(ds.spec.path), "format": ds.spec.format,
                        "template": ds.spec.template,
                        "descriptions": str(ds.spec.descriptions) if ds.spec.descriptions else None,
                        "limit": ds.spec.limit, "subset_seed": ds.spec.subset_seed, "clean_names": ds.spec.clean_names,
                        "allow_fewer_descriptions": ds.spec.allow_fewer_descriptions, "part": ds.spec.part},
            "method": run.method, "views": run.views, "descriptions_per_class": run.descriptions_per_class,
            "seed": run.seed, "batch_size": settings.batch_size, "device": settings.device,
            "workers": settings.workers, "awt": vars(settings.awt),
        },
    }
