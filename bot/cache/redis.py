"""Shared caches in Redis, so several dockwise replicas share work.

With ``DOCKWISE_REDIS_URL`` set, manifests/configs and layer facts live in Redis (keys
under ``dockwise:``) and concurrent explains of the same image on different replicas
download and analyse it once: ``SingleFlight.fetch_once`` holds a Redis lock while one
replica produces a value, and the others wait for it and read the stored result. Without
Redis the local caches serve and single-flight is in-process only.

Redis is an optimisation, never a dependency: every Redis call is guarded. On a
connection problem the ``RedisBackend`` logs once (host and port only, never the URL's
password), counts Redis as down for ``backoff`` seconds and the wrappers use the local
cache meanwhile; after the backoff the next call tries Redis again.

Pieces (``make_caches(settings)`` builds the right set):

- ``RedisBackend``: the client (own connection pool), key namespace, health/backoff.
- ``RedisManifestCache`` / ``FallbackManifestCache``: ``bot.cache.base.ManifestCache``.
- ``RedisLayerFactsCache`` / ``FallbackLayerFactsCache``: layer facts by layer digest,
  ``bot.cache.base.LayerFactsCache`` like the local ``SqliteLayerCache``.
- ``SingleFlight``: ``fetch_once(key, produce)`` and ``async with flight.lock(key)``.
- ``redis_ping(settings)``: for the readiness probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import LockError, RedisError

from bot.cache.base import LayerFactsCache, ManifestCache
from bot.cache.share import Shared
from bot.errors import InvalidInput

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

NAMESPACE: Final = "dockwise:"
#: Content-addressed entries ("keep forever") still expire after this long in Redis, so
#: a shared server does not fill up with images nobody asks about any more.
FOREVER_TTL: Final = 30 * 24 * 3600.0
#: Redis counts as down this long after a failure before it is tried again.
DEFAULT_BACKOFF: Final = 5.0
#: Socket connect/read timeout of every Redis call.
DEFAULT_OP_TIMEOUT: Final = 1.0
#: A lock's lifetime; its holder renews it every third of this while it works, so a
#: replica that dies releases it at most this long after.
DEFAULT_LOCK_TIMEOUT: Final = 15.0
#: How long a replica waits for another one's result before producing it itself.
DEFAULT_WAIT_TIMEOUT: Final = 120.0
#: How long a fetch_once result stays readable for late waiters (ttl None).
DEFAULT_RESULT_TTL: Final = 3600.0

_GUARDED = (RedisError, OSError)  # OSError includes TimeoutError and socket errors


class _Down:
    """Sentinel: the Redis call did not happen or failed (Redis is down)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DOWN"


DOWN: Final = _Down()


