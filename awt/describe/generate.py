"""The two-step description pipeline: questions for the dataset, then answers per class.

Work is resumable: the cache file is rewritten atomically each time a class finishes, so a
killed run loses only the classes in flight, and a rerun asks only for unfinished classes.
An exclusive lock (``OUT.lock``, via ``flock``) keeps a second run off the same file: it
fails at once with a clear message instead of waiting. The lock file is left in place on
purpose (removing it could let two runs lock different files).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import awt
from awt.describe.clean import Collector, check_question, clean_answer, parse_questions
from awt.describe.inputs import Prompts, load_prompts, read_classes, read_questions
from awt.describe.llm import (
    Answer,
    Budget,
    BudgetExhausted,
    ChatClient,
    EndpointError,
    RequestFailed,
    RetryPolicy,
    Stats,
    Stopped,
    resolve_endpoint,
)
from awt.descriptions import DescriptionSet, load_descriptions, save_descriptions
from awt.errors import AWTError

DEFAULT_LLM = "gpt-3.5-turbo"  # the model the AWT paper used

Log = Callable[[str], None]


class DescribeInterrupted(AWTError):
    """The run was interrupted (Ctrl-C or SIGTERM); finished classes are saved."""


# ---------------------------------------------------------------- settings and results


@dataclass
class DescribeSettings:
    classes: Path
    out: Path
    dataset_description: str = ""
    questions: Path | None = None
    num_questions: int = 8
    per_class: int = 50
    llm: str = DEFAULT_LLM
    base_url: str | None = None
    concurrency: int = 8
    timeout: float = 60.0
    max_attempts: int = 6
    max_requests: int = 0  # HTTP requests per class, retries included; 0 = auto
    backoff: float = 1.0
    prompts: Path | None = None

    def request_cap(self, n_questions: int) -> int:
        """HTTP requests one class may use. Auto: 2 x (questions + M), enough even for answers
        that bring a single new sentence each; classes that stop progressing end sooner."""
        return self.max_requests or 2 * (n_questions + self.per_class)


@dataclass
class ClassFailure:
    index: int
    name: str
    have: int
    reason: str


@dataclass
class DescribeReport:
    out: Path
    total: int
    already_complete: int
    completed_now: int
    failures: list[ClassFailure]
    stats: Stats
    elapsed_s: float
    questions: list[str]
    questions_generated: bool = False
    warnings: list[str] = field(default_factory=list)
    stopped_early: str | None = None  # why the run gave up before trying every class
    not_attempted: list[int] = field(default_factory=list)  # class indices left for a rerun

    @property
    def ok(self) -> bool:
        return not self.failures and not self.stopped_early

    @property
    def complete(self) -> int:
        return self.already_complete + self.completed_now


# ---------------------------------------------------------------- cache state


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def exclusive_lock(out: Path) -> Iterator[Path]:
    """Hold ``OUT.lock`` exclusively, or fail at once if another run holds it."""
    lock_path = out.with_name(out.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise AWTError(f"cannot create lock file {lock_path}: {e.strerror or e}") from None
    try:
        if not _try_lock(fd):
            raise AWTError(
                f"another `awt describe` is writing {out} (lock {lock_path} is held); "
                "wait for it to finish, then rerun to resume, or choose another --out"
            )
        yield lock_path
    finally:
        os.close(fd)  # closing releases the lock


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class Cache:
    """The run's view of the cache file; only the main thread touches it."""

    def __init__(self, path: Path, names: list[str], descriptions: list[list[str]], meta: dict[str, Any]) -> None:
        self.path = path
        self.names = names
        self.descriptions = descriptions
        self.meta = meta

    def done(self, index: int) -> bool:
        return len(self.descriptions[index]) >= int(self.meta["per_class"])

    def save(self) -> None:
        self.meta["complete"] = all(self.done(i) for i in range(len(self.names)))
        self.meta["updated"] = _now()
        save_descriptions(self.path, self.names, self.descriptions, self.meta)


