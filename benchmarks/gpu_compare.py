"""Results on the device against the CPU's, within a tolerance set by the device's precision.

The tolerance (``Tolerance.of``), with ``u`` the unit roundoff of the device's precision (fp16
2^-11, bf16 2^-8, fp32 2^-24):
  features  every coordinate of an L2-normalised image feature within 8u of the CPU's
  scores    every class score within 8u x logit_scale (a cosine within 8u, in logit units)
  top-1     the same class as the CPU's for every image whose CPU top-2 margin exceeds twice the
            score tolerance; closer calls (near-ties) may swap, and are counted
A classify run passes when every image is there and both bounds hold; a bench run when the same
runs exist and their feature sets are within the feature bound. Its metrics are shown side by
side: with random weights, near-ties make a swapped image (one image's worth of top-1) possible.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

UNIT_ROUNDOFF = {"fp16": 2.0**-11, "amp": 2.0**-11, "bf16": 2.0**-8, "amp_bf16": 2.0**-8, "fp32": 2.0**-24}
FACTOR = 8


@dataclass(frozen=True)
class Tolerance:
    precision: str
    unit_roundoff: float
    features: float             # max |difference| of a unit feature's coordinates
    scores: float | None        # max |difference| of a class score (None: features only)

    @classmethod
    def of(cls, precision: str, logit_scale: float | None = None) -> "Tolerance":
        u = UNIT_ROUNDOFF[precision]
        return cls(precision, u, FACTOR * u, None if logit_scale is None else FACTOR * u * logit_scale)


def read_classify_lines(text: str) -> dict[str, dict[int, float]]:
    """``awt classify --json`` output -> {image: {class index: score}} (error lines left out)."""
    out = {}
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            if "predictions" in row:
                out[row["image"]] = {p["index"]: p["score"] for p in row["predictions"]}
    return out


def compare_classify(reference: dict[str, dict[int, float]], device: dict[str, dict[int, float]],
                     tol: Tolerance) -> dict:
    """Every class score of every image, device against reference (see the module docstring)."""
    missing = sorted(set(reference) - set(device))
    extra = sorted(set(device) - set(reference))
    max_diff, agree, near, clear_swaps = 0.0, 0, 0, []
    for image in sorted(set(reference) & set(device)):
        ref, got = reference[image], device[image]
        if set(ref) != set(got):
            clear_swaps.append(image)   # different classes ranked: never within tolerance
            continue
        max_diff = max(max_diff, max(abs(ref[c] - got[c]) for c in ref))
        ranked = sorted(ref, key=ref.get, reverse=True)
        margin = ref[ranked[0]] - ref[ranked[1]] if len(ranked) > 1 else float("inf")
        near_tie = margin <= 2 * tol.scores
        near += near_tie
        if max(got, key=got.get) == ranked[0]:
            agree += 1
        elif not near_tie:
            clear_swaps.append(image)
    compared = len(set(reference) & set(device))
    return {"images": len(reference), "compared": compared, "missing": missing, "extra": extra,
            "max_score_diff": max_diff, "top1_agreement": agree / compared if compared else None,
            "top1_agree": agree, "near_ties": near, "clear_top1_swaps": clear_swaps, "tolerance": asdict(tol),
            "passed": bool(compared) and not missing and not extra and not clear_swaps and max_diff <= tol.scores}


def compare_features(reference, device, tol: Tolerance) -> dict:
    """Two (images, views, dim) feature tensors of the same images."""
    import torch

    if reference.shape != device.shape:
        return {"shape": [list(reference.shape), list(device.shape)], "passed": False}
    a, b = reference.float(), device.float()
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min()) if a.numel() else 1.0
    return {"shape": list(a.shape), "max_abs_diff": diff, "min_cosine": cosine, "passed": diff <= tol.features}


def bench_records(output: Path) -> dict[str, dict]:
    """The run records under a bench output folder, by ``backbone/dataset/method``."""
    from awt.bench.records import read_record

    records = {}
    for path in sorted((output / "runs").rglob("*.json")):
        record = read_record(path)
        if record is not None:
            records[f"{record['backbone']}/{record['dataset']}/{record['method']}"] = record
    return records


def compare_bench(reference: Path, device: Path, tol: Tolerance) -> dict:
    """Two ``awt bench`` output folders of one config: runs, metrics and feature sets."""
    import torch

    ref, got = bench_records(reference), bench_records(device)
    metrics = {}
    for key in sorted(set(ref) & set(got)):
        metrics[key] = {m: [ref[key][m], got[key][m]] for m in ("top1", "top5", "mean_per_class_recall")}
    sets = {}
    for key in sorted(set(ref) & set(got)):
        a, b = ref[key]["features"]["file"], got[key]["features"]["file"]
        if Path(a).name not in sets:
            sets[Path(a).name] = compare_features(torch.load(a, weights_only=True)["features"],
                                                  torch.load(b, weights_only=True)["features"], tol)
    moved = max((abs(v[0] - v[1]) for m in metrics.values() for v in m.values()), default=0.0)
    images = max((r["images"] for r in ref.values()), default=0)
    return {"runs": len(ref), "runs_device": len(got), "missing": sorted(set(ref) ^ set(got)),
            "metrics": metrics, "metrics_equal": moved == 0.0, "max_metric_change": moved,
            "one_image_pct": 100.0 / images if images else None, "feature_sets": sets, "tolerance": asdict(tol),
            "passed": bool(ref) and ref.keys() == got.keys() and all(s["passed"] for s in sets.values())}
