"""Throughput of AWT against its encoder and against a paper-style per-image pipeline.

Prints, and with --json writes, in one run (ratios are what to read on a noisy machine):
  encode_images_per_s   the N+1 views of each image through the image encoder only
  awt_images_per_s      full AWT end to end: decode, views, encode, weights, transport
                        (loader workers kept from a first call, reported apart as awt_cold_images_per_s)
  naive_images_per_s    the paper's way: PIL crops, one image at a time, literal scorer
  scorer_ms_per_image   batched scorer alone at each --scorer-classes (and the literal loop, and POT)
  methods_ms_per_image  every registered method's scoring alone (methods.score), random features with
                        N+1 views and its own prompt set, at --method-classes (--methods-only: just this)
  peak memory           process RSS (CPU) or CUDA max allocated, per stage

Speed does not depend on the weights, so --pretrained none is fine.

    python benchmarks/throughput.py --device cpu --model ViT-B-32 --pretrained none --classes 100 --images 4 --json out.json
    python benchmarks/throughput.py --device cpu --methods-only --method-classes 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

import awt
import awt.methods
from awt.backbones import create_backbone, resolve_device
from awt.classifier import AWTClassifier
from awt.spec import ClassifierSpec
from awt.prompts import ClassPrompts
from awt.images import find_images, load_image
from awt.views import default_workers
from awt.oracles.awt import paper_awt_scores_single
from awt.scoring import awt_scores, awt_scores_from_features
from awt.transport import sinkhorn

SHARED_CALTECH = Path(__file__).resolve().parents[1].parent / "shared" / "descriptions" / "awt" / "caltech101.json"

REPO = Path(__file__).resolve().parents[1]
# A scorer call lasts 0.1 to 1 s, where one timing on a shared machine scatters by 10 %; the
# encoder's figure is one timing of several seconds, which averages what a short one cannot.
SCORER_REPEAT = 3
LEGACY_COMMIT = "2e198ac"   # the scorer before issue 26 (its figures are the "before" of each run)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def timed(fn, device: torch.device, repeat: int = 1) -> float:
    """Best of ``repeat`` wall times of ``fn()`` in seconds (device synchronised)."""
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def timed_pair(fa, fb, device: torch.device, repeat: int = 1) -> tuple[float, float]:
    """Best wall times of ``fa()`` and ``fb()``, taken in turns so that a busy spell of a shared
    machine hits both alike."""
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, fn in enumerate((fa, fb)):
            best[i] = min(best[i], timed(fn, device))
    return best[0], best[1]


class OtherLoad:
    """CPUs the rest of the machine kept busy since ``start()`` (Linux /proc/stat less this
    process): on a shared machine, a figure taken while others ran is not this code's alone."""

    def __init__(self) -> None:
        self.start()

    @staticmethod
    def _ticks() -> tuple[int, int]:
        try:
            fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
            busy = sum(fields) - fields[3] - fields[4]       # all but idle and iowait
            own = sum(int(x) for x in open("/proc/self/stat").read().rsplit(")", 1)[1].split()[11:15])
            return busy, own
        except (OSError, ValueError, IndexError):
            return 0, 0

    def start(self) -> None:
        self.t0, self.wall0 = self._ticks(), time.perf_counter()

    def cpus(self) -> float:
        (busy, own), wall = self._ticks(), time.perf_counter() - self.wall0
        return max(0.0, (busy - self.t0[0]) - (own - self.t0[1])) / os.sysconf("SC_CLK_TCK") / max(wall, 1e-9)


def image_files(count: int, image_dir: str | None) -> list[str]:
    """``count`` real image files (cycled): --image-dir, else ../shared's ImageNet sample, else the examples."""
    candidates = [image_dir] if image_dir else [str(REPO.parent / "shared/data/imagenet-sample"), str(REPO / "awt/data/examples")]
    for d in candidates:
        if d and Path(d).is_dir():
            files = find_images([d])
            if files:
                return [files[i % len(files)] for i in range(count)]
    raise SystemExit("no images found; pass --image-dir")