def describe_url(url: str) -> str:
    """``host:port/db`` of a Redis URL, for logs: never the user name or password."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return "redis (unparsable URL)"
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    db = parts.path.lstrip("/") or "0"
    return f"{host}:{port}/{db}"


def _client(url: str, timeout: float, *, retries: int) -> aioredis.Redis:
    """A client with its own pool; a malformed URL is InvalidInput (URL not repeated:
    it may hold a password)."""
    try:
        return aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), retries),
            health_check_interval=30,
        )
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            "DOCKWISE_REDIS_URL is not a usable Redis URL: expected "
            "redis://[:password@]host[:port][/db], rediss://... or unix:///path"
        ) from exc


def _seconds_to_ms(ttl: float) -> int:
    return max(1, round(ttl * 1000))


# --------------------------------------------------------------------------- backend


class RedisBackend:
    """One Redis client (its own connection pool) plus up/down bookkeeping.

    ``await backend.call(fn)`` runs ``fn(client)`` unless Redis is in its down-backoff;
    any Redis or socket error marks it down and returns ``DOWN`` instead of raising.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = NAMESPACE,
        backoff: float = DEFAULT_BACKOFF,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
    ) -> None:
        self.where = describe_url(url)
        self.namespace = namespace
        self.backoff = backoff
        self.op_timeout = op_timeout
        # One quick retry (on a fresh connection) covers a pool connection that went
        # stale when Redis restarted; anything more would only delay the fallback.
        # A malformed URL raises InvalidInput here, at start-up.
        self.client = _client(url, op_timeout, retries=1)
        self._down_until = 0.0
        self._outage = False  # logged the current outage already

    def key(self, name: str) -> str:
        return self.namespace + name

    @property
    def available(self) -> bool:
        """False during the backoff after a failure."""
        return time.monotonic() >= self._down_until

    @property
    def in_outage(self) -> bool:
        return self._outage

    def mark_down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.backoff
        if not self._outage:
            self._outage = True
            log.warning(
                "redis at %s unavailable (%s); using the local cache, retrying in %gs",
                self.where,
                type(exc).__name__,
                self.backoff,
            )

    def mark_up(self) -> None:
        if self._outage:
            self._outage = False
            log.warning("redis at %s reachable again; using it", self.where)

    async def call(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T | _Down:
        """``fn(client)``, or ``DOWN`` when Redis is backing off or fails now."""
        if not self.available:
            return DOWN
        try:
            async with asyncio.timeout(self.op_timeout * 3):
                result = await fn(self.client)
        except _GUARDED as exc:
            self.mark_down(exc)
            return DOWN
        self.mark_up()
        return result

    async def ping(self) -> bool:
        """Whether Redis answers now (ignores and updates the backoff)."""
        try:
            async with asyncio.timeout(self.op_timeout * 3):
                ok = bool(await self.client.ping())
        except _GUARDED as exc:
            self.mark_down(exc)
            return False
        self.mark_up()
        return ok

    # bytes helpers used by the caches and SingleFlight

    async def get_bytes(self, name: str) -> bytes | _Down | None:
        key = self.key(name)

        async def op(client: aioredis.Redis) -> bytes | None:
            value = await client.get(key)
            if value is None:
                return None
            return value if isinstance(value, bytes) else str(value).encode()

        return await self.call(op)

    async def set_bytes(self, name: str, value: bytes, ttl: float | None) -> bool:
        """Store ``value``; ``ttl`` None means ``FOREVER_TTL``. True when stored."""
        key = self.key(name)
        px = _seconds_to_ms(FOREVER_TTL if ttl is None else ttl)

        async def op(client: aioredis.Redis) -> bool:
            return bool(await client.set(key, value, px=px))

        result = await self.call(op)
        return result is True

    async def aclose(self) -> None:
        with contextlib.suppress(*_GUARDED):
            await self.client.aclose()


# --------------------------------------------------------------------------- manifests


class RedisManifestCache:
    """``ManifestCache`` in Redis: ``dockwise:NAME`` -> ``media_type`` LF ``body``.

    Raises nothing: a Redis failure reads as a miss / a skipped write. Use
    ``FallbackManifestCache`` to serve from a local cache meanwhile."""

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend

    async def get(self, key: str) -> tuple[str, bytes] | None:
        value = await self.backend.get_bytes(key)
        if value is None or isinstance(value, _Down):
            return None
        media_type, sep, body = value.partition(b"\n")
        if not sep:
            return None
        return media_type.decode("utf-8", "replace"), body

    async def set(self, key: str, media_type: str, body: bytes, ttl: float | None) -> None:
        await self.set_checked(key, media_type, body, ttl)

    async def set_checked(self, key: str, media_type: str, body: bytes, ttl: float | None) -> bool:
        clean = media_type.replace("\n", " ").replace("\r", " ")
        return await self.backend.set_bytes(key, clean.encode() + b"\n" + body, ttl)


class FallbackManifestCache:
    """Redis while it is up, ``local`` while it is down. A Redis miss also looks in
    ``local`` (entries written during an outage stay useful)."""

    def __init__(self, redis_cache: RedisManifestCache, local: ManifestCache) -> None:
        self.redis = redis_cache
        self.local = local

    async def get(self, key: str) -> tuple[str, bytes] | None:
        hit = await self.redis.get(key)
        if hit is not None:
            return hit
        return await self.local.get(key)

    async def set(self, key: str, media_type: str, body: bytes, ttl: float | None) -> None:
        if not await self.redis.set_checked(key, media_type, body, ttl):
            await self.local.set(key, media_type, body, ttl)


# --------------------------------------------------------------------------- layer facts


class MemoryLayerFactsCache:
    """A process-local ``LayerFactsCache`` (tests, and the fallback of last resort)."""

    def __init__(self) -> None:
        self._items: dict[str, bytes] = {}

    async def get(self, digest: str) -> dict[str, Any] | None:
        raw = self._items.get(digest)
        return None if raw is None else decode_facts(raw)

    async def put(self, digest: str, facts: dict[str, Any]) -> None:
        self._items[digest] = encode_facts(facts)


def encode_facts(facts: dict[str, Any]) -> bytes:
    """Layer facts as stored in Redis: zlib-compressed compact JSON (a layer's facts list
    every path in it, so they compress well)."""
    return zlib.compress(json.dumps(facts, separators=(",", ":")).encode(), 6)


def decode_facts(raw: bytes) -> dict[str, Any] | None:
    """The inverse of ``encode_facts``; None for anything unreadable."""
    try:
        value = json.loads(zlib.decompress(raw))
    except (ValueError, zlib.error):
        return None
    return value if isinstance(value, dict) else None


def layer_key(digest: str) -> str:
    """The shared key of a layer's facts (also the ``fetch_once`` key for analysing it)."""
    return f"layer:{digest}"


class RedisLayerFactsCache:
    """``LayerFactsCache`` in Redis: ``dockwise:layer:DIGEST`` -> ``encode_facts``, kept
    ``FOREVER_TTL`` (layers are content-addressed). Never raises for Redis trouble."""

    def __init__(self, backend: RedisBackend, ttl: float | None = None) -> None:
        self.backend = backend
        self.ttl = ttl

    async def get(self, digest: str) -> dict[str, Any] | None:
        raw = await self.get_raw(digest)
        return None if raw is None else decode_facts(raw)

    async def put(self, digest: str, facts: dict[str, Any]) -> None:
        await self.put_checked(digest, facts)

    async def get_raw(self, digest: str) -> bytes | None:
        value = await self.backend.get_bytes(layer_key(digest))
        return value if isinstance(value, bytes) else None

    async def put_checked(self, digest: str, facts: dict[str, Any]) -> bool:
        return await self.backend.set_bytes(layer_key(digest), encode_facts(facts), self.ttl)


class FallbackLayerFactsCache:
    """Redis while it is up, ``local`` while it is down; a Redis miss also asks
    ``local``."""

    def __init__(self, redis_cache: RedisLayerFactsCache, local: LayerFactsCache) -> None:
        self.redis = redis_cache
        self.local = local

    async def get(self, digest: str) -> dict[str, Any] | None:
        hit = await self.redis.get(digest)
        if hit is not None:
            return hit
        return await self.local.get(digest)

    async def put(self, digest: str, facts: dict[str, Any]) -> None:
        if not await self.redis.put_checked(digest, facts):
            await self.local.put(digest, facts)


# --------------------------------------------------------------------------- single-flight


class SingleFlight:
    """Run a producer once per key across tasks and (with Redis) across replicas.

    ``await flight.fetch_once(key, produce)`` returns the bytes stored under ``key``
    (``dockwise:KEY`` in Redis), producing them first if needed. Calls in one process
    share one attempt; across replicas the first takes the Redis lock
    ``dockwise:lock:KEY``, renews it while ``produce`` runs, stores the result and
    releases it; the others wait for the lock and then read the result. A replica that
    dies stops renewing, so its lock expires after ``lock_timeout`` and a waiter takes
    over. A waiter that waits longer than ``wait_timeout`` produces the value itself.
    A failing ``produce`` raises in every caller sharing that attempt and stores nothing.
    Without Redis (or while it is down) only the in-process part applies.
    """

    def __init__(
        self,
        backend: RedisBackend | None = None,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        poll_interval: float = 0.05,
    ) -> None:
        self.backend = backend
        self.lock_timeout = lock_timeout
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self._inflight: Shared[str, bytes] = Shared("fetch_once")
        self._local_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def fetch_once(
        self, key: str, produce: Callable[[], Awaitable[bytes]], *, ttl: float | None = None
    ) -> bytes:
        """The value of ``key``: read from Redis, or produced once and stored there.
        ``ttl`` (seconds) bounds how long the stored result lives; None: until
        ``DEFAULT_RESULT_TTL`` passes (callers keep lasting results in their caches)."""
        # one caller giving up does not cancel the others' shared attempt
        return await self._inflight.run(key, lambda: self._fetch(key, produce, ttl))

    async def _fetch(
        self, key: str, produce: Callable[[], Awaitable[bytes]], ttl: float | None
    ) -> bytes:
        backend = self.backend
        if backend is None:
            return await produce()
        cached = await backend.get_bytes(key)
        if isinstance(cached, bytes):
            return cached
        async with self.lock(key) as shared:
            if shared:
                cached = await backend.get_bytes(key)
                if isinstance(cached, bytes):
                    return cached
            value = await produce()
            await backend.set_bytes(key, value, DEFAULT_RESULT_TTL if ttl is None else ttl)
            return value

    @contextlib.asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[bool]:
        """Hold the lock for ``key``: the Redis lock when Redis is up (yields True), else
        an in-process one (yields False). Never raises for Redis trouble; after
        ``wait_timeout`` without the lock it proceeds anyway (yields False)."""
        held = await self._acquire(key)
        if held is None:
            local, users = self._local_locks.get(key, (asyncio.Lock(), 0))
            self._local_locks[key] = (local, users + 1)
            try:
                async with local:
                    yield False
            finally:
                local, users = self._local_locks[key]
                if users <= 1:
                    del self._local_locks[key]
                else:
                    self._local_locks[key] = (local, users - 1)
            return
        renewer = asyncio.create_task(self._renew(held), name=f"renew lock {key}")
        try:
            yield True
        finally:
            renewer.cancel()  # not awaited: that could swallow our own cancellation
            await self._release(held)

    def redis_lock(self, key: str, *, timeout: float | None = None) -> Lock:
        """The (unacquired) Redis lock object for ``key``."""
        if self.backend is None:
            raise RuntimeError("no Redis configured")
        return Lock(
            self.backend.client,
            self.backend.key(f"lock:{key}"),
            timeout=self.lock_timeout if timeout is None else timeout,
            sleep=self.poll_interval,
            blocking=True,
            blocking_timeout=self.wait_timeout,
            thread_local=False,
        )

    async def _acquire(self, key: str) -> Lock | None:
        backend = self.backend
        if backend is None or not backend.available:
            return None
        lock = self.redis_lock(key)
        try:
            # no overall timeout here: acquiring may rightly wait up to wait_timeout
            acquired = await lock.acquire()
        except _GUARDED as exc:
            backend.mark_down(exc)
            return None
        backend.mark_up()
        if not acquired:
            log.warning(
                "waited %.0fs for the lock of %s; producing it here", self.wait_timeout, key
            )
            return None
        return lock

    async def _renew(self, lock: Lock) -> None:
        interval = self.lock_timeout / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await lock.reacquire()
            except LockError:
                log.warning("lost the lock %s (expired); another replica may take over", lock.name)
                return
            except _GUARDED:
                continue  # Redis trouble: keep working, the lock expires by itself

    async def _release(self, lock: Lock) -> None:
        with contextlib.suppress(*_GUARDED):
            await lock.release()  # LockError (expired/taken over) is a RedisError too


# --------------------------------------------------------------------------- factory


@dataclass
class Caches:
    """What ``make_caches`` builds. ``manifests`` goes to ``RegistryClient(cache=...)``,
    ``layers`` is the layer-facts cache, ``flight`` the single-flight for analysing a
    layer (``flight.fetch_once(layer_key(digest), produce)``). ``backend`` is None
    without Redis. ``await caches.aclose()`` at shutdown."""

    manifests: ManifestCache
    layers: LayerFactsCache
    flight: SingleFlight
    backend: RedisBackend | None = None
    local_layers: LayerFactsCache | None = None  # the local cache behind ``layers``

    @property
    def _local_layers(self) -> LayerFactsCache:
        return self.local_layers if self.local_layers is not None else self.layers

    @property
    def shared(self) -> bool:
        return self.backend is not None

    async def layer_facts(
        self, digest: str, compute: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """The facts of layer ``digest``: from the caches, else computed by ``compute``
        (download + scan) once across tasks and replicas, and stored. A cached entry
        the caller cannot use (old version) should be replaced with ``layers.put``."""
        hit = await self.layers.get(digest)
        if hit is not None:
            return hit
        computed: list[dict[str, Any]] = []

        async def produce() -> bytes:
            facts = await compute()
            computed.append(facts)
            return encode_facts(facts)

        raw = await self.flight.fetch_once(layer_key(digest), produce, ttl=FOREVER_TTL)
        facts = computed[0] if computed else decode_facts(raw)
        if facts is None:  # another replica stored something unreadable: do it here
            facts = await compute()
            await self.layers.put(digest, facts)
            return facts
        if self.backend is None or not self.backend.available:
            # no Redis, or it failed meanwhile: fetch_once stored nothing shared
            await self._local_layers.put(digest, facts)
        return facts

    async def ready(self) -> bool:
        """Readiness: True without Redis; with Redis, whether it answers now."""
        return True if self.backend is None else await self.backend.ping()

    async def aclose(self) -> None:
        if self.backend is not None:
            await self.backend.aclose()


def make_caches(
    settings: Settings,
    *,
    local_layers: LayerFactsCache | None = None,
    local_manifests: ManifestCache | None = None,
    namespace: str = NAMESPACE,
    backoff: float = DEFAULT_BACKOFF,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    wait_timeout: float | None = None,
) -> Caches:
    """The caches for ``settings``: with ``redis_url``, Redis-first wrappers falling back
    to the local caches; without, the local caches and an in-process single-flight.

    ``local_layers`` / ``local_manifests`` default to the SQLite caches of
    ``bot.cache.sqlite`` in ``settings.cache_dir``. ``wait_timeout`` (how long a replica
    waits for another's result) defaults to ``settings.explain_timeout``."""
    from bot.cache.sqlite import SqliteLayerCache, SqliteManifestCache

    cap = settings.cache_max_bytes or None
    layers_local: LayerFactsCache = (
        local_layers if local_layers is not None else SqliteLayerCache(settings.cache_dir, cap)
    )
    manifests_local: ManifestCache = (
        local_manifests
        if local_manifests is not None
        else SqliteManifestCache(settings.cache_dir, cap)
    )
    wait = settings.explain_timeout if wait_timeout is None else wait_timeout
    if settings.redis_url is None:
        return Caches(manifests_local, layers_local, SingleFlight(None, wait_timeout=wait))
    backend = RedisBackend(
        settings.redis_url.get_secret_value(), namespace=namespace, backoff=backoff
    )
    return Caches(
        manifests=FallbackManifestCache(RedisManifestCache(backend), manifests_local),
        layers=FallbackLayerFactsCache(RedisLayerFactsCache(backend), layers_local),
        flight=SingleFlight(backend, lock_timeout=lock_timeout, wait_timeout=wait),
        backend=backend,
        local_layers=layers_local,
    )


async def redis_ping(settings: Settings, *, within: float = 2.0) -> bool:
    """Readiness check "cache reachable": True when no Redis is configured, else
    whether it answers PING within ``within`` seconds (one short-lived connection)."""
    if settings.redis_url is None:
        return True
    try:
        client = _client(settings.redis_url.get_secret_value(), within, retries=0)
    except InvalidInput:
        return False
    try:
        async with asyncio.timeout(within):
            return bool(await client.ping())
    except _GUARDED:
        return False
    finally:
        with contextlib.suppress(*_GUARDED):
            await client.aclose()


__all__ = [
    "DOWN",
    "FOREVER_TTL",
    "NAMESPACE",
    "Caches",
    "FallbackLayerFactsCache",
    "FallbackManifestCache",
    "LayerFactsCache",
    "MemoryLayerFactsCache",
    "RedisBackend",
    "RedisLayerFactsCache",
    "RedisManifestCache",
    "SingleFlight",
    "decode_facts",
    "describe_url",
    "encode_facts",
    "layer_key",
    "make_caches",
    "redis_ping",
]
