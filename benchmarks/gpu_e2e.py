"""The GPU check's end-to-end steps: the real commands on the device against the CPU.

  e2e        `awt classify` and a small `awt bench` on the device, each against the same work done
             on the CPU in float32 (in the step's own process, while the commands run)
  torchrun   `awt bench` in two torchrun ranks on the one device (benchmarks/gpu_rank.py), against
             the same config in one process
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from gpu_common import Result, model_name, random_backbone
from gpu_compare import Tolerance, compare_bench, compare_classify, read_classify_lines
from gpu_data import labelled_set

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _bench_config(path: Path, plan: dict, data: dict, device: str, precision: str) -> Path:
    p = plan["profile"]
    config = {"name": "gpu-check", "methods": p["e2e_methods"],
              "settings": {"views": p["e2e_views"], "descriptions_per_class": p["e2e_descriptions"], "seed": 0,
                           "batch_size": p["e2e_batch"], "device": device, "precision": precision,
                           "workers": p["e2e_workers"] if device != "cpu" else 0, "shard_batches": 1},
              "backbones": [{"name": "e2e", "model": model_name(plan, p["e2e_model"]), "pretrained": "none"}],
              "datasets": [{"name": "examples", "path": str(data["labels"]),
                            "descriptions": str(data["descriptions"]), "template": "a photo of a {}."}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path


def _data(plan: dict, step: str) -> dict:
    """The labelled image set, a copy per step (steps may run at once in the CPU rehearsal)."""
    return labelled_set(Path(plan["scratch"]) / f"{step}-data", plan["profile"]["e2e_per_class"])


def _env() -> dict:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}


_STARTED: list[subprocess.Popen] = []


@atexit.register
def _stop_started() -> None:
    """A step that ends early (an exception) leaves none of its commands running into the next step."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _start(args: list[str], log: Path, **env: str) -> tuple[subprocess.Popen, Path]:
    """``python ARGS`` in the background, stdout to ``log``'s ``.out`` sibling, stderr to ``log``."""
    out = log.with_suffix(".out")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as stdout, open(log, "w") as stderr:
        # in the step's process group: ending the step (its time limit) ends these too
        proc = subprocess.Popen([sys.executable, *args], stdout=stdout, stderr=stderr, env={**_env(), **env}, cwd=REPO)
    _STARTED.append(proc)
    return proc, out


def _finish(proc: subprocess.Popen, log: Path, stop: bool = False) -> dict:
    """Its exit status and the last lines of its stderr; ``stop``: end it first (SIGTERM, which
    torchrun passes on to its ranks; SIGKILL 15 s later)."""
    if stop:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    code = proc.wait()
    lines = log.read_text(errors="replace").splitlines()
    return {"exit_code": code, "stderr_tail": [line for line in lines if line.strip()][-8:]}


