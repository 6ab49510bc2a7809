"""`awt describe` against a real HTTP server on loopback (tests/support/openai_server.py), no mocks."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from awt.describe.clean import clean_answer, parse_questions, split_sentences
from awt.cli import _Notes
from awt.cli.flags import FLAGS
from awt.cli.describe import describe
from awt.describe.output import exclusive_lock
from awt.describe.generate import DescribeSettings
from awt.describe.run import run_describe
from awt.describe.inputs import load_prompts
from awt.describe.llm import RetryPolicy, endpoint_host, redact, resolve_endpoint
from awt.descriptions import load_descriptions
from awt.errors import AWTError
from support.openai_server import FakeOpenAI

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-test-DO-NOT-LEAK-0123456789"
QUESTIONS = ["What does a {} look like?", "Describe the colours of a {}.", "What parts of a {} are visible?"]

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command("describe")(describe)
app.command("noop", hidden=True)(lambda: None)  # two commands: `describe` is then a subcommand, as in awt
runner = CliRunner()


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(sentences=5) as srv:
        yield srv


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    classes = tmp_path / "classes.txt"
    classes.write_text("# test classes\nzebra\ntulip\n\ncanoe\nlantern\n", encoding="utf-8")
    questions = tmp_path / "questions.txt"
    questions.write_text("\n".join(QUESTIONS) + "\n", encoding="utf-8")
    return {"classes": classes, "questions": questions, "out": tmp_path / "out" / "desc.json"}


def invoke(srv: FakeOpenAI | None, files: dict[str, Path], *extra: str, questions: bool = True, env: dict | None = None):
    args = ["describe", "--classes", str(files["classes"]), "--out", str(files["out"]),
            "--per-class", "10", "--timeout", "0.5", "--backoff", "0.01", "--concurrency", "3"]
    if questions:
        args += ["--questions", str(files["questions"])]
    environ = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": srv.base_url if srv else None}
    environ.update(env or {})
    log, level = logging.getLogger("awt"), logging.getLogger("awt").level
    handler = _Stderr()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return runner.invoke(app, [*args, *extra], env=environ)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


class _Stderr(logging.Handler):
    """The library's notes as the command line prints them, on the stderr of the moment (the runner's)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(_Notes().format(record), file=sys.stderr)


def assert_complete(path: Path, names: list[str], per_class: int) -> dict:
    doc = json.loads(path.read_text(encoding="utf-8"))
    ds = load_descriptions(path)
    assert ds.names == names
    assert ds.meta["complete"] is True
    for name, descs in zip(ds.names, ds.for_classes(names)):
        assert len(descs) >= per_class, name
        assert len({d.casefold() for d in descs}) == len(descs), f"duplicates for {name}"
        for d in descs:
            assert name in d and d.endswith(".") and not d[0].isdigit() and len(d) <= 300, d
    return doc


def assert_no_key(*texts: str) -> None:
    for t in texts:
        assert KEY not in t and "DO-NOT-LEAK" not in t


NAMES = ["zebra", "tulip", "canoe", "lantern"]


# ---------------------------------------------------------------- full runs


def test_full_run_writes_a_complete_file_with_provenance(server: FakeOpenAI, files: dict[str, Path]) -> None:
    result = invoke(server, files, "--llm", "tiny-model", "--dataset-description", "has everyday objects")
    assert result.exit_code == 0, result.output
    doc = assert_complete(files["out"], NAMES, 10)
    meta = doc["meta"]
    assert meta["llm"] == "tiny-model"
    assert meta["endpoint_host"] == f"127.0.0.1:{server.port}"
    assert meta["questions"] == QUESTIONS and meta["questions_source"] == "file"
    assert meta["per_class"] == 10 and meta["dataset_description"] == "has everyday objects"
    assert meta["awt_version"] and meta["created"].endswith("Z")
    # 5 sentences per answer, 10 wanted: exactly two requests per class
    assert server.count() == 8
    assert all(r.authorization == f"Bearer {KEY}" and r.model == "tiny-model" for r in server.requests)
    assert "4 of 4 classes complete" in result.stdout
    assert "requests: 8 (retries 0, failed 0); tokens:" in result.stdout
    lock = files["out"].with_name("desc.json.lock")
    assert_no_key(files["out"].read_text(), lock.read_text(), result.output)
    assert sorted(p.name for p in files["out"].parent.iterdir()) == ["desc.json", "desc.json.lock"]


