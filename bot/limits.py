"""Abuse and load limits: rate limits, a bounded explanation queue, timeouts.

Adapters and the engine use one ``Admission`` object per process::

    admission = Admission(settings)

    async with admission.question(platform, user, channel):  # every message
        reply = ...
    async with admission.explanation(platform, user, channel):  # around explaining an image
        reply = await with_timeout(explainer.explain(ref), settings.explain_timeout,
                                   f"explaining {ref}")

Refusals never wait and never queue: they raise ``RateLimited`` or ``bot.errors.Busy`` at
once, each with a polite one-line message for the chat.

* Rate limits are moving windows (the ``limits`` library) per (platform, user) and per
  (platform, channel), plus a separate, smaller budget per user for image explanations
  (``DOCKWISE_RATE_LIMIT``, ``DOCKWISE_EXPLAIN_RATE_LIMIT``). With ``DOCKWISE_REDIS_URL``
  the windows live in Redis and hold across replicas; else in this process's memory
  (``limits``' memory storage expires idle windows).
* Explanations run at most ``max_concurrent`` at a time; at most ``max_waiting`` more wait
  for a slot (for at most ``max_queue_wait`` seconds) and each user may have at most
  ``per_user_concurrent`` explanations running or waiting. Anything beyond is ``Busy``.
* ``with_timeout`` bounds any awaitable and names what was slow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Hashable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from bot.errors import Busy, DockwiseError, InvalidInput, TimedOut

if TYPE_CHECKING:
    from bot.config import Settings

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Redis keys of the rate limits start with this (``limits`` adds ``/namespace/...``).
RATE_LIMIT_PREFIX = "dockwise:limits"
#: After the shared storage fails, counting stays in this process this many seconds.
SHARED_BACKOFF = 5.0

__all__ = [
    "BUSY_MESSAGE",
    "Admission",
    "ExplanationGate",
    "KeyedRateLimiter",
    "RateLimited",
    "parse_rate_limit",
    "rate_limit_storage",
    "with_timeout",
]

USER_RATE_MESSAGE = "You're asking faster than I can answer: try again in a few seconds."
CHANNEL_RATE_MESSAGE = (
    "This channel is asking faster than I can answer: try again in a few seconds."
)
EXPLAIN_RATE_MESSAGE = "You've asked me to explain a lot of images just now: try again in a minute."
BUSY_MESSAGE = "I'm busy explaining other images: try again shortly."
ONE_AT_A_TIME_MESSAGE = "I'm still explaining an image for you: ask again when that one is done."


class RateLimited(DockwiseError):
    """A user or channel is sending more than its share; retry later."""

    kind = "rate_limited"


class KeyedRateLimiter:
    """A rate limit per key (``limits`` moving window), shared through ``storage``.

    ``items`` are one or more ``limits`` rate limits (e.g. ``parse_many("20/minute")``); a
    key is admitted while every one of them has room. With a Redis storage every replica
    counts against the same windows (keys ``dockwise:limits/...`` with the window as TTL);
    with memory storage the counts are this process's. When the shared storage fails,
    counting goes on in memory (logged once) until it answers again: a Redis outage
    makes the limits per-process, it never refuses or breaks an answer (the shared
    storage is tried again ``SHARED_BACKOFF`` seconds after a failure).
    """

    def __init__(
        self,
        items: list[RateLimitItem],
        namespace: str,
        storage: Storage | None = None,
    ) -> None:
        if not items:
            raise ValueError("a rate limit needs at least one item")
        self.items = items
        self.namespace = namespace
        self.storage = storage if storage is not None else MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self.storage)
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared_failed = False
        self._shared_down_until = 0.0

    async def _each(self, op: str, key: Hashable) -> bool:
        ident = "/".join(str(part) for part in (key if isinstance(key, tuple) else (key,)))
        resting = time.monotonic() < self._shared_down_until
        limiter = self._local if resting else self._limiter
        for item in self.items:
            try:
                ok = await getattr(limiter, op)(item, self.namespace, ident)
                if self._shared_failed and limiter is self._limiter:
                    self._shared_failed = False
                    log.info("rate limits: shared storage answers again")
            except StorageError as exc:
                if not self._shared_failed:
                    log.warning(
                        "rate limits: shared storage failed (%s); counting in this process",
                        type(exc.storage_error).__name__,
                    )
                    self._shared_failed = True
                self._shared_down_until = time.monotonic() + SHARED_BACKOFF
                limiter = self._local
                ok = await getattr(limiter, op)(item, self.namespace, ident)
            if not ok:
                return False
        return True

    async def has_capacity(self, key: Hashable) -> bool:
        """True when ``acquire`` would be admitted now (takes nothing)."""
        return await self._each("test", key)

    async def acquire(self, key: Hashable) -> bool:
        """Take one unit from every window; False (nothing more taken) when one is full."""
        return await self._each("hit", key)


def parse_rate_limit(value: str, name: str) -> list[RateLimitItem]:
    """``"20/minute"`` (or several, ``"20/minute;200/hour"``) as ``limits`` items.

    Raises ``InvalidInput`` with one line naming the setting ``name`` when ``value`` is not
    a rate limit in the ``limits`` notation (``N/second|minute|hour|day``, ``N per minute``).
    """
    try:
        items = list(parse_many(value))
    except ValueError:
        items = []
    if not items or any(item.amount < 1 for item in items):
        raise InvalidInput(
            f"{name}={value!r} is not a rate limit: use e.g. 20/minute (or 20/minute;200/hour)"
        )
    return items


def rate_limit_storage(settings: Settings | None) -> Storage:
    """Redis storage (``limits``' ``async+redis``) when ``DOCKWISE_REDIS_URL`` is set, else
    memory. Redis errors surface as ``limits.errors.StorageError``."""
    if settings is None or settings.redis_url is None:
        return MemoryStorage()
    url = settings.redis_url.get_secret_value()
    scheme, sep, rest = url.partition("://")
    if scheme not in {"redis", "rediss", "unix"} or not sep:
        raise InvalidInput("DOCKWISE_REDIS_URL must start with redis://, rediss:// or unix://")
    uri = f"async+redis+unix://{rest}" if scheme == "unix" else f"async+{url}"
    return RedisStorage(
        uri,
        wrap_exceptions=True,
        implementation="redispy",
        key_prefix=RATE_LIMIT_PREFIX,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
    )


class ExplanationGate:
    """At most ``max_concurrent`` explanations at once and ``max_waiting`` in line."""

    def __init__(
        self,
        max_concurrent: int = 2,
        max_waiting: int = 8,
        *,
        per_user_concurrent: int = 1,
        max_queue_wait: float | None = 60.0,
    ) -> None:
        if max_concurrent < 1 or max_waiting < 0 or per_user_concurrent < 1:
            raise ValueError("need max_concurrent >= 1, max_waiting >= 0, per_user >= 1")
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.per_user_concurrent = per_user_concurrent
        self.max_queue_wait = max_queue_wait
        self._slots = asyncio.Semaphore(max_concurrent)
        self._running = 0
        self._waiting = 0
        self._per_user: dict[Hashable, int] = {}

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    def check(self, user: Hashable) -> None:
        """Raise ``Busy`` if ``slot(user)`` would be refused right now."""
        if self._per_user.get(user, 0) >= self.per_user_concurrent:
            raise Busy(ONE_AT_A_TIME_MESSAGE)
        if self._slots.locked() and self._waiting >= self.max_waiting:
            raise Busy(BUSY_MESSAGE)

    @asynccontextmanager
    async def slot(self, user: Hashable) -> AsyncIterator[None]:
        """Run the body in a slot, waiting in line if allowed; else raise ``Busy`` now."""
        self.check(user)
        self._per_user[user] = self._per_user.get(user, 0) + 1
        try:
            self._waiting += 1
            try:
                async with asyncio.timeout(self.max_queue_wait):
                    await self._slots.acquire()
            except TimeoutError:
                raise Busy(BUSY_MESSAGE) from None
            finally:
                self._waiting -= 1
            self._running += 1
            try:
                yield
            finally:
                self._running -= 1
                self._slots.release()
        finally:
            left = self._per_user[user] - 1
            if left:
                self._per_user[user] = left
            else:
                del self._per_user[user]


Rate = float | str


def _items(value: Rate, name: str) -> list[RateLimitItem]:
    text = f"{value:g}/minute" if isinstance(value, int | float) else value
    return parse_rate_limit(text, name)


class Admission:
    """Every limit in one place; see the module docstring for how adapters use it.

    Rates come from ``settings`` (``DOCKWISE_RATE_LIMIT``, default 10/minute per user;
    ``DOCKWISE_EXPLAIN_RATE_LIMIT``, default 4/minute per user) unless given here (a number
    is per minute, a string is ``limits`` notation); 30 questions a minute per channel.
    With ``DOCKWISE_REDIS_URL`` the counts are shared by every replica on that Redis.
    2 explanations at once, 8 waiting (for at most ``settings.explain_timeout`` seconds),
    one running or waiting per user (these bounds are per process).

    Raises ``InvalidInput`` (one line naming the setting) for a rate that does not parse.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        questions_per_user: Rate | None = None,
        questions_per_channel: Rate = 30,
        explanations_per_user: Rate | None = None,
        max_concurrent: int = 2,
        max_waiting: int = 8,
        per_user_concurrent: int = 1,
        max_queue_wait: float | None = None,
        storage: Storage | None = None,
    ) -> None:
        if max_queue_wait is None and settings is not None:
            max_queue_wait = settings.explain_timeout
        if questions_per_user is None:
            questions_per_user = settings.rate_limit if settings is not None else 10
        if explanations_per_user is None:
            explanations_per_user = settings.explain_rate_limit if settings is not None else 4
        user_items = _items(questions_per_user, "DOCKWISE_RATE_LIMIT")
        explain_items = _items(explanations_per_user, "DOCKWISE_EXPLAIN_RATE_LIMIT")
        channel_items = _items(questions_per_channel, "channel rate limit")
        self.storage = storage if storage is not None else rate_limit_storage(settings)
        self.users = KeyedRateLimiter(user_items, "user", self.storage)
        self.channels = KeyedRateLimiter(channel_items, "channel", self.storage)
        self.explainers = KeyedRateLimiter(explain_items, "explain", self.storage)
        self.gate = ExplanationGate(
            max_concurrent,
            max_waiting,
            per_user_concurrent=per_user_concurrent,
            max_queue_wait=max_queue_wait if max_queue_wait is not None else 60.0,
        )

    async def _admit(self, *checks: tuple[KeyedRateLimiter, Hashable, str]) -> None:
        # Check every limit before taking from any, so a refusal costs the user nothing.
        for limiter, key, message in checks:
            if not await limiter.has_capacity(key):
                raise RateLimited(message)
        for limiter, key, message in checks:
            if not await limiter.acquire(key):  # another replica took the last unit
                raise RateLimited(message)

    @asynccontextmanager
    async def question(self, platform: str, user: str, channel: str | None) -> AsyncIterator[None]:
        """Admit one message from ``user`` (in ``channel``; None for none): ``RateLimited``."""
        checks = [(self.users, (platform, user), USER_RATE_MESSAGE)]
        if channel is not None:
            checks.append((self.channels, (platform, channel), CHANNEL_RATE_MESSAGE))
        await self._admit(*checks)
        yield

    @asynccontextmanager
    async def explanation(
        self, platform: str, user: str, channel: str | None
    ) -> AsyncIterator[None]:
        """Admit one image explanation: ``RateLimited`` or ``Busy``, else run in a slot.

        ``channel`` is accepted for symmetry and logging; explanations are limited per user
        and globally (the per-channel question bucket already covers the message itself).
        """
        key = (platform, user)
        if not await self.explainers.has_capacity(key):
            raise RateLimited(EXPLAIN_RATE_MESSAGE)
        self.gate.check(key)  # refuse before taking from the budget: Busy costs nothing
        if not await self.explainers.acquire(key):
            raise RateLimited(EXPLAIN_RATE_MESSAGE)
        async with self.gate.slot(key):
            yield


