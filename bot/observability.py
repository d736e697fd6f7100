"""Metrics and structured logs.

Metrics are ``prometheus_client`` objects on the default registry; ``bot.server`` exposes
them at ``/metrics``. Names carry the ``dockwise_`` namespace, e.g.
``dockwise_questions_total{kind="answer"}``.

Logs go through structlog. ``configure_logging()`` sends structlog events *and* records of
the standard ``logging`` module (aiohttp, the chat SDKs) to one handler on stderr:
one JSON object a line when stderr is not a terminal, readable colour-free columns when it
is. Every event gets the correlation id bound with ``bind_correlation_id()`` and passes
through ``mask_secrets`` last, so tokens, passwords and authorization headers never reach
the output, whoever logged them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

import structlog
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

from bot.errors import DockwiseError

NAMESPACE = "dockwise"

# --------------------------------------------------------------------------- metrics

QUESTIONS = Counter(
    "questions", "Questions answered, by reply kind.", ["kind"], namespace=NAMESPACE
)
EXPLANATIONS = Counter(
    "explanations",
    "Image explanations, by where the image was read and how it ended.",
    ["source", "outcome"],
    namespace=NAMESPACE,
)
EXPLAIN_SECONDS = Histogram(
    "explain_seconds",
    "Time to explain one image, by source.",
    ["source"],
    namespace=NAMESPACE,
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0),
)
CACHE_HITS = Counter("cache_hits", "Cache hits, by cache.", ["cache"], namespace=NAMESPACE)
CACHE_MISSES = Counter("cache_misses", "Cache misses, by cache.", ["cache"], namespace=NAMESPACE)
BYTES_FETCHED = Counter(
    "bytes_fetched",
    "Bytes read from registries or the engine, by source.",
    ["source"],
    namespace=NAMESPACE,
)
ERRORS = Counter("errors", "Errors reported to users, by kind.", ["kind"], namespace=NAMESPACE)
FEEDBACK = Counter(
    "feedback",
    "Feedback buttons pressed, by reply kind (answer, uncovered, image) and vote (up, down).",
    ["kind", "vote"],
    namespace=NAMESPACE,
)


@contextmanager
def track_explanation(source: str) -> Iterator[None]:
    """Time one explanation and count its outcome: ``ok``, the ``kind`` of the
    ``DockwiseError`` it raised (also counted in ``errors_total``), ``cancelled`` or
    ``internal`` (a bug). Exceptions pass through unchanged."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except DockwiseError as exc:
        outcome = exc.kind
        ERRORS.labels(kind=exc.kind).inc()
        raise
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    except Exception:
        outcome = "internal"
        ERRORS.labels(kind="internal").inc()
        raise
    finally:
        EXPLAIN_SECONDS.labels(source=source).observe(time.perf_counter() - started)
        EXPLANATIONS.labels(source=source, outcome=outcome).inc()


def count_cache(cache: str, hit: bool) -> None:
    """Count one cache lookup (``cache``: manifest, blob, layer)."""
    (CACHE_HITS if hit else CACHE_MISSES).labels(cache=cache).inc()


def count_feedback(kind: str, vote: str) -> None:
    """Count one feedback vote (``vote``: up or down) on a reply of ``kind``."""
    FEEDBACK.labels(kind=kind, vote=vote).inc()


def count_question(kind: str) -> None:
    """Count one answered question by reply kind (``str(reply.kind)``)."""
    QUESTIONS.labels(kind=kind).inc()


# --------------------------------------------------------------------------- correlation ids

_correlation_id: ContextVar[str | None] = ContextVar("dockwise_correlation_id", default=None)


def new_correlation_id() -> str:
    return uuid.uuid4().hex[:16]


def current_correlation_id() -> str | None:
    return _correlation_id.get()


@contextmanager
def bind_correlation_id(value: str | None = None) -> Iterator[str]:
    """Tag every log event inside the block (this task and the tasks it starts) with
    ``correlation_id``: ``value``, or a fresh random id. Yields the id."""
    cid = value or new_correlation_id()
    token = _correlation_id.set(cid)
    try:
        yield cid
    finally:
        _correlation_id.reset(token)


def add_correlation_id(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    cid = _correlation_id.get()
    if cid is not None:
        event_dict.setdefault("correlation_id", cid)
    return event_dict


# --------------------------------------------------------------------------- secret masking

MASK = "***"

#: Keys whose values are always hidden, whatever they hold.
SECRET_KEY = re.compile(
    r"token|secret|passw|pwd|authorization|api[_-]?key|cookie|credential|private[_-]?key",
    re.IGNORECASE,
)


def secret_env_vars() -> tuple[str, ...]:
    """Environment variables whose values are secrets wherever they show up in a log line:
    the ``SecretStr`` settings of dockwise and of every registered chat adapter."""
    from bot.chat import secret_env_vars as from_settings

    return from_settings()


_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Chat platform tokens with a type prefix (bot/user/app/refresh): xoxb-…, xoxp-…, xapp-…
    (re.compile(r"\bx(?:ox[abeoprs]|app)-[A-Za-z0-9-]{6,}"), MASK),
    # Chat platform bot tokens in three dotted parts: base64 user id . timestamp . HMAC
    (re.compile(r"\b[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}"), MASK),
    # Authorization header values
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\1 {MASK}"),
    # user:password@ in URLs (redis://:pw@host, https://user:pw@registry)
    (_URL_PASSWORD, rf"\1{MASK}@"),
)

_URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@\s/]+)@", re.IGNORECASE)
_MIN_KNOWN_SECRET = 6  # shorter env values would mask ordinary words


def _secret_values_from_env(environ: Mapping[str, str], names: Iterable[str]) -> list[str]:
    values: list[str] = []
    for name in names:
        value = environ.get(name, "").strip()
        if not value:
            continue
        match = _URL_WITH_PASSWORD.match(value)
        # A URL with a password: hide the password only, the host helps debugging.
        values.append(match.group(1) if match else value)
    return [v for v in values if len(v) >= _MIN_KNOWN_SECRET]


class SecretMasker:
    """A structlog processor replacing secrets in an event with ``***``.

    Hidden: every value under a key like token/secret/password/authorization, any string
    shaped like a chat platform's token, an authorization header or a URL password, and
    the literal values of the secret environment variables ``names`` (default
    ``secret_env_vars()``, looked up in a copy of ``environ`` taken when the masker is made,
    on first use so that a command logging nothing never imports the adapters), plus any
    registered with ``add``."""

    def __init__(
        self, environ: Mapping[str, str] | None = None, names: Iterable[str] | None = None
    ) -> None:
        self._environ = dict(environ if environ is not None else os.environ)
        self._names = tuple(names) if names is not None else None
        self._env_done = False
        self._env_reading = False
        # Other threads logging meanwhile wait for the values; this thread (an adapter
        # logging while it is imported) goes on without them.
        self._env_lock = threading.RLock()
        self._known: set[str] = set()

    def _read_env(self) -> None:
        if self._env_done:
            return
        with self._env_lock:
            if self._env_done or self._env_reading:
                return
            self._env_reading = True
            try:
                if self._environ:
                    names = self._names if self._names is not None else secret_env_vars()
                    self._known.update(_secret_values_from_env(self._environ, names))
            finally:
                self._env_done = True

    def add(self, value: str | None) -> None:
        if value and len(value) >= _MIN_KNOWN_SECRET:
            self._known.add(value)

    def mask_text(self, text: str) -> str:
        self._read_env()
        # Longest first, so a URL is masked whole before its password alone.
        for secret in sorted(self._known, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def mask_value(self, value: Any, depth: int = 0) -> Any:
        if depth > 8:
            return MASK
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, bytes | bytearray):
            return self.mask_text(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, Mapping):
            return {k: self._mask_item(str(k), v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.mask_value(v, depth + 1) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.mask_text(str(value))  # other objects: their text, masked

    def _mask_item(self, key: str, value: Any, depth: int) -> Any:
        if SECRET_KEY.search(key) and value is not None and value != "":
            return MASK
        return self.mask_value(value, depth)

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        for key in list(event_dict):
            if key.startswith("_"):  # structlog's own bookkeeping (_record, _from_structlog)
                continue
            event_dict[key] = self._mask_item(key, event_dict[key], 0)
        return event_dict


#: The masker ``configure_logging`` installed; ``register_secret`` adds values to it.
_masker = SecretMasker({})
#: Values registered by the program; kept when ``configure_logging`` runs again.
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask this value in every later log line (e.g. a token read from a file). A URL
    with a password registers the password alone."""
    if not value:
        return
    match = _URL_WITH_PASSWORD.match(value)
    secret = match.group(1) if match else value
    _registered.add(secret)
    _masker.add(secret)


def register_secrets_from(settings: BaseModel) -> None:
    """Register every ``SecretStr`` field of ``settings`` (tokens read from a ``.env`` file
    never reach ``os.environ``, so ``configure_logging`` cannot see them)."""
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())


def mask_secrets(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    return _masker(logger, method, event_dict)


# --------------------------------------------------------------------------- configuration

_HANDLER_NAME = "dockwise"


def _drop_record(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("_record", None)
    event_dict.pop("_from_structlog", None)
    return event_dict


def configure_logging(
    level: str | int = "INFO",
    *,
    json_output: bool | None = None,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Send structlog and standard-library logs to ``stream`` (stderr) as JSON lines when
    it is not a terminal (or ``json_output=True``), as console columns otherwise.

    Safe to call again: it replaces the handler it installed before. Secret values are read
    from ``environ`` (default ``os.environ``) now; ``register_secret`` adds more later."""
    global _masker
    out = stream if stream is not None else sys.stderr
    use_json = json_output if json_output is not None else not _isatty(out)
    _masker = SecretMasker(environ if environ is not None else os.environ)
    for value in _registered:
        _masker.add(value)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        add_correlation_id,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer(default=str)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            _drop_record,
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    numeric = level if isinstance(level, int) else logging.getLevelName(level.upper())
    # Libraries that set their own logger to DEBUG (bm25s does) still stop at the handler.
    handler.setLevel(numeric)
    root.addHandler(handler)
    root.setLevel(numeric)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name, **initial)
    return logger
