"""One command checks and times the whole GPU path in at most eight minutes, and leaves one JSON file.

    make gpu-check                                   # wheels in .whl/ (a machine without PyPI), else .venv
    python benchmarks/gpu_check.py --wheels .whl --json OUT.json
    python benchmarks/gpu_check.py --device cpu --json OUT.json     # the rehearsal: a tiny model on the CPU

Steps, each in a process of its own with its own time limit (a crash or a hang costs that step
only; the next one still runs), all within one budget counted from --started-at (make's start, so
the install counts too):
  environment  install the carried wheels; versions, the GPU, its peak, a measured fp16 matrix product
  tests        tests/gpu/test_gpu.py and every test with a CUDA variant (gpu_steps.select_tests)
  vit_b16      ViT-B-16 (random weights, fp16, 1,000 classes, N = M = 50): bare encoder, encode-only,
               AWT end to end, as images/s, views/s and MFU; awt/encode and encode/bare
  vit_l14      the same for ViT-L-14
  scorer       the AWT scorer alone at 1,000 and 20,000 classes (ms/image, peak memory); every method
  e2e          `awt classify` and `awt bench` on the device against the CPU, within fp16 tolerance
  torchrun     `awt bench` in two torchrun ranks on the one GPU (NCCL if it allows, else gloo)

Without CUDA (and without --device cpu) it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from awt.files import atomic_write_text  # noqa: E402  (torch-free)
from gpu_report import summary, table  # noqa: E402

BUDGET_S = 480
RESERVE_S = 15          # a stopped step's grace (10 s) and writing the report
STEPS = ("environment", "tests", "vit_b16", "vit_l14", "scorer", "e2e", "torchrun")

PROFILES = {
    "cuda": {
        "budgets": {"environment": 40, "tests": 70, "vit_b16": 70, "vit_l14": 85, "scorer": 60, "e2e": 65,
                    "torchrun": 70},
        "tests_collect_only": False,
        "models": {"vit_b16": "ViT-B-16", "vit_l14": "ViT-L-14"}, "precision": "fp16",
        "classes": 1000, "views": 50, "descriptions": 50, "batch_size": 32, "workers": None, "seconds": 6.0,
        "distinct_images": 64, "max_images": 4096,
        "scorer_classes": [1000, 20000], "scorer_batch": [64, 8], "scorer_dim": 512, "method_classes": 1000,
        "e2e_model": "ViT-B-32", "e2e_precision": "fp16", "e2e_per_class": 8, "e2e_views": 8,
        "e2e_descriptions": 4, "e2e_batch": 8, "e2e_workers": 2, "e2e_methods": "all", "join_s": 30,
        "backends": ["nccl", "gloo"],
    },
    # The rehearsal: every step, on tiny models and a few images; tests collected, not run again.
    "cpu": {
        "budgets": {"environment": 40, "tests": 60, "vit_b16": 50, "vit_l14": 50, "scorer": 50, "e2e": 120,
                    "torchrun": 100},
        "tests_collect_only": True,
        "models": {"vit_b16": "tiny-b", "vit_l14": "tiny-l"}, "precision": "fp32",
        "classes": 10, "views": 4, "descriptions": 3, "batch_size": 4, "workers": 0, "seconds": 0.6,
        "distinct_images": 6, "max_images": 64,
        "scorer_classes": [100, 1000], "scorer_batch": [4, 2], "scorer_dim": 64, "method_classes": 20,
        "e2e_model": "tiny-b", "e2e_precision": "bf16", "e2e_per_class": 2, "e2e_views": 2,
        "e2e_descriptions": 2, "e2e_batch": 4, "e2e_workers": 0, "e2e_methods": ["clip", "awt"], "join_s": 90,
        "backends": ["nccl", "gloo"],
    },
}


def cuda_here(ask_torch: bool = True) -> tuple[bool, str]:
    """Whether this machine has a CUDA device (an NVIDIA driver, and, with ``ask_torch``, one that
    this interpreter's torch sees), and why not when it has none."""
    if not Path("/dev/nvidiactl").exists() and shutil.which("nvidia-smi") is None:
        return False, "no NVIDIA driver: no /dev/nvidiactl, no nvidia-smi"
    if not ask_torch:
        return True, ""
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                           capture_output=True, text=True)
    words = probe.stdout.split()
    if probe.returncode != 0 or not words or not words[-1].isdigit():
        return True, ""  # a driver, but no torch yet: the steps will say what is missing
    return (int(words[-1]) > 0, "" if int(words[-1]) else "torch.cuda.is_available() is False")


