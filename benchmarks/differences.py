"""Sizes of the differences from the authors' code that are not about decoding (README.md, "Differences
from the authors' code"; benchmarks/decoding.py measures those). CPU only, in one run:

* ZERO under the authors' fp16 autocast (``l = z_img @ z_txt.t()`` is a float16 matmul, and the
  "zero" temperature is ``torch.finfo(l.dtype).eps``, 2^-10 for float16) against the engine's float32
  (temperature 2^-23): how often the prediction changes, and how often a vote is not one-hot;
* ZERO's tie-break: how often its fallback (``break_sample_tie``) is reached, and ``0 log 0``;
* MTA's bandwidth with four views or fewer (``k = int(0.3 (views - 1)) = 0``);
* AutoCLIP's gradient as its simulation batches it (``weights[:, None]``: an image's class-g score
  weighted by the weights of the image of class g in its group) against the per-image gradient;
* the benchmark's feature cache in float16 against float32, for AWT, ZERO and MTA;
* WaffleCLIP's random characters (from its descriptor file, with ``--waffle-descriptors``) and ours;
* SigLIP's and ALIGN's view 0 as the authors' scripts make it (torchvision Resize + CenterCrop to
  224, ``ToTensor``, then the processor with ``do_rescale=False``) against the processor on the image
  (the engine), on real photos (needs ``awt[hf]``; skipped without transformers).

Features are random but CLIP-like (unit vectors in 512 dimensions, cosines about 0.2 with the wrong
classes and 0.3 with the right one, as CLIP ViT-B/16's; views of an image correlated); their
statistics are printed with them.

    python benchmarks/differences.py [--images 400] [--data ../shared/data] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from awt import methods, rivals

REPO = Path(__file__).resolve().parents[1]
SCALE = 100.0


def clip_like(n: int, views: int, prompts: int, classes: int, dim: int = 512, seed: int = 0,
              labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit features with CLIP-like cosines: a direction every feature shares (CLIP's cosines sit
    around 0.2), class directions, an image's own noise, and a smaller noise per view (the views of
    an image agree more with each other than with other images).
    -> image (n, views, dim), text (classes, prompts, dim), labels."""
    g = torch.Generator().manual_seed(seed)
    common = F.normalize(torch.randn(dim, generator=g), dim=0)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    text = F.normalize(0.55 * common + 0.5 * centres[:, None]
                       + 0.9 * torch.randn(classes, prompts, dim, generator=g) / dim**0.5, dim=-1)
    if labels is None:
        labels = torch.randint(0, classes, (n,), generator=g)
    image = F.normalize(0.55 * common + 0.3 * centres[labels][:, None] + torch.randn(n, 1, dim, generator=g) / dim**0.5
                        + 0.6 * torch.randn(n, views, dim, generator=g) / dim**0.5, dim=-1)
    return image, text, labels


