"""Turn raw LLM answers into clean one-sentence descriptions and `{}` questions."""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_SENTENCE_CHARS = 300
MIN_SENTENCE_WORDS = 2  # words of two or more letters: drops "Yes.", "OK!", "123."

# "- ", "* ", "• ", "1. ", "2) ", "(3) ", "a) ", "Q: ", with any mix repeated ("- 1. ...")
_BULLET = re.compile(r"^\s*(?:[-*•·▪◦‣–—+>]+|\(?\d{1,3}[.):](?=\s)|\(?[A-Za-z]\)|[QA]:)\s*")
_WORD = re.compile(r"[^\W\d_]{2,}")
_EMPHASIS = re.compile(r"\*\*|__|`")
_BOUNDARY = re.compile(r"([.!?]+)([\"'”’)\]]*)\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_ABBREVIATIONS = {"e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "st", "no", "approx", "ca", "fig", "cf", "jr", "sr", "mt"}
_PLACEHOLDER = re.compile(r"\{[^{}]{0,40}\}|\[(?:class|classname|class name|object|category|name)\]|<(?:class|classname|class name|object|category|name)>", re.I)


def strip_bullet(line: str) -> str:
    """Remove list markers and markdown emphasis from the start of a line."""
    for _ in range(3):  # markers can be stacked, e.g. "- 1. text"
        stripped = _BULLET.sub("", line, count=1)
        if stripped == line:
            break
        line = stripped
    return _EMPHASIS.sub("", line).strip()


def split_sentences(text: str) -> list[str]:
    """Split at sentence ends followed by a capital or digit, sparing common abbreviations."""
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        before = text[start : m.start()].split()
        word = before[-1].lower().rstrip(".") if before else ""
        if m.group(1) == "." and (word in _ABBREVIATIONS or re.fullmatch(r"(?:[a-z]\.)*[a-z]", word)):
            continue  # "e.g. The", "U.S. Army", "J. Smith"
        out.append(text[start : m.end(2)].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def dedupe_key(sentence: str) -> str:
    """Case- and spacing-insensitive identity of a description."""
    return " ".join(sentence.casefold().split()).rstrip(".!?… ")


def _finish(sentence: str, listed: bool) -> str | None:
    """The sentence ended properly, or None when it is not a usable description.

    A list item may lack its final period (one is added); elsewhere a sentence without
    one is taken for a fragment or garbage and dropped.
    """
    s = " ".join(sentence.split()).strip("\"'“”‘’ ")
    if not s or s.endswith("?") or s.endswith(":"):
        return None  # questions and headers ("Here are some features:") are not descriptions
    if s[-1] not in ".!":
        if not (listed and (s[-1].isalnum() or s[-1] in ")\"'”’%")):
            return None  # ends in ",", ";", "-" ...: a fragment
        s += "."
    if len(s) > MAX_SENTENCE_CHARS or len(_WORD.findall(s)) < MIN_SENTENCE_WORDS:
        return None
    return s


def clean_answer(text: str, truncated: bool = False) -> list[str]:
    """One-sentence descriptions from an answer: bullets gone, fragments, repeats, overlong lines dropped."""
    lines = [ln for ln in text.replace("\r", "\n").split("\n")]
    if truncated:
        # the model hit its token limit: the final sentence may be cut mid-way
        while lines and not lines[-1].strip():
            lines.pop()
        if lines and not re.search(r"[.!?][\"'”’)\]]*\s*$", lines[-1]):
            lines[-1] = " ".join(split_sentences(strip_bullet(lines[-1]))[:-1])
    result: list[str] = []
    seen: set[str] = set()
    for raw in lines:
        if raw.lstrip().startswith("#"):
            continue  # markdown heading
        line = strip_bullet(raw)
        listed = line != raw.strip()
        for sentence in split_sentences(line):
            finished = _finish(strip_bullet(sentence), listed)
            if finished is None:
                continue
            key = dedupe_key(finished)
            if key not in seen:
                seen.add(key)
                result.append(finished)
    return result


class Collector:
    """Unique descriptions of one class, in arrival order."""

    def __init__(self, initial: Iterable[str] = ()) -> None:
        self.items: list[str] = []
        self._keys: set[str] = set()
        self.add(initial)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, sentences: Iterable[str]) -> int:
        """Add the new ones; return how many were new."""
        added = 0
        for s in sentences:
            key = dedupe_key(s)
            if key and key not in self._keys:
                self._keys.add(key)
                self.items.append(s)
                added += 1
        return added


def check_question(question: str) -> str | None:
    """Why ``question`` cannot be used as a template, or None when it can."""
    if "{}" not in question:
        return "it has no {} where the class name goes"
    try:
        question.format("x")
    except (IndexError, KeyError, ValueError):
        return "it must contain exactly one {} and no other braces (write {{ and }} for literal braces)"
    return None


def parse_questions(text: str, limit: int | None = None) -> list[str]:
    """Usable `{}` questions from a step-1 answer, one per line, bullets stripped."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in text.replace("\r", "\n").split("\n"):
        line = strip_bullet(raw).strip("\"'“”‘’ ")
        if not line or len(line) > MAX_SENTENCE_CHARS:
            continue
        line = _PLACEHOLDER.sub("{}", line)
        if line.count("{}") != 1 or check_question(line) is not None:
            continue
        key = line.casefold()
        if key not in seen:
            seen.add(key)
            out.append(line)
    return out[:limit] if limit else out
