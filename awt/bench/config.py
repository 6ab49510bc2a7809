"""Benchmark configs: the YAML schema as dataclasses, and its loader.

A config names backbones, datasets, methods and settings; every run of the sweep is one (backbone,
dataset, method, views, descriptions per class, seed). The keys a section accepts are its
dataclass's fields, so the schema has one home. Every problem is an AWTError naming the file and
the key: ``bench.yaml: datasets[1] (dtd).descriptions: descriptions file ... not found``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import defaults
from ..defaults import PRECISIONS
from ..errors import AWTError, SettingError, first_line, yaml_problem
from ..backbones.names import resolve_model
from ..images import Decoding
from ..methods import get_method, method_names
from ..prompt_sets import check_template
from ..scoring import AWTConfig
from ..video_sampling import VideoSampling
from .config_values import as_bool, as_int, as_int_list, as_number, as_str, check_keys, entries, fail, resolve, slug
from .datasets import READERS, formats
from .layouts import explain_all_missing, explain_missing

_INTERNAL = {"config": False}   # a field that is not a config key
# How classes take the entries of a name that a plain descriptions file repeats: "in_order", the k-th
# class of that name takes the k-th entry; "last", every class of it takes the last entry, as
# ``json.load`` (the AWT authors' reader) keeps it.
REPEATED_NAMES = ("in_order", "last")


def config_keys(cls) -> tuple[str, ...]:
    """The keys a config section accepts: its dataclass's fields, less the internal ones."""
    return tuple(f.name for f in fields(cls) if f.metadata.get("config", True))


@dataclass
class BackboneSpec:
    name: str
    model: str                      # what create_backbone gets (an inline config becomes local-dir: later)
    pretrained: str | None
    precision: str
    model_cfg: dict | None = None   # an inline open_clip model config (random weights)
    preprocess_cfg: dict | None = None
    identity: dict = field(default_factory=dict, metadata=_INTERNAL)   # as written, for run keys


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
    repeated_names: str = "in_order"   # a name the descriptions file repeats: see REPEATED_NAMES
    splits: list[int] | None = None    # a video dataset's splits to run (1, 2, 3): one dataset each
    split: int | None = field(default=None, metadata=_INTERNAL)         # this one's split
    split_of: str | None = field(default=None, metadata=_INTERNAL)      # the entry's name, its splits' group
    video: VideoSampling | None = field(default=None, metadata=_INTERNAL)   # a video dataset's frames
    identity: dict = field(default_factory=dict, metadata=_INTERNAL)


@dataclass
class Settings:
    views: list[int] = field(default_factory=lambda: [defaults.VIEWS])
    descriptions_per_class: list[int] = field(default_factory=lambda: [defaults.DESCRIPTIONS_PER_CLASS])
    seed: list[int] = field(default_factory=lambda: [defaults.SEED])
    batch_size: int = defaults.BATCH_SIZE
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None
    cache_dir: Path | None = None
    shard_batches: int = 16          # loader batches per feature part on disk
    limit: int | None = None         # the datasets' defaults from here on
    subset_seed: int = 0
    clean_names: bool = True
    allow_fewer_descriptions: bool = False
    repeated_names: str = "in_order"
    awt: AWTConfig = AWTConfig()
    decoding: Decoding = Decoding()  # how image files are read (awt.images.Decoding)
    video: VideoSampling = VideoSampling()   # a video's views (awt.video_sampling): frames, crops, clips
    repeats: dict[str, int] = field(default_factory=dict)  # method -> seeds run from each seed


