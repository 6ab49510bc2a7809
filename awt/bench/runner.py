"""The sweep: one config in, a record per run on disk, one comparable table out.

Per (backbone, dataset, seed), image features are encoded once, for each number of views a
multi-view method asks for, and every method is scored from them; methods that read view 0 alone
take view 0 of a set already there (view 0, the plain centre crop, depends on neither the views nor
the seed). Class prompts are encoded once per (backbone, dataset, prompt set): the template and M
descriptions, WaffleCLIP's descriptors of a seed, or CLIP's templates (``PromptSet.key``). A video
dataset's features are its videos' frame crops (all of them, or view 0 alone when no method of the
group reads more), encoded once whatever the seed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import distributed
from ..errors import AWTError
from ..files import check_folder
from ..methods import get_method, score
from ..progress import progress_bar
from ..prompts import ClassPrompts, encode_classes
from ..scoring import AWTConfig
from ..spec import ClassifierSpec
from .config import BenchConfig
from .features import FeatureSet, compute_features, feature_file
from .metrics import metrics_from_topk
from .plan import Run, plan_runs
from .prepare import PreparedDataset, load_backbone, prepare_dataset
from .records import device_info, make_record, read_record, versions, write_record

_SCORE_CHUNK = 256   # images scored at once
_NAMED_ERRORS = 10   # unreadable images of a dataset named on screen


@dataclass
class BenchResult:
    records: list[dict]               # one per planned run, in plan order
    ran: list[str]                    # labels of runs made now
    skipped: list[str]                # labels of runs found on disk
    feature_sets: list[dict]          # each feature set used now: where it came from
    files: dict[str, Path]            # summary files written
    seconds: float


_log = logging.getLogger("awt.bench")


def run_bench(config: BenchConfig, output: str | os.PathLike, *, force: bool = False) -> BenchResult:
    """Run every run of ``config`` that is not on disk yet (all of them with ``force``), then summarise.

    Under ``torchrun`` every rank calls this: the ranks share the image encoding, and rank 0 alone
    scores and writes the records and the summary (the other ranks return an empty result).
    """
    distributed.init(config.settings.device)
    return Sweep(config, Path(output), force=force).run()


class Sweep:
    """The state of one sweep: its plan, what is on disk, and what this call encodes and scores."""

    def __init__(self, config: BenchConfig, output: Path, *, force: bool = False):
        self.ranks = distributed.ranks()
        self.config, self.settings = config, config.settings
        self.output, self.force = output, force
        self.cache_dir = self.settings.cache_dir or (output / "cache")
        self.batch_size = self.settings.batch_size  # halved for good after an out-of-memory error
        self.records: dict[str, dict] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.feature_log: list[dict] = []
        self._named: set[str] = set()   # datasets whose unreadable images were named

    def _note(self, message: str) -> None:
        """A line of the sweep's progress, said by rank 0 alone (the ``awt.bench`` logger)."""
        if self.ranks.main:
            _log.info(message)

    # -- the whole sweep --------------------------------------------------------------------------

    def run(self) -> BenchResult:
        from .report import write_summary

        started = time.perf_counter()
        if self.ranks.main:   # before any work: where the records, the summary and the caches go
            check_folder(self.output, "output folder")
            check_folder(self.cache_dir, "cache folder")
        plan = plan_runs(self.config)
        pending = self._pending(plan)
        if pending:
            # read every dataset (and its descriptions) first: a bad path fails before any model loads
            prepared = self._prepare(pending)
            try:
                self._run_pending(pending, prepared)
            except KeyboardInterrupt:
                self._note(f"interrupted: {len(self.ran)} run(s) finished now and are on disk; encoded features are "
                         "kept -- run the same command again to go on")
                raise
        if not self.ranks.main:
            return BenchResult([], [], [], [], {}, time.perf_counter() - started)
        ordered = [self.records[r.key] for r in plan if r.key in self.records]
        files = write_summary(self.output, ordered, self.config)
        return BenchResult(ordered, self.ran, self.skipped, self.feature_log, files, time.perf_counter() - started)

    def _pending(self, plan: list[Run]) -> list[Run]:
        if not self.ranks.main:   # rank 0 reads what is on disk, for all
            keys = set(distributed.broadcast(None))
            return [run for run in plan if run.key in keys]
        pending = []
        for run in plan:
            path = self.output / run.relpath()
            old = read_record(path) if path.is_file() else None
            if old is not None and old.get("key") == run.key and not self.force:
                self.records[run.key] = old
                self.skipped.append(run.label)
                continue
            if old is not None and old.get("key") != run.key and not self.force:
                self._note(f"rerun {run.label}: its settings changed since {path} was written")
            pending.append(run)
        self._note(f"{self.config.name}: {len(plan)} runs, {len(self.skipped)} already on disk, {len(pending)} to run"
                 + (" (all rerun: force)" if self.force and plan else ""))
        for label in self.skipped:
            self._note(f"skip {label}: on disk")
        distributed.broadcast([run.key for run in pending])
        return pending

    def _prepare(self, pending: list[Run]) -> dict[str, PreparedDataset]:
        prepared: dict[str, PreparedDataset] = {}
        problems: dict[str, str] = {}   # every dataset that cannot be read is named at once
        for run in pending:
            name = run.dataset.name
            if name in prepared or name in problems:
                continue
            need = max((r.descriptions_per_class for r in pending
                        if r.dataset.name == name and get_method(r.method).prompts.reads_descriptions), default=0)
            try:
                ds = prepared[name] = prepare_dataset(run.dataset, need, self.config.path)
            except AWTError as e:
                problems[name] = str(e)
                continue
            self._note(f"dataset {name}: {ds.subset_note}, {len(ds.prompt_names)} classes")
            shared = [n for n, d in ds.duplicate_names.items() if d["same_descriptions"]]
            if shared:
                self._note(f"note: dataset {name}: repeated class names are distinct classes (by label) that share "
                         "their descriptions: " + ", ".join(map(repr, shared)))
            if run.dataset.descriptions is None:
                self._note(f"note: dataset {name} has no descriptions: every method uses the template alone (M=0)")
        if len(problems) == 1:
            raise AWTError(next(iter(problems.values())))
        if problems:
            raise AWTError(f"{len(problems)} datasets cannot be read: "
                           + "; ".join(f"{name}: {message}" for name, message in problems.items()))
        return prepared

    def _run_pending(self, pending: list[Run], prepared: dict[str, PreparedDataset]) -> None:
        self.versions = versions()
        for spec in _unique(r.backbone for r in pending):
            runs = [r for r in pending if r.backbone.name == spec.name]
            t = time.perf_counter()
            backbone = load_backbone(spec, self.settings, self.cache_dir,
                                     device=distributed.rank_device(self.settings.device))
            device = device_info(backbone)
            self._note(f"backbone {spec.name}: {backbone.name} on {device['device']} ({device['precision']}), "
                     f"loaded in {time.perf_counter() - t:.1f} s")
            for name in _unique(r.dataset.name for r in runs):
                ds = prepared[name]
                classes: dict[tuple, tuple[ClassPrompts, float]] = {}
                scored: set[Path] = set()             # feature sets already scored from (their files)
                earlier: dict[int, FeatureSet] = {}   # an earlier seed's sets: view 0 is the same in all
                for seed in _unique(r.seed for r in runs if r.dataset.name == name):
                    group = [r for r in runs if r.dataset.name == name and r.seed == seed]
                    if any(get_method(r.method).random_views for r in group):
                        earlier = {}                  # this seed encodes its own views: let the others go
                    sets: dict[int, FeatureSet] = {}
                    for run in group:
                        fs = self._features(run, group, sets, backbone, ds, earlier)
                        first_use = fs.path not in scored
                        scored.add(fs.path)
                        if not self.ranks.main:
                            continue  # the other ranks encode; rank 0 scores
                        self._check_readable(name, fs)
                        key = _prompt_set(run)
                        if key not in classes:
                            classes[key] = self._classes(run, ds, backbone)
                        record = self._score(run, ds, fs, first_use, backbone, *classes[key], device)
                        write_record(self.output / run.relpath(), record)
                        self.records[run.key] = record
                        self.ran.append(run.label)
                        self._note(f"done {run.label}: top-1 {record['top1']:.2f}  top-5 {record['top5']:.2f}  "
                                 f"recall {record['mean_per_class_recall']:.2f}  ({record['images']} images, "
                                 f"features {record['feature_source']}, scored in {record['score_time_s']:.2f} s)")
                    earlier = sets or earlier
            del backbone
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _check_readable(self, dataset: str, fs: FeatureSet) -> None:
        """Name a dataset's unreadable images on screen (once), and refuse one with no readable image."""
        if not fs.errors or dataset in self._named:
            return
        self._named.add(dataset)
        reasons = [r for _, r in sorted(fs.errors.items())]
        if not bool(fs.valid.any()):
            raise AWTError(f"dataset {dataset}: none of its {len(fs)} images can be read (first: {reasons[0]}); "
                           "nothing to score")
        self._note(f"dataset {dataset}: {len(reasons)} of {len(fs)} images cannot be read and are left out of its "
                 "metrics:")
        for reason in reasons[:_NAMED_ERRORS]:
            self._note(f"  {reason}")
        if len(reasons) > _NAMED_ERRORS:
            self._note(f"  ... and {len(reasons) - _NAMED_ERRORS} more (each run's record lists the first 20)")

    # -- one run ----------------------------------------------------------------------------------

    def _features(self, run: Run, group: list[Run], sets: dict[int, FeatureSet], backbone,
                  ds: PreparedDataset, earlier: dict[int, FeatureSet]) -> FeatureSet:
        """The feature set ``run`` scores from, encoding it if neither memory nor disk holds it."""
        seed = run.seed
        if get_method(run.method).random_views:
            views = run.views
        else:
            # view 0 depends on neither the views nor the seed: take a set of this seed in memory, else
            # one that will be encoded anyway, else an earlier seed's, else one on disk, else encode
            # view 0 alone (a method repeated over seeds encodes nothing after its first seed)
            multi = [r.views for r in group if get_method(r.method).random_views]
            if sets:
                views = next(iter(sets))
            elif multi:
                views = multi[0]
            elif earlier:
                return next(iter(earlier.values()))
            else:
                seeds = _unique([seed, *self.settings.seed])
                video = ds.spec.video
                counts = [video.views - 1] if video else self.settings.views   # a video's views are its own
                on_disk = [(v, s) for s in seeds for v in counts if feature_file(
                    self.cache_dir, backbone, ds.images.paths, v, s, self.settings.decoding, video).is_file()]
                views, seed = distributed.broadcast(on_disk[0] if on_disk else (0, seed))  # rank 0's view of the disk
        if views not in sets:
            sets[views] = self._encode(run, views, seed, backbone, ds)
        return sets[views]

    def _encode(self, run: Run, views: int, seed: int, backbone, ds: PreparedDataset) -> FeatureSet:
        what = f"features {run.backbone.name}/{run.dataset.name} views={views} seed={seed}"
        t = time.perf_counter()
        fs = compute_features(
            backbone, ds.images.paths, views=views, seed=seed, cache_dir=self.cache_dir,
            batch_size=self.batch_size, workers=self.settings.workers, shard_batches=self.settings.shard_batches,
            description=what, decoding=self.settings.decoding, video=ds.spec.video,
            meta={"backbone": run.backbone.name, "dataset": run.dataset.name, "model": backbone.name},
        )
        self.batch_size = fs.batch_size
        took = time.perf_counter() - t
        if fs.source == "cached":
            self._note(f"{what}: loaded from cache ({len(fs)} images) {fs.path}")
        else:
            self._note(f"{what}: {fs.source} -- encoded {fs.encoded} images x {views + 1} views in {took:.1f} s "
                     f"({fs.encoded / max(took, 1e-9):.1f} images/s) -> {fs.path}")
        self.feature_log.append({"backbone": run.backbone.name, "dataset": run.dataset.name, "views": views,
                                 "seed": seed, "source": fs.source, "encoded": fs.encoded, "file": str(fs.path)})
        return fs

    def _classes(self, run: Run, ds: PreparedDataset, backbone) -> tuple[ClassPrompts, float]:
        """The prompt set ``run``'s method reads, encoded (or read from the cache)."""
        t = time.perf_counter()
        classes = encode_classes(backbone, class_spec(run, ds, self.cache_dir, self.settings.awt))
        return classes, time.perf_counter() - t

    def _score(self, run: Run, ds: PreparedDataset, fs: FeatureSet, first_use: bool, backbone,
               classes: ClassPrompts, text_time: float, device: dict) -> dict:
        started = datetime.now(timezone.utc)
        method = get_method(run.method)
        valid = fs.valid
        labels = torch.tensor(ds.images.labels, dtype=torch.long)[valid]
        used_views = method.views_used(run.views)
        feats = fs.features[:, : used_views + 1]
        if not bool(valid.all()):
            feats = feats[valid]
        k = min(5, len(ds.prompt_names))
        s = backbone.logit_scale

        def scores(batch: torch.Tensor) -> torch.Tensor:
            return score(method, batch.float(), classes.features, classes.mask, s, self.settings.awt)

        tops = []
        sync = backbone.device.type == "cuda"
        with torch.inference_mode():
            if feats.shape[0]:
                scores(feats[:1])  # warm-up: first-call costs stay out of the timing
                if sync:
                    torch.cuda.synchronize(backbone.device)
            t = time.perf_counter()
            starts = range(0, feats.shape[0], _SCORE_CHUNK)
            not_finite = torch.zeros((), dtype=torch.long, device=classes.features.device)
            for start in progress_bar(None, f"score {run.label}", "chunk", iterable=starts,
                                      disable=not self.ranks.main or len(starts) < 4):
                chunk = scores(feats[start:start + _SCORE_CHUNK])
                not_finite += (~torch.isfinite(chunk)).any(1).sum().to(not_finite.device)  # read once, below
                tops.append(chunk.topk(k, dim=1).indices.cpu())
            if sync:
                torch.cuda.synchronize(backbone.device)
        score_time = time.perf_counter() - t
        if int(not_finite):
            raise AWTError(_not_finite(run, int(not_finite), feats, classes, self.settings.awt))
        top = torch.cat(tops) if tops else torch.empty(0, k, dtype=torch.long)
        source = "cached" if fs.source == "cached" else (fs.source if first_use else "reused")
        return make_record(run, ds, fs, backbone, self.config, started=started,
                           metrics=metrics_from_topk(top, labels), images=int(labels.numel()), views_used=used_views,
                           source=source, score_time=score_time, text_time=text_time, device=device,
                           versions=self.versions)