def random_text_features(classes: int, prompts: int, dim: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Unit prompt embeddings clustered by class, (classes, prompts, dim); built in place, chunk by chunk."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(classes, prompts, dim)
    for start in range(0, classes, 1024):
        block = out[start : start + 1024]
        block.normal_(generator=g).mul_(1.2 / dim**0.5)
        block.add_(F.normalize(torch.randn(block.shape[0], 1, dim, generator=g), dim=-1))
        block.div_(block.norm(dim=-1, keepdim=True))
    return out.to(device)


def random_image_features(batch: int, views: int, dim: int, text: torch.Tensor, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, text.shape[0], (batch,), generator=g)
    centre = text[labels.to(text.device)].mean(1).cpu()
    return F.normalize(0.5 * centre[:, None] + torch.randn(batch, views, dim, generator=g) / dim**0.5, dim=-1).to(text.device)


def naive_pipeline(backbone, text: torch.Tensor, files: list[str], views: int) -> None:
    """The reference code's shape: PIL augmentations per view, one image at a time, literal scorer."""
    from torchvision import transforms as T

    random_view = T.Compose([
        T.RandomResizedCrop(backbone.image_size, interpolation=T.InterpolationMode.BILINEAR),
        T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(backbone.mean, backbone.std),
    ])
    for path in files:
        image = load_image(path)
        batch = torch.stack([backbone.preprocess(image)] + [random_view(image) for _ in range(views)])
        feats = backbone.encode_images(batch)
        logits = backbone.logit_scale * torch.einsum("vd,cpd->vpc", feats, text)
        paper_awt_scores_single(logits, backbone.logit_scale).argmax().item()


def scorer_memory_subprocess(classes: int, views: int, prompts: int, dim: int, batch: int,
                             commit: str | None = None) -> tuple[float, float]:
    """Peak RSS (MiB, the child's own VmHWM) of a fresh process holding ``classes`` x ``prompts`` text
    features, before and after scoring ``batch`` images against them on the CPU (the classifier's case),
    with this scorer or the one at ``commit``.
    ``ru_maxrss`` is not used: a child started by fork + exec can inherit the parent's peak."""
    code = (
        "import sys, torch; sys.path.insert(0, %r); from throughput import *; "
        "score = legacy_scorer(%r).awt_scores_from_features if %r else awt_scores_from_features; "
        "hwm = lambda: [int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
        "txt = random_text_features(%d, %d, %d, torch.device('cpu')); img = random_image_features(%d, %d, %d, txt); "
        "print(hwm()); score(img, txt, 100.0); print(hwm())"
    ) % (str(Path(__file__).parent), commit, bool(commit), classes, prompts, dim, batch, views, dim)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = (float(x) for x in out.stdout.strip().splitlines()[-2:])
    return before, after


def legacy_scorer(commit: str = LEGACY_COMMIT):
    """The scorer as it was at ``commit`` (awt/scoring.py, transport.py, weighting.py and, where
    they exist, errors.py and transport_cpu.py, read with git into a private package): the
    "before" of the scorer's figures, measured in the same run.
    None when git or the commit is not there."""
    import atexit
    import importlib
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="awt-legacy-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    package = root / f"awt_legacy_{commit}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("scoring", "transport", "weighting", "errors", "transport_cpu"):
        shown = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:awt/{name}.py"], capture_output=True, text=True)
        if shown.returncode == 0:
            (package / f"{name}.py").write_text(shown.stdout)
        elif name in ("scoring", "transport", "weighting"):    # the others came later
            return None
    sys.path.insert(0, str(root))
    return importlib.import_module(f"{package.name}.scoring")


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc), so that a stage's
    peak does not carry what earlier stages freed."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def probe_machine(device: torch.device, repeat: int) -> dict:
    """The roofline's two rates, from simple probes: a 2048^3 float32 GEMM (FLOP/s) and a sum over
    512 MiB (bytes read per second)."""
    a = torch.randn(2048, 2048, device=device)
    big = torch.ones(1 << 27, device=device)
    t_mm = timed(lambda: a @ a, device, max(3, repeat))
    t_sum = timed(lambda: big.sum(), device, max(3, repeat))
    return {"gflops": 2 * 2048**3 / t_mm / 1e9, "read_gb_per_s": big.numel() * 4 / t_sum / 1e9}


def scorer_work(classes: int, views: int, prompts: int, dim: int, images: int, iterations: float, windows: int) -> dict:
    """FLOPs and bytes per image of the scorer from features: the views x prompts GEMM and the
    Sinkhorn products (2 multiply-adds per kernel entry and iteration, 3 for the plan's cost); the
    prompt features read once per call (shared by its ``images``), the kernel written once and
    read once per solver window."""
    entries = classes * views * prompts
    flops = 2 * entries * dim + entries * (4 * iterations + 4)
    moved = classes * prompts * dim * 4 / images + entries * 4 * (1 + windows)
    return {"gflop": flops / 1e9, "gb": moved / 1e9}