def test_rerun_of_a_complete_file_asks_nothing(server: FakeOpenAI, files: dict[str, Path]) -> None:
    assert invoke(server, files).exit_code == 0
    before = files["out"].read_bytes()
    n = server.count()
    result = invoke(None, files, env={"OPENAI_API_KEY": None})  # no endpoint needed when nothing is left
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.stdout
    assert server.count() == n and files["out"].read_bytes() == before


@pytest.mark.parametrize("kind", ["429", "500", "503", "hang", "drop", "empty", "garbage", "malformed"])
def test_each_fault_is_retried(server: FakeOpenAI, files: dict[str, Path], kind: str) -> None:
    server.add_fault(kind, match="tulip", hang_s=1.2, retry_after="0.3")
    result = invoke(server, files)
    assert result.exit_code == 0, result.output
    assert_complete(files["out"], NAMES, 10)
    tulip = server.mentioning("tulip")
    assert [r.outcome for r in tulip] == [kind, "ok", "ok"]
    assert "retries 1, failed 0" in result.stdout
    if kind == "429":  # Retry-After: 0.3 is honoured (the backoff alone would be ~0.01 s)
        assert tulip[1].at - tulip[0].at >= 0.28


def test_many_faults_at_once(server: FakeOpenAI, files: dict[str, Path]) -> None:
    for kind, name in [("429", "zebra"), ("500", "zebra"), ("hang", "canoe"), ("malformed", "canoe"),
                       ("drop", "lantern"), ("empty", "lantern"), ("garbage", None), ("503", None)]:
        server.add_fault(kind, match=name, hang_s=1.0, retry_after="0")
    result = invoke(server, files)
    assert result.exit_code == 0, result.output
    assert_complete(files["out"], NAMES, 10)
    assert "retries 8" in result.stdout and server.count() == 16


# ---------------------------------------------------------------- failures


def test_classes_that_cannot_finish_are_named_and_the_rest_saved(server: FakeOpenAI, files: dict[str, Path]) -> None:
    # 'tulip' always gets the same three sentences; 'canoe' always gets HTTP 500
    server.fixed_answers["tulip"] = "1. A tulip has a cup-shaped bloom.\n2. A tulip stands on a green stem.\n3. Sure thing:"
    server.add_fault("500", match="canoe", times=10_000)
    result = invoke(server, files, "--max-attempts", "3")
    assert result.exit_code == 1
    assert "could not complete 2 classes" in result.stderr
    assert "'tulip' (class 1): 2 descriptions; the last 3 answers added no new descriptions" in result.stderr
    assert "'canoe' (class 2): 0 descriptions; no usable answer after 3 attempts (last problem: HTTP 500" in result.stderr
    assert "2 of 4 classes complete" in result.stdout
    ds = load_descriptions(files["out"])
    assert ds.meta["complete"] is False
    assert len(ds.descriptions[0]) >= 10 and len(ds.descriptions[3]) >= 10
    assert ds.descriptions[1] == ["A tulip has a cup-shaped bloom.", "A tulip stands on a green stem."]
    assert ds.descriptions[2] == []
    assert len(server.mentioning("tulip")) == 4  # one useful answer, then a full round without progress
    assert len(server.mentioning("canoe")) == 3  # attempts per request are capped
    with pytest.raises(AWTError, match="empty description list .*'canoe'"):
        ds.for_classes(NAMES)

    # a rerun retries only the unfinished classes, keeping tulip's partial descriptions
    server.fixed_answers.clear()
    server.faults.clear()
    done_before = server.count()
    result = invoke(server, files)
    assert result.exit_code == 0, result.output
    assert_complete(files["out"], NAMES, 10)
    again = server.requests[done_before:]
    assert {n for n in NAMES for r in again if n in r.user} == {"tulip", "canoe"}
    assert "2 described now, 2 already complete" in result.stdout


