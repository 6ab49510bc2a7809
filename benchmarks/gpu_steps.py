"""The GPU check's steps, each run in a process of its own by ``gpu_check.py``:

    python benchmarks/gpu_steps.py STEP PLAN.json RESULT.json

A step writes its result so far to RESULT.json after each part (a crash or a time-out keeps what
was done) and exits 0 when everything it checks holds, 1 otherwise.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from gpu_common import Result, plan_device  # noqa: E402

CUDA = re.compile("cuda", re.IGNORECASE)
NOT_SELECTED = {"test_gpu_check.py"}   # it runs this check itself


# -- environment --------------------------------------------------------------------------------

def environment(plan: dict, res: Result) -> bool:
    """Install the carried wheels (if any), then the versions, the device and its peak."""
    if plan.get("wheels"):
        wheels = sorted(str(p) for p in Path(plan["wheels"]).glob("*.whl"))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--disable-pip-version-check", "--upgrade", "--target", plan["site"], *wheels], check=True)
        importlib.invalidate_caches()
        from importlib import metadata

        res.save(install_seconds=round(time.perf_counter() - t, 2), installed=sorted(
            f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions(path=[plan["site"]])))
    import open_clip
    import torch

    import awt

    device = plan_device(plan)
    info = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
            "open_clip": open_clip.__version__, "open_clip_path": str(Path(open_clip.__file__).parent),
            "awt": awt.__version__, "awt_path": str(Path(awt.__file__).parent),
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                    device_count=torch.cuda.device_count(), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), nccl=_nccl_version(), nvidia_smi=_nvidia_smi())
    res.save(**info)
    from gpu_timing import peak_tflops

    found = peak_tflops(info["gpu"]) if device.type == "cuda" else None
    if plan.get("peak_tflops"):
        res.save(peak_tflops=plan["peak_tflops"], peak_source="--peak-tflops")
    else:
        res.save(peak_tflops=found[1] if found else None,
                 peak_source=f"datasheet, {found[0]}, dense fp16/bf16" if found else "unknown: pass --peak-tflops")
    res.save(matmul_tflops_measured=_matmul_tflops(device, res))
    return True


def _nccl_version() -> str | None:
    import torch
    import torch.distributed as dist

    if not dist.is_nccl_available():
        return None
    version = torch.cuda.nccl.version()
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _nvidia_smi() -> str | None:
    """Driver, clocks and power limit as nvidia-smi reads them (the card as found: nothing is set)."""
    query = "name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True, text=True,
                             timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _matmul_tflops(device, res: Result) -> float:
    """A square matrix product on random data, median of 10 (fp16 8192^3 on a GPU, fp32 512^3 else)."""
    import torch

    from gpu_timing import sync

    n, dtype = (8192, torch.float16) if device.type == "cuda" else (512, torch.float32)
    res.save(matmul=f"{str(dtype).split('.')[-1]} {n}^3 matmul")
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(13):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e12


# -- tests ---------------------------------------------------------------------------------------

def select_tests(tests: Path) -> tuple[list[str], list[str]]:
    """The tests with a CUDA variant: (node ids, tests whose cases are chosen by their parameters).

    A module whose ``pytestmark`` names CUDA is taken whole; else every test function whose code
    names CUDA; a parametrised one that names it only in its parameters, for the cases that do.
    """
    nodes, by_params = [], []
    for path in sorted(tests.rglob("test_*.py")):
        if path.name in NOT_SELECTED:
            continue
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        rel = path.relative_to(REPO).as_posix()
        if any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
               and CUDA.search(ast.get_source_segment(text, n) or "") for n in tree.body):
            nodes.append(rel)
            continue
        for node in tree.body:
            if not (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")):
                continue
            decorators = " ".join(ast.get_source_segment(text, d) or "" for d in node.decorator_list)
            if CUDA.search(ast.get_source_segment(text, node) or ""):
                nodes.append(f"{rel}::{node.name}")
            elif CUDA.search(decorators):
                nodes.append(f"{rel}::{node.name}")
                by_params.append(f"{rel}::{node.name}")
    return nodes, by_params


class _Selection:
    """A pytest plugin: keeps the parametrised cases that name CUDA, and records outcomes."""

    def __init__(self, by_params: list[str], res: Result):
        self.by_params, self.res = set(by_params), res
        self.outcomes: dict[str, dict] = {}

    def pytest_collection_modifyitems(self, session, config, items) -> None:
        keep, drop = [], []
        for item in items:
            params = getattr(getattr(item, "callspec", None), "params", None)
            named = params is not None and CUDA.search(repr(params))
            (drop if item.nodeid.split("[")[0] in self.by_params and not named else keep).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
        self.res.save(selected=[item.nodeid for item in keep])

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or report.outcome != "passed":
            outcome = "error" if report.when != "call" and report.failed else report.outcome
            entry = self.outcomes.setdefault(report.nodeid, {"outcome": outcome, "seconds": 0.0})
            if report.failed or entry["outcome"] == "passed":
                entry["outcome"] = outcome
            entry["seconds"] = round(entry["seconds"] + report.duration, 3)
            if report.failed:
                entry["error"] = report.longreprtext.splitlines()[-12:]
            self.res.save(outcomes=self.outcomes)


def tests(plan: dict, res: Result) -> bool:
    """tests/gpu/test_gpu.py and every test with a CUDA variant (collected only in the CPU rehearsal:
    the test suite runs them on the CPU anyway)."""
    import pytest

    nodes, by_params = select_tests(REPO / "tests")
    collect_only = plan["profile"]["tests_collect_only"]
    res.save(nodes=nodes, filtered_by_parameters=by_params, collect_only=collect_only, outcomes={})
    os.chdir(REPO)
    selection = _Selection(by_params, res)
    args = [*nodes, "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO)] + (["--collect-only"] if collect_only else [])
    code = int(pytest.main(args, plugins=[selection]))
    counts = {k: sum(1 for o in selection.outcomes.values() if o["outcome"] == k)
              for k in ("passed", "failed", "skipped", "error")}
    res.save(exit_code=code, **counts)
    return code == 0 and len(res.get("selected", [])) > 0


def step_function(name: str) -> Callable[[dict, Result], bool]:
    """The function of step ``name``, its module imported only now (a step pays for its own imports)."""
    if name in ("e2e", "torchrun"):
        import gpu_e2e

        return getattr(gpu_e2e, name)
    if name in ("vit_b16", "vit_l14", "scorer"):
        from gpu_timing import scorer_step, timing_step

        return scorer_step if name == "scorer" else lambda plan, res: timing_step(plan, res, name)
    return {"environment": environment, "tests": tests}[name]


def main() -> None:
    step, plan_path, result_path = sys.argv[1:4]
    plan = json.loads(Path(plan_path).read_text())
    res = Result(Path(result_path))
    ok = step_function(step)(plan, res)
    res.save(passed=bool(ok) and res.get("passed", True) is not False)
    sys.exit(0 if res["passed"] else 1)


if __name__ == "__main__":
    main()
