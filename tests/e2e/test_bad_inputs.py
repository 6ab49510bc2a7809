"""Bad inputs, end to end: each case of tests/support/bad_input_cases.py is a real command (``awt classify``,
``bench``, ``describe``) on real files, judged on its exit status, its one error line, no traceback
and the good inputs it keeps (the table ``benchmarks/bad_inputs.py`` prints). The commands run in
processes forked from one server that imported awt once; the few cases that need a process of their
own run in one. Plus the in-process checks behind some rows, which are cheaper there.

Left to the table (slow here, or checked elsewhere): ``torchrun-bad-inputs`` (tests/e2e/test_distributed.py
runs classify under torchrun with an unreadable input), ``pretrained-other-arch`` (builds ViT-B-32),
``hf-offline-env`` (the same path as ``hf-unreachable``), ``api-decoder-exception`` (in process here)
and the bench AWT settings but three (every value is refused in process here, by the loader itself).
"""

from __future__ import annotations

import logging
import math
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from awt.bench.config import load_config
from awt.bench.metrics import compute_metrics, metrics_from_topk
from awt.classifier import AWTClassifier
from awt.spec import ClassifierSpec
from awt.errors import AWTError, SettingError
from awt.images import ImageError, load_image
from awt.scoring import AWTConfig
from support.bad_input_cases import CASES, Case
from support.bad_input_runner import Server, message_of, run_case
from support.bad_input_world import World

REPO = Path(__file__).resolve().parents[2]
_SETTINGS_END_TO_END = {"bench-epsilon-0", "bench-epsilon-.nan", "bench-max_iter-0"}
TABLE_ONLY = {"torchrun-bad-inputs", "pretrained-other-arch", "hf-offline-env", "api-decoder-exception"} | {
    c.name for c in CASES if c.what.startswith("bench settings.awt.") and c.name not in _SETTINGS_END_TO_END}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    w = World(tmp_path_factory.mktemp("bad-inputs")).build()
    yield w
    w.unmount_all()


@pytest.fixture(scope="module")
def server(world) -> Server:
    s = Server(REPO, world)
    yield s
    s.close()


@pytest.mark.parametrize("case", [c for c in CASES if c.name not in TABLE_ONLY], ids=lambda c: c.name)
def test_bad_input(case: Case, world: World, server: Server):
    result, found = run_case(REPO, world, case, server, tries=min(case.tries, 2))
    if found == "skipped":
        pytest.skip(result.skipped)
    assert found == "ok", f"{case.what}: {found}\n  read: {message_of(result)}\n  stderr: {result.stderr[-1500:]}"


# -- the same, in process ----------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("epsilon", 0), ("epsilon", float("nan")), ("epsilon", 1e-9), ("epsilon", -0.1), ("epsilon", float("inf")),
    ("image_temperature", 0), ("text_temperature", -0.5), ("image_temperature", float("nan")),
    ("max_iter", 0), ("max_iter", -3), ("tol", -0.01), ("tol", float("nan")), ("epsilon", True), ("epsilon", "0.1"),
])
def test_awt_settings_are_refused_with_their_name(key, value):
    with pytest.raises(SettingError) as e:
        AWTConfig(**{key: value})
    assert e.value.key == key and key in str(e.value)


def test_awt_settings_in_range_are_kept():
    config = AWTConfig(image_temperature=1e-6, text_temperature=2.0, epsilon=1e-3, max_iter=1, tol=0.0)
    assert (config.epsilon, config.max_iter, config.tol) == (1e-3, 1, 0.0)