def _open_cache(settings: DescribeSettings, names: list[str], user_questions: list[str] | None, log: Log) -> Cache:
    out = settings.out
    meta_now = {
        "per_class": settings.per_class,
        "awt_version": awt.__version__,
    }
    if not out.exists():
        meta = {
            "llm": settings.llm,
            "endpoint_host": None,
            "dataset_description": settings.dataset_description,
            "questions": user_questions or [],
            "questions_source": "file" if user_questions else "llm",
            "created": _now(),
            "complete": False,
            **meta_now,
        }
        return Cache(out, names, [[] for _ in names], meta)
    existing: DescriptionSet = load_descriptions(out)
    if not existing.is_cache:
        raise AWTError(f"{out} exists and is not an `awt describe` cache file; refusing to overwrite it (choose another --out)")
    if existing.names != names:
        diff = next((i for i, (a, b) in enumerate(zip(existing.names, names)) if a != b), min(len(names), len(existing.names)))
        raise AWTError(
            f"{out} was started for a different class list ({len(existing.names)} classes there, {len(names)} in "
            f"{settings.classes}; first difference at class {diff}); delete it or choose another --out"
        )
    meta = dict(existing.meta)
    saved_q = meta.get("questions") or []
    if not (isinstance(saved_q, list) and all(isinstance(q, str) and check_question(q) is None for q in saved_q)):
        raise AWTError(f"{out}: 'meta.questions' is not a list of questions with {{}}; delete the file to start over")
    if user_questions and saved_q and user_questions != saved_q:
        raise AWTError(
            f"{out} was started with different questions than {settings.questions}; "
            "rerun without --questions to reuse the saved ones, or delete the file to start over"
        )
    if not saved_q and user_questions:
        meta["questions"], meta["questions_source"] = user_questions, "file"
    if settings.dataset_description and meta.get("dataset_description") not in ("", None, settings.dataset_description):
        log(f"note: {out} keeps its saved dataset description; the questions were made from it")
    elif settings.dataset_description:
        meta["dataset_description"] = settings.dataset_description
    if meta.get("llm") not in (None, settings.llm):
        log(f"note: {out} was started with --llm {meta.get('llm')}; continuing with {settings.llm}")
    meta["llm"] = settings.llm
    meta.update(meta_now)
    return Cache(out, names, [list(d) for d in existing.descriptions], meta)


# ---------------------------------------------------------------- the two steps


def generate_questions(client: ChatClient, prompts: Prompts, dataset_description: str, count: int) -> list[str]:
    """Step 1: ask the LLM for ``count`` dataset-aware questions, each with one {}."""
    ps = prompts.questions
    msgs = ps.messages(count=str(count), dataset_description=dataset_description.strip().rstrip("."))
    parsed: list[str] = []

    def usable(answer: Answer) -> bool:
        parsed[:] = parse_questions(answer.text, limit=count)
        return bool(parsed)

    try:
        client.complete(msgs, temperature=ps.temperature, accept=usable, budget=Budget(client.policy.max_attempts))
    except RequestFailed as e:
        raise AWTError(f"step 1 failed: the LLM gave no usable questions ({e}); pass your own with --questions FILE") from None
    return list(parsed)


@dataclass
class ClassOutcome:
    descriptions: list[str]
    problem: str | None = None  # why the class stopped short of per_class; None when done
    no_answer: bool = False  # it stopped because a request got no usable answer at all


def describe_class(
    name: str,
    questions: Sequence[str],
    existing: Sequence[str],
    *,
    client: ChatClient,
    prompts: Prompts,
    per_class: int,
    request_cap: int,
) -> ClassOutcome:
    """Step 2 for one class: ask the questions in rounds until ``per_class`` unique sentences.

    Bounded by ``request_cap`` HTTP requests; also stops when a full round adds nothing new.
    """
    ps = prompts.descriptions
    got = Collector(existing)
    budget = Budget(request_cap)
    stall_limit = max(len(questions), 2)
    stalled = 0
    for turn in range(request_cap):  # every turn uses at least one request of the budget
        if len(got) >= per_class:
            break
        question = questions[turn % len(questions)].format(name)
        try:
            answer = client.complete(
                ps.messages(question=question),
                temperature=ps.temperature,
                accept=lambda a: bool(clean_answer(a.text, a.truncated)),
                budget=budget,
            )
        except BudgetExhausted as e:
            return ClassOutcome(got.items, str(e))
        except RequestFailed as e:
            return ClassOutcome(got.items, str(e), no_answer=True)
        stalled = 0 if got.add(clean_answer(answer.text, answer.truncated)) else stalled + 1
        if stalled >= stall_limit and len(got) < per_class:
            return ClassOutcome(got.items, f"the last {stalled} answers added no new descriptions")
    if len(got) < per_class:
        return ClassOutcome(got.items, f"request budget of {request_cap} used up")
    return ClassOutcome(got.items)


