"""Encoder and engine speed against the device's limit, for the GPU check.

Three ways through the same image encoder, each as images/s and views/s:
  bare     the model's ``encode_image`` on one tensor already on the device, in a tight loop, with
           as many views per call as the engine encodes per call
  encode   the engine's ``encode_views``: files decoded in loader workers, views cut on the device
  awt      ``AWTClassifier.iter_classify``: the above, then weights, transport and ranking
and the model FLOPs utilisation (MFU) of each: FLOPs per view x views/s over the GPU's dense
fp16/bf16 peak. FLOPs per view come from the ViT's shape (width, layers, patches, MLP size: 2 per
multiply-add of its matrix products), checked against ``torch.utils.flop_counter`` on one call.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from gpu_common import Result, plan_device, random_backbone
from gpu_data import image_files

# Dense (no sparsity) fp16/bf16 tensor-core peaks in TFLOP/s from the vendor's datasheets; the first
# pattern that matches torch.cuda.get_device_name() wins. Unknown cards: pass --peak-tflops.
PEAK_TFLOPS: list[tuple[str, str, float]] = [
    (r"GH200", "GH200", 989.4),
    (r"H100.*NVL", "H100 NVL", 835.0),
    (r"H100.*PCIe", "H100 PCIe", 756.0),
    (r"H100", "H100 SXM", 989.4),
    (r"H200.*NVL", "H200 NVL", 835.0),
    (r"H200", "H200 SXM", 989.4),
    (r"B200", "B200", 2250.0),
    (r"A100", "A100", 312.0),
    (r"\bA10\b", "A10", 125.0),
    (r"L40S", "L40S", 362.0),
    (r"\bL40\b", "L40", 181.0),
    (r"\bL4\b", "L4", 121.0),
    (r"V100S", "V100S", 130.0),
    (r"V100.*PCIE", "V100 PCIe", 112.0),
    (r"V100", "V100 SXM2", 125.0),
    (r"\bT4\b", "T4", 65.0),
]


def peak_tflops(device_name: str) -> tuple[str, float] | None:
    """(table entry, dense fp16/bf16 TFLOP/s) for a CUDA device name, or None when unknown."""
    for pattern, entry, tflops in PEAK_TFLOPS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return entry, tflops
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def loop_rate(fn: Callable[[], object], device: torch.device, seconds: float, warmup: int = 2) -> tuple[int, float]:
    """(calls, elapsed seconds) of ``fn`` called back to back for at least ``seconds`` after
    ``warmup`` calls; the device is synchronised only when the count of calls doubles."""
    for _ in range(warmup):
        fn()
    sync(device)
    calls, n, start = 0, 1, time.perf_counter()
    while True:
        for _ in range(n):
            fn()
        calls += n
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls, elapsed
        n = min(2 * n, 256)


def drain(items: Iterable, device: torch.device, limit_s: float, size: Callable[[object], int] = lambda item: 1
          ) -> tuple[int, float]:
    """(sum of ``size(item)``, seconds) of an iterator run to its end, or stopped after ``limit_s``."""
    sync(device)
    start, count = time.perf_counter(), 0
    iterator = iter(items)
    try:
        for item in iterator:
            count += size(item)
            if time.perf_counter() - start > limit_s:
                break
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    sync(device)
    return count, time.perf_counter() - start


def counted_flops(model: torch.nn.Module, pixels: torch.Tensor, autocast) -> int:
    """FLOPs of ``model.encode_image(pixels)`` by ``FlopCounterMode``. Run with autograd on, so that
    attention goes through the counted ops rather than the fused inference kernel, which the
    counter does not know."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.enable_grad(), autocast:
        model.encode_image(pixels)
    return int(counter.get_total_flops())


def formula_flops(visual: torch.nn.Module) -> float | None:
    """FLOPs per view of an open_clip ``VisionTransformer`` from its shape (2 per multiply-add;
    norms, softmax and activations left out), or None for another tower."""
    try:
        width = visual.transformer.width
        layers = visual.transformer.layers
        grid = visual.grid_size
        patch = visual.conv1.kernel_size[0]
        mlp = visual.transformer.resblocks[0].mlp.c_fc.out_features
    except AttributeError:
        return None
    patches = grid[0] * grid[1]
    tokens = patches + 1
    macs = patches * 3 * patch * patch * width                               # patch embedding
    macs += layers * (tokens * (4 * width * width + 2 * width * mlp) + 2 * tokens * tokens * width)
    proj = getattr(visual, "proj", None)
    if proj is not None:
        macs += width * proj.shape[-1]
    return 2.0 * macs


def rates(images: int, views_per_image: int, seconds: float, flops_per_view: float | None,
          peak: float | None) -> dict:
    """images/s, views/s and MFU (None without a peak) of ``images`` encoded in ``seconds``."""
    views_s = images * views_per_image / seconds
    mfu = views_s * flops_per_view / (peak * 1e12) if flops_per_view and peak else None
    return {"images": images, "seconds": round(seconds, 4), "images_per_s": images / seconds, "views_per_s": views_s,
            "achieved_tflops": views_s * flops_per_view / 1e12 if flops_per_view else None, "mfu": mfu}


