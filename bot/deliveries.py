"""At-most-once answers to events a platform may deliver more than once (retries,
redeliveries, the same event sent to two replicas).

An event id moves through three states::

    (absent) --claim--> claimed (owner token, short TTL, renewed while the owner works)
    claimed  --done-->  done    (long TTL: every later delivery is dropped)
    claimed  --release / owner dies (TTL runs out)--> absent (a later delivery answers it)

``claim`` is one atomic step (Redis ``SET key token NX PX ttl``), so of two deliveries
only one proceeds. The owner renews its claim every third of ``claim_ttl`` while it
works (``Claim.keep_alive``); a process that dies stops renewing, its claim expires and
the next retry is answered. A claim whose reply could not be posted is released at once.

With ``DOCKWISE_REDIS_URL`` the ledger is in Redis (keys ``dockwise:delivery:<id>``),
shared by every replica; without it, the same semantics hold inside one process
(``MemoryLedger``). While Redis is down the Redis ledger falls back to its in-memory one
(logged once): duplicates across replicas are then possible, a lost answer is not.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import Enum
from typing import TYPE_CHECKING, Final, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from bot.config import Settings

__all__ = [
    "CLAIM_TTL",
    "DONE_TTL",
    "Claim",
    "Ledger",
    "MemoryLedger",
    "RedisLedger",
    "Seen",
    "make_ledger",
]

log = logging.getLogger(__name__)

#: A claim lives this long (seconds) unless its owner renews it.
CLAIM_TTL: Final = 30.0
#: An answered event id is remembered this long (seconds); platforms stop retrying sooner
#: (chat platforms retry a few times within minutes).
DONE_TTL: Final = 3600.0
DONE: Final = "done"
KEY_PREFIX: Final = "dockwise:delivery:"
#: At most this many event ids are remembered in memory.
MEMORY_MAX: Final = 100_000
#: After a Redis failure the in-memory ledger serves this many seconds before Redis is
#: tried again.
REDIS_BACKOFF: Final = 5.0

_GUARDED = (RedisError, OSError)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Seen(Enum):
    """Why a delivery was not claimed."""

    CLAIMED = "claimed"  # another delivery is being answered right now
    DONE = "done"  # already answered


class Ledger(Protocol):
    """Where claims live; ``Claim`` drives it."""

    claim_ttl: float

    async def try_claim(self, event_id: str, token: str) -> Seen | None: ...

    async def state(self, event_id: str) -> Seen | None: ...

    async def renew(self, event_id: str, token: str) -> None: ...

    async def finish(self, event_id: str, token: str) -> None: ...

    async def release(self, event_id: str, token: str) -> None: ...


class MemoryLedger:
    """The ledger in this process: a bounded, ordered map of id -> (state, expiry)."""

    def __init__(
        self, claim_ttl: float = CLAIM_TTL, done_ttl: float = DONE_TTL, maxsize: int = MEMORY_MAX
    ) -> None:
        self.claim_ttl = claim_ttl
        self.done_ttl = done_ttl
        self.maxsize = maxsize
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def _get(self, event_id: str) -> str | None:
        item = self._items.get(event_id)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._items[event_id]
            return None
        return item[0]

    def _set(self, event_id: str, value: str, ttl: float) -> None:
        self._items[event_id] = (value, time.monotonic() + ttl)
        self._items.move_to_end(event_id)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    async def try_claim(self, event_id: str, token: str) -> Seen | None:
        value = self._get(event_id)
        if value is None:
            self._set(event_id, token, self.claim_ttl)
            return None
        return Seen.DONE if value == DONE else Seen.CLAIMED

    async def state(self, event_id: str) -> Seen | None:
        """Claimed, done, or None (free to claim)."""
        value = self._get(event_id)
        return None if value is None else Seen.DONE if value == DONE else Seen.CLAIMED

    async def renew(self, event_id: str, token: str) -> None:
        if self._get(event_id) == token:
            self._set(event_id, token, self.claim_ttl)

    async def finish(self, event_id: str, token: str) -> None:
        self._set(event_id, DONE, self.done_ttl)

    async def release(self, event_id: str, token: str) -> None:
        if self._get(event_id) == token:
            del self._items[event_id]


class RedisLedger:
    """The ledger in Redis (``SET NX PX``, compare-and-renew/delete scripts), shared by
    replicas; each call falls back to ``local`` while Redis fails."""

    def __init__(
        self,
        client: aioredis.Redis,
        claim_ttl: float = CLAIM_TTL,
        done_ttl: float = DONE_TTL,
        prefix: str = KEY_PREFIX,
    ) -> None:
        self.client = client
        self.claim_ttl = claim_ttl
        self.done_ttl = done_ttl
        self.prefix = prefix
        self.local = MemoryLedger(claim_ttl, done_ttl)
        self._down = False
        self._down_until = 0.0

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + REDIS_BACKOFF
        if not self._down:
            log.warning("deliveries: Redis failed (%s); de-duplicating in this process", exc)
            self._down = True

    def _resting(self) -> bool:
        return time.monotonic() < self._down_until

    def _ok(self) -> None:
        if self._down:
            log.info("deliveries: Redis answers again")
            self._down = False

    async def try_claim(self, event_id: str, token: str) -> Seen | None:
        if self._resting():
            return await self.local.try_claim(event_id, token)
        key = self.prefix + event_id
        try:
            if await self.client.set(key, token, nx=True, px=int(self.claim_ttl * 1000)):
                self._ok()
                return None
            value = await self.client.get(key)
            self._ok()
        except _GUARDED as exc:
            self._failed(exc)
            return await self.local.try_claim(event_id, token)
        if value is None:  # expired between the two calls: try once more
            return await self.try_claim(event_id, token)
        return Seen.DONE if value == DONE.encode() else Seen.CLAIMED

    async def state(self, event_id: str) -> Seen | None:
        """Claimed, done, or None (free to claim)."""
        if self._resting():
            return await self.local.state(event_id)
        try:
            value = await self.client.get(self.prefix + event_id)
        except _GUARDED as exc:
            self._failed(exc)
            return await self.local.state(event_id)
        return None if value is None else Seen.DONE if value == DONE.encode() else Seen.CLAIMED

    async def renew(self, event_id: str, token: str) -> None:
        if self._resting():
            await self.local.renew(event_id, token)
            return
        try:
            await self.client.eval(
                _RENEW, 1, self.prefix + event_id, token, int(self.claim_ttl * 1000)
            )
        except _GUARDED as exc:
            self._failed(exc)
            await self.local.renew(event_id, token)

    async def finish(self, event_id: str, token: str) -> None:
        if self._resting():
            await self.local.finish(event_id, token)
            return
        try:
            await self.client.set(self.prefix + event_id, DONE, px=int(self.done_ttl * 1000))
        except _GUARDED as exc:
            self._failed(exc)
            await self.local.finish(event_id, token)

    async def release(self, event_id: str, token: str) -> None:
        if self._resting():
            await self.local.release(event_id, token)
            return
        try:
            await self.client.eval(_RELEASE, 1, self.prefix + event_id, token)
        except _GUARDED as exc:
            self._failed(exc)
            await self.local.release(event_id, token)


class Claim:
    """This process's claim on one event id: ``done()`` after the reply was posted,
    ``release()`` when it could not be (a retry will answer). Idempotent."""

    def __init__(self, ledger: Ledger, event_id: str, token: str) -> None:
        self.ledger = ledger
        self.event_id = event_id
        self.token = token
        self.finished = False

    @classmethod
    async def take(cls, ledger: Ledger, event_id: str) -> Claim | Seen:
        """Claim ``event_id`` or say why not (``Seen.CLAIMED`` / ``Seen.DONE``)."""
        token = uuid.uuid4().hex
        seen = await ledger.try_claim(event_id, token)
        return seen if seen is not None else cls(ledger, event_id, token)

    async def done(self) -> None:
        if not self.finished:
            self.finished = True
            await self.ledger.finish(self.event_id, self.token)

    async def release(self) -> None:
        if not self.finished:
            self.finished = True
            await self.ledger.release(self.event_id, self.token)

    @asynccontextmanager
    async def keep_alive(self) -> AsyncIterator[None]:
        """Renew the claim every third of its TTL while the body runs; if the body raises,
        release the claim (so a retry answers); a body that neither finished nor released
        it releases it too."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.ledger.claim_ttl / 3)
                await self.ledger.renew(self.event_id, self.token)

        renewer = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            await self.release()


def make_ledger(settings: Settings, claim_ttl: float = CLAIM_TTL) -> Ledger:
    """``RedisLedger`` with ``DOCKWISE_REDIS_URL``, else ``MemoryLedger``."""
    if settings.redis_url is None:
        return MemoryLedger(claim_ttl)
    client = aioredis.Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=1.0, socket_connect_timeout=1.0
    )
    return RedisLedger(client, claim_ttl)
