"""The two steps of `awt describe`: dataset-aware questions first, then each question about each class.

:mod:`awt.describe.output` keeps the results on disk; :mod:`awt.describe.run` drives a whole run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from awt import defaults
from awt.describe.clean import Collector, clean_answer, parse_questions
from awt.describe.inputs import Prompts
from awt.describe.llm import Answer, Budget, BudgetExhausted, ChatClient, RequestFailed, Stats
from awt.errors import AWTError


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
    per_class: int = defaults.DESCRIPTIONS_PER_CLASS
    llm: str = defaults.LLM
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
        raise AWTError(f"step 1 failed: the LLM gave no usable questions ({e})", setting="questions",
                       hint="pass your own with {questions} FILE") from None
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


