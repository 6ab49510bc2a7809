"""A chat client for any OpenAI-compatible endpoint, with our own bounded retries.

The ``openai`` client's built-in retries are switched off (``max_retries=0``) so that every
attempt is counted, capped and interruptible here: timeouts, connection errors, 429 (with
``Retry-After``), 408/409, 5xx and unusable answers are retried with exponential backoff and
jitter; other 4xx answers (bad key, unknown model, bad request) fail the run at once.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from awt.errors import AWTError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY_PLACEHOLDER = "none"  # local servers (vLLM, Ollama, llama.cpp) usually ignore the key
RETRY_AFTER_CAP_S = 30.0
BACKOFF_CAP_S = 20.0
_RETRYABLE_STATUS = {408, 409, 429}

Message = Mapping[str, str]


class RequestFailed(Exception):
    """One request could not get a usable answer within its attempts or its class's budget."""


class BudgetExhausted(RequestFailed):
    """The class used up its request budget."""


class Stopped(Exception):
    """The run is stopping (interrupt or a fatal error elsewhere)."""


class EndpointError(AWTError):
    """The endpoint refused a request in a way retrying cannot fix (401, 403, 404, 400...)."""


@dataclass(frozen=True)
class Endpoint:
    """Where requests go; ``api_key`` is never printed or saved."""

    base_url: str
    api_key: str = field(repr=False)

    @property
    def host(self) -> str:
        return endpoint_host(self.base_url)


def endpoint_host(base_url: str) -> str:
    """``host:port`` of a URL, without credentials, path or query."""
    try:
        parts = urlsplit(base_url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "unknown"
    if not host:
        return "unknown"
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme.lower())
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def resolve_endpoint(base_url: str | None, environ: Mapping[str, str] | None = None) -> Endpoint:
    """Endpoint from ``base_url`` or ``OPENAI_BASE_URL`` and the key from ``OPENAI_API_KEY``."""
    env = os.environ if environ is None else environ
    url = (base_url or env.get("OPENAI_BASE_URL") or "").strip()
    key = (env.get("OPENAI_API_KEY") or "").strip()
    if not key and not url:
        raise AWTError(
            "no LLM endpoint: set OPENAI_API_KEY to use OpenAI, or point OPENAI_BASE_URL at an "
            "OpenAI-compatible server such as vLLM, Ollama or llama.cpp", setting="base_url",
            hint="or point {base_url} at it", kind="unavailable")
    if url and not re.match(r"^https?://", url, re.I):
        raise AWTError(f"the LLM endpoint must start with http:// or https://, got {url!r}", setting="base_url")
    return Endpoint(base_url=url or DEFAULT_BASE_URL, api_key=key or NO_KEY_PLACEHOLDER)


@dataclass
class Stats:
    """Counters shared by all worker threads."""

    requests: int = 0
    retries: int = 0
    failed_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    usage_reported: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def add_usage(self, usage: Any) -> None:
        if usage is None:
            return
        vals = [_int_attr(usage, n) for n in ("prompt_tokens", "completion_tokens", "total_tokens")]
        if all(v is None for v in vals):
            return
        p, c, t = (v or 0 for v in vals)
        with self._lock:
            self.usage_reported = True
            self.prompt_tokens += p
            self.completion_tokens += c
            self.total_tokens += t or (p + c)