def logits_of(img: torch.Tensor, txt: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """(batch, views, prompts, classes) logits, a block of classes at a time (no whole-size temporary)."""
    out = torch.empty(img.shape[0], img.shape[1], txt.shape[1], txt.shape[0], device=img.device)
    for start in range(0, txt.shape[0], 1024):
        block = txt[start:start + 1024]
        out[..., start:start + block.shape[0]] = scale * torch.einsum("bvd,cpd->bvpc", img, block)
    return out


def timed_peak(fn, device: torch.device, repeat: int) -> tuple[float, float]:
    """Best wall time of ``fn()`` and the peak memory while it ran (CPU: the process's resident
    peak, reset first through /proc/self/clear_refs; CUDA: max allocated)."""
    if device.type == "cpu":
        release_memory()
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        t = timed(fn, device, repeat)
        return t, [int(x.split()[1]) / 1024 for x in open("/proc/self/status") if x.startswith("VmHWM")][0]
    reset_peak(device)
    return timed(fn, device, repeat), peak_mb(device)


def bench_scorer(device, classes_list, views, prompts, dim, batch, args, legacy=None, encode_s: float | None = None,
                 machine: dict | None = None) -> dict:
    """The scorer alone, this version (``new``) and ``legacy`` (the scorer before issue 26) on the
    same features: from features (the classifier's path; ``batch`` images per call, half of it from
    10,000 classes on) and from logits (one image per call from 10,000 classes on)."""
    from awt.scoring import awt_problem, solve

    out = {}
    repeat = max(args.repeat, args.scorer_repeat)
    for classes in classes_list:
        txt = random_text_features(classes, prompts, dim, device)
        n = batch if classes < 10000 else max(1, batch // 2)
        img = random_image_features(n, views, dim, txt)
        entry = {"images": n}
        load = OtherLoad()

        m = n if classes < 10000 else 1       # from logits: (images, views, prompts, classes) in memory
        logits = logits_of(img[:m], txt)
        if classes < 10000:
            awt_scores(logits[:1], 100.0)     # warm-ups
            if legacy is not None:
                legacy.awt_scores(logits[:1], 100.0)
        if legacy is not None:
            t_old, t = timed_pair(lambda: legacy.awt_scores(logits, 100.0), lambda: awt_scores(logits, 100.0), device,
                                  repeat)
            entry["legacy_ms_per_image"] = 1000 * t_old / m
        else:
            t = timed(lambda: awt_scores(logits, 100.0), device, repeat)
        entry["ms_per_image"] = 1000 * t / m
        if classes <= 1000 and not args.skip_reference:
            m = min(n, 2)
            t_ref = timed(lambda: [paper_awt_scores_single(logits[i], 100.0) for i in range(m)], device)
            ours = awt_scores(logits[:m], 100.0)
            ref = torch.stack([paper_awt_scores_single(logits[i], 100.0) for i in range(m)])
            entry["reference_loop_ms_per_image"] = 1000 * t_ref / m
            entry["speedup_vs_reference_loop"] = entry["reference_loop_ms_per_image"] / entry["ms_per_image"]
            entry["max_abs_diff_vs_reference"] = float((ours - ref).abs().max())
            entry["same_argmax_as_reference"] = bool((ours.argmax(1) == ref.argmax(1)).all())
            # from embeddings, as the classifier scores (float16 GEMM operands on CUDA), against
            # the literal loop in float32 on the CPU
            cpu_logits = logits_of(img[:m].cpu(), txt.cpu())
            ref = torch.stack([paper_awt_scores_single(cpu_logits[i], 100.0) for i in range(m)])
            ours = awt_scores_from_features(img[:m], txt, 100.0).cpu()
            entry["from_features_max_abs_diff_vs_cpu_reference"] = float((ours - ref).abs().max())
            entry["from_features_same_argmax"] = bool((ours.argmax(1) == ref.argmax(1)).all())
        del logits

        # from features, the classifier's path; the scorer before first, so that its peak does not
        # count the buffer this one keeps for its next call
        def old():
            return legacy.awt_scores_from_features(img, txt, 100.0)

        def new():
            return awt_scores_from_features(img, txt, 100.0)

        if legacy is not None:
            t_old, entry["legacy_peak_mb"] = timed_peak(old, device, 1)
        t, entry["peak_mb"] = timed_peak(new, device, 1)            # the first call makes the scorer's buffer
        if legacy is not None:
            t_old, t = timed_pair(old, new, device, repeat)
            entry["legacy_from_features_ms_per_image"] = 1000 * t_old / n
            entry["max_abs_diff_vs_legacy"] = float((new() - old()).abs().max())
        else:
            t = timed(new, device, repeat)
        entry["from_features_ms_per_image"] = 1000 * t / n
        sol = solve(awt_problem(img[:1], txt, 100.0))
        entry["iterations"], entry["windows"] = int(sol.iterations[0]), sol.windows
        del sol
        if encode_s:
            entry["from_features_over_encode"] = entry["from_features_ms_per_image"] / 1000 / encode_s
            if legacy is not None:
                entry["legacy_from_features_over_encode"] = entry["legacy_from_features_ms_per_image"] / 1000 / encode_s
        if machine:
            work = scorer_work(classes, views, prompts, dim, n, entry["iterations"], entry["windows"])
            bound_ms = 1000 * max(work["gflop"] / machine["gflops"], work["gb"] / machine["read_gb_per_s"])
            entry["roofline"] = {**work, "bound_ms_per_image": bound_ms,
                                 "gflop_per_s": work["gflop"] / entry["from_features_ms_per_image"] * 1000,
                                 "fraction": bound_ms / entry["from_features_ms_per_image"]}
        entry["other_cpus"] = load.cpus()
        if device.type == "cpu" and classes >= 10000 and not args.skip_memory:
            before, after = scorer_memory_subprocess(classes, views, prompts, dim, n)
            entry["process_peak_rss_mb"], entry["inputs_rss_mb"] = after, before
            if legacy is not None:
                entry["legacy_process_peak_rss_mb"] = scorer_memory_subprocess(classes, views, prompts, dim, n,
                                                                               args.legacy_commit)[1]
        del txt, img
        out[str(classes)] = entry
        _print_scorer(classes, entry)
    return out


def _print_scorer(classes: int, e: dict) -> None:
    def vs_legacy(key: str) -> str:
        old = e.get(f"legacy_{key}")
        return f" (before {old:.2f}: {old / e[key]:.1f}x)" if old else ""

    line = (f"  scorer  {classes:>6} classes: from features {e['from_features_ms_per_image']:9.2f} ms/image"
            f"{vs_legacy('from_features_ms_per_image')}, {e['images']} per call")
    if "from_features_over_encode" in e:
        line += f"; of encode-only {e['from_features_over_encode']:.4f}" + (
            f" (before {e['legacy_from_features_over_encode']:.4f})" if "legacy_from_features_over_encode" in e else "")
    line += f"\n          from logits {e['ms_per_image']:9.2f} ms/image{vs_legacy('ms_per_image')}"
    line += f"; peak memory {e['peak_mb']:.0f} MiB" + (f" (before {e['legacy_peak_mb']:.0f})" if "legacy_peak_mb" in e else "")
    line += f"; Sinkhorn {e['iterations']} iterations in {e['windows']} window(s)"
    if "max_abs_diff_vs_legacy" in e:
        line += f"; max |new - before| {e['max_abs_diff_vs_legacy']:.1e}"
    if "roofline" in e:
        r = e["roofline"]
        line += (f"\n          roofline: {r['gflop']:.2f} GFLOP and {r['gb']:.3f} GB per image, bound "
                 f"{r['bound_ms_per_image']:.2f} ms/image; reached {r['fraction']:.2f} ({r['gflop_per_s']:.0f} GFLOP/s)")
    if "reference_loop_ms_per_image" in e:
        line += (f"\n          literal loop {e['reference_loop_ms_per_image']:.1f} ms/image "
                 f"({e['speedup_vs_reference_loop']:.1f}x), max diff {e['max_abs_diff_vs_reference']:.2e}; "
                 f"from features vs CPU loop {e['from_features_max_abs_diff_vs_cpu_reference']:.2e}")
    if "process_peak_rss_mb" in e:
        line += (f"\n          fresh process peak RSS {e['process_peak_rss_mb']:.0f} MiB ({e['inputs_rss_mb']:.0f} MiB before scoring"
                 + (f"; before {e['legacy_process_peak_rss_mb']:.0f} MiB" if "legacy_process_peak_rss_mb" in e else "") + ")")
    line += f"\n          other processes kept {e['other_cpus']:.2f} CPUs busy meanwhile"
    print(line, flush=True)


def bench_solvers(device, classes, views, prompts, batch, repeat, legacy=None) -> dict:
    """Our grouped Sinkhorn against POT's batched solver on the same kernels, float32, 100
    iterations (tol 0: neither stops early): ``ot.solve_batch`` from the cost (as the issue
    counts it, the kernel's exponential included) and ``ot.batch``'s own Sinkhorn loop,
    ``bregman_projection_batch``, on the very same kernel."""
    import ot
    from ot.batch._utils import bregman_projection_batch

    g = torch.Generator().manual_seed(0)
    cost = (0.75 + 0.05 * torch.randn(batch * classes, views, prompts, generator=g)).to(device)
    a = torch.full((batch * classes, views), 1.0 / views, device=device)
    b = torch.full((batch * classes, prompts), 1.0 / prompts, device=device)
    kernel = torch.exp(-cost / 0.1)
    iters, repeat = 100, max(5, repeat)
    args4 = (kernel.view(batch, classes, views, prompts), a.view(batch, classes, views), b.view(batch, classes, prompts))
    load = OtherLoad()
    t_ours, t_pot = timed_pair(lambda: sinkhorn(*args4, max_iter=iters, tol=0.0),
                               lambda: ot.solve_batch(cost, reg=0.1, a=a, b=b, max_iter=iters, tol=0.0, method="sinkhorn",
                                                      reg_type="entropy", grad="detach"), device, repeat)
    t_bregman = timed(lambda: bregman_projection_batch(kernel, a, b, max_iter=iters, tol=0.0), device, repeat)
    u, v, _ = sinkhorn(kernel[:, None], a[:, None], b[:, None], max_iter=iters, tol=0.0)
    plan = u[:, 0, :, None] * kernel * v[:, 0, None, :]
    pot = ot.solve_batch(cost, reg=0.1, a=a, b=b, max_iter=iters, tol=0.0, method="sinkhorn", reg_type="entropy",
                         grad="detach")
    res = {"problems": batch * classes, "iterations": iters, "pot_iterations": int(pot.log["n_iter"]) + 1,
           "pot_version": ot.__version__, "dtype": str(kernel.dtype), "awt_ms": 1000 * t_ours,
           "pot_solve_batch_ms": 1000 * t_pot, "pot_bregman_ms": 1000 * t_bregman,
           "pot_over_awt": t_pot / t_ours, "pot_bregman_over_awt": t_bregman / t_ours,
           "max_plan_diff": float((plan - torch.as_tensor(pot.plan)).abs().max())}
    if legacy is not None:
        legacy_sinkhorn = sys.modules[legacy.__name__.rsplit(".", 1)[0] + ".transport"].sinkhorn
        t_old = timed(lambda: legacy_sinkhorn(*args4, max_iter=iters, tol=0.0), device, repeat)
        res["legacy_awt_ms"], res["pot_over_legacy"] = 1000 * t_old, t_pot / t_old
    res["other_cpus"] = load.cpus()
    print(f"  solver  {batch * classes} problems {views}x{prompts}, {iters} iterations, float32: awt {res['awt_ms']:.1f} ms"
          + (f" (before {res['legacy_awt_ms']:.1f})" if legacy is not None else "")
          + f"; POT {ot.__version__} solve_batch {res['pot_solve_batch_ms']:.1f} ms ({res['pot_over_awt']:.2f}x ours"
          + (f", before {res['pot_over_legacy']:.2f}x" if legacy is not None else "")
          + f"), its Sinkhorn loop on the same kernel {res['pot_bregman_ms']:.1f} ms ({res['pot_bregman_over_awt']:.2f}x); "
          f"max plan diff {res['max_plan_diff']:.1e}; other processes kept {res['other_cpus']:.2f} CPUs busy", flush=True)
    return res


def bench_prompts(backbone, device: torch.device, path: Path, count: int, repeat: int) -> dict:
    """Prompts per second: every prompt padded to the full context, against the engine's path
    (batches of similar length, each cut after its longest prompt where the text tower allows it)."""
    from awt.descriptions import load_descriptions
    from awt.prompt_sets import build_prompts
    from awt.prompts import encode_prompts

    ds = load_descriptions(path)
    prompts = build_prompts(ds.names, "a photo of a {}", ds.descriptions, per_class=10**6, allow_fewer=True)
    texts = list(dict.fromkeys(t for p in prompts for t in p))[:count]
    full_batch = 256

    def full() -> torch.Tensor:
        if backbone.library == "transformers":   # its own tokenizer, padded to its full length
            return backbone.encode_texts(texts, padding="max_length")
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), full_batch):
                tokens = backbone.tokenizer(texts[start:start + full_batch]).to(device)
                with backbone.autocast():
                    out.append(torch.nn.functional.normalize(backbone.model.encode_text(tokens).float(), dim=-1))
        return torch.cat(out)

    reference = full()
    t_full = timed(full, device, repeat)
    ours, _ = encode_prompts(backbone, [[t] for t in texts], None)
    t_ours = timed(lambda: encode_prompts(backbone, [[t] for t in texts], None), device, repeat)
    diff = float((ours[:, 0] - reference).abs().max())
    result = {"file": str(path), "prompts": len(texts), "full_prompts_per_s": len(texts) / t_full,
              "awt_prompts_per_s": len(texts) / t_ours, "speedup": t_full / t_ours, "max_abs_diff": diff,
              "trimmed": getattr(backbone, "text_tower", None) is not None}
    print(f"  prompts {result['awt_prompts_per_s']:9.1f} prompts/s, padded to the full context "
          f"{result['full_prompts_per_s']:.1f}: {result['speedup']:.2f}x ({len(texts)} prompts of {path.name}, "
          f"trimmed: {result['trimmed']}, max diff {diff:.1e})", flush=True)
    return result


