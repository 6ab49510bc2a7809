"""The bad inputs of tests/e2e/test_bad_inputs.py and benchmarks/bad_inputs.py: each case is one real
command on the files of tests/support/bad_input_world.py and what it must do (exit status, the error line,
the good inputs it keeps, what stderr must or must not say). tests/support/bad_input_runner.py runs and
judges them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from support.bad_input_world import CLASSES, World, fill_up

# -- cases ---------------------------------------------------------------------------------------------

@dataclass
class Command:
    argv: list[str]                              # after ``awt``, unless ``program`` is set
    env: dict = field(default_factory=dict)
    program: list[str] | None = None             # a whole command line instead of ``python -m awt``
    stdout: str | None = None                    # a file to write stdout into instead of a pipe
    fresh: bool = False                          # always a process of its own
    interrupt_after: int | None = None           # SIGINT to the process group after this many stdout lines
    close_stdout_after: int | None = None        # stdout a pipe, closed after this many lines (| head -n N)
    timeout: float = 120.0


@dataclass
class Case:
    name: str
    what: str
    make: Callable[[World], Command | str]       # a str: skipped, with that reason
    exit: int | tuple[int, ...] = 1
    message: str | tuple[str, ...] | None = None  # in the (first) error line, case-insensitive; a tuple: all of them
    errors: int = 1                               # error lines expected
    kept: tuple[str, ...] = ()                    # on stdout: the good inputs' results
    stderr_has: tuple[str, ...] = ()              # also on stderr (warnings naming a file, ...)
    stderr_lacks: tuple[str, ...] = ()
    quiet: bool = True                            # stderr holds only warning/error/summary lines
    within: float | None = None                   # seconds it may take
    launcher: bool = False                        # torchrun: its own ChildFailedError report is expected
    tries: int = 1                                # runs of the command (a race shows in some runs only)
    check: Callable[[World, "Result"], str | None] | None = None


@dataclass
class Result:
    exit: int | None
    stdout: str
    stderr: str
    seconds: float
    skipped: str | None = None
    note: str | None = None       # how several tries ended


CASES: list[Case] = []


def case(name: str, what: str, **kw):
    def register(make: Callable[[World], Command | str]):
        CASES.append(Case(name, what, make, **kw))
        return make
    return register


def classify(w: World, *inputs: str, model: str | None = None, extra: tuple[str, ...] = (), **kw) -> Command:
    return Command(["classify", *(inputs or w.good), "--classes", str(w.path("classes.txt")), "--model",
                    model or w.tiny, "--views", "2", "--workers", "0", "--top-k", "2", *extra], **kw)


def bench(w: World, config: Path, output: str | Path | None = None, **kw) -> Command:
    return Command(["bench", str(config), "--output", str(output or w.path("runs", config.stem))], **kw)


CAT = "cat.jpg"
ROCKET = "rocket.jpg"

# silent wrong results ----------------------------------------------------------------------------------

case("hf-no-tokenizer", "hf: folder without tokenizer files", message="tokenizer")(
    lambda w: w.hf_error or classify(w, model=f"hf:{w.path('hf-no-tokenizer')}"))
case("hf-unk-tokenizer", "hf: folder whose tokenizer knows no word", message="tokenizer")(
    lambda w: w.hf_error or classify(w, model=f"hf:{w.path('hf-unk-tokenizer')}"))
case("hf-no-weights", "hf: folder without weights", message=("weights", "none"))(
    lambda w: w.hf_error or classify(w, model=f"hf:{w.path('hf-no-weights')}"))
case("hf-no-weights-none", "hf: folder without weights, --pretrained none (good)", exit=0, errors=0,
     kept=(CAT, ROCKET), stderr_has=("randomly initialised",))(
    lambda w: w.hf_error or classify(w, model=f"hf:{w.path('hf-no-weights')}", extra=("--pretrained", "none")))
case("local-dir-pt-ignored", "local-dir: folder whose checkpoint is a .pt open_clip does not read", exit=0, errors=0,
     kept=(CAT, ROCKET), stderr_has=("model.pt",))(
    lambda w: classify(w, model=f"local-dir:{w.path('pt-local')}"))
case("local-dir-pretrained-ignored", "local-dir: model with --pretrained FILE (open_clip ignores it)",
     message="pretrained")(
    lambda w: classify(w, extra=("--pretrained", str(w.path("tiny-state.pt")))))
case("nan-weights-classify", "checkpoint with NaN weights: classify", message="not finite")(
    lambda w: classify(w, model=f"local-dir:{w.path('nan-local')}"))
case("nan-weights-bench", "checkpoint with NaN weights: bench", message="not finite", quiet=False)(
    lambda w: bench(w, w.bench_config("nan-weights", model=f"local-dir:{w.path('nan-local')}")))

for key, value, label in [
    ("epsilon", 0, "0"), ("epsilon", "!raw .nan", ".nan"), ("epsilon", "!raw 1e-9", "1e-9"), ("epsilon", -0.1, "-0.1"),
    ("epsilon", "!raw .inf", ".inf"), ("epsilon", True, "true"), ("epsilon", "abc", "abc"),
    ("image_temperature", 0, "0"), ("text_temperature", -0.5, "-0.5"), ("image_temperature", "!raw .nan", ".nan"),
    ("max_iter", 0, "0"), ("max_iter", 2.5, "2.5"), ("tol", -0.01, "-0.01"), ("tol", "!raw .nan", ".nan"),
]:
    case(f"bench-{key}-{label}", f"bench settings.awt.{key}: {label}", message=f"settings.awt.{key}")(
        lambda w, key=key, value=value, label=label: bench(w, w.bench_config(f"awt-{key}-{label}", {key: value})))

case("bench-no-readable-image", "bench dataset whose images are all unreadable", message="dead_dataset", quiet=False)(
    lambda w: bench(w, w.bench_config("dead", dataset="dead-dataset")))


def _summary_counts_unreadable(w: World, r: Result) -> str | None:
    text = (w.path("runs", "unreadable", "summary.md")).read_text() if w.path("runs", "unreadable", "summary.md").is_file() else ""
    head = next((line for line in text.splitlines() if line.startswith("| backbone")), "")
    rows = [line for line in text.splitlines() if line.startswith("| tiny")]
    if "unreadable" not in head or not rows or not all(" 1 |" in row for row in rows):
        return "summary.md does not count the unreadable image"
    return None


case("bench-unreadable-image",
     "bench dataset with one unreadable image (good: runs, names it, counts it, no bar in the log)",
     exit=0, errors=0, quiet=False, stderr_has=("broken.jpg",), check=_summary_counts_unreadable)(
    lambda w: bench(w, w.bench_config("unreadable")))

# model files -----------------------------------------------------------------------------------------

case("pretrained-not-checkpoint", "--pretrained a text file named .pt", message="not-a-checkpoint.pt")(
    lambda w: classify(w, model="ViT-B-32", extra=("--pretrained", str(w.path("not-a-checkpoint.pt")))))
case("pretrained-zero-bytes", "--pretrained a zero-byte .pt", message="zero.pt")(
    lambda w: classify(w, model="ViT-B-32", extra=("--pretrained", str(w.path("zero.pt")))))
case("pretrained-other-arch", "--pretrained a state dict of another architecture", message="tiny-state.pt")(
    lambda w: classify(w, model="ViT-B-32", extra=("--pretrained", str(w.path("tiny-state.pt")))))
case("pretrained-directory", "--pretrained a directory", message="directory")(
    lambda w: classify(w, model="ViT-B-32", extra=("--pretrained", str(w.path("images")))))
case("local-dir-wrong-keys", "local-dir: config with a misspelt key", message="widht",
     stderr_lacks=("randomly initialised",))(
    lambda w: classify(w, model=f"local-dir:{w.path('wrong-keys')}"))
case("local-dir-no-model-cfg", "local-dir: config without model_cfg", message="model_cfg",
     stderr_lacks=("randomly initialised",))(
    lambda w: classify(w, model=f"local-dir:{w.path('no-model-cfg')}"))
case("local-dir-not-json", "local-dir: config that is not JSON", message="open_clip_config.json",
     stderr_lacks=("randomly initialised",))(
    lambda w: classify(w, model=f"local-dir:{w.path('not-json')}"))
case("local-dir-truncated", "local-dir: truncated open_clip_model.safetensors", message="safetensors")(
    lambda w: classify(w, model=f"local-dir:{w.path('truncated-local')}"))
case("hf-truncated-weights", "hf: truncated model.safetensors", message="model.safetensors")(
    lambda w: w.hf_error or classify(w, model=f"hf:{w.path('hf-truncated')}"))
case("hf-bad-config", "hf: config.json that is not JSON", message="config.json")(
    lambda w: w.hf_error or classify(w, model=f"hf:{w.path('hf-bad-config')}"))

# output ----------------------------------------------------------------------------------------------

case("classify-json-full-disk", "classify --json > a full disk (/dev/full)", message="no space left")(
    lambda w: classify(w, extra=("--json",), stdout="/dev/full"))


def _text_cache_full(w: World) -> Command | str:
    target = w.mount("full-cache", 64, fill=True)
    if target is None:
        return f"cannot mount a tmpfs: {w.mount_error}"
    return classify(w, extra=("--cache-dir", str(target)))


case("classify-cache-full-disk", "classify with the text cache on a full disk (warns, carries on)", exit=0,
     errors=0, kept=(CAT, ROCKET), stderr_has=("cache",))(_text_cache_full)


def _closed_stdout(w: World) -> Command:
    c = classify(w, w.good[0], str(w.path("images", "coffee.jpg")), w.good[1])
    c.close_stdout_after = 1
    return c


case("classify-stdout-closed", "classify | head -n 1 (stdout closed early)", exit=1, message="output")(
    _closed_stdout)


def _bench_output(w: World, kind: str) -> Command | str:
    config = w.bench_config(f"out-{kind}")
    if kind == "file":
        return bench(w, config, w.path("classes.txt"))
    target = w.mount(f"out-{kind}", 64 if kind == "full" else 48, read_only=kind == "ro", fill=kind == "full")
    if target is None:
        return f"cannot mount a tmpfs: {w.mount_error}"
    return bench(w, config, target / "runs")


case("bench-output-file", "bench --output is a file", message="classes.txt", quiet=False)(
    lambda w: _bench_output(w, "file"))
case("bench-output-read-only", "bench --output on a read-only filesystem", message="read-only", quiet=False)(
    lambda w: _bench_output(w, "ro"))
case("bench-output-full-disk", "bench --output on a full disk", message="no space left", quiet=False)(
    lambda w: _bench_output(w, "full"))


def _bench_fills_disk(w: World) -> Command | str:
    target = w.mount("out-small", 40)
    if target is None:
        return f"cannot mount a tmpfs: {w.mount_error}"
    return bench(w, w.bench_config("fills-disk"), target / "runs")


case("bench-disk-fills-mid-run", "bench output on a 40 KB disk that fills during the run", message="no space left",
     quiet=False)(_bench_fills_disk)


def _describe(w: World, out: Path) -> Command:
    questions = w.path("questions.txt")
    questions.write_text("What does a {} look like?\n")
    return Command(["describe", "--classes", str(w.path("classes.txt")), "--out", str(out), "--questions",
                    str(questions), "--per-class", "1", "--base-url", "http://127.0.0.1:9/v1", "--max-attempts", "1"],
                   env={"OPENAI_API_KEY": "unused"})


def _describe_full(w: World) -> Command | str:
    target = w.mount("describe-full", 64)
    if target is None:
        return f"cannot mount a tmpfs: {w.mount_error}"
    out = target / "descs.json"
    if not out.is_file():   # a cache with one class done, then the disk fills
        saved = [["An astronaut wears a white suit."], [], [], []]
        doc = {"format": "awt-descriptions", "version": 1,
               "meta": {"per_class": 1, "llm": "gpt-4o-mini", "questions": ["What does a {} look like?"],
                        "questions_source": "file", "complete": False, "dataset_description": ""},
               "classes": [{"index": i, "name": n, "descriptions": d} for i, (n, d) in enumerate(zip(CLASSES, saved))]}
        out.write_text(json.dumps(doc))
        fill_up(target / "filler")
    return _describe(w, out)


def _describe_kept(w: World, r: Result) -> str | None:
    out = w.path("describe-full", "descs.json")
    try:
        doc = json.loads(out.read_text())
    except (OSError, ValueError) as e:
        return f"the saved cache is no longer valid JSON ({e})"
    return None if doc["classes"][0]["descriptions"] else "the saved class was lost"


case("describe-full-disk", "describe --out on a full disk (saved classes stay valid)", message="no space left",
     check=_describe_kept, quiet=False)(_describe_full)


def _describe_ro(w: World) -> Command | str:
    target = w.mount("describe-ro", 16, read_only=True)
    return f"cannot mount a tmpfs: {w.mount_error}" if target is None else _describe(w, target / "descs.json")


case("describe-read-only", "describe --out on a read-only filesystem", message="read-only", quiet=False)(_describe_ro)

# inputs ----------------------------------------------------------------------------------------------

case("fifo-input", "a FIFO named as an input (no writer)", message="fifo", kept=(CAT, ROCKET), within=60)(
    lambda w: classify(w, w.good[0], str(w.path("bad", "fifo.jpg")), w.good[1], timeout=60))
case("char-device-input", "/dev/zero named as an input", message="/dev/zero", kept=(CAT, ROCKET), within=60)(
    lambda w: classify(w, w.good[0], "/dev/zero", w.good[1], timeout=60))
case("eps-renamed-jpg", "an EPS file renamed .jpg (never reaches Ghostscript)", message="not an image",
     kept=(CAT, ROCKET), stderr_lacks=("ghostscript",))(
    lambda w: classify(w, w.good[0], str(w.path("bad", "eps-renamed.jpg")), w.good[1]))
case("truncated-jpg", "a truncated JPEG among good ones", message="truncated", kept=(CAT, ROCKET))(
    lambda w: classify(w, w.good[0], str(w.path("bad", "truncated.jpg")), w.good[1]))
case("corrupt-exif-warning", "a JPEG with corrupt EXIF (the decoder's warning names the file)", exit=0, errors=0,
     kept=("corrupt-exif.jpg",), stderr_has=("corrupt-exif.jpg: ",))(
    lambda w: classify(w, str(w.path("bad", "corrupt-exif.jpg"))))

case("libtiff-warning", "a damaged TIFF: libtiff's own warnings (on stderr) name the file", exit=0, errors=0,
     kept=("damaged.tif",), stderr_has=("damaged.tif: ",), stderr_lacks=("tempfile.tif",))(
    lambda w: w.tiff_error or classify(w, str(w.path("bad", "damaged.tif"))))
case("empty-image-file", "a zero-byte .png among good ones", message="not an image", kept=(CAT, ROCKET))(
    lambda w: classify(w, w.good[0], str(w.path("bad", "empty.png")), w.good[1]))
case("symlink-loop", "a symbolic link that points to itself", message="symbolic link", kept=(CAT, ROCKET))(
    lambda w: classify(w, w.good[0], str(w.path("bad", "loop.jpg")), w.good[1]))
case("descriptions-directory", "--descriptions names a folder", message="images")(
    lambda w: classify(w, extra=("--descriptions", str(w.path("images")))))
case("local-dir-is-a-file", "local-dir: naming a file", message="classes.txt")(
    lambda w: classify(w, model=f"local-dir:{w.path('classes.txt')}"))


def _cache_read_only(w: World) -> Command | str:
    target = w.mount("cache-ro", 16, read_only=True)
    return f"cannot mount a tmpfs: {w.mount_error}" if target is None else classify(w, extra=("--cache-dir", str(target)))


case("cache-dir-read-only", "--cache-dir on a read-only filesystem (said before any work)", message="not writable")(
    _cache_read_only)


def _odd_names(w: World) -> Command:
    folder = w.path("odd-names")
    if not folder.is_dir():
        folder.mkdir()
        with open(os.fsencode(folder) + b"/caf\xe9-latin1.jpg", "wb") as f:
            f.write(Path(w.good[0]).read_bytes())
        shutil.copy(w.good[1], folder / "\x1b[31mred\x1b[0m.jpg")
    return classify(w, str(folder))


def _no_raw_escapes(w: World, r: Result) -> str | None:
    if "\x1b" in r.stdout or "\x1b" in r.stderr:
        return "a terminal escape code reached the output"
    return None


case("odd-file-names", "file names with a non-UTF-8 byte and a terminal escape code", exit=0, errors=0,
     kept=("latin1.jpg", "red"), check=_no_raw_escapes)(_odd_names)


def _escape_classes(w: World) -> Command:
    path = w.path("escape-classes.txt")
    path.write_text("cat\n\x1b[2J\x1b[31mrocket\n\x07bell\n")
    c = classify(w)
    c.argv[c.argv.index("--classes") + 1] = str(path)
    return c


case("class-name-escapes", "class names holding terminal escape codes", exit=0, errors=0, kept=(CAT, ROCKET),
     check=_no_raw_escapes)(_escape_classes)


def _api_decoder_error(w: World) -> Command:
    script = f"""
