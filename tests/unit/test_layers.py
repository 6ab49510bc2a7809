"""The layers: imports run one way, commands start without torch, and a method is one registry entry."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from awt import AWTClassifier, ClassifierSpec
from awt.methods import METHODS, Method, get_method, register, score, unregister

PACKAGE = Path(__file__).resolve().parents[2] / "awt"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, lazy: bool = False) -> set[str]:
    """The awt modules ``path`` imports at module level (absolute names); ``lazy``: those imported
    inside functions too."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree) if lazy else tree.body:  # module level: imports inside functions are lazy
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("awt")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("awt"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


# The layers, bottom up: a module imports its own layer and those below it, never one above. The
# front ends sit on the library: the HTTP service (awt.serve) and, above it, the command line,
# whose `awt serve` starts it. First match wins.
LAYERS = [("awt.__main__", 2), ("awt.cli", 2), ("awt.serve", 1), ("awt", 0)]
LAYER_NAMES = {0: "the library", 1: "the HTTP service", 2: "the command line"}


def _layer(module: str) -> int:
    return next(level for prefix, level in LAYERS if module == prefix or module.startswith(prefix + "."))


def test_imports_run_down_the_layers_and_there_are_no_cycles():
    graph = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    assert {_layer(m) for m in graph} == set(LAYER_NAMES)
    for module, deps in {_module_name(p): _imports(p, lazy=True) for p in PACKAGE.rglob("*.py")}.items():
        for dep in deps:
            assert _layer(dep) <= _layer(module), \
                f"{module} ({LAYER_NAMES[_layer(module)]}) imports {dep} ({LAYER_NAMES[_layer(dep)]})"
    # a package's __init__ importing its own submodules is not a cycle of the layers
    edges = {m: {d for d in deps if not (m == d.rsplit(".", 1)[0] and PACKAGE.joinpath(
        *m.split(".")[1:], "__init__.py").is_file())} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in edges.get(node, ()):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]) if dep in path
                            else f"import cycle through {dep}")
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in edges:
        if module not in state:
            visit(module, [module])


def _modules_after(code: str) -> list[str]:
    """Heavy modules loaded by ``code`` in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps([m for m in ('torch', 'open_clip', 'torchvision', " \
                   "'transformers', 'numpy', 'fastapi', 'uvicorn') if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_and_describe_start_without_torch(tmp_path):
    run = ("from awt.cli import app\nimport sys\ntry:\n    app({args!r}, prog_name='awt')\n"
           "except SystemExit:\n    pass")
    assert _modules_after(run.format(args=["--help"])) == []
    assert _modules_after(run.format(args=["describe", "--help"])) == []
    assert _modules_after(run.format(args=["serve", "--help"])) == []
    assert _modules_after(run.format(args=["--version"])) == []
    # a whole `awt describe` run (its questions given, against a local server) loads no torch either
    from support.openai_server import FakeOpenAI

    classes = tmp_path / "classes.txt"
    classes.write_text("zebra\ntulip\n")
    questions = tmp_path / "questions.txt"
    questions.write_text("What does a {} look like?\nWhere is a {} found?\n")
    with FakeOpenAI() as server:
        args = ["describe", "--classes", str(classes), "--out", str(tmp_path / "d.json"), "--questions",
                str(questions), "--per-class", "3", "--base-url", server.base_url]
        code = "import os\nos.environ['OPENAI_API_KEY'] = 'sk-test'\n" + run.format(args=args)
        assert _modules_after(code) == []
    assert json.loads((tmp_path / "d.json").read_text())["meta"]["complete"] is True


def _top_prompt(image, text, mask, logit_scale, config):
    """View 0 against each class's best prompt (a toy method for the test)."""
    logits = torch.einsum("bd,cpd->bcp", image[:, 0].float(), text.float()) * logit_scale
    if mask is not None:
        logits = logits.masked_fill(~mask.to(logits.device), float("-inf"))
    return logits.amax(-1)


@pytest.fixture()
def top_prompt():
    method = register(Method("top-prompt", "view 0 against each class's best prompt", _top_prompt,
                             random_views=False))
    yield method
    unregister(method.name)


def test_a_method_is_one_registry_entry(top_prompt, tiny_backbone, tmp_path):
    from awt.bench.plan import effective_settings
    from awt.cli import app
    from typer.testing import CliRunner

    assert get_method("top-prompt") is top_prompt and "top-prompt" in METHODS
    assert effective_settings("top-prompt", 50, 7, True) == (0, 7)     # the planner reads its flags
    names = ["cat", "rocket", "cup of coffee"]
    descriptions = [[f"{n} sentence {j}." for j in range(3)] for n in names]
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(names, descriptions=descriptions, descriptions_per_class=2,
                                                      views=3, cache_dir=tmp_path))
    example = PACKAGE / "data" / "examples" / "rocket.jpg"
    [result] = clf.classify([str(example)], method="top-prompt", num_workers=0)
    feats = next(clf.iter_image_features([str(example)], num_workers=0, views=0)).features
    expected = _top_prompt(feats, clf.text_features, clf.classes.mask, clf.logit_scale, None)[0]
    assert [p.index for p in result.predictions] == expected.argsort(descending=True).tolist()
    assert score("top-prompt", feats, clf.text_features, clf.classes.mask, clf.logit_scale).shape == (1, 3)
    # the command line takes it too
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(names))
    r = CliRunner().invoke(app, ["classify", str(example), "--classes", str(classes), "--model", tiny_backbone.name,
                                 "--pretrained", "none", "--method", "top-prompt", "--json",
                                 "--cache-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["predictions"][0]["index"] == result.predictions[0].index