def method_prompts_count(name: str, descriptions: int) -> int:
    """Prompts per class in the set ``name`` reads (awt.prompt_sets builds them)."""
    from awt.methods import get_method

    return get_method(name).prompts.size(descriptions)


def bench_methods(device, classes: int, views: int, descriptions: int, dim: int, batch: int, repeat: int) -> dict:
    """Each registered method's scoring alone, ``methods.score`` on random unit features: ``views``
    views per image (a view-0 method reads view 0), its own prompt set, ``classes`` classes."""
    from awt import methods

    out = {}
    for name in methods.method_names():
        prompts = method_prompts_count(name, descriptions)
        text = random_text_features(classes, prompts, dim, device)
        image = random_image_features(batch, views, dim, text)
        with torch.inference_mode():
            methods.score(name, image[:1], text, None, 100.0)   # warm-up
            took = timed(lambda: methods.score(name, image, text, None, 100.0), device, repeat)
        out[name] = {"ms_per_image": 1000 * took / batch, "prompts": prompts, "views": views, "classes": classes}
        print(f"  method  {name:<14} {out[name]['ms_per_image']:9.3f} ms/image  ({classes} classes, "
              f"{views if methods.get_method(name).random_views else 1} views, {prompts} prompts)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--pretrained", default="none")
    p.add_argument("--precision", default="auto")
    p.add_argument("--classes", type=int, default=100, help="classes for the end-to-end runs")
    p.add_argument("--views", type=int, default=50, help="random views N (N+1 in all)")
    p.add_argument("--descriptions", type=int, default=50, help="descriptions per class M (M+1 prompts)")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--naive-images", type=int, default=None, help="images for the naive pipeline (default: --images)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: 4 on CPU, 32 on GPU)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--image-dir", default=None)
    p.add_argument("--scorer-classes", default="100,1000,20000")
    p.add_argument("--scorer-batch", type=int, default=None, help="images per scorer call (default: 8 on CPU, 64 on GPU)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--scorer-repeat", type=int, default=SCORER_REPEAT,
                   help="timed calls per scorer figure, the best kept (at least --repeat)")
    p.add_argument("--legacy-commit", default=LEGACY_COMMIT,
                   help="git commit whose scorer is timed beside this one ('none': skip)")
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--prompts-file", default=str(SHARED_CALTECH),
                   help="descriptions JSON for the prompt throughput (default: AWT's Caltech101 file in ../shared)")
    p.add_argument("--prompts", type=int, default=1024, help="distinct prompts encoded for the prompt throughput")
    p.add_argument("--skip-prompts", action="store_true")
    p.add_argument("--method-classes", type=int, default=1000, help="classes for the per-method scoring cost")
    p.add_argument("--methods-only", action="store_true", help="only the per-method scoring cost (no model)")
    p.add_argument("--dim", type=int, default=512, help="embedding size for --methods-only")
    p.add_argument("--json", dest="json_path", default=None)
    args = p.parse_args()
    result: dict = {}
    try:
        (measure_methods if args.methods_only else measure)(args, result)
    except KeyboardInterrupt:       # the figures printed so far stand; the JSON keeps them too
        result["interrupted"] = True
        print("throughput: interrupted" + (f"; what was measured goes to {args.json_path}" if args.json_path else ""),
              file=sys.stderr, flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json_path}")
    if result.get("interrupted"):
        sys.exit(130)