def cosine_stats(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> dict:
    cos = image[:, 0] @ rivals.class_embeddings(text).T
    right = cos.gather(1, labels[:, None])[:, 0]
    wrong = cos.masked_fill(F.one_hot(labels, cos.shape[1]).bool(), float("nan"))
    top2 = cos.topk(2, dim=1).values
    return {"cos_right": round(float(right.mean()), 3), "cos_wrong": round(float(wrong.nanmean()), 3),
            "cos_wrong_std": round(float(wrong[~wrong.isnan()].std()), 3),
            "top2_gap_median": round(float((top2[:, 0] - top2[:, 1]).median()), 4),
            "clip_top1": round(float((cos.argmax(1) == labels).float().mean() * 100), 1)}


# -- ZERO ---------------------------------------------------------------------------------------------

def zero_as_run(cos: torch.Tensor, half: bool, gamma: float = 0.3) -> tuple[int, bool, str]:
    """One image through ZERO's ``Zero.zero`` (ttas/zero.py, ttas/base.py confidence_filter,
    utils/tools.py greedy_break) with the dtypes it runs in: under autocast (``half``) the logits
    ``l`` are float16 (a matmul), ``l / temp`` stays float16 (a 0-dim float32 divisor), softmax runs in
    float32, and the zero temperature is float16's eps. Ties fall back as the engine does (the
    authors' fallback is counted apart). -> (prediction, soft votes?, tie case)."""
    l = cos.half() if half else cos.float()
    p = (l / (1.0 / SCALE)).float().softmax(1)
    entropy = -(p * p.log()).sum(1)
    if bool(entropy.isnan().any()):
        return -1, False, "nan"
    order = torch.argsort(entropy, stable=True)
    keep = int(cos.shape[0] * gamma)
    zero_temp = torch.finfo(l.dtype).eps
    p_bar = (l[order[:keep]] / zero_temp).float().softmax(1).sum(0)
    soft = bool(((p_bar > 1e-3) & ((p_bar - p_bar.round()).abs() > 1e-3)).any())
    top = p_bar.max()
    tied = (p_bar == top).nonzero().flatten().tolist()
    case = "none"
    if len(tied) > 1:
        case = "greedy"
        preds = l[order][keep:].float().argmax(1).tolist()
        pick = next((c for c in preds if c in tied), None)
        if pick is None:
            case = "fallback"
            first = l[order][keep].float()
            pick = max(tied, key=lambda c: float(first[c]))
        p_bar[pick] += 1
    return int(p_bar.argmax()), soft, case


def zero_section(images: int, views: int, classes: int, seed: int) -> dict:
    image, text, labels = clip_like(images, views, 1, classes, seed=seed)
    z_txt = text[:, 0]
    ours = methods.score("zero", image, text, None, SCALE).argmax(1)
    cos = image @ z_txt.T
    fp32 = [zero_as_run(cos[i], half=False) for i in range(images)]
    fp16 = [zero_as_run(cos[i], half=True) for i in range(images)]
    same32 = sum(int(ours[i]) == fp32[i][0] for i in range(images))
    changed = sum(fp16[i][0] != fp32[i][0] for i in range(images))
    acc = lambda preds: round(100 * sum(p == int(t) for p, t in zip(preds, labels)) / images, 2)   # noqa: E731
    return {"images": images, "views": views, "classes": classes, **cosine_stats(image, text, labels),
            "emulation_fp32_equals_engine": f"{same32}/{images}",
            "fp16_prediction_changed_pct": round(100 * changed / images, 2),
            "fp16_soft_votes_pct": round(100 * sum(r[1] for r in fp16) / images, 2),
            "fp32_soft_votes_pct": round(100 * sum(r[1] for r in fp32) / images, 2),
            "top1_fp32": acc([r[0] for r in fp32]), "top1_fp16": acc([r[0] for r in fp16]),
            "ties_fp32": sum(r[2] != "none" for r in fp32), "ties_fp16": sum(r[2] != "none" for r in fp16),
            "fallback_fp32": sum(r[2] == "fallback" for r in fp32), "fallback_fp16": sum(r[2] == "fallback" for r in fp16),
            "entropy_nan": sum(r[2] == "nan" for r in fp32 + fp16)}


# -- MTA ---------------------------------------------------------------------------------------------

def mta_bandwidth_as_written(feats: torch.Tensor) -> torch.Tensor:
    """MaxZanella/MTA mta.py solve_mta's bandwidth lines, on one image's (views, dim) features."""
    dist = torch.cdist(feats, feats)
    sorted_dist, _ = torch.sort(dist, dim=1)
    k = int(0.3 * (feats.shape[0] - 1))
    return torch.sqrt(0.5 * torch.mean(sorted_dist[:, 1:k + 1] ** 2, dim=1))


def mta_section(seed: int) -> dict:
    out = {}
    for views in (2, 3, 4, 5):
        image, text, _ = clip_like(1, views, 1, 10, seed=seed)
        theirs = mta_bandwidth_as_written(image[0])
        ours = methods.score("mta", image, text, None, SCALE)
        out[f"views_{views}"] = {"k": int(0.3 * (views - 1)), "their_bandwidth_nan": bool(theirs.isnan().all()),
                                 "engine_scores_finite": bool(torch.isfinite(ours).all())}
    return out


# -- AutoCLIP ------------------------------------------------------------------------------------------

def autoclip_section(per_class: int, classes: int, prompts: int, seed: int) -> dict:
    """Images in groups of one per class (the simulation's (instance, class) layout)."""
    labels = torch.arange(classes).repeat(per_class)                         # group i: images i*C .. i*C + C - 1
    image, text, labels = clip_like(len(labels), 1, prompts, classes, seed=seed, labels=labels)
    ours = methods.score("autoclip", image, text, None, SCALE)
    sim = torch.einsum("nd,cpd->ncp", image[:, 0], text).double()            # (images, classes, prompts)
    s = sim.view(per_class, classes, classes, prompts)                       # (i, c image, g class, d)

    def steps_weights(grad: torch.Tensor) -> torch.Tensor:
        uniform = torch.full((1, prompts), 1.0 / prompts, dtype=torch.float64)
        target = (0.85 * -(uniform * torch.log2(uniform)).sum(-1)).expand(grad.shape[0])
        step = rivals.bisect_steps(grad, target)
        return (step.float()[:, None] * grad.float()).softmax(-1)            # (images, prompts)

    def run(batched: bool) -> torch.Tensor:
        rho = torch.zeros(per_class, classes, prompts, dtype=torch.float64, requires_grad=True)
        w = rho.softmax(-1)
        weights = w[:, None] if batched else w[:, :, None]                   # theirs: the weights of image (i, g)
        lse = torch.logsumexp((weights * s).sum(-1), dim=2).sum()
        (grad,) = torch.autograd.grad(lse, rho)
        final = steps_weights(grad.reshape(-1, prompts)).view(per_class, classes, 1, prompts)
        return SCALE * (final.double() * s).sum(-1).reshape(-1, classes)     # own weights, as theirs at the end

    per_image, batched = run(False), run(True)
    acc = lambda sc: round(float((sc.argmax(1) == labels).float().mean() * 100), 2)   # noqa: E731
    return {"images": len(labels), "classes": classes, "prompts": prompts,
            "per_image_equals_engine": bool(torch.equal(per_image.argmax(1), ours.argmax(1))),
            "per_image_max_score_diff": round(float((per_image.float() - ours).abs().max()), 5),
            "batched_prediction_changed_pct": round(float((batched.argmax(1) != per_image.argmax(1)).float().mean() * 100), 2),
            "top1_per_image": acc(per_image), "top1_batched": acc(batched)}


# -- the float16 feature cache ---------------------------------------------------------------------------

def cache_section(images: int, seed: int) -> dict:
    image, text, labels = clip_like(images, 51, 51, 100, seed=seed)
    cached = image.half().float()
    out = {"images": images, "views": 51, "prompts": 51, "classes": 100,
           "feature_max_abs_diff": float((cached - image).abs().max())}
    for name in ("awt", "zero", "mta"):
        a = methods.score(name, image, text, None, SCALE)
        b = methods.score(name, cached, text, None, SCALE)
        out[name] = {"max_score_diff": round(float((a - b).abs().max()), 5),
                     "top1_changed": int((a.argmax(1) != b.argmax(1)).sum())}
    return out


# -- SigLIP and ALIGN: the authors' view 0 ---------------------------------------------------------------

def processors():
    """SigLIP's (google/siglip-base-patch16-224: the processor's defaults) and ALIGN's
    (kakaobrain/align-base's preprocessor_config.json: squash to 346 bilinear, centre crop 289,
    x / 127.5 - 1, no normalisation)."""
    from transformers import EfficientNetImageProcessor, SiglipImageProcessor

    align = EfficientNetImageProcessor(size={"height": 346, "width": 346}, resample=2, do_center_crop=True,
                                       crop_size={"height": 289, "width": 289}, do_rescale=True,
                                       rescale_factor=1 / 127.5, rescale_offset=True, do_normalize=False,
                                       include_top=False)
    return {"siglip": SiglipImageProcessor(), "align": align}


def preprocess_section(data: Path, limit: int) -> dict:
    try:
        procs = processors()
    except ImportError:
        return {"skipped": "transformers is not installed (pip install 'awt[hf]')"}
    import torchvision.transforms as T
    from PIL import Image

    authors_pre = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor()])
    paths = []
    for name in ("imagenet-sample", "caltech101"):
        with open(data / name / "labels.csv", newline="") as f:
            paths += [data / name / row["path"] for row in csv.DictReader(f)][:limit]
    out = {"images": len(paths)}
    for name, proc in procs.items():
        diffs, ranges = [], []
        for path in paths:
            with Image.open(path) as im:
                image = im.convert("RGB")
            ours = proc(images=image, return_tensors="pt")["pixel_values"][0]
            theirs = proc(images=authors_pre(image), return_tensors="pt", do_rescale=False)["pixel_values"][0]
            diffs.append(float((ours - theirs).abs().mean()))
            ranges.append((float(theirs.min()), float(theirs.max())))
        out[name] = {"input_size": list(ours.shape[-2:]), "mean_abs_diff": round(float(np.mean(diffs)), 4),
                     "max_image_mean_abs_diff": round(float(np.max(diffs)), 4),
                     "engine_range": [round(float(ours.min()), 3), round(float(ours.max()), 3)],
                     "authors_range": [round(min(r[0] for r in ranges), 3), round(max(r[1] for r in ranges), 3)]}
    return out


