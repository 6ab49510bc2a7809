"""The wheel carries what it reads: built from the repository, installed outside it, used as a user would."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
from conftest import write_tiny_model
from support.openai_server import FakeOpenAI


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    [whl] = out.glob("awt-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv outside the repository with the wheel installed; its other requirements come from
    this environment's site-packages (a path entry, so nothing of this checkout comes along)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_awt_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                        "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return venv


def _run(venv: Path, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning", **(env or {})}
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(venv / "bin" / "awt"), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_wheel_declares_every_import(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "awt/describe/prompts.yaml" in names and "awt/data/examples/cat.jpg" in names
    assert {"awt/serve/page/index.html", "awt/serve/page/app.js", "awt/serve/page/style.css"} <= set(names)
    assert "awt/explain/templates/report.html" in names
    required = {re.split(r"[\s;<>=!~\[]", line.split(":", 1)[1].strip())[0].lower().replace("_", "-")
                for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}
    # extras, imported only where they are asked for (serve's starlette and pydantic come with fastapi)
    optional = {"matplotlib", "transformers", "fastapi", "starlette", "pydantic", "uvicorn", "prometheus_client"}
    imported = set()
    for path in (REPO / "awt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                imported.add(node.module.split(".")[0])
    dists = metadata.packages_distributions()
    third_party = {m for m in imported - set(sys.stdlib_module_names) - {"awt"} if m not in optional}
    for module in sorted(third_party):
        assert module in dists, f"{module} is imported but no installed distribution provides it"
        assert any(d.lower().replace("_", "-") in required for d in dists[module]), \
            f"{module} (from {dists[module]}) is imported but not in the wheel's Requires-Dist"


def test_installed_wheel_describes_and_classifies(installed, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import awt; print(awt.__file__)"],
                           capture_output=True, text=True, cwd=work, check=True).stdout.strip()
    assert str(installed) in where and str(REPO) not in where

    classes = work / "classes.txt"
    classes.write_text("zebra\ntulip\ncanoe\n")
    with FakeOpenAI() as server:
        r = _run(installed, "describe", "--classes", str(classes), "--out", str(work / "desc.json"),
                 "--dataset-description", "consists of animals, plants and boats", "--per-class", "4",
                 "--base-url", server.base_url, cwd=work, env={"OPENAI_API_KEY": "sk-test"})
    assert r.returncode == 0, r.stderr
    doc = json.loads((work / "desc.json").read_text())
    assert doc["meta"]["complete"] and all(len(c["descriptions"]) >= 4 for c in doc["classes"])

    examples = Path(where).parent / "data" / "examples"
    model = write_tiny_model(work / "tiny")
    r = _run(installed, "classify", str(examples), "--classes", str(examples / "classes.txt"), "--model", model,
             "--views", "2", "--json", "--cache-dir", str(work / "cache"), cwd=work)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted(Path(x["image"]).name for x in lines) == sorted(p.name for p in examples.glob("*.jpg"))
    assert all(len(x["predictions"]) == 5 for x in lines)