@dataclass
class BenchConfig:
    name: str
    description: str
    data_root: Path
    descriptions_root: Path
    methods: list[str]
    settings: Settings
    backbones: list[BackboneSpec]
    datasets: list[DatasetSpec]
    path: Path = field(default=Path(), metadata=_INTERNAL)
    raw: dict = field(default_factory=dict, metadata=_INTERNAL)


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
    except yaml.YAMLError as e:
        raise AWTError(f"{path}: not valid YAML: {yaml_problem(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AWTError(f"{path}: not a readable YAML file: {first_line(e)}") from None
    top = check_keys(raw, config_keys(BenchConfig), "", path)
    if not top:
        raise AWTError(f"{path}: empty config")
    base = path.resolve().parent
    data_root = (resolve(as_str(top["data_root"], "data_root", path), base, "data_root", path)
                 if top.get("data_root") is not None else base)
    if not data_root.is_dir():
        raise fail(path, "data_root", f"{data_root} not found")
    desc_root = (resolve(as_str(top["descriptions_root"], "descriptions_root", path), base, "descriptions_root", path)
                 if top.get("descriptions_root") is not None else base)

    # methods
    methods_raw = top.get("methods", method_names())
    if methods_raw == "all":
        methods_raw = method_names()
    if isinstance(methods_raw, str):
        methods_raw = [methods_raw]
    if not isinstance(methods_raw, list) or not methods_raw:
        raise fail(path, "methods", f"must be a list of methods ({', '.join(method_names())}) or 'all'")
    for i, m in enumerate(methods_raw):
        if m not in method_names():
            raise fail(path, f"methods[{i}]", f"unknown method {m!r} (choose from {', '.join(method_names())})")
    methods = list(dict.fromkeys(methods_raw))

    # settings
    s = check_keys(top.get("settings"), config_keys(Settings), "settings", path)
    awt_raw = check_keys(s.get("awt"), config_keys(AWTConfig), "settings.awt", path)
    try:
        awt_cfg = AWTConfig(**{k: as_number(v, f"settings.awt.{k}", path, whole=k == "max_iter")
                               for k, v in awt_raw.items()})
    except SettingError as e:
        raise fail(path, f"settings.awt.{e.key}", f"must be {e.rule}, got {awt_raw.get(e.key, e.value)!r}") from None
    d = Settings()
    decoding = _decoding(s.get("decoding"), path)
    repeats = _repeats(s.get("repeats"), methods, path)
    settings = Settings(
        views=as_int_list(s.get("views", d.views), "settings.views", path, 0),
        descriptions_per_class=as_int_list(s.get("descriptions_per_class", d.descriptions_per_class),
                                            "settings.descriptions_per_class", path, 0),
        seed=as_int_list(s.get("seed", d.seed), "settings.seed", path, 0),
        batch_size=as_int(s.get("batch_size", d.batch_size), "settings.batch_size", path, 1),
        device=device or as_str(s.get("device", d.device), "settings.device", path),
        precision=as_str(s.get("precision", d.precision), "settings.precision", path),
        workers=as_int(s.get("workers", d.workers), "settings.workers", path, 0, allow_none=True),
        cache_dir=(resolve(as_str(s["cache_dir"], "settings.cache_dir", path), base, "settings.cache_dir", path)
                   if s.get("cache_dir") else None),
        shard_batches=as_int(s.get("shard_batches", d.shard_batches), "settings.shard_batches", path, 1),
        limit=as_int(s.get("limit", d.limit), "settings.limit", path, 1, allow_none=True),
        subset_seed=as_int(s.get("subset_seed", d.subset_seed), "settings.subset_seed", path, 0),
        clean_names=as_bool(s.get("clean_names", d.clean_names), "settings.clean_names", path),
        allow_fewer_descriptions=as_bool(s.get("allow_fewer_descriptions", d.allow_fewer_descriptions),
                                          "settings.allow_fewer_descriptions", path),
        repeated_names=_repeated_names(s.get("repeated_names", d.repeated_names), "settings.repeated_names", path),
        awt=awt_cfg,
        decoding=decoding,
        video=_video(s.get("video"), path),
        repeats=repeats,
    )
    from ..backbones import resolve_device, resolve_precision

    try:
        device = resolve_device(settings.device)
    except AWTError as e:
        raise fail(path, "settings.device", str(e)) from None

    # backbones
    backbones: list[BackboneSpec] = []
    for key, b in entries(top, "backbones", config_keys(BackboneSpec), path):
        precision = as_str(b.get("precision", settings.precision), f"{key}.precision", path)
        if precision not in PRECISIONS:
            where = f"{key}.precision" if "precision" in b else "settings.precision"
            raise fail(path, where, f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
        try:
            resolve_precision(precision, device)
        except AWTError as e:   # amp or fp16 on the CPU: said before any model loads
            where = f"{key}.precision" if "precision" in b else "settings.precision"
            raise fail(path, where, f"{e} (device {settings.device})") from None
        if b.get("model_cfg") is not None:
            if b.get("model") is not None:
                raise fail(path, key, "give either model or model_cfg, not both")
            if not isinstance(b["model_cfg"], dict):
                raise fail(path, f"{key}.model_cfg", "must be a mapping (an open_clip model config)")
            if b.get("preprocess_cfg") is not None and not isinstance(b["preprocess_cfg"], dict):
                raise fail(path, f"{key}.preprocess_cfg", "must be a mapping")
            identity = {"model_cfg": b["model_cfg"], "preprocess_cfg": b.get("preprocess_cfg"), "precision": precision}
            digest = hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=4).hexdigest()
            name = slug(str(b.get("name") or f"inline-{digest}"))
            backbones.append(BackboneSpec(name, "", None, precision, b["model_cfg"], b.get("preprocess_cfg"), identity))
            continue
        if b.get("preprocess_cfg") is not None:
            raise fail(path, f"{key}.preprocess_cfg", "only goes with model_cfg")
        model = as_str(b.get("model"), f"{key}.model", path)
        pretrained = b.get("pretrained")
        if pretrained is not None:
            pretrained = as_str(str(pretrained), f"{key}.pretrained", path)
        try:   # the loaders' own naming rules, paths relative to the config
            model, pretrained = resolve_model(model, pretrained, lambda p, k=key: resolve(p, base, k, path))
        except AWTError as e:
            if e.setting is None:   # said already, with its key
                raise
            raise fail(path, f"{key}.{e.setting}", str(e)) from None
        identity = {"model": b.get("model"), "pretrained": b.get("pretrained"), "precision": precision}
        name = slug(str(b.get("name") or (model.split(":", 1)[-1].rsplit("/", 1)[-1] + f"-{pretrained or 'none'}")))
        backbones.append(BackboneSpec(name, model, pretrained, precision, None, None, identity))
    _unique([b.name for b in backbones], "backbones", path)

    # datasets
    datasets: list[DatasetSpec] = []
    # every missing file of every dataset is named at once, below: (key, dataset, what, path, message)
    missing: list[tuple[str, str, str, Path, str]] = []
    for key, d in entries(top, "datasets", config_keys(DatasetSpec), path):
        where = f"{key}" + (f" ({d['name']})" if isinstance(d.get("name"), str) else "")
        label = str(d["name"]) if isinstance(d.get("name"), str) else key
        fmt = d.get("format", "auto")
        if fmt not in formats():
            raise fail(path, f"{where}.format", f"unknown format {fmt!r} (choose from {', '.join(formats())})")
        video = READERS[fmt].videos if fmt in READERS else False
        for split in _splits(d.get("splits"), video, f"{where}.splits", path):
            spec = _dataset(d, where, label, fmt, split, video, settings, data_root, desc_root, path, missing)
            if spec is not None:
                datasets.append(spec)
    if len(missing) == 1:
        raise fail(path, missing[0][0], missing[0][4])
    if missing:
        raise fail(path, "datasets", explain_all_missing([(name, what, p) for _, name, what, p, _ in missing]))
    _unique([d.name for d in datasets], "datasets", path)
    return BenchConfig(name=str(top.get("name") or path.stem), description=str(top.get("description") or ""),
                       data_root=data_root, descriptions_root=desc_root, methods=methods, settings=settings,
                       backbones=backbones, datasets=datasets, path=path, raw=raw)


def _dataset(d: dict, where: str, label: str, fmt: str, split: int | None, video: bool, settings: Settings,
             data_root: Path, desc_root: Path, path: Path, missing: list) -> DatasetSpec | None:
    """The spec of a dataset entry (of one of its splits, for a video dataset), or None with what it
    lacks added to ``missing`` as (key, dataset, what, path, message), each path once."""
    def per_split(text: str) -> str:   # "{split}" in a path: the split's own file
        return text.replace("{split}", str(split)) if split else text

    def lacks(key: str, what: str, p: Path, message: str) -> None:
        if all(m[3] != p for m in missing):
            missing.append((key, label, what, p, message))

    ds_path = resolve(per_split(as_str(d.get("path"), f"{where}.path", path)), data_root, f"{where}.path", path)
    if not ds_path.exists():
        lacks(f"{where}.path", "", ds_path, explain_missing(ds_path))
        return None
    template = as_str(d.get("template", defaults.TEMPLATE), f"{where}.template", path)
    try:
        check_template(template)
    except AWTError as e:
        raise fail(path, f"{where}.template", str(e)) from None
    desc = None
    if d.get("descriptions") is not None:
        desc = resolve(as_str(d["descriptions"], f"{where}.descriptions", path), desc_root, f"{where}.descriptions",
                       path)
        if not desc.is_file():
            lacks(f"{where}.descriptions", "descriptions ", desc, f"descriptions file {desc} not found")
            return None
    extra_paths = {}
    for k in ("image_dir", "classnames"):
        if d.get(k) is not None:
            p = resolve(per_split(as_str(d[k], f"{where}.{k}", path)), data_root, f"{where}.{k}", path)
            if not p.exists():
                lacks(f"{where}.{k}", k.replace("_", " ") + " ", p, explain_missing(p, k.replace("_", " ")))
            extra_paths[k] = p
    if any(m[1] == label for m in missing):
        return None
    group = slug(str(d.get("name") or ds_path.stem))
    spec = DatasetSpec(
        name=group + (f"_split{split}" if split else ""), path=ds_path, format=fmt, template=template,
        descriptions=desc,
        limit=as_int(d.get("limit", settings.limit), f"{where}.limit", path, 1, allow_none=True),
        subset_seed=as_int(d.get("subset_seed", settings.subset_seed), f"{where}.subset_seed", path, 0),
        clean_names=as_bool(d.get("clean_names", settings.clean_names), f"{where}.clean_names", path),
        allow_fewer_descriptions=as_bool(d.get("allow_fewer_descriptions", settings.allow_fewer_descriptions),
                                         f"{where}.allow_fewer_descriptions", path),
        image_dir=extra_paths.get("image_dir"), classnames=extra_paths.get("classnames"),
        classname_column=d.get("classname_column"), part=str(d.get("part", "test")),
        repeated_names=_repeated_names(d.get("repeated_names", settings.repeated_names),
                                       f"{where}.repeated_names", path),
        split=split, split_of=group if split else None, video=settings.video if video else None,
    )
    spec.identity = {
        "path": d.get("path"), "format": fmt, "image_dir": d.get("image_dir"), "classnames": d.get("classnames"),
        "classname_column": spec.classname_column, "part": spec.part, "template": template,
        "descriptions": d.get("descriptions"), "descriptions_sha": _file_digest(desc) if desc else None,
        "limit": spec.limit, "subset_seed": spec.subset_seed, "clean_names": spec.clean_names,
        "allow_fewer_descriptions": spec.allow_fewer_descriptions,
    }
    if spec.repeated_names != "in_order":   # only when not the default: older run keys stay valid
        spec.identity["repeated_names"] = spec.repeated_names
    if video:   # a video dataset's split and its frames (image datasets' keys stay as they were)
        spec.identity.update(split=split, video=asdict(settings.video))
    return spec


def _splits(value: Any, video: bool, key: str, path: Path) -> list[int | None]:
    """A video dataset's splits (default: the three of the protocol); [None] for an image dataset."""
    if not video:
        if value is not None:
            raise fail(path, key, "only a video dataset (format ucf101, hmdb51 or k600) has splits")
        return [None]
    splits = as_int_list([1, 2, 3] if value is None else value, key, path, 1)
    if any(s > 3 for s in splits):
        raise fail(path, key, f"the splits are 1, 2 and 3, got {value!r}")
    return splits


def _video(raw: Any, path: Path) -> VideoSampling:
    """``settings.video``: the fields of :class:`~awt.video_sampling.VideoSampling`."""
    given = check_keys(raw, config_keys(VideoSampling), "settings.video", path)
    values = {k: as_number(v, f"settings.video.{k}", path, whole=k != "target_fps") for k, v in given.items()}
    try:
        return VideoSampling(**values)
    except SettingError as e:
        raise fail(path, f"settings.video.{e.key}", f"must be {e.rule}, got {given.get(e.key, e.value)!r}") from None


def _repeated_names(value: Any, key: str, path: Path) -> str:
    if value not in REPEATED_NAMES:
        raise fail(path, key, f"must be one of {', '.join(REPEATED_NAMES)}, got {value!r}")
    return value


def _decoding(raw: Any, path: Path) -> Decoding:
    """``settings.decoding``: the fields of :class:`~awt.images.Decoding`."""
    given = check_keys(raw, config_keys(Decoding), "settings.decoding", path)
    values: dict[str, Any] = {}
    for k, v in given.items():
        key = f"settings.decoding.{k}"
        values[k] = as_int(v, key, path, 1, allow_none=True) if k == "max_pixels" else as_bool(v, key, path)
    return Decoding(**values)


def _repeats(raw: Any, methods: list[str], path: Path) -> dict[str, int]:
    """``settings.repeats``: ``{method: n}``, each listed method run over ``n`` seeds from each seed."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise fail(path, "settings.repeats", f"must be a mapping of method to a number of seeds, e.g. "
                                              f"{{waffle: 7}}; got {raw!r}")
    out = {}
    for m, n in raw.items():
        key = f"settings.repeats.{m}"
        if m not in method_names():
            raise fail(path, key, f"unknown method {m!r} (choose from {', '.join(method_names())})")
        if m not in methods:
            raise fail(path, key, f"{m!r} is not one of the config's methods")
        out[m] = as_int(n, key, path, 1)
        if not get_method(m).seeded:
            raise fail(path, key, f"{m!r} does not depend on the seed: its {n} runs would be equal")
    return out


def _unique(names: list[str], key: str, path: Path) -> None:
    seen = set()
    for i, n in enumerate(names):
        if n in seen:
            raise fail(path, f"{key}[{i}].name", f"{n!r} is used twice; give each entry its own name")
        seen.add(n)


def _file_digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=12).hexdigest()