def _int_attr(obj: Any, name: str) -> int | None:
    value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Budget:
    """A cap on the HTTP requests (first tries and retries) one class may use."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> None:
        if self.used >= self.limit:
            raise BudgetExhausted(f"request budget of {self.limit} used up")
        self.used += 1


@dataclass
class Answer:
    text: str
    truncated: bool  # the model stopped at its token limit; the last sentence may be cut


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    backoff_s: float = 1.0  # first backoff delay; doubles per attempt, capped, with jitter
    backoff_cap_s: float = BACKOFF_CAP_S
    retry_after_cap_s: float = RETRY_AFTER_CAP_S

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap_s) + random.uniform(0, 0.1 * self.backoff_s)
        base: float = min(self.backoff_cap_s, self.backoff_s * 2.0 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)


class ChatClient:
    """Thread-safe chat completions with bounded retries."""

    def __init__(
        self,
        endpoint: Endpoint,
        model: str,
        *,
        timeout: float,
        policy: RetryPolicy,
        stats: Stats,
        stop: threading.Event,
    ) -> None:
        import openai  # imported here: it is slow to import and only needed for real runs

        self._openai = openai
        self.endpoint = endpoint
        self.model = model
        self.timeout = timeout
        self.policy = policy
        self.stats = stats
        self.stop = stop
        self._client = openai.OpenAI(
            api_key=endpoint.api_key, base_url=endpoint.base_url, max_retries=0, timeout=timeout
        )

    def complete(
        self,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        accept: Callable[[Answer], bool] = lambda a: bool(a.text.strip()),
        budget: Budget | None = None,
    ) -> Answer:
        """One answer that ``accept`` likes; raises RequestFailed, Stopped or EndpointError."""
        last = "no attempt made"
        for attempt in range(1, self.policy.max_attempts + 1):
            if self.stop.is_set():
                raise Stopped()
            if budget is not None:
                try:
                    budget.take()
                except BudgetExhausted as e:
                    self.stats.add(failed_requests=1)
                    raise BudgetExhausted(f"{e} (last problem: {last})") from None
            self.stats.add(requests=1, retries=int(attempt > 1))
            retry_after: float | None = None
            try:
                answer = self._once(messages, temperature)
                if accept(answer):
                    return answer
                last = "empty or unusable answer"
            except _Retryable as e:
                last, retry_after = e.reason, e.retry_after
            if attempt < self.policy.max_attempts and self.stop.wait(self.policy.delay(attempt, retry_after)):
                raise Stopped()
        self.stats.add(failed_requests=1)
        raise RequestFailed(f"no usable answer after {self.policy.max_attempts} attempts (last problem: {last})")

    def _once(self, messages: Sequence[Message], temperature: float | None) -> Answer:
        oa = self._openai
        kwargs: dict[str, Any] = {"model": self.model, "messages": list(messages), "timeout": self.timeout}
        if temperature is not None:
            kwargs["temperature"] = temperature
        try:
            resp = self._client.chat.completions.create(**kwargs)
        except oa.APITimeoutError:
            raise _Retryable(f"timed out after {self.timeout:g} s") from None
        except oa.APIConnectionError as e:
            raise _Retryable(f"connection error ({_short(e, self.endpoint.api_key)})") from None
        except oa.APIStatusError as e:
            status = e.status_code
            reason = f"HTTP {status} ({_short(e, self.endpoint.api_key)})"
            if status in _RETRYABLE_STATUS or status >= 500:
                raise _Retryable(reason, _retry_after(e.response.headers) if status == 429 else None) from None
            raise EndpointError(_fatal_message(status, self.model, self.endpoint, reason)) from None
        except (oa.APIResponseValidationError, ValueError) as e:  # invalid JSON body and the like
            raise _Retryable(f"malformed response ({type(e).__name__})") from None
        try:
            self.stats.add_usage(getattr(resp, "usage", None))
            choice = resp.choices[0]
            text = choice.message.content
            truncated = getattr(choice, "finish_reason", None) == "length"
        except (AttributeError, IndexError, KeyError, TypeError):
            raise _Retryable("malformed response (no choices[0].message.content)") from None
        if not isinstance(text, str):
            raise _Retryable("malformed response (message content is not text)")
        return Answer(text=text, truncated=truncated)


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(float(ms) / 1000.0, 0.0)
        value = headers.get("retry-after")
    except (AttributeError, ValueError):
        return None
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


_KEYLIKE = re.compile(r"\b(sk|pk|key)-[A-Za-z0-9_*.\-]{4,}")


def redact(text: str, api_key: str) -> str:
    """Remove the key (and anything that looks like one) from a message."""
    if api_key and api_key != NO_KEY_PLACEHOLDER and len(api_key) >= 4:
        text = text.replace(api_key, "***")
    return _KEYLIKE.sub("***", text)


def _short(err: Exception, api_key: str, limit: int = 160) -> str:
    msg = " ".join(str(getattr(err, "message", None) or err).split())
    msg = redact(msg, api_key)
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _fatal_message(status: int, model: str, endpoint: Endpoint, reason: str) -> str:
    where = endpoint.host
    if status == 401:
        hint = "check OPENAI_API_KEY"
    elif status == 403:
        hint = "the key has no access to this model or endpoint"
    elif status == 404:
        hint = f"check the model name ({model!r}) and the endpoint (requests go to {where}, path /chat/completions)"
    else:
        hint = "the request was rejected; check the model name and the endpoint"
    return f"the LLM endpoint {where} refused the request with {reason}: {hint}"
