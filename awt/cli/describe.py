"""``awt describe``: LLM-written class descriptions, cached on disk (imports no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..describe.generate import DescribeSettings
from .text import printable

_DEFAULT = DescribeSettings(classes=Path(), out=Path())  # the library's defaults, shown by --help

if TYPE_CHECKING:
    from ..describe.generate import DescribeReport

_SHOWN_FAILURES = 20


def describe(
    classes: Annotated[Path, typer.Option("--classes", help="Class names, one per line ('#' comments and blank lines ignored).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Cache file to write (JSON). An existing one is resumed.", show_default=False)],
    dataset_description: Annotated[str, typer.Option("--dataset-description", help="One line about the dataset for step 1, e.g. 'consists of 101 food categories'.")] = _DEFAULT.dataset_description,
    questions: Annotated[Optional[Path], typer.Option("--questions", help="Skip step 1: your questions, one per line, each with {} for the class name.")] = None,
    per_class: Annotated[int, typer.Option("--per-class", min=1, help="Minimum unique descriptions per class (M).")] = _DEFAULT.per_class,
    llm: Annotated[str, typer.Option("--llm", help="Model name sent to the endpoint.")] = _DEFAULT.llm,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (default: $OPENAI_BASE_URL, else OpenAI). The key comes from $OPENAI_API_KEY.", show_default=False)] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256, help="Classes described at the same time (one request in flight each).")] = _DEFAULT.concurrency,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Seconds to wait for one answer before retrying.")] = _DEFAULT.timeout,
    num_questions: Annotated[int, typer.Option("--num-questions", min=1, max=50, help="Questions to ask for in step 1.")] = _DEFAULT.num_questions,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, max=100, help="Tries per request (timeouts, 429, 5xx, unusable answers).")] = _DEFAULT.max_attempts,
    max_requests: Annotated[int, typer.Option("--max-requests", min=0, help="HTTP requests per class, retries included; 0 = 2 x (questions + M).")] = _DEFAULT.max_requests,
    backoff: Annotated[float, typer.Option("--backoff", min=0.0, help="First retry delay in seconds; doubles per attempt (capped at 20 s), with jitter.")] = _DEFAULT.backoff,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Prompt texts (YAML) instead of the packaged ones (awt/describe/prompts.yaml).", show_default=False)] = None,
) -> None:
    """Generate AWT class descriptions with an LLM (two-step, dataset-aware prompting)."""
    from ..describe.generate import DescribeInterrupted
    from ..describe.run import run_describe

    settings = DescribeSettings(
        classes=classes, out=out, dataset_description=dataset_description, questions=questions,
        num_questions=num_questions, per_class=per_class, llm=llm, base_url=base_url,
        concurrency=concurrency, timeout=timeout, max_attempts=max_attempts,
        max_requests=max_requests, backoff=backoff, prompts=prompts,
    )
    try:
        report = run_describe(settings, log=lambda m: typer.echo(printable(m), err=True))
    except DescribeInterrupted as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(130) from None
    for line in summary_lines(report):
        typer.echo(line)
    if not report.ok:
        for line in failure_lines(report):
            typer.echo(line, err=True)
        raise typer.Exit(1)


def summary_lines(report: "DescribeReport") -> list[str]:
    """The short summary printed at the end of a run."""
    s = report.stats
    lines = [
        f"{report.complete} of {report.total} classes complete in {report.out} "
        f"({report.completed_now} described now, {report.already_complete} already complete)"
    ]
    if s.requests == 0 and not report.completed_now and not report.failures:
        lines.append("nothing to do: every class already has enough descriptions")
        return lines
    usage = (
        f"; tokens: {s.prompt_tokens:,} prompt + {s.completion_tokens:,} completion = {s.total_tokens:,}"
        if s.usage_reported else "; tokens: not reported by the endpoint"
    )
    lines.append(
        f"requests: {s.requests} (retries {s.retries}, failed {s.failed_requests}){usage}; {report.elapsed_s:.1f} s"
    )
    return lines


def failure_lines(report: "DescribeReport") -> list[str]:
    """Which classes could not be completed, and why."""
    n = len(report.failures) + len(report.not_attempted)
    lines = []
    if report.stopped_early:
        lines.append(f"error: {report.stopped_early}")
    lines.append(
        f"error: could not complete {n} class{'es' if n != 1 else ''} (the others are saved; "
        "rerun the same command to retry):"
    )
    for f in sorted(report.failures, key=lambda f: f.index)[:_SHOWN_FAILURES]:
        lines.append(f"  {f.name!r} (class {f.index}): {f.have} descriptions; {f.reason}")
    if len(report.failures) > _SHOWN_FAILURES:
        lines.append(f"  ... and {len(report.failures) - _SHOWN_FAILURES} more")
    if report.not_attempted:
        lines.append(f"  {len(report.not_attempted)} classes not attempted after stopping early")
    return lines