def class_spec(run: Run, ds: PreparedDataset, cache_dir: Path | None, awt: AWTConfig) -> ClassifierSpec:
    """The classifier ``run`` scores as: its dataset's classes and descriptions, its method, M and seed."""
    return ClassifierSpec(ds.prompt_names, ds.descriptions, descriptions_per_class=run.descriptions_per_class,
                          allow_fewer_descriptions=ds.spec.allow_fewer_descriptions, template=ds.spec.template,
                          method=run.method, views=run.views, seed=run.seed, awt=awt, cache_dir=cache_dir)


def _not_finite(run: Run, count: int, feats: torch.Tensor, classes: ClassPrompts, awt) -> str:
    """Why ``count`` images of ``run`` got scores that are not finite, as far as the inputs tell."""
    if not bool(torch.isfinite(feats).all()):
        cause = "the image features are not finite (NaN in the model's weights, or a precision that overflows)"
    elif not bool(torch.isfinite(classes.features).all()):
        cause = "the class prompts' features are not finite (NaN in the model's weights, or a precision that overflows)"
    else:
        cause = (f"the features are finite: the method's settings give NaN or inf on them (settings.awt: epsilon "
                 f"{awt.epsilon:g}, temperatures {awt.image_temperature:g}/{awt.text_temperature:g})")
    return (f"{run.label}: {count} of {feats.shape[0]} images got scores that are not finite (NaN or inf); "
            f"{cause}; no record written")


def _prompt_set(run: Run) -> tuple:
    """Which encoded prompt set ``run`` scores against (runs with equal keys share one)."""
    return get_method(run.method).prompts.key(run.descriptions_per_class, run.dataset.descriptions is not None,
                                              run.seed)


def _unique(items) -> list:
    """Distinct items (or the specs of distinct names), in first-seen order."""
    seen: dict = {}
    for item in items:
        seen.setdefault(getattr(item, "name", item), item)
    return list(seen.values())
