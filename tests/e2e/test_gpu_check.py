"""`make gpu-check` (benchmarks/gpu_check.py), known to work before a GPU sees it: the whole check
rehearsed on the CPU with tiny models, its parts, and the one line it says without a GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_compare import Tolerance, compare_classify  # noqa: E402
from gpu_report import table  # noqa: E402
from gpu_timing import peak_tflops  # noqa: E402

STEPS = ["environment", "tests", "vit_b16", "vit_l14", "scorer", "e2e", "torchrun"]


def _wheel(folder: Path) -> Path:
    """A one-module wheel, to see the carried-wheels install put it where the steps import from."""
    folder.mkdir()
    path = folder / "awt_gpu_check_probe-0.1-py3-none-any.whl"
    info = "awt_gpu_check_probe-0.1.dist-info"
    files = {"awt_gpu_check_probe/__init__.py": "VALUE = 1\n",
             f"{info}/METADATA": "Metadata-Version: 2.1\nName: awt-gpu-check-probe\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return folder


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    tmp = tmp_path_factory.mktemp("gpu-check")
    out = tmp / "report.json"
    # two steps at a time: the timings of a rehearsal mean nothing, its wall time does (2 cores)
    run = subprocess.run([sys.executable, str(CHECK), "--device", "cpu", "--jobs", "2", "--json", str(out),
                          "--peak-tflops", "1", "--wheels", str(_wheel(tmp / "wheels"))],
                         capture_output=True, text=True, cwd=REPO, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run, json.loads(out.read_text()), out


def test_the_cpu_rehearsal_runs_every_step(rehearsal):
    run, report, out = rehearsal
    assert list(report) == ["format", "version", "device", "rehearsal", "started", "budget_s", "plan_steps", "profile",
                            "steps", "finished", "seconds", "within_budget", "summary"]
    assert report["device"] == "cpu" and report["rehearsal"] and report["within_budget"]
    assert list(report["steps"]) == STEPS and report["summary"]["all_passed"]
    for name, step in report["steps"].items():
        assert step["status"] == "ok" and step["exit_code"] == 0 and step["result"]["passed"], (name, step)
        assert 0 < step["seconds"] <= step["limit_s"] and step["cpu_seconds"] >= 0
        assert name in run.stdout
    assert out.with_suffix(".log").read_text().count("=====") == 2 * len(STEPS)


def test_environment_installs_the_carried_wheels(rehearsal):
    env = rehearsal[1]["steps"]["environment"]["result"]
    assert env["installed"] == ["awt-gpu-check-probe==0.1"] and env["install_seconds"] > 0
    assert env["torch"] == torch.__version__ and Path(env["awt_path"]) == REPO / "awt"
    assert env["peak_tflops"] == 1 and env["peak_source"] == "--peak-tflops" and env["matmul_tflops_measured"] > 0


def test_the_tests_step_selects_what_has_a_cuda_variant(rehearsal):
    tests = rehearsal[1]["steps"]["tests"]["result"]
    selected = tests["selected"]
    assert tests["collect_only"] and tests["exit_code"] == 0
    assert {"tests/gpu/test_gpu.py::test_copies_and_views_never_wait_for_the_device",
            "tests/gpu/test_gpu.py::test_gpu_features_and_scores_match_the_cpu",
            "tests/integration/test_bench.py::test_inline_model_and_cuda_free_defaults"} <= set(selected)
    mistakes = [n for n in selected if "test_each_mistake_is_one_line" in n]
    assert len(mistakes) == 1 and "is not available here" in mistakes[0]   # the --device cuda:7 case alone
    assert not any("test_gpu_check" in n for n in selected)


def test_model_steps_report_rates_mfu_and_ratios(rehearsal):
    report = rehearsal[1]
    for slot in ("vit_b16", "vit_l14"):
        r = report["steps"][slot]["result"]
        flops = r["flops_per_view"]
        assert flops["used"] == flops["formula"] > 0 and 0.9 < flops["counted_over_formula"] < 1.1
        for path in ("bare", "encode", "awt"):
            x = r[path]
            assert x["images"] >= 1 and x["images_per_s"] > 0
            assert x["views_per_s"] == pytest.approx(x["images_per_s"] * r["views_per_image"])
            assert x["mfu"] == pytest.approx(x["views_per_s"] * flops["formula"] / 1e12)  # peak 1 TFLOP/s
        assert r["awt_over_encode"] == pytest.approx(r["awt"]["images_per_s"] / r["encode"]["images_per_s"])
        assert r["encode_over_bare"] == pytest.approx(r["encode"]["images_per_s"] / r["bare"]["images_per_s"])
        assert report["summary"][f"{slot}_awt_over_encode"] == r["awt_over_encode"]
    assert report["steps"]["vit_l14"]["result"]["model"] != report["steps"]["vit_b16"]["result"]["model"]


def test_scorer_and_every_method_are_timed(rehearsal):
    from awt.methods import method_names

    r = rehearsal[1]["steps"]["scorer"]["result"]
    classes = rehearsal[1]["profile"]["scorer_classes"]
    assert list(r["scorer"]) == [str(c) for c in classes]
    assert all(x["ms_per_image"] > 0 and x["calls"] >= 1 for x in r["scorer"].values())
    assert sorted(r["methods"]) == sorted(method_names())


def test_classify_bench_and_two_ranks_agree_with_the_cpu(rehearsal):
    steps = rehearsal[1]["steps"]
    classify, bench = steps["e2e"]["result"]["classify"], steps["e2e"]["result"]["bench"]
    assert classify["passed"] and classify["compared"] == classify["images"] == steps["e2e"]["result"]["images"]
    assert classify["tolerance"]["precision"] == "bf16" and 0 < classify["max_score_diff"] <= classify["tolerance"]["scores"]
    assert bench["passed"] and bench["runs"] == 2 and not bench["missing"]
    assert all(0 < s["max_abs_diff"] <= bench["tolerance"]["features"] for s in bench["feature_sets"].values())
    two = steps["torchrun"]["result"]
    # NCCL refuses CPU ranks as it refuses two ranks on one GPU in many versions: then gloo
    assert two["backend"] == "gloo" and two["nccl"].startswith("refused: ") and two["passed"]
    assert [(a["backend"], a["refused"], a["exit_code"] == 0) for a in two["attempts"]] == [
        ("nccl", True, False), ("gloo", False, True)]
    assert two["metrics_equal"]


def test_a_failed_crashed_or_hung_step_is_recorded_and_the_next_one_runs(tmp_path):
    from gpu_check import StepProcess, run_steps

    scripts = {"fails": "import sys; print('something broke'); sys.exit(1)",
               "crashes": "import os, signal; print('about to crash', flush=True); os.kill(os.getpid(), signal.SIGSEGV)",
               "hangs": "import time; print('waiting', flush=True); time.sleep(600)",
               "passes": "import json, sys; open(sys.argv[1], 'w').write(json.dumps({'passed': True}))"}

    def start(name: str, limit: float) -> StepProcess:
        argv = [sys.executable, "-c", scripts[name], str(tmp_path / f"{name}.json")]
        return StepProcess(name, argv, tmp_path, limit, dict(os.environ))

    entries, interrupted = run_steps(list(scripts), dict.fromkeys(scripts, 3), time.time() + 60, 1, start, 1)
    assert not interrupted and [e["status"] for e in entries.values()] == ["failed", "failed", "timeout", "ok"]
    assert entries["fails"]["exit_code"] == 1 and entries["fails"]["error_tail"] == ["something broke"]
    assert entries["crashes"]["exit_code"] == -signal.SIGSEGV and entries["crashes"]["error_tail"] == ["about to crash"]
    assert entries["hangs"]["error_tail"] == ["waiting"] and 3 <= entries["hangs"]["seconds"] < 13
    assert entries["passes"]["result"] == {"passed": True} and "error_tail" not in entries["passes"]
    late, _ = run_steps(["passes"], {"passes": 10}, time.time() + 0.5, 1, start, 1)   # under 1 s left
    assert late["passes"]["status"] == "skipped"
    shown = table({"device": "cuda", "steps": entries, "plan_steps": list(scripts), "seconds": 9.0, "budget_s": 480})
    assert "fails        failed" in shown and "hangs        timeout" in shown
    assert "fails failed:\n  something broke" in shown and "hangs timeout:\n  waiting" in shown


def test_without_cuda_it_says_so_in_one_line_and_runs_nothing(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "report.json"
    run = subprocess.run([sys.executable, str(CHECK), "--json", str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "" and not out.exists()
    assert len(run.stdout.splitlines()) == 1 and run.stdout.startswith("gpu-check: no CUDA device here")
    probe = subprocess.run([sys.executable, str(CHECK), "--probe"], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 1 and probe.stdout == run.stdout


@pytest.mark.parametrize("name, entry, tflops", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.4), ("NVIDIA H100 PCIe", "H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", "H100 NVL", 835.0), ("NVIDIA H200", "H200 SXM", 989.4), ("NVIDIA GH200 480GB", "GH200", 989.4),
    ("NVIDIA A100-SXM4-80GB", "A100", 312.0), ("NVIDIA A10", "A10", 125.0), ("NVIDIA L40S", "L40S", 362.0),
    ("NVIDIA L4", "L4", 121.0), ("Tesla T4", "T4", 65.0), ("Tesla V100-SXM2-16GB", "V100 SXM2", 125.0),
])
def test_peak_table_reads_the_device_name(name, entry, tflops):
    assert peak_tflops(name) == (entry, tflops)


def test_an_unknown_device_has_no_peak():
    assert peak_tflops("NVIDIA RTX PRO 6000 Blackwell") is None


def test_a_score_beyond_the_tolerance_fails_the_comparison():
    tol = Tolerance.of("fp16", 100.0)            # scores within 8 x 2^-11 x 100 = 0.39
    reference = {"a.jpg": {0: 20.0, 1: 19.9, 2: 15.0}, "b.jpg": {0: 10.0, 1: 18.0, 2: 12.0}}
    close = {"a.jpg": {0: 19.8, 1: 20.0, 2: 15.1}, "b.jpg": {0: 10.1, 1: 17.9, 2: 12.0}}
    result = compare_classify(reference, close, tol)
    assert result["passed"] and result["near_ties"] == 1 and result["top1_agree"] == 1   # a.jpg: a near-tie swap
    far = {**close, "b.jpg": {0: 10.0, 1: 18.0, 2: 12.5}}
    assert not compare_classify(reference, far, tol)["passed"]
    swapped = {**close, "b.jpg": {0: 18.1, 1: 18.0, 2: 12.0}}
    assert compare_classify(reference, swapped, tol)["clear_top1_swaps"] == ["b.jpg"]
    assert not compare_classify(reference, {"a.jpg": close["a.jpg"]}, tol)["passed"]          # an image missing


def test_a_gpu_index_the_machine_lacks_is_one_line_before_any_work(monkeypatch):
    from awt.backbones import resolve_device
    from awt.errors import AWTError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(AWTError, match=r"CUDA device 7 is not available here \(1 CUDA device: cuda:0\)$"):
        resolve_device("cuda:7")