class StepProcess:
    """A step's command (``gpu_steps.py STEP PLAN work/STEP.json``) in a process group of its own,
    its output in ``work/STEP.log``; ended at its time limit, the whole group with it."""

    def __init__(self, name: str, argv: list[str], work: Path, limit: float, env: dict):
        self.name, self.limit = name, limit
        self.result_file, self.log_file = work / f"{name}.json", work / f"{name}.log"
        self.started = time.monotonic()
        self.cpu_seconds: float | None = None
        with open(self.log_file, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                         start_new_session=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> bool:
        """Whether the step's process has ended; reaps it with its CPU time (its waited-for children's too)."""
        if self.proc.returncode is not None:
            return True
        try:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        return True

    def stop(self) -> None:
        """SIGTERM to the whole group (torchrun then stops its ranks), SIGKILL 10 s later."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            end = time.monotonic() + 10
            while time.monotonic() < end:
                if self.poll():
                    return
                time.sleep(0.05)

    def entry(self, status: str) -> dict:
        """The step's record in the report: status, times, exit code, result, and the log's tail."""
        entry: dict = {"status": status, "seconds": round(self.elapsed(), 2), "limit_s": round(self.limit, 1),
                       "exit_code": self.proc.returncode, "cpu_seconds": self.cpu_seconds and round(self.cpu_seconds, 1)}
        try:
            entry["result"] = json.loads(self.result_file.read_text())
        except (OSError, ValueError):
            entry["result"] = {}
        if status != "ok":
            lines = [line for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
            entry["error_tail"] = lines[-15:]
        return entry


def run_steps(chosen: list[str], budgets: dict, deadline: float, jobs: int, start,
              min_seconds: float = 10.0) -> tuple[dict[str, dict], bool]:
    """Run the steps, ``jobs`` at a time, each within its budget and the global deadline (one that
    would get under ``min_seconds`` is skipped); ``start(name, limit)`` makes its StepProcess.
    Returns their records in plan order, and whether Ctrl-C stopped the run (the steps then running
    are recorded as ``interrupted``)."""
    entries: dict[str, dict] = {}
    interrupted = False
    pending, running = list(chosen), []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                name = pending.pop(0)
                limit = min(budgets[name], deadline - time.time())
                if limit < min_seconds:
                    entries[name] = {"status": "skipped", "seconds": 0.0, "limit_s": round(limit, 1), "exit_code": None,
                                     "cpu_seconds": None, "result": {}, "error_tail": ["no time left in the budget"]}
                    print(f"{name}: skipped, no time left", flush=True)
                    continue
                print(f"{name}: started (limit {limit:.0f} s)", flush=True)
                running.append(start(name, limit))
            time.sleep(0.1)
            for step in list(running):
                if step.poll():
                    status = "ok" if step.proc.returncode == 0 else "failed"
                elif step.elapsed() > step.limit:
                    step.stop()
                    status = "timeout"
                else:
                    continue
                running.remove(step)
                entries[step.name] = step.entry(status)
                print(f"{step.name}: {status} in {step.elapsed():.1f} s", flush=True)
                for line in entries[step.name].get("error_tail", []):
                    print(f"    {line}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        for step in running:
            step.stop()
            entries[step.name] = step.entry("interrupted")
    return {name: entries[name] for name in chosen if name in entries}, interrupted


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="cpu: rehearse every step on the CPU with tiny models")
    p.add_argument("--json", dest="json_path", default="runs/gpu-check/gpu_check.json",
                   help="the report (its steps' logs go beside it, .log)")
    p.add_argument("--wheels", default=None, help="folder of wheels to install first (pip --no-index --target)")
    p.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of: " + ", ".join(STEPS))
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for everything, from --started-at")
    p.add_argument("--started-at", type=float, default=None, help="Unix time the run began (make's start)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense fp16 peak, if not in the table")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (images, caches, step logs)")
    p.add_argument("--jobs", type=int, default=1, help="steps at once: the CPU rehearsal only (timings need 1)")
    p.add_argument("--probe", action="store_true", help="only say whether there is an NVIDIA driver (exit 0) or "
                   "not (one line, exit 1); make gpu-check asks this before it installs anything")
    args = p.parse_args(argv)
    started = args.started_at or time.time()
    chosen = [s for s in args.steps.split(",") if s]
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        p.error(f"unknown step(s): {', '.join(unknown)}")
    if args.jobs != 1 and args.device != "cpu":
        p.error("--jobs: steps run one at a time on a GPU (they time it)")
    if args.device != "cpu":
        present, why = cuda_here(ask_torch=not args.probe)  # (make's probe runs before any install)
        if not present:
            print(f"gpu-check: no CUDA device here ({why}); nothing run; `--device cpu` rehearses the check on the CPU.")
            return 1 if args.probe else 0
    if args.probe:
        return 0
    device = "cpu" if args.device == "cpu" else "cuda"
    profile = PROFILES[device]
    scratch = Path(tempfile.mkdtemp(prefix="awt-gpu-check-"))
    work, site = scratch / "steps", scratch / "site"
    work.mkdir()
    site.mkdir()  # on sys.path from the start, so that what is installed into it is found
    plan = {"device": device, "rehearsal": device == "cpu", "scratch": str(scratch), "site": str(site),
            "wheels": str(Path(args.wheels).resolve()) if args.wheels else None, "peak_tflops": args.peak_tflops,
            "profile": profile}
    plan_file = scratch / "plan.json"
    plan_file.write_text(json.dumps(plan, indent=1))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1",
           "AWT_CACHE_DIR": str(scratch / "cache")}
    report = {"format": "awt-gpu-check", "version": 1, "device": device, "rehearsal": device == "cpu",
              "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
              "budget_s": args.budget, "plan_steps": chosen, "profile": profile, "steps": {}}
    out, log_out = Path(args.json_path), Path(args.json_path).with_suffix(".log")
    deadline = started + args.budget - RESERVE_S
    def start(name: str, limit: float) -> StepProcess:
        argv = [sys.executable, str(HERE / "gpu_steps.py"), name, str(plan_file), str(work / f"{name}.json")]
        return StepProcess(name, argv, work, limit, env)

    report["steps"], interrupted = run_steps(chosen, profile["budgets"], deadline, args.jobs, start)
    if interrupted:
        print("interrupted: writing what is done", file=sys.stderr)
    report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report["seconds"] = round(time.time() - started, 1)
    report["within_budget"] = report["seconds"] <= args.budget
    report["summary"] = summary(report)
    atomic_write_text(out, json.dumps(report, indent=1, default=str) + "\n")
    atomic_write_text(log_out, "".join(f"===== {name} =====\n" + (work / f"{name}.log").read_text(errors="replace")
                                       for name in report["steps"] if (work / f"{name}.log").is_file()))
    print("\n" + table(report) + f"\n\nwrote {out} and {log_out}", flush=True)
    if args.keep:
        print(f"kept {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 130 if interrupted else 0 if report["summary"]["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