def _joined_or_ended(proc: subprocess.Popen, log: Path, seconds: float) -> bool:
    """Whether, within ``seconds``, the ranks joined (or refused: gpu_rank.py says which) or the job ended."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        text = log.read_text(errors="replace")
        if proc.poll() is not None or "gpu_rank: " in text:
            return True
        time.sleep(0.2)
    return False


def e2e(plan: dict, res: Result) -> bool:
    """``awt classify`` and a small ``awt bench`` on the device (real commands), each against the
    same work done on the CPU in float32 in this process while they run."""
    from awt import AWTClassifier, ClassifierSpec
    from awt.bench.config import load_config
    from awt.bench.runner import run_bench
    from awt.descriptions import load_descriptions
    from awt.images import find_images

    p = plan["profile"]
    work, data = Path(plan["scratch"]) / "e2e", _data(plan, "e2e")
    model, precision, dev = model_name(plan, p["e2e_model"]), p["e2e_precision"], plan["device"]
    classify_args = ["-m", "awt", "classify", str(data["root"]), "--classes", str(data["classes"]),
                     "--descriptions", str(data["descriptions"]), "--model", model, "--pretrained", "none",
                     "--views", str(p["e2e_views"]), "--descriptions-per-class", str(p["e2e_descriptions"]),
                     "--top-k", "4", "--json", "--device", dev, "--precision", precision,
                     "--batch-size", str(p["e2e_batch"]), "--cache-dir", str(work / "cache-classify"),
                     "--workers", str(p["e2e_workers"] if dev != "cpu" else 0)]
    work.mkdir(parents=True, exist_ok=True)
    classify_proc, classify_out = _start(classify_args, work / "classify.log")
    config = _bench_config(work / "bench-device.yaml", plan, data, dev, precision)
    bench_proc, _ = _start(["-m", "awt", "bench", str(config), "--output", str(work / "bench-device"), "--quiet"],
                           work / "bench.log")
    res.save(model=model, precision=precision, images=4 * p["e2e_per_class"], views=p["e2e_views"],
             descriptions=p["e2e_descriptions"], classify_command=["awt", *classify_args[2:]],
             bench_command=["awt", "bench", str(config)])

    # meanwhile the CPU reference, float32, in this process
    backbone = random_backbone(plan, p["e2e_model"], "cpu", "fp32")
    names = data["classes"].read_text().splitlines()
    clf = AWTClassifier(backbone, ClassifierSpec(names, descriptions=load_descriptions(data["descriptions"]),
                                                 descriptions_per_class=p["e2e_descriptions"], views=p["e2e_views"],
                                                 seed=0, cache_dir=None))
    paths = find_images([str(data["root"])])
    reference = {r.image: {q.index: q.score for q in r.predictions}
                 for r in clf.classify(paths, top_k=4, batch_size=p["e2e_batch"], num_workers=0)}
    reference_config = _bench_config(work / "bench-cpu.yaml", plan, data, "cpu", "fp32")
    run_bench(load_config(reference_config), work / "bench-cpu")
    tol = Tolerance.of(precision, backbone.logit_scale)

    classify = {**_finish(classify_proc, work / "classify.log")}
    if classify["exit_code"] == 0:
        classify.update(compare_classify(reference, read_classify_lines(classify_out.read_text()), tol))
    res.save(classify=classify)
    bench = {**_finish(bench_proc, work / "bench.log")}
    if bench["exit_code"] == 0:
        bench.update(compare_bench(work / "bench-cpu", work / "bench-device", tol))
    res.save(bench=bench)
    return all(r["exit_code"] == 0 and r.get("passed") for r in (classify, bench))


def torchrun(plan: dict, res: Result) -> bool:
    """``awt bench`` in two torchrun ranks on the one device, against the same config in one process:
    NCCL if it takes two ranks on one GPU, else gloo (the CPU rehearsal tries NCCL too, and meets a
    refusal: the same way to gloo)."""
    from awt.bench.config import load_config
    from awt.bench.runner import run_bench

    p = plan["profile"]
    work, data = Path(plan["scratch"]) / "torchrun", _data(plan, "torchrun")
    dev, precision = plan["device"], p["e2e_precision"]
    config = _bench_config(work / "bench.yaml", plan, data, dev, precision)
    attempts: list[dict] = []
    for backend in p["backends"]:
        log, t = work / f"{backend}.log", time.perf_counter()
        proc, _ = _start(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          str(HERE / "gpu_rank.py"), "bench", str(config), "--output", str(work / backend), "--quiet"],
                         log, AWT_GPU_CHECK_BACKEND=backend)
        hung = not _joined_or_ended(proc, log, p["join_s"])  # a process group that never forms is ended
        attempt = {"backend": backend, **_finish(proc, log, stop=hung), "seconds": round(time.perf_counter() - t, 2),
                   "hung_at_start": hung}
        # (torchrun may prefix its ranks' lines: looked for anywhere in a line)
        said = [line for line in log.read_text(errors="replace").splitlines() if "gpu_rank: " in line]
        attempt["refused"] = any(f"gpu_rank: {backend} refused" in line for line in said)
        attempt["reason"] = next((line.split("refused: ", 1)[-1] for line in said if "refused" in line), None)
        attempts.append(attempt)
        res.save(attempts=attempts)
        if attempt["exit_code"] == 0:
            break
    ran = next((a for a in attempts if a["exit_code"] == 0), None)
    nccl = next((a for a in attempts if a["backend"] == "nccl"), None)
    res.save(backend=ran and ran["backend"],
             nccl="not tried" if nccl is None else "used" if nccl["exit_code"] == 0 else
             "refused: " + nccl["reason"] if nccl["refused"] else
             f"no group after {p['join_s']} s: stopped" if nccl["hung_at_start"] else "failed (see attempts)")
    if ran is None:
        return False
    one = Path(plan["scratch"]) / "e2e" / "bench-device"
    if not (one / "summary.csv").is_file():  # the e2e step left none: make it here
        one = work / "one-process"
        run_bench(load_config(config), one)
    res.save(compared_with=str(one), **compare_bench(one, work / ran["backend"], Tolerance.of(precision)))
    return bool(res["passed"])
