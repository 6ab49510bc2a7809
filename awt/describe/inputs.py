"""Inputs of `awt describe`: a questions file and the prompt texts (YAML)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from awt.describe.clean import check_question
from awt.errors import AWTError, yaml_problem
from awt.files import read_lines

#: the prompt texts shipped in the package (``importlib.resources``: works from a wheel too)
DEFAULT_PROMPTS = "prompts.yaml"


def read_questions(path: Path) -> list[str]:
    """User questions, one per line, each with a {} for the class name."""
    lines = read_lines(path, "questions")
    if not lines:
        raise AWTError(f"questions file {path} has no questions (one per line, each with {{}})")
    questions: list[str] = []
    for number, line in lines:
        problem = check_question(line)
        if problem:
            raise AWTError(f"{path} line {number}: {problem}: {line!r}")
        if line not in questions:
            questions.append(line)
    return questions


@dataclass(frozen=True)
class PromptSet:
    system: str
    examples: tuple[tuple[str, str], ...]
    user: str
    temperature: float | None
    user_no_description: str = ""

    def messages(self, **values: str) -> list[dict[str, str]]:
        user = self.user
        if "dataset_description" in values and not values["dataset_description"] and self.user_no_description:
            user = self.user_no_description
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        for u, a in self.examples:
            msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        msgs.append({"role": "user", "content": _fill(user, values)})
        return msgs


def _fill(template: str, values: dict[str, str]) -> str:
    # plain substitution: the prompts contain literal "{}" that str.format would choke on
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


@dataclass(frozen=True)
class Prompts:
    questions: PromptSet
    descriptions: PromptSet
    source: str


def load_prompts(path: Path | None = None) -> Prompts:
    """Prompt texts from YAML (by default the package's own ``awt/describe/prompts.yaml``)."""
    p = path if path is not None else resources.files("awt.describe").joinpath(DEFAULT_PROMPTS)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AWTError(f"prompts file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AWTError(f"cannot read prompts file {p}: {e}") from None
    except yaml.YAMLError as e:
        raise AWTError(f"prompts file {p} is not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise AWTError(f"prompts file {p} must be a mapping with 'questions' and 'descriptions'")
    return Prompts(
        questions=_prompt_set(data, "questions", p, ("{count}",)),
        descriptions=_prompt_set(data, "descriptions", p, ("{question}",)),
        source=str(p),
    )


def _prompt_set(data: dict[str, Any], key: str, path: Path, required: Sequence[str]) -> PromptSet:
    section = data.get(key)
    if not isinstance(section, dict):
        raise AWTError(f"prompts file {path} has no '{key}' section")

    def text(name: str, default: str | None = None) -> str:
        value = section.get(name, default)
        if not isinstance(value, str):
            raise AWTError(f"prompts file {path}: '{key}.{name}' must be text")
        return value.strip()

    user = text("user")
    for placeholder in required:
        if placeholder not in user:
            raise AWTError(f"prompts file {path}: '{key}.user' must contain {placeholder}")
    examples = []
    for i, ex in enumerate(section.get("examples") or []):
        if not (isinstance(ex, dict) and isinstance(ex.get("user"), str) and isinstance(ex.get("assistant"), str)):
            raise AWTError(f"prompts file {path}: '{key}.examples[{i}]' needs 'user' and 'assistant' texts")
        examples.append((ex["user"].strip(), ex["assistant"].strip()))
    temperature = section.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))):
        raise AWTError(f"prompts file {path}: '{key}.temperature' must be a number")
    return PromptSet(
        system=text("system", ""),
        examples=tuple(examples),
        user=user,
        temperature=None if temperature is None else float(temperature),
        user_no_description=text("user_no_description", ""),
    )
