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

* Rate limits are leaky buckets (``aiolimiter.AsyncLimiter``) per (platform, user) and per
  (platform, channel), plus a separate, smaller bucket per user for image explanations.
  Buckets live in bounded caches that forget a key once it has been idle for a whole period
  (by then its bucket has drained, so forgetting it loses nothing) and that never hold more
  than ``max_tracked`` keys, whatever the number of users.
* Explanations run at most ``max_concurrent`` at a time; at most ``max_waiting`` more wait
  for a slot (for at most ``max_queue_wait`` seconds) and each user may have at most
  ``per_user_concurrent`` explanations running or waiting. Anything beyond is ``Busy``.
* ``with_timeout`` bounds any awaitable and names what was slow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from aiolimiter import AsyncLimiter
from cachetools import TTLCache

from bot.errors import Busy, DockwiseError, TimedOut

if TYPE_CHECKING:
    from bot.config import Settings

T = TypeVar("T")

__all__ = [
    "BUSY_MESSAGE",
    "Admission",
    "ExplanationGate",
    "KeyedRateLimiter",
    "RateLimited",
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
    """One leaky bucket per key (``max_rate`` per ``period`` seconds), bounded memory.

    ``try_acquire`` never waits. Buckets idle for ``period`` seconds are dropped (a bucket
    drains completely within one period, so nothing is lost); at most ``max_keys`` buckets
    are kept, least recently used first out.
    """

    def __init__(
        self,
        max_rate: float,
        period: float = 60.0,
        *,
        max_keys: int = 100_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_rate < 1 or period <= 0 or max_keys < 1:
            raise ValueError("rate limits need max_rate >= 1, period > 0 and max_keys >= 1")
        self.max_rate = max_rate
        self.period = period
        self._buckets: TTLCache[Hashable, AsyncLimiter] = TTLCache(
            maxsize=max_keys, ttl=period, timer=timer
        )

    def __len__(self) -> int:
        self._buckets.expire()
        return len(self._buckets)

    def _bucket(self, key: Hashable) -> AsyncLimiter:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = AsyncLimiter(self.max_rate, self.period)
        self._buckets[key] = bucket  # (re)insert: restarts its idle timer, marks it recent
        return bucket

    def has_capacity(self, key: Hashable) -> bool:
        bucket = self._buckets.get(key)
        return bucket is None or bool(bucket.has_capacity())

    async def acquire_now(self, key: Hashable) -> None:
        """Take one unit; the caller has just checked ``has_capacity`` (so this never waits)."""
        await self._bucket(key).acquire()


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


class Admission:
    """Every limit in one place; see the module docstring for how adapters use it.

    Defaults: 10 questions a minute per user, 30 per channel, 4 image explanations a minute
    per user; 2 explanations at once, 8 waiting (for at most ``settings.explain_timeout``
    seconds), one running or waiting per user; buckets for at most 100,000 users and
    channels each.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        questions_per_user: float = 10,
        questions_per_channel: float = 30,
        explanations_per_user: float = 4,
        period: float = 60.0,
        max_concurrent: int = 2,
        max_waiting: int = 8,
        per_user_concurrent: int = 1,
        max_queue_wait: float | None = None,
        max_tracked: int = 100_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_queue_wait is None and settings is not None:
            max_queue_wait = settings.explain_timeout
        self.users = KeyedRateLimiter(questions_per_user, period, max_keys=max_tracked, timer=timer)
        self.channels = KeyedRateLimiter(
            questions_per_channel, period, max_keys=max_tracked, timer=timer
        )
        self.explainers = KeyedRateLimiter(
            explanations_per_user, period, max_keys=max_tracked, timer=timer
        )
        self.gate = ExplanationGate(
            max_concurrent,
            max_waiting,
            per_user_concurrent=per_user_concurrent,
            max_queue_wait=max_queue_wait if max_queue_wait is not None else 60.0,
        )

    async def _admit(self, *checks: tuple[KeyedRateLimiter, Hashable, str]) -> None:
        # Check every bucket before taking from any, so a refusal costs the user nothing.
        for limiter, key, message in checks:
            if not limiter.has_capacity(key):
                raise RateLimited(message)
        for limiter, key, _ in checks:
            await limiter.acquire_now(key)

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
        if not self.explainers.has_capacity(key):
            raise RateLimited(EXPLAIN_RATE_MESSAGE)
        self.gate.check(key)  # refuse before taking from the bucket: Busy costs nothing
        await self.explainers.acquire_now(key)
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
