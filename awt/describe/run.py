"""A whole `awt describe` run: the classes described concurrently, each saved as it finishes."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from awt.classes import duplicates_message
from awt.describe.output import DescribeOutput, exclusive_lock, open_output
from awt.describe.generate import (
    ClassFailure,
    ClassOutcome,
    DescribeInterrupted,
    DescribeReport,
    DescribeSettings,
    describe_class,
    generate_questions,
)
from awt.describe.inputs import Prompts, load_prompts, read_questions
from awt.describe.llm import ChatClient, EndpointError, RetryPolicy, Stats, Stopped, resolve_endpoint
from awt.classes import read_class_file
from awt.errors import AWTError
from awt.progress import progress_bar

_log = logging.getLogger("awt.describe")

@dataclass
class _Done:
    index: int
    outcome: ClassOutcome


@dataclass
class _Fatal:
    error: AWTError


def run_describe(settings: DescribeSettings) -> DescribeReport:
    """Describe every class of ``settings.classes`` into ``settings.out`` (resuming it if present).

    Notes go to the ``awt.describe`` logger; progress to :func:`awt.progress.progress_bar`."""
    started = time.monotonic()
    _check_settings(settings)
    names = read_class_file(settings.classes)
    user_questions = read_questions(settings.questions) if settings.questions else None
    prompts = load_prompts(settings.prompts)
    warnings: list[str] = []
    dups = duplicates_message(names, str(settings.classes))
    if dups:
        warnings.append(dups)
        _log.warning(dups)
    out = settings.out
    if out.is_dir():
        raise AWTError(f"{out} is a directory; give a file path", setting="out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AWTError(f"cannot create folder {out.parent}: {e.strerror or e}") from None

    stats = Stats()
    with exclusive_lock(out):
        output = open_output(settings, names, user_questions)
        todo = [i for i in range(len(names)) if not output.done(i)]
        report = DescribeReport(
            out=out, total=len(names), already_complete=len(names) - len(todo), completed_now=0,
            failures=[], stats=stats, elapsed_s=0.0, questions=list(output.meta.get("questions") or []),
            warnings=warnings,
        )
        if not todo:
            if not output.meta.get("complete"):
                output.save()
            report.elapsed_s = time.monotonic() - started
            return report
        endpoint = resolve_endpoint(settings.base_url)
        output.meta["endpoint_host"] = endpoint.host
        stop = threading.Event()
        client = ChatClient(
            endpoint, settings.llm, timeout=settings.timeout,
            policy=RetryPolicy(max_attempts=settings.max_attempts, backoff_s=settings.backoff),
            stats=stats, stop=stop,
        )
        with _interrupts_as_keyboard_interrupt():
            try:
                if not output.meta.get("questions"):
                    try:
                        questions = generate_questions(client, prompts, settings.dataset_description, settings.num_questions)
                    except Stopped:
                        raise KeyboardInterrupt from None
                    output.meta["questions"], output.meta["questions_source"] = questions, "llm"
                    report.questions, report.questions_generated = list(questions), True
                    _log.info(f"step 1: {len(questions)} questions from {settings.llm}:")
                    for q in questions:
                        _log.info(f"  {q}")
                output.save()  # questions and provenance are kept even if nothing else finishes
                _run_classes(output, todo, settings, client, prompts, report, stop)
            except KeyboardInterrupt:
                stop.set()
                done = sum(output.done(i) for i in range(len(names)))
                raise DescribeInterrupted(
                    f"interrupted: {done} of {len(names)} classes are complete in {out}; rerun the same command to resume"
                ) from None
    report.elapsed_s = time.monotonic() - started
    return report


def _check_settings(s: DescribeSettings) -> None:
    checks = [
        (s.per_class >= 1, "per_class", "descriptions per class must be at least 1"),
        (s.num_questions >= 1, "num_questions", "the number of questions must be at least 1"),
        (s.concurrency >= 1, "concurrency", "concurrency must be at least 1"),
        (s.timeout > 0, "timeout", "the request timeout must be positive"),
        (s.max_attempts >= 1, "max_attempts", "attempts per request must be at least 1"),
        (s.max_requests >= 0, "max_requests", "the request budget must be 0 (automatic) or more"),
        (s.backoff >= 0, "backoff", "the retry backoff must not be negative"),
        (bool(s.llm.strip()), "llm", "the LLM must be named"),
    ]
    for ok, setting, message in checks:
        if not ok:
            raise AWTError(message, setting=setting)


def _run_classes(
    output: DescribeOutput,
    todo: list[int],
    settings: DescribeSettings,
    client: ChatClient,
    prompts: Prompts,
    report: DescribeReport,
    stop: threading.Event,
) -> None:
    questions: list[str] = list(output.meta["questions"])
    cap = settings.request_cap(len(questions))
    tasks: queue.Queue[int] = queue.Queue()
    for i in todo:
        tasks.put(i)
    results: queue.Queue[_Done | _Fatal] = queue.Queue()
    # A worker starts a class only once the results before it are read: no more than `concurrency`
    # classes are ever under way or unread, so the circuit breaker below stops the run in time.
    slots = threading.Semaphore(settings.concurrency)

    def worker() -> None:
        while not stop.is_set():
            if not slots.acquire(timeout=0.1):
                continue
            try:
                i = tasks.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = describe_class(
                    output.names[i], questions, list(output.descriptions[i]), client=client,
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
                results.put(_Done(i, ClassOutcome(list(output.descriptions[i]), f"internal error: {type(e).__name__}: {e}")))

    # daemon threads: an interrupted run exits without waiting for requests in flight
    threads = [threading.Thread(target=worker, daemon=True, name=f"awt-describe-{k}") for k in range(min(settings.concurrency, len(todo)))]
    bar = progress_bar(len(output.names), "describe", "class", initial=report.already_complete)
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
            _record(output, item, report)
            output.save()
            slots.release()
            streak = streak + 1 if item.outcome.no_answer else 0 if item.outcome.problem is None else streak
            if streak >= breaker:
                stop.set()
                report.stopped_early = (
                    f"stopped early: {streak} classes in a row got no usable answer "
                    f"(last problem: {item.outcome.problem}); is the endpoint up?"
                )
                break
            bar.update(1)
            failed = f" failed={len(report.failures)}" if report.failures else ""
            bar.set_postfix_str(f"requests={report.stats.requests} retries={report.stats.retries}{failed}", refresh=False)
    except KeyboardInterrupt:
        stop.set()
        _drain(results, output, report)  # keep classes that finished while we were interrupted
        raise
    finally:
        bar.close()
    if fatal is not None:
        _drain(results, output, report)
        raise fatal
    if report.stopped_early:
        _drain(results, output, report)
        report.not_attempted = [i for i in todo if not output.done(i) and i not in {f.index for f in report.failures}]


def _record(output: DescribeOutput, item: _Done, report: DescribeReport) -> None:
    out = item.outcome
    output.descriptions[item.index] = out.descriptions
    if out.problem is None:
        report.completed_now += 1
    else:
        report.failures.append(ClassFailure(item.index, output.names[item.index], len(out.descriptions), out.problem))


def _drain(results: queue.Queue[_Done | _Fatal], output: DescribeOutput, report: DescribeReport) -> None:
    changed = False
    for _ in range(results.qsize()):
        try:
            item = results.get_nowait()
        except queue.Empty:
            break
        if isinstance(item, _Done):
            _record(output, item, report)
            changed = True
    if changed:
        output.save()


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