@pytest.mark.parametrize("yaml_value, message", [
    ("1e-3", None), ("1.0e-3", None), ("5", None), (".nan", "settings.awt.epsilon: must be a finite number"),
    ("1e-9", "settings.awt.epsilon: must be a finite number >= 0.001, got '1e-9'"),
    ("yes", "settings.awt.epsilon: must be a number, got True"), ("[0.1]", "must be a number"),
])
def test_bench_config_reads_awt_numbers_as_yaml_writes_them(tmp_path, tiny_model_name, yaml_value, message):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "labels.csv").write_text("path,label,classname\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"settings:\n  awt:\n    epsilon: {yaml_value}\nbackbones: [{{name: t, model: '{tiny_model_name}'}}]\n"
                      "datasets: [{name: d, path: d}]\n")
    if message is None:
        assert load_config(config).settings.awt.epsilon == float(yaml.safe_load(yaml_value))
    else:
        with pytest.raises(AWTError, match=message.replace("[", r"\[").replace("(", r"\(")):
            load_config(config)


def test_no_metric_from_nan_or_from_nothing():
    scores = torch.tensor([[0.2, float("nan")], [0.5, 0.1]])
    with pytest.raises(ValueError, match="1 of 2 images have scores that are not finite"):
        compute_metrics(scores, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="no images"):
        metrics_from_topk(torch.empty(0, 2, dtype=torch.long), torch.empty(0, dtype=torch.long))
    assert math.isclose(compute_metrics(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]))["top1"], 50.0)


def test_a_decoder_that_fails_in_the_loader_is_that_images_error(tiny_backbone, world):
    """A PIL image opened lazily decodes in the loader: its decoder's OSError is its error, the
    images around it are classified as they would be without it."""
    clf = AWTClassifier(tiny_backbone, ClassifierSpec(["cat", "rocket"], views=2, cache_dir=None))
    broken = Image.open(world.path("bad", "truncated.jpg"))
    for workers in (0, 1):
        results = clf.classify([world.good[0], broken, world.good[1]], num_workers=workers)
        alone = clf.classify([world.good[0], world.good[1]], num_workers=0)
        assert results[1].error.startswith("cannot decode") and results[1].predictions is None
        assert [r.predictions for r in (results[0], results[2])] == [r.predictions for r in alone]


def test_a_fifo_is_refused_without_waiting_for_a_writer(world):
    previous = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("load_image waited on a FIFO"))
    signal.alarm(10)
    try:
        with pytest.raises(ImageError, match="not a regular file \\(a FIFO\\)"):
            load_image(world.path("bad", "fifo.jpg"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_an_eps_file_is_never_opened_as_an_image(world, monkeypatch):
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: pytest.fail("the EPS reached Ghostscript"))
    with pytest.raises(ImageError, match="not an image"):
        load_image(world.path("bad", "eps-renamed.jpg"))


def test_decoder_warnings_name_their_file_once(world, caplog):
    for name in ("corrupt-exif.jpg", "damaged.tif"):
        path = world.path("bad", name)
        if name.endswith(".tif") and world.tiff_error:
            continue
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="awt.images"):
            load_image(path)
        messages = [r.getMessage() for r in caplog.records if r.name == "awt.images"]
        assert messages and all(m.startswith(f"{path}: ") for m in messages), messages
        assert len(messages) == len(set(messages)) and not any("tempfile.tif" in m for m in messages)


def test_no_raw_bytes_in_a_decoder_message(tmp_path):
    bad = tmp_path / "header.ppm"
    bad.write_bytes(b"P6\n4 ?0\n255\n" + bytes(48))   # PIL: "invalid literal for int() with base 10: b'?0'"
    with pytest.raises(ImageError) as e:
        load_image(bad)
    assert "b'" not in str(e.value) and str(e.value).startswith(f"{bad}: ")


def test_printable_and_json_lines_keep_escapes_off_the_terminal():
    import json

    from awt.cli.text import json_line, printable

    name = os.fsdecode(b"caf\xe9 \x1b[31mred\x07\xe2\x80\xae.jpg")
    assert printable(name) == "caf\\xe9 \\x1b[31mred\\x07\\u202e.jpg"
    line = json_line({"image": name, "class": "Ästhetik\u009b"})
    assert "\x1b" not in line and "\u009b" not in line and "Ästhetik" in line
    assert json.loads(line) == {"image": name, "class": "Ästhetik\u009b"}   # the path still names its file