def test_request_budget_per_class_is_capped(server: FakeOpenAI, files: dict[str, Path]) -> None:
    server.sentences = 1  # one new sentence per answer: 10 wanted, but only 4 requests allowed
    result = invoke(server, files, "--max-requests", "4")
    assert result.exit_code == 1
    assert "request budget of 4 used up" in result.stderr
    assert server.count() == 16


def test_unreachable_endpoint_stops_early(files: dict[str, Path]) -> None:
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    files["classes"].write_text("\n".join(f"class{i}" for i in range(10)) + "\n", encoding="utf-8")
    result = invoke(None, files, "--base-url", f"http://127.0.0.1:{port}/v1", "--concurrency", "1", "--max-attempts", "2")
    assert result.exit_code == 1, result.output
    assert "stopped early: 3 classes in a row got no usable answer (last problem: no usable answer after 2 attempts (last problem: connection error" in result.stderr
    assert "could not complete 10 classes" in result.stderr and "classes not attempted" in result.stderr
    # 3 classes x 2 attempts: with one class at a time, the next starts only once the last is read
    assert int(result.stdout.split("requests: ")[1].split()[0]) == 6
    assert load_descriptions(files["out"]).meta["complete"] is False


def test_rejected_key_fails_fast_without_leaking_it(server: FakeOpenAI, files: dict[str, Path]) -> None:
    server.add_fault("401", times=10_000)
    result = invoke(server, files, "--concurrency", "1")
    assert isinstance(result.exception, AWTError)
    msg = str(result.exception)
    assert "401" in msg and "OPENAI_API_KEY" in msg and "\n" not in msg
    assert server.count() == 1, "a 401 is not retried"
    assert_no_key(msg, result.output, files["out"].read_text())


def test_unknown_model_404(server: FakeOpenAI, files: dict[str, Path]) -> None:
    server.add_fault("404", times=10_000)
    result = invoke(server, files, "--llm", "no-such-model", "--concurrency", "1")
    assert isinstance(result.exception, AWTError)
    assert "404" in str(result.exception) and "'no-such-model'" in str(result.exception)