def measure_methods(args, result: dict) -> None:
    """``--methods-only``: the per-method scoring cost, into ``result``."""
    device = resolve_device(args.device)
    batch = args.scorer_batch or (64 if device.type == "cuda" else 8)
    print(f"awt {awt.__version__}, torch {torch.__version__}, {device}, per-method scoring: "
          f"{args.views + 1} views, M = {args.descriptions}, dim {args.dim}, batch {batch}", flush=True)
    result.update({"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()})
    result["methods"] = bench_methods(device, args.method_classes, args.views + 1, args.descriptions, args.dim,
                                      batch, args.repeat)


def measure(args, result: dict) -> None:
    """The whole run, each stage's figures printed and put into ``result`` as it ends."""
    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    batch_size = args.batch_size or (32 if on_gpu else 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = create_backbone(args.model, args.pretrained, device, args.precision)
    views, prompts = args.views + 1, args.descriptions + 1
    files = image_files(args.images, args.image_dir)
    print(f"awt {awt.__version__}, torch {torch.__version__}, {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if on_gpu else f" ({os.cpu_count()} CPUs, {torch.get_num_threads()} threads)")
          + f", {args.model} {backbone.precision}, {views} views x {prompts} prompts, {args.classes} classes, "
          f"{len(files)} images, batch {batch_size}", flush=True)

    # Class prompts: random unit embeddings of the right shape. Encoding M+1 prompts per class is a
    # one-off cost per class set (cached on disk in real use) and does not touch the image side.
    dim = backbone.encode_texts(["a photo of a cat."]).shape[-1]
    started = time.perf_counter()
    estimate = estimate_seconds(backbone, device, args, len(files), batch_size, views, prompts, dim)
    print("  this run: about " + ", ".join(f"{k} {_duration(v)}" for k, v in estimate.items() if k != "total")
          + f"; {_duration(estimate['total'])} in all on this machine, from a one-image calibration"
          + ("" if estimate["total"] < 120 else " (--skip-naive, --scorer-classes 100,1000, --skip-prompts shorten it)"),
          flush=True)
    text = random_text_features(args.classes, prompts, dim, device)
    names = [f"class {i}" for i in range(args.classes)]
    clf = AWTClassifier(backbone, ClassifierSpec(names, views=args.views, cache_dir=None),
                        classes=ClassPrompts(names, None, text, None))
    result.update({"device": str(device), "gpu": torch.cuda.get_device_name(device) if on_gpu else None,
                   "cpu_count": os.cpu_count(), "torch": torch.__version__, "awt": awt.__version__,
                   "platform": platform.platform(), "model": args.model, "precision": backbone.precision,
                   "views": views, "prompts": prompts, "classes": args.classes, "images": len(files),
                   "batch_size": batch_size, "estimated_seconds": estimate["total"]})

    # (a0) the text side: prompts per second
    if not args.skip_prompts and Path(args.prompts_file).is_file():
        result["prompts"] = bench_prompts(backbone, device, Path(args.prompts_file), args.prompts, args.repeat)

    # (a) the encoder alone on ready-made view tensors
    h, w = backbone.image_size
    pixels = torch.randn(batch_size * views, 3, h, w, device=device).to(backbone.input_dtype)
    backbone.encode_images(pixels)  # warm-up: a whole batch, so that its activations are not first touched in the timing
    n_batches = max(1, len(files) // batch_size)
    reset_peak(device)
    load = OtherLoad()
    t_enc = timed(lambda: [backbone.encode_images(pixels) for _ in range(n_batches)], device, args.repeat)
    result["encode_images_per_s"] = n_batches * batch_size / t_enc
    result["encode_peak_mb"] = peak_mb(device)
    result["encode_other_cpus"] = load.cpus()
    print(f"  encode  {result['encode_images_per_s']:9.3f} images/s ({views} views each; other processes kept "
          f"{result['encode_other_cpus']:.2f} CPUs busy meanwhile)", flush=True)

    # (b) full AWT, end to end from files. Loader workers start on the first call with them and
    # are kept (like the model, a one-off cost): that first pass is reported apart, as "cold".
    workers = default_workers(len(files), batch_size) if args.workers is None else args.workers
    clf.classify(files[:batch_size], batch_size=batch_size, num_workers=0)  # warm-up
    result["workers"] = workers
    if workers > 0:
        t_cold = timed(lambda: clf.classify(files, batch_size=batch_size, num_workers=workers), device)
        result["awt_cold_images_per_s"] = len(files) / t_cold
        result["awt_cold_over_encode"] = result["awt_cold_images_per_s"] / result["encode_images_per_s"]
    reset_peak(device)
    t_awt = timed(lambda: clf.classify(files, batch_size=batch_size, num_workers=workers), device, args.repeat)
    result["awt_images_per_s"] = len(files) / t_awt
    result["awt_peak_mb"] = peak_mb(device)
    result["awt_over_encode"] = result["awt_images_per_s"] / result["encode_images_per_s"]
    print(f"  awt     {result['awt_images_per_s']:9.3f} images/s  = {result['awt_over_encode']:.3f} of encode-only"
          + (f" ({workers} loader workers; their first call, start-up included: {result['awt_cold_images_per_s']:.3f} "
             f"images/s = {result['awt_cold_over_encode']:.3f})" if workers > 0 else ", in-process decoding"), flush=True)

    # (c) the paper-style pipeline
    if not args.skip_naive:
        naive_files = files[: args.naive_images or len(files)]
        torch.manual_seed(0)
        t_naive = timed(lambda: naive_pipeline(backbone, clf.text_features, naive_files, args.views), device)
        result["naive_images_per_s"] = len(naive_files) / t_naive
        result["awt_over_naive"] = result["awt_images_per_s"] / result["naive_images_per_s"]
        print(f"  naive   {result['naive_images_per_s']:9.3f} images/s; awt is {result['awt_over_naive']:.1f}x faster", flush=True)

    # (d) the scorer alone (before and after issue 26), its roofline, and our solver against POT's
    del clf, backbone, pixels   # the prompt features of 20,000 classes need the room
    release_memory()
    legacy = None if args.legacy_commit in ("", "none") else legacy_scorer(args.legacy_commit)
    result["legacy_commit"] = args.legacy_commit if legacy is not None else None
    machine = probe_machine(device, args.repeat)
    result["machine"] = machine
    print(f"  machine {machine['gflops']:.0f} GFLOP/s (float32 GEMM), {machine['read_gb_per_s']:.1f} GB/s (read)"
          + ("" if legacy is not None else f"; no scorer at {args.legacy_commit} to compare with"), flush=True)
    scorer_batch = args.scorer_batch or (64 if on_gpu else 8)
    classes_list = [int(c) for c in args.scorer_classes.split(",") if c]
    scorer = bench_scorer(device, classes_list, views, prompts, dim, scorer_batch, args, legacy,
                          1 / result["encode_images_per_s"], machine)
    result["scorer"] = scorer
    result["scorer_ms_per_image"] = {k: v["ms_per_image"] for k, v in scorer.items()}
    try:
        result["solvers"] = bench_solvers(device, 1000 if on_gpu else 200, views, prompts, 4 if on_gpu else 1,
                                          args.repeat, legacy)
    except RuntimeError as e:  # POT 0.9.7's solve_batch mixes devices with CUDA tensors
        print(f"  solver  POT solve_batch failed on {device}: {str(e).splitlines()[0]}; comparing on the CPU", flush=True)
        result["solvers"] = {"error_on_device": str(e).splitlines()[0],
                             **bench_solvers(torch.device("cpu"), 200, views, prompts, 1, args.repeat, legacy)}
    result["methods"] = bench_methods(device, args.method_classes, views, args.descriptions, dim, scorer_batch,
                                      args.repeat)
    result["methods_ms_per_image"] = {k: v["ms_per_image"] for k, v in result["methods"].items()}
    result["peak_mb"] = peak_mb(device)

    result["seconds"] = time.perf_counter() - started
    print(f"  took {_duration(result['seconds'])} (estimated {_duration(estimate['total'])})", flush=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def estimate_seconds(backbone, device, args, images: int, batch_size: int, views: int, prompts: int,
                     dim: int) -> dict[str, float]:
    """How long each stage of this run will take, from measurements made now: one image's views
    through the encoder, the scorer on 1,000 classes and the literal loop on 100 (both grow about
    linearly with the classes), a few prompts through the text encoder."""
    h, w = backbone.image_size
    pixels = torch.randn(views, 3, h, w, device=device).to(backbone.input_dtype)
    backbone.encode_images(pixels)   # warm-up
    image = timed(lambda: backbone.encode_images(pixels), device)
    text = random_text_features(1000, prompts, dim, device)
    feats = random_image_features(2, views, dim, text)
    awt_scores_from_features(feats[:1], text, 100.0)   # warm-up
    score_100 = timed(lambda: awt_scores_from_features(feats, text, 100.0), device) / 2 / 10
    logits = 100.0 * torch.einsum("vd,cpd->vpc", feats[0], text[:100])
    literal_100 = timed(lambda: paper_awt_scores_single(logits, 100.0), device)
    repeat = args.repeat
    n_batches = max(1, images // batch_size)
    stages = {}
    if not args.skip_prompts and Path(args.prompts_file).is_file():
        texts = [f"a photo of a thing number {i}, which is a kind of object." for i in range(16)]
        backbone.encode_texts(texts)   # warm-up
        per_prompt = timed(lambda: backbone.encode_texts(texts), device) / len(texts)
        stages["prompts"] = (repeat + 1) * args.prompts * per_prompt * 4.5   # padded to the full context: ~3.5x
    stages |= {"encode": repeat * n_batches * batch_size * image,
              "end to end": (batch_size + images * (repeat + (1 if args.workers != 0 else 0))) * image * 1.2}
    if not args.skip_naive:
        stages["naive"] = (args.naive_images or images) * image * 1.5
    scorer = 0.0
    batch = args.scorer_batch or (64 if device.type == "cuda" else 8)
    for classes in (int(c) for c in args.scorer_classes.split(",") if c):
        n = batch if classes <= 1000 else max(1, batch // 8)
        per_image = score_100 * classes / 100
        calls = 2 * max(repeat, args.scorer_repeat) + 2           # from logits, from features, warm-up, peak
        scorer += calls * n * per_image * (1 if args.legacy_commit in ("", "none") else 3)   # the legacy is ~2x slower
        if classes <= 1000 and not args.skip_reference:
            scorer += 2 * 2 * literal_100 * classes / 100       # the literal loop, 2 images, twice
    if device.type == "cpu" and not args.skip_memory and any(int(c) >= 10000 for c in args.scorer_classes.split(",") if c):
        scorer += 20.0   # the memory check's fresh process (start-up, its own features)
    stages["scorer"] = scorer
    stages["methods"] = len(awt.methods.method_names()) * batch * score_100 * args.method_classes / 100 * repeat / 4
    stages["total"] = sum(stages.values())
    return stages


if __name__ == "__main__":
    main()