# ---------------------------------------------------------------- the run


@dataclass
class _Done:
    index: int
    outcome: ClassOutcome


@dataclass
class _Fatal:
    error: AWTError


def run_describe(settings: DescribeSettings, *, log: Log, progress: bool = True) -> DescribeReport:
    """Describe every class of ``settings.classes`` into ``settings.out`` (resuming it if present)."""
    started = time.monotonic()
    _check_settings(settings)
    names = read_classes(settings.classes)
    user_questions = read_questions(settings.questions) if settings.questions else None
    prompts = load_prompts(settings.prompts)
    warnings: list[str] = []
    dups = sorted(n for n, c in Counter(names).items() if c > 1)
    if dups:
        what = "class name appears" if len(dups) == 1 else "class names appear"
        warnings.append(
            f"{len(dups)} {what} more than once (e.g. {dups[0]!r}); each line is described as its own class"
        )
        log("warning: " + warnings[-1])
    out = settings.out
    if out.is_dir():
        raise AWTError(f"--out {out} is a directory; give a file path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AWTError(f"cannot create folder {out.parent}: {e.strerror or e}") from None

    stats = Stats()
    with exclusive_lock(out):
        cache = _open_cache(settings, names, user_questions, log)
        todo = [i for i in range(len(names)) if not cache.done(i)]
        report = DescribeReport(
            out=out, total=len(names), already_complete=len(names) - len(todo), completed_now=0,
            failures=[], stats=stats, elapsed_s=0.0, questions=list(cache.meta.get("questions") or []),
            warnings=warnings,
        )
        if not todo:
            if not cache.meta.get("complete"):
                cache.save()
            report.elapsed_s = time.monotonic() - started
            return report
        endpoint = resolve_endpoint(settings.base_url)
        cache.meta["endpoint_host"] = endpoint.host
        stop = threading.Event()
        client = ChatClient(
            endpoint, settings.llm, timeout=settings.timeout,
            policy=RetryPolicy(max_attempts=settings.max_attempts, backoff_s=settings.backoff),
            stats=stats, stop=stop,
        )
        with _interrupts_as_keyboard_interrupt():
            try:
                if not cache.meta.get("questions"):
                    try:
                        questions = generate_questions(client, prompts, settings.dataset_description, settings.num_questions)
                    except Stopped:
                        raise KeyboardInterrupt from None
                    cache.meta["questions"], cache.meta["questions_source"] = questions, "llm"
                    report.questions, report.questions_generated = list(questions), True
                    log(f"step 1: {len(questions)} questions from {settings.llm}:")
                    for q in questions:
                        log(f"  {q}")
                cache.save()  # questions and provenance are kept even if nothing else finishes
                _run_classes(cache, todo, settings, client, prompts, report, stop, progress)
            except KeyboardInterrupt:
                stop.set()
                done = sum(cache.done(i) for i in range(len(names)))
                raise DescribeInterrupted(
                    f"interrupted: {done} of {len(names)} classes are complete in {out}; rerun the same command to resume"
                ) from None
    report.elapsed_s = time.monotonic() - started
    return report


def _check_settings(s: DescribeSettings) -> None:
    checks = [
        (s.per_class >= 1, "--per-class must be at least 1"),
        (s.num_questions >= 1, "--num-questions must be at least 1"),
        (s.concurrency >= 1, "--concurrency must be at least 1"),
        (s.timeout > 0, "--timeout must be positive"),
        (s.max_attempts >= 1, "--max-attempts must be at least 1"),
        (s.max_requests >= 0, "--max-requests must be 0 (auto) or more"),
        (s.backoff >= 0, "--backoff must not be negative"),
        (bool(s.llm.strip()), "--llm must name a model"),
    ]
    for ok, message in checks:
        if not ok:
            raise AWTError(message)


def _run_classes(
    cache: Cache,
    todo: list[int],
    settings: DescribeSettings,
    client: ChatClient,
    prompts: Prompts,
    report: DescribeReport,
    stop: threading.Event,
    progress: bool,
) -> None:
    questions: list[str] = list(cache.meta["questions"])
    cap = settings.request_cap(len(questions))
    tasks: queue.Queue[int] = queue.Queue()
    for i in todo:
        tasks.put(i)
    results: queue.Queue[_Done | _Fatal] = queue.Queue()

    def worker() -> None:
        while not stop.is_set():
            try:
                i = tasks.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = describe_class(
                    cache.names[i], questions, list(cache.descriptions[i]), client=client,
                    prompts=prompts, per_class=settings.per_class, request_cap=cap,
                )
                results.put(_Done(i, outcome))
            except Stopped:
                return
            except EndpointError as e:
                stop.set()
                results.put(_Fatal(e))
                return
            except Exception as e:  # a bug must not hang the run: report it as this class's failure
                results.put(_Done(i, ClassOutcome(list(cache.descriptions[i]), f"internal error: {type(e).__name__}: {e}")))

    # daemon threads: an interrupted run exits without waiting for requests in flight
    threads = [threading.Thread(target=worker, daemon=True, name=f"awt-describe-{k}") for k in range(min(settings.concurrency, len(todo)))]
    bar = _progress_bar(len(cache.names), report.already_complete, progress)
    fatal: AWTError | None = None
    # circuit breaker: this many classes in a row without any usable answer means the
    # endpoint is down or broken; stop instead of retrying every remaining class
    breaker = max(3, settings.concurrency)
    streak = 0
    try:
        for t in threads:
            t.start()
        pending = len(todo)
        while pending and fatal is None:
            try:
                item = results.get(timeout=0.2)
            except queue.Empty:
                if not any(t.is_alive() for t in threads) and results.empty():
                    break
                continue
            if isinstance(item, _Fatal):
                fatal = item.error
                break
            pending -= 1
            _record(cache, item, report)
            cache.save()
            streak = streak + 1 if item.outcome.no_answer else 0 if item.outcome.problem is None else streak
            if streak >= breaker:
                stop.set()
                report.stopped_early = (
                    f"stopped early: {streak} classes in a row got no usable answer "
                    f"(last problem: {item.outcome.problem}); is the endpoint up?"
                )
                break
            if bar is not None:
                bar.update(1)
                failed = f" failed={len(report.failures)}" if report.failures else ""
                bar.set_postfix_str(f"requests={report.stats.requests} retries={report.stats.retries}{failed}", refresh=False)
    except KeyboardInterrupt:
        stop.set()
        _drain(results, cache, report)  # keep classes that finished while we were interrupted
        raise
    finally:
        if bar is not None:
            bar.close()
    if fatal is not None:
        _drain(results, cache, report)
        raise fatal
    if report.stopped_early:
        _drain(results, cache, report)
        report.not_attempted = [i for i in todo if not cache.done(i) and i not in {f.index for f in report.failures}]


def _record(cache: Cache, item: _Done, report: DescribeReport) -> None:
    out = item.outcome
    cache.descriptions[item.index] = out.descriptions
    if out.problem is None:
        report.completed_now += 1
    else:
        report.failures.append(ClassFailure(item.index, cache.names[item.index], len(out.descriptions), out.problem))


def _drain(results: queue.Queue[_Done | _Fatal], cache: Cache, report: DescribeReport) -> None:
    changed = False
    for _ in range(results.qsize()):
        try:
            item = results.get_nowait()
        except queue.Empty:
            break
        if isinstance(item, _Done):
            _record(cache, item, report)
            changed = True
    if changed:
        cache.save()


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    # disable=None: shown on a terminal only, so logs and pipes stay clean
    return tqdm(total=total, initial=initial, unit="class", desc="describe", file=sys.stderr, disable=None, dynamic_ncols=True)


@contextlib.contextmanager
def _interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so a `kill` also saves and exits cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