def test_no_key_and_no_endpoint_is_a_one_line_error(files: dict[str, Path]) -> None:
    result = invoke(None, files, env={"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None})
    assert isinstance(result.exception, AWTError)
    msg = result.exception.describe(FLAGS)   # the line the command prints
    assert "OPENAI_API_KEY" in msg and "--base-url" in msg and "\n" not in msg


def test_local_endpoint_needs_no_key(server: FakeOpenAI, files: dict[str, Path]) -> None:
    result = invoke(server, files, env={"OPENAI_API_KEY": None})
    assert result.exit_code == 0, result.output
    assert {r.authorization for r in server.requests} == {"Bearer none"}


def test_base_url_option_beats_the_environment(server: FakeOpenAI, files: dict[str, Path]) -> None:
    result = invoke(None, files, "--base-url", server.base_url, env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert result.exit_code == 0, result.output
    assert server.count() == 8


# ---------------------------------------------------------------- step 1 and inputs


def test_step_one_asks_for_questions_and_saves_them(server: FakeOpenAI, files: dict[str, Path]) -> None:
    result = invoke(server, files, "--dataset-description", "consists of everyday objects.", questions=False)
    assert result.exit_code == 0, result.output
    step1 = [r for r in server.requests if "{}" in r.system]
    assert len(step1) == 1
    assert step1[0].user.endswith("which consists of everyday objects.")
    assert "Generate 8 questions" in step1[0].user
    ds = load_descriptions(files["out"])
    assert ds.meta["questions"] == [
        "What does a {} look like in a photo?", "Which colours are typical of a {}?",
        "Describe the shape of a {}.", "What is a {}?",
    ]
    assert ds.meta["questions_source"] == "llm"
    assert "step 1: 4 questions" in result.stderr
    # the rerun with more wanted per class reuses the saved questions: no new step 1
    result = invoke(server, files, "--per-class", "15", questions=False)
    assert result.exit_code == 0, result.output
    assert len([r for r in server.requests if "{}" in r.system]) == 1
    assert_complete(files["out"], NAMES, 15)


def test_step_one_without_usable_questions(server: FakeOpenAI, files: dict[str, Path]) -> None:
    server.question_answer = "I would rather not."
    result = invoke(server, files, "--max-attempts", "2", questions=False)
    assert isinstance(result.exception, AWTError)
    assert "--questions" in result.exception.describe(FLAGS) and server.count() == 2


def test_questions_file_line_without_placeholder(server: FakeOpenAI, files: dict[str, Path]) -> None:
    files["questions"].write_text("# mine\nWhat is a {}?\n\nHow big is it?\n", encoding="utf-8")
    result = invoke(server, files)
    assert isinstance(result.exception, AWTError)
    assert f"{files['questions']} line 4: it has no {{}}" in str(result.exception)
    files["questions"].write_text("Is a {} bigger than a {}?\n", encoding="utf-8")
    assert "exactly one {}" in str(invoke(server, files).exception)
    assert server.count() == 0


def test_empty_classes_file(server: FakeOpenAI, files: dict[str, Path]) -> None:
    files["classes"].write_text("# nothing\n\n", encoding="utf-8")
    result = invoke(server, files)
    assert isinstance(result.exception, AWTError) and "class file has no class names" in str(result.exception)


def test_duplicate_class_names_stay_distinct(server: FakeOpenAI, files: dict[str, Path]) -> None:
    files["classes"].write_text("crane\nzebra\ncrane\n", encoding="utf-8")
    result = invoke(server, files)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("more than once") == 1
    ds = load_descriptions(files["out"])
    assert ds.names == ["crane", "zebra", "crane"]
    first, _, second = ds.for_classes(["crane", "zebra", "crane"])
    assert len(first) >= 10 and len(second) >= 10 and first != second


def test_resume_refuses_a_different_class_list_or_questions(server: FakeOpenAI, files: dict[str, Path]) -> None:
    assert invoke(server, files).exit_code == 0
    files["questions"].write_text("How tall is a {}?\n", encoding="utf-8")
    result = invoke(server, files)
    assert isinstance(result.exception, AWTError) and "different questions" in str(result.exception)
    files["classes"].write_text("zebra\ntulip\n", encoding="utf-8")
    result = invoke(server, files, questions=False)
    assert isinstance(result.exception, AWTError) and "different class list" in str(result.exception)


def test_refuses_to_overwrite_a_plain_descriptions_file(server: FakeOpenAI, files: dict[str, Path]) -> None:
    files["out"].parent.mkdir()
    files["out"].write_text('{"zebra": ["A zebra."]}', encoding="utf-8")
    result = invoke(server, files)
    assert isinstance(result.exception, AWTError) and "not an `awt describe` output file" in str(result.exception)
    assert files["out"].read_text() == '{"zebra": ["A zebra."]}'


def test_bad_prompts_file(server: FakeOpenAI, files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "prompts.yaml"
    bad.write_text("questions: {user: 'no count here'}\ndescriptions: {user: '{question}'}\n", encoding="utf-8")
    result = invoke(server, files, "--prompts", str(bad))
    assert isinstance(result.exception, AWTError) and "'questions.user' must contain {count}" in str(result.exception)
    bad.write_text("questions: [unclosed\n", encoding="utf-8")
    assert "not valid YAML" in str(invoke(server, files, "--prompts", str(bad)).exception)


def test_custom_prompts_file_is_used(server: FakeOpenAI, files: dict[str, Path], tmp_path: Path) -> None:
    custom = tmp_path / "prompts.yaml"
    custom.write_text(
        "questions: {user: 'Give {count} questions about {dataset_description}', system: 'Use {} for the class.'}\n"
        "descriptions: {user: 'Q: {question}', system: 'Describe.', temperature: 0.2}\n",
        encoding="utf-8",
    )
    result = invoke(server, files, "--prompts", str(custom))
    assert result.exit_code == 0, result.output
    assert server.requests[0].user.startswith("Q: ") and server.requests[0].system == "Describe."


# ---------------------------------------------------------------- interruption, resume, locking


def _cli(files: dict[str, Path], srv: FakeOpenAI, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": srv.base_url,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "awt", "describe", "--classes", str(files["classes"]), "--out", str(files["out"]),
           "--questions", str(files["questions"]), "--per-class", "10", "--timeout", "5", "--concurrency", "2", *extra]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _complete_classes(path: Path) -> set[str]:
    if not path.exists():
        return set()
    ds = load_descriptions(path)  # must always parse: every write is atomic
    return {n for n, d in zip(ds.names, ds.descriptions) if len(d) >= ds.meta["per_class"]}


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended early (rc {proc.returncode}): {out} {err}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("timed out waiting for progress")


ITEMS = [f"item{c}x" for c in "abcdefghij"]  # no name is part of another


def _slow_tail(server: FakeOpenAI, files: dict[str, Path]) -> None:
    """Ten classes; the last three answer only after 3 s, so a run is surely mid-way when killed."""
    files["classes"].write_text("\n".join(ITEMS) + "\n", encoding="utf-8")
    server.delay_s = 0.05
    for name in ITEMS[-3:]:
        server.add_fault("hang", match=name, hang_s=3.0)


def _resume_and_check(server: FakeOpenAI, files: dict[str, Path], label: str) -> None:
    done = _complete_classes(files["out"])
    assert 3 <= len(done) < len(ITEMS)
    saved = load_descriptions(files["out"])
    first_run = server.count()
    server.faults.clear()
    server.delay_s = 0.0
    result = invoke(server, files, "--concurrency", "4")
    assert result.exit_code == 0, result.output
    assert_complete(files["out"], ITEMS, 10)
    later = server.requests[first_run:]
    asked = {n for n in ITEMS for r in later if n in r.user}
    assert asked == set(ITEMS) - done, "finished classes must not be asked again"
    assert f"{len(done)} already complete" in result.stdout
    final = load_descriptions(files["out"])
    for i, n in enumerate(ITEMS):
        if n in done:
            assert final.descriptions[i] == saved.descriptions[i]
    print(f"\nresume after {label}: {len(done)} of {len(ITEMS)} classes complete at the kill; "
          f"{first_run} requests before, {len(later)} after (for the other {len(ITEMS) - len(done)} classes only)")


def test_killed_process_resumes_without_asking_again(server: FakeOpenAI, files: dict[str, Path]) -> None:
    _slow_tail(server, files)
    proc = _cli(files, server)
    _wait_for(lambda: len(_complete_classes(files["out"])) >= 3, 60, proc)
    proc.kill()  # SIGKILL: no chance to clean up
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert_no_key(out, err)
    _resume_and_check(server, files, "SIGKILL")


def test_sigterm_saves_and_exits_cleanly(server: FakeOpenAI, files: dict[str, Path]) -> None:
    # in-process, with a real signal: SIGTERM is handled like Ctrl-C during the run
    _slow_tail(server, files)
    previous = signal.signal(signal.SIGTERM, lambda *a: None)  # a late signal must not end pytest
    stop_watch = threading.Event()

    def watcher() -> None:
        deadline = time.monotonic() + 60
        while not stop_watch.is_set() and time.monotonic() < deadline:
            if len(_complete_classes(files["out"])) >= 3:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    try:
        result = invoke(server, files, "--timeout", "5")  # the slow classes are not retried
    finally:
        stop_watch.set()
        thread.join()
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 130, result.output
    assert "interrupted:" in result.stderr and "rerun the same command to resume" in result.stderr
    _resume_and_check(server, files, "SIGTERM")


def test_second_run_on_the_same_file_fails_clearly(server: FakeOpenAI, files: dict[str, Path]) -> None:
    files["out"].parent.mkdir()
    # a lock held by another process
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)",
         str(files["out"]) + ".lock"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = invoke(server, files)
        assert isinstance(result.exception, AWTError)
        assert "another `awt describe` is writing" in str(result.exception)
        assert server.count() == 0 and not files["out"].exists()
    finally:
        holder.kill()
        holder.wait()
    assert invoke(server, files).exit_code == 0


def test_concurrent_runs_do_not_corrupt_the_file(server: FakeOpenAI, files: dict[str, Path]) -> None:
    server.delay_s = 0.05
    settings = DescribeSettings(classes=files["classes"], out=files["out"], questions=files["questions"],
                                per_class=10, base_url=server.base_url, timeout=5, concurrency=2, backoff=0.01)
    outcomes: list[object] = []
    start = threading.Barrier(2)

    def one_run() -> None:
        start.wait()
        try:
            outcomes.append(run_describe(settings))
        except AWTError as e:
            outcomes.append(e)

    env_before = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = KEY
    try:
        threads = [threading.Thread(target=one_run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        if env_before is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = env_before
    errors = [o for o in outcomes if isinstance(o, AWTError)]
    reports = [o for o in outcomes if not isinstance(o, AWTError)]
    assert len(outcomes) == 2
    # either the second was locked out, or it started after the first and found nothing to do
    assert len(errors) == 1 and "is writing" in str(errors[0]) or len(reports) == 2
    assert_complete(files["out"], NAMES, 10)
    assert server.count() == 8, "no class was described twice"


# ---------------------------------------------------------------- pieces


def test_answer_cleaning() -> None:
    text = (
        "Here are some features of a zebra:\n"
        "1. A zebra has black and white stripes. The mane of a zebra, e.g. on the neck, stands upright.\n"
        "2) **Zebras** have dark muzzles\n"
        "- A zebra has black and white stripes.\n"
        "• What does a zebra eat?\n"
        "* Zebras live in the U.S. Army zoo photos and graze.\n"
        "- The tail of a zebra is,\n"
        "Yes.\n"
        f"- A zebra {'is very striped and ' * 30}tall.\n"
        "# Notes\n"
        "- Zebras run fast. Zebras have hooves. A zebra herd stands toge"
    )
    assert clean_answer(text, truncated=True) == [
        "A zebra has black and white stripes.",
        "The mane of a zebra, e.g. on the neck, stands upright.",
        "Zebras have dark muzzles.",
        "Zebras live in the U.S. Army zoo photos and graze.",
        "Zebras run fast.",
        "Zebras have hooves.",
    ]
    assert split_sentences("A 1.5 m tall zebra. Dr. Who rides one! Ok") == ["A 1.5 m tall zebra.", "Dr. Who rides one!", "Ok"]


def test_question_parsing() -> None:
    got = parse_questions("Sure:\n1. What colour is the {class}?\n- Describe a {}.\n- {} and {}\n- No slot?\n- Describe a {}.", limit=5)
    assert got == ["What colour is the {}?", "Describe a {}."]


def test_endpoint_settings_never_expose_the_key() -> None:
    assert endpoint_host("http://user:secret@10.0.0.1:8000/v1?x=1") == "10.0.0.1:8000"
    assert endpoint_host("https://api.openai.com/v1") == "api.openai.com:443"
    assert endpoint_host("http://[::1]:11434/v1") == "[::1]:11434"
    ep = resolve_endpoint(None, {"OPENAI_API_KEY": KEY})
    assert ep.base_url == "https://api.openai.com/v1" and KEY not in repr(ep)
    assert redact(f"Incorrect API key provided: {KEY}", KEY) == "Incorrect API key provided: ***"
    assert redact("key sk-abc1****wxyz is wrong", "other") == "key *** is wrong"
    with pytest.raises(AWTError, match="http"):
        resolve_endpoint("localhost:8000", {})


def test_backoff_is_exponential_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(backoff_s=1.0, backoff_cap_s=8.0, retry_after_cap_s=30.0)
    for attempt, top in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        d = policy.delay(attempt, None)
        assert top / 2 <= d <= top
    assert 5.0 <= policy.delay(1, 5.0) <= 5.1
    assert policy.delay(1, 3600.0) <= 30.1


def test_shipped_prompts_load() -> None:
    p = load_prompts()
    msgs = p.questions.messages(count="6", dataset_description="consists of 101 food categories")
    assert msgs[0]["role"] == "system" and "{}" in msgs[0]["content"]
    assert msgs[-1]["content"] == "Generate 6 questions to classify images from a dataset, which consists of 101 food categories."
    assert p.questions.messages(count="6", dataset_description="")[-1]["content"].endswith("from a dataset.")
    assert p.descriptions.messages(question="What is a cat?")[-1] == {"role": "user", "content": "What is a cat?"}


def test_lock_is_exclusive_within_one_process(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    with exclusive_lock(out):
        with pytest.raises(AWTError, match="is writing"):
            with exclusive_lock(out):
                pass
    with exclusive_lock(out):
        pass