@dataclass(slots=True)
class Progress:
    """What a timed step is doing right now, so a timeout can say what was slow."""

    stage: str


_PROGRESS: ContextVar[Progress | None] = ContextVar("dockwise_progress", default=None)


def report_stage(stage: str) -> None:
    """Called by slow work ("downloading layer sha256:... from HOST") inside ``with_timeout``;
    tasks started inside share the same ``Progress``, so their reports count too."""
    progress = _PROGRESS.get()
    if progress is not None:
        progress.stage = stage


async def with_timeout(coro: Awaitable[T], seconds: float, what: str) -> T:
    """Await ``coro`` for at most ``seconds``; else raise ``TimedOut`` naming what was slow:
    the last stage the work reported (``report_stage``), or ``what``.

    Stages and ``what`` complete "... took longer than N s", e.g. "looking up the image in
    the registry". A ``TimeoutError`` raised by ``coro`` itself passes through unchanged.
    """
    outer = _PROGRESS.get()  # nested timeouts share one Progress: the stage is the newest
    progress = outer if outer is not None else Progress(what)
    token = _PROGRESS.set(progress)
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await coro
    except TimeoutError:
        if deadline.expired():
            stage = progress.stage
            raise TimedOut(
                f"{stage[:1].upper()}{stage[1:]} took longer than {seconds:g} s."
            ) from None
        raise
    finally:
        _PROGRESS.reset(token)