# -- WaffleCLIP's characters and words -----------------------------------------------------------------

def waffle_section(descriptors: Path | None) -> dict:
    """The engine's sources against WaffleCLIP's: its characters are those of the words of its GPT
    descriptor file (waffle_tools.py, mode 'waffle': split on spaces, ',' and '.' dropped, the
    characters left); its words a pickled list (word_list.pkl), not read here (a pickle runs code)."""
    from awt.waffle import CHARACTERS, word_list

    out = {"engine_characters": len(CHARACTERS), "engine_words": len(word_list())}
    if descriptors is not None and descriptors.is_file():
        doc = json.loads(descriptors.read_text(encoding="utf-8"))
        words = {w.replace(",", "").replace(".", "") for v in doc.values() for d in v for w in d.split(" ")}
        theirs = sorted(set("".join(words)))
        out.update({"their_characters": len(theirs), "theirs_not_ours": "".join(c for c in theirs if c not in CHARACTERS),
                    "ours_not_theirs": "".join(c for c in CHARACTERS if c not in theirs),
                    "drawn_character_not_ours_pct": round(100 * sum(c not in CHARACTERS for c in theirs) / len(theirs), 1)})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--preprocess-images", type=int, default=100, help="per dataset, for SigLIP and ALIGN")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--waffle-descriptors", type=Path, help="WaffleCLIP's descriptors/descriptors_imagenet.json")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    results = {}

    def show(name: str, value) -> None:
        results[name] = value
        print(f"{name}: {json.dumps(value)}", flush=True)

    for views, classes in ((64, 100), (64, 1000), (51, 1000)):
        show(f"zero_views{views}_classes{classes}", zero_section(args.images, views, classes, args.seed))
    show("mta_few_views", mta_section(args.seed))
    show("autoclip", autoclip_section(2, 200, 80, args.seed))
    show("feature_cache_fp16", cache_section(min(args.images, 200), args.seed))
    if args.data.is_dir():
        show("siglip_align_view0", preprocess_section(args.data, args.preprocess_images))
    show("waffle_sources", waffle_section(args.waffle_descriptors))
    bound = math.log(torch.finfo(torch.float32).tiny) / -SCALE
    show("zero_0log0_bound", {"cosine_gap_for_an_underflow": round(bound, 3)})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
