"""The GPU check's report: the headline figures (``summary``) and the table it prints (``table``).
Standard library only: the report is written whatever the steps did."""

from __future__ import annotations

MODEL_STEPS = ("vit_b16", "vit_l14")


def _fmt(value, spec: str = ".1f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def summary(report: dict) -> dict:
    """The headline figures, flat."""
    steps, out = report["steps"], {}
    for slot in MODEL_STEPS:
        r = steps.get(slot, {}).get("result", {})
        for path in ("bare", "encode", "awt"):
            if path in r:
                out[f"{slot}_{path}_images_per_s"] = r[path]["images_per_s"]
                out[f"{slot}_{path}_mfu"] = r[path]["mfu"]
        for ratio in ("awt_over_encode", "encode_over_bare"):
            out[f"{slot}_{ratio}"] = r.get(ratio)
    for classes, r in steps.get("scorer", {}).get("result", {}).get("scorer", {}).items():
        out[f"scorer_{classes}_ms_per_image"] = r["ms_per_image"]
        out[f"scorer_{classes}_peak_mib"] = r["peak_mib"]
    e2e = steps.get("e2e", {}).get("result", {})
    out["classify_passed"] = e2e.get("classify", {}).get("passed")
    out["bench_passed"] = e2e.get("bench", {}).get("passed")
    out["torchrun_backend"] = steps.get("torchrun", {}).get("result", {}).get("backend")
    out["all_passed"] = all(s["status"] == "ok" for s in steps.values()) and len(steps) == len(report["plan_steps"])
    return out


def table(report: dict) -> str:
    """The report as text: steps, speed, scorer, comparisons."""
    steps = report["steps"]
    env = steps.get("environment", {}).get("result", {})
    lines = [f"awt gpu-check on {env.get('gpu') or report['device']}: peak {_fmt(env.get('peak_tflops'), '.0f')} "
             f"TFLOP/s ({env.get('peak_source', '?')}), measured {env.get('matmul', 'matmul')} "
             f"{_fmt(env.get('matmul_tflops_measured'), '.3g')} TFLOP/s; {report['seconds']:.0f} s of {report['budget_s']:.0f} s",
             "", f"{'step':<12} {'status':<8} {'seconds':>8} {'limit':>6} {'CPU s':>6}"]
    for name in report["plan_steps"]:
        s = steps.get(name, {"status": "not run", "seconds": None, "limit_s": None, "cpu_seconds": None})
        lines.append(f"{name:<12} {s['status']:<8} {_fmt(s['seconds']):>8} {_fmt(s['limit_s'], '.0f'):>6} "
                     f"{_fmt(s['cpu_seconds']):>6}")
    if any("bare" in steps.get(slot, {}).get("result", {}) for slot in MODEL_STEPS):
        lines += ["", f"{'model':<10} {'path':<7} {'images/s':>9} {'views/s':>9} {'TFLOP/s':>8} {'MFU':>6} "
                  f"{'peak MiB':>9}"]
    for slot in MODEL_STEPS:
        r = steps.get(slot, {}).get("result", {})
        for path in ("bare", "encode", "awt"):
            if path in r:
                x = r[path]
                mfu = "-" if x["mfu"] is None else f"{100 * x['mfu']:.1f}%"
                lines.append(f"{r['model'].split('/')[-1] if path == 'bare' else '':<10} {path:<7} "
                             f"{x['images_per_s']:>9.1f} {x['views_per_s']:>9.0f} {_fmt(x['achieved_tflops'], '.3g'):>8} "
                             f"{mfu:>6} {_fmt(x['peak_mib'], '.0f'):>9}")
        if "awt_over_encode" in r:
            lines.append(f"{'':<10} awt/encode {r['awt_over_encode']:.3f}, encode/bare {r['encode_over_bare']:.3f}")
    scorer = steps.get("scorer", {}).get("result", {})
    for classes, x in scorer.get("scorer", {}).items():
        memory = (f"peak {x['peak_mib']:.0f} MiB ({x['peak_over_inputs_mib']:.0f} over its inputs)"
                  if x["peak_mib"] is not None else f"process peak RSS {x['process_peak_rss_mib']:.0f} MiB")
        lines.append(f"scorer {classes:>6} classes: {x['ms_per_image']:.3f} ms/image, {memory}")
    if scorer.get("methods"):
        lines.append(f"methods ({scorer['method_classes']} classes, ms/image): " + ", ".join(
            f"{k} {v['ms_per_image']:.3f}" for k, v in scorer["methods"].items()))
    tests = steps.get("tests", {}).get("result", {})
    if tests:
        lines.append(f"tests: {len(tests.get('selected', []))} selected"
                     + (" (collected only)" if tests.get("collect_only") else
                        f": {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
                        f"{tests.get('error', 0)} errors, {tests.get('skipped', 0)} skipped"))
    e2e = steps.get("e2e", {}).get("result", {})
    c, b = e2e.get("classify", {}), e2e.get("bench", {})
    if "max_score_diff" in c:
        lines.append(f"classify: top-1 {c['top1_agree']}/{c['compared']} as on the CPU ({c['near_ties']} near-ties), "
                     f"max score diff {c['max_score_diff']:.4f} <= {c['tolerance']['scores']:.4f} "
                     f"({c['tolerance']['precision']}): {'passed' if c['passed'] else 'FAILED'}")
    if "feature_sets" in b:
        diff = max((s.get("max_abs_diff", float("inf")) for s in b["feature_sets"].values()), default=None)
        lines.append(f"bench: {b['runs']} runs, feature max diff {_fmt(diff, '.2e')} <= {b['tolerance']['features']:.2e}, "
                     f"metrics equal: {b['metrics_equal']}: {'passed' if b['passed'] else 'FAILED'}")
    tr = steps.get("torchrun", {}).get("result", {})
    if tr.get("attempts"):
        lines.append(f"torchrun: 2 ranks, backend {tr.get('backend')} (nccl: {tr.get('nccl')})"
                     + (f", against one process: features max diff "
                        f"{_fmt(max((s.get('max_abs_diff', float('inf')) for s in tr['feature_sets'].values()), default=None), '.2e')}"
                        f", metrics equal: {tr['metrics_equal']}" if "feature_sets" in tr else ""))
    for name, s in steps.items():
        if s["status"] != "ok":
            lines += ["", f"{name} {s['status']}:"] + [f"  {line}" for line in s.get("error_tail", [])]
    return "\n".join(lines)