def time_model(backbone, text: torch.Tensor, files: list[str], *, views: int, batch_size: int, workers: int,
               seconds: float, peak: float | None, save: Callable[[dict], None]) -> dict:
    """Bare encoder, encode-only and AWT end to end for one backbone (see the module docstring).

    ``text``: (classes, prompts, dim) unit prompt features; ``files``: at least enough images for
    ``seconds`` of encoding at the bare rate. ``save`` is called with the result so far after
    each part (a time-out then keeps what is done)."""
    from awt.classifier import AWTClassifier
    from awt.spec import ClassifierSpec
    from awt.prompts import ClassPrompts
    from awt.views import encode_views

    device, per_image = backbone.device, views + 1
    loader_batch = max(1, batch_size // 4) if workers > 0 else batch_size  # images per encoder call
    h, w = backbone.image_size
    out: dict = {"model": backbone.name, "precision": backbone.precision, "views_per_image": per_image,
                 "classes": text.shape[0], "prompts": text.shape[1], "batch_size": batch_size, "workers": workers,
                 "views_per_call": loader_batch * per_image}
    pixels = torch.randn(loader_batch * per_image, 3, h, w, device=device).to(backbone.input_dtype)
    model = backbone.model
    counted = counted_flops(model, pixels[:2], backbone.autocast()) / 2
    formula = formula_flops(model.visual)
    flops = formula or counted   # the shape's count where known: it does not depend on the kernels chosen
    out["flops_per_view"] = {"counted": counted, "formula": formula, "used": flops,
                             "counted_over_formula": counted / formula if formula else None}

    def bare() -> None:
        with torch.inference_mode(), backbone.autocast():
            model.encode_image(pixels)

    reset_peak(device)
    calls, took = loop_rate(bare, device, seconds / 2)
    out["bare"] = {**rates(calls * loader_batch, per_image, took, flops, peak), "calls": calls,
                   "peak_mib": peak_memory_mib(device)}
    save(out)

    bare_rate = out["bare"]["images_per_s"]
    n = max(2 * batch_size, min(len(files), batch_size * math.ceil(bare_rate * seconds / batch_size)))
    images = files[:n]
    # warm-up: the loader workers start (they are kept), kernels and allocator settle
    for _ in encode_views(backbone, files[:batch_size], views=views, batch_size=batch_size, num_workers=workers):
        pass
    reset_peak(device)
    done, took = drain(encode_views(backbone, images, views=views, batch_size=batch_size, num_workers=workers),
                       device, 3 * seconds, size=lambda batch: len(batch.indices))
    out["encode"] = {**rates(done, per_image, took, flops, peak), "peak_mib": peak_memory_mib(device)}
    save(out)

    names = [f"class {i}" for i in range(text.shape[0])]
    clf = AWTClassifier(backbone, ClassifierSpec(names, views=views, cache_dir=None),
                        classes=ClassPrompts(names, None, text, None))
    clf.classify(files[:batch_size], batch_size=batch_size, num_workers=workers)  # warm-up
    reset_peak(device)
    done, took = drain(clf.iter_classify(images, batch_size=batch_size, num_workers=workers), device, 3 * seconds)
    out["awt"] = {**rates(done, per_image, took, flops, peak), "peak_mib": peak_memory_mib(device)}
    out["awt_over_encode"] = out["awt"]["images_per_s"] / out["encode"]["images_per_s"]
    out["encode_over_bare"] = out["encode"]["images_per_s"] / out["bare"]["images_per_s"]
    save(out)
    return out


# -- the steps ------------------------------------------------------------------------------------

def timing_step(plan: dict, res: Result, slot: str) -> bool:
    """Bare encoder, encode-only and AWT end to end of one model (gpu_timing.time_model)."""
    from throughput import random_text_features

    from awt.views import default_workers

    p = plan["profile"]
    device = plan_device(plan)
    import torch

    found = peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    peak = plan.get("peak_tflops") or (found and found[1])
    t = time.perf_counter()
    backbone = random_backbone(plan, p["models"][slot], plan["device"], p["precision"])
    res.save(model_seconds=round(time.perf_counter() - t, 2))
    dim = backbone.encode_texts(["a photo of a cat."]).shape[-1]
    text = random_text_features(p["classes"], p["descriptions"] + 1, dim, device)
    files = image_files(Path(plan["scratch"]) / f"images-{slot}", p["distinct_images"], p["max_images"])
    workers = default_workers(len(files), p["batch_size"]) if p["workers"] is None else p["workers"]
    time_model(backbone, text, files, views=p["views"], batch_size=p["batch_size"], workers=workers,
               seconds=p["seconds"], peak=peak, save=lambda out: res.save(**out))
    return True


def scorer_step(plan: dict, res: Result) -> bool:
    """The AWT scorer alone from features at each class count (ms/image, peak device memory), then
    every registered method's scoring (throughput.bench_methods)."""
    import resource

    import torch
    from throughput import bench_methods, random_image_features, random_text_features

    from awt.scoring import awt_scores_from_features

    p, device = plan["profile"], plan_device(plan)
    views, prompts, dim = p["views"] + 1, p["descriptions"] + 1, p["scorer_dim"]

    def measure(classes: int, batch: int) -> dict:
        text = random_text_features(classes, prompts, dim, device)
        image = random_image_features(batch, views, dim, text)
        with torch.inference_mode():
            awt_scores_from_features(image[:1], text, 100.0)  # warm-up
            inputs = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
            reset_peak(device)
            calls, took = loop_rate(lambda: awt_scores_from_features(image, text, 100.0), device, p["seconds"] / 2, 1)
        peak = peak_memory_mib(device)
        return {"images_per_call": batch, "views": views, "prompts": prompts, "dim": dim, "calls": calls,
                "ms_per_image": 1000 * took / (calls * batch), "peak_mib": peak,
                "peak_over_inputs_mib": None if peak is None else peak - inputs,
                "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    out: dict = {}
    for classes, batch in zip(p["scorer_classes"], p["scorer_batch"]):
        out[str(classes)] = measure(classes, batch)
        res.save(scorer=out)
    methods = bench_methods(device, p["method_classes"], views, p["descriptions"], dim, p["scorer_batch"][0], 3)
    res.save(methods=methods, method_classes=p["method_classes"])
    return True
