"""Every Redis key dockwise writes expires: after typical use of each Redis user (shared
caches, single-flight locks and results, Slack delivery claims, rate limits) against a
private real redis-server, every key in it has a TTL. A key without one would grow a
shared Redis forever."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
from pydantic import SecretStr

from bot.cache.redis import FOREVER_TTL, NAMESPACE, make_caches
from bot.config import Settings
from bot.deliveries import CLAIM_TTL, DONE_TTL, KEY_PREFIX, Claim, RedisLedger, make_ledger
from bot.limits import RATE_LIMIT_PREFIX, Admission
from tests.fixtures.redis import RedisServer


async def test_every_key_dockwise_writes_to_redis_has_a_ttl(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None, redis_url=SecretStr(own_redis.url), cache_dir=tmp_path, explain_timeout=30
    )
    client = aioredis.Redis.from_url(own_redis.url)
    caches = make_caches(settings)  # the default namespace, as a deployment uses it
    ledger = make_ledger(settings)
    admission = Admission(settings, questions_per_user="5/minute", explanations_per_user=3)
    try:
        # shared caches: a manifest by digest (kept "forever"), a tag (briefly), layer facts
        await caches.manifests.set("manifest:library/x@sha256:" + "a" * 64, "t", b"{}", None)
        await caches.manifests.set("manifest:library/x:latest", "t", b"{}", 30.0)

        async def compute() -> dict[str, object]:
            return {"files": 1}

        await caches.layer_facts("sha256:" + "b" * 64, compute)

        async def produce() -> bytes:
            return b"result"

        await caches.flight.fetch_once("some-result", produce)
        async with caches.flight.lock("busy-layer") as shared:  # held: the lock key exists
            assert shared is True
            lock_ttl = await client.pttl(NAMESPACE + "lock:busy-layer")
            assert 0 < lock_ttl <= caches.flight.lock_timeout * 1000

        # Slack deliveries: one event answered (done), one still claimed
        answered = await Claim.take(ledger, "Ev-answered")
        assert isinstance(answered, Claim)
        await answered.done()
        assert isinstance(await Claim.take(ledger, "Ev-in-progress"), Claim)

        # rate limits (limits' moving window in Redis)
        async with admission.question("test", "U1", "C1"):
            pass
        async with admission.explanation("test", "U1", "C1"):
            pass

        keys = sorted([k.decode() async for k in client.scan_iter(match="*")])
        ttls = {key: await client.pttl(key) for key in keys}
    finally:
        await caches.aclose()
        if isinstance(ledger, RedisLedger):
            await ledger.client.aclose()
        await client.aclose()

    expected_prefixes = [
        NAMESPACE + "manifest:",
        NAMESPACE + "layer:",
        NAMESPACE + "some-result",
        KEY_PREFIX + "Ev-answered",
        KEY_PREFIX + "Ev-in-progress",
        RATE_LIMIT_PREFIX,
    ]
    for prefix in expected_prefixes:  # each user above really wrote something
        assert any(key.startswith(prefix) for key in keys), (prefix, keys)
    assert not [key for key in keys if not key.startswith(NAMESPACE)], keys
    forever = {key: ttl for key, ttl in ttls.items() if ttl < 0}  # -1: no TTL
    assert forever == {}
    # and the TTLs are the documented ones, not accidental
    assert ttls[KEY_PREFIX + "Ev-in-progress"] <= CLAIM_TTL * 1000
    assert CLAIM_TTL * 1000 < ttls[KEY_PREFIX + "Ev-answered"] <= DONE_TTL * 1000
    assert ttls[NAMESPACE + "manifest:library/x:latest"] <= 30_000
    # content-addressed entries are "forever" in the caches' sense, i.e. FOREVER_TTL in Redis
    assert ttls[NAMESPACE + "layer:sha256:" + "b" * 64] > FOREVER_TTL * 1000 - 60_000