import warnings
warnings.simplefilter("ignore")
from PIL import Image
import awt
bb = awt.create_backbone({w.tiny!r}, None, device="cpu")
clf = awt.AWTClassifier(bb, awt.ClassifierSpec(["cat", "rocket"], views=2, cache_dir=None))
broken = Image.open({str(w.path('bad', 'truncated.jpg'))!r})  # opened lazily: decoding fails in the loader
for r in clf.iter_classify([{w.good[0]!r}, broken, {w.good[1]!r}], num_workers=0):
    print(r.image, "error: " + r.error if r.error else r.predictions[0].name)
"""
    return Command([], program=[sys.executable, "-c", script])


case("api-decoder-exception", "Python API: a PIL image whose decoder fails in the loader", exit=0, errors=0,
     kept=(CAT, ROCKET, "<JpegImageFile> error:"), quiet=False)(_api_decoder_error)

# configs ---------------------------------------------------------------------------------------------

case("bench-yaml-syntax", "bench config with a YAML syntax error", message=("line", "column"))(
    lambda w: bench(w, _write(w.path("configs", "syntax.yaml"), "name: x\nsettings:\n  views: 2\n  seed: [0, 1\n"
                                                                 "backbones: []\n")))
case("bench-missing-data", "paper-style config with three datasets missing", message=("food101", "dtd", "eurosat"))(
    lambda w: bench(w, _write(w.path("configs", "missing.yaml"), "name: x\ndata_root: " + str(w.path("empty-root")) +
                              "\nbackbones: [{name: t, model: '" + w.tiny + "'}]\ndatasets:\n"
                              "  - {name: food101, path: food-101}\n  - {name: dtd, path: dtd}\n"
                              "  - {name: eurosat, path: eurosat}\n", mkdir=w.path("empty-root"))))


def _incomplete(w: World) -> Command:
    root = w.path("incomplete-root")
    for folder in ("food-101", "dtd"):   # the folders are there, their split files are not
        (root / folder).mkdir(parents=True, exist_ok=True)
    return bench(w, _write(w.path("configs", "incomplete.yaml"), f"name: x\ndata_root: {root}\nbackbones: [{{name: t, "
                           f"model: '{w.tiny}'}}]\ndatasets:\n  - {{name: food101, path: food-101}}\n"
                           "  - {name: dtd, path: dtd}\n"))


case("bench-incomplete-data", "paper-style config whose dataset folders lack their split files",
     message=("food101", "dtd", "split"), quiet=False)(_incomplete)


def _write(path: Path, text: str, mkdir: Path | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mkdir is not None:
        mkdir.mkdir(exist_ok=True)
    path.write_text(text)
    return path


# first minutes ---------------------------------------------------------------------------------------

def _offline(w: World, model: str, **env: str) -> Command | str:
    """``model`` with nothing in the Hub cache (every command of the world has an empty HF_HOME) and
    the Hub unreachable (HF_ENDPOINT: a closed port); ``env`` read at import needs a fresh process."""
    if model.startswith("hf:") and w.hf_error:
        return w.hf_error
    return classify(w, model=model, env=env, fresh=bool(env), timeout=120)


case("hf-hub-unreachable", "hf-hub:ORG/REPO, nothing cached, the Hub unreachable", message="hf-hub:", within=10)(
    lambda w: _offline(w, "hf-hub:timm/ViT-B-16-SigLIP"))
case("hf-unreachable", "hf:ORG/REPO, nothing cached, the Hub unreachable", message="hf:", within=15)(
    lambda w: _offline(w, "hf:openai/clip-vit-base-patch32"))
case("hf-offline-env", "hf:ORG/REPO with HF_HUB_OFFLINE=1, nothing cached", message="hf:", within=15)(
    lambda w: _offline(w, "hf:openai/clip-vit-base-patch32", HF_HUB_OFFLINE="1"))


def _ctrl_c(w: World) -> Command:
    folder = w.path("many")
    if not folder.is_dir():
        folder.mkdir()
        for i in range(6):
            shutil.copy(w.good[i % 2], folder / f"img{i}.jpg")
    c = classify(w, str(folder), extra=("--json",), fresh=True)
    c.argv[c.argv.index("--workers") + 1] = "2"
    c.interrupt_after = 6
    return c


case("ctrl-c-at-the-end", "Ctrl-C (to the process group) just after the last result", exit=(0, 130), errors=0,
     kept=("img5.jpg",), tries=5)(_ctrl_c)


def _torchrun(w: World) -> Command:
    c = classify(w, w.good[0], str(w.path("bad", "text.jpg")), w.good[1], str(w.path("bad", "truncated.jpg")))
    return Command(c.argv, program=[sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node=2", "-m", "awt"], fresh=True, env={"OMP_NUM_THREADS": "1"},
                   timeout=180)


case("torchrun-bad-inputs", "torchrun, 2 ranks, two unreadable inputs among good ones", errors=2,
     message="text.jpg", kept=(CAT, ROCKET), launcher=True, quiet=False, stderr_lacks=("SIGTERM",),
     tries=3)(_torchrun)

from support import bad_input_videos  # noqa: E402,F401 -- registers the video cases, which use the helpers above
