"""Shared caches in a real redis-server: round trips, TTLs, two replicas, distributed
single-flight, a lock holder that crashes, and Redis dying and coming back mid-run."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.cache.redis import (
    FOREVER_TTL,
    Caches,
    MemoryLayerFactsCache,
    SingleFlight,
    layer_key,
    make_caches,
    redis_ping,
)
from bot.config import Settings
from bot.image.registry import MemoryManifestCache
from tests.fixtures.redis import RedisServer, unique_namespace

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 15.0


def settings_for(url: str | None, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        redis_url=SecretStr(url) if url else None,
        cache_dir=tmp_path,
        explain_timeout=30.0,
    )


async def wait_for(condition: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    """Poll ``condition`` until true or fail after DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def replicas(redis_server: RedisServer, tmp_path: Path):
    """Two cache sets on one Redis, like two replicas (separate clients and pools)."""
    namespace = unique_namespace()
    settings = settings_for(redis_server.url, tmp_path)
    a = make_caches(settings, namespace=namespace)
    b = make_caches(settings, namespace=namespace)
    yield a, b, namespace
    await a.aclose()
    await b.aclose()
    # leave nothing behind on a shared (CI) server
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_server.url)
    keys = [key async for key in client.scan_iter(match=namespace + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


# --------------------------------------------------------------------------- manifests


async def test_manifest_round_trip_keeps_bytes_and_media_type(replicas, redis_server):
    a, _, namespace = replicas
    body = b'{"schemaVersion": 2}\n\x00\xff binary \r\n tail'
    key = "manifest:docker.io/library/x@sha256:" + "a" * 64
    assert await a.manifests.get(key) is None
    await a.manifests.set(key, "application/vnd.oci.image.manifest.v1+json", body, None)
    assert await a.manifests.get(key) == ("application/vnd.oci.image.manifest.v1+json", body)
    # really in Redis, under the namespace, with the long "forever" expiry
    assert redis_server.command("EXISTS", namespace + key) == ":1"
    pttl = int(redis_server.command("PTTL", namespace + key)[1:])
    assert FOREVER_TTL * 1000 - 60_000 < pttl <= FOREVER_TTL * 1000


async def test_manifest_tag_ttl_is_redis_ttl(replicas, redis_server):
    a, _, namespace = replicas
    key = "manifest:docker.io/library/x:latest"
    await a.manifests.set(key, "application/json", b"{}", 300)
    pttl = int(redis_server.command("PTTL", namespace + key)[1:])
    assert 290_000 < pttl <= 300_000


async def test_manifest_entry_expires(replicas, redis_server):
    a, b, namespace = replicas
    key = "manifest:docker.io/library/x:short"
    await a.manifests.set(key, "application/json", b"{}", 0.2)
    assert await b.manifests.get(key) == ("application/json", b"{}")
    await wait_for(
        lambda: redis_server.command("EXISTS", namespace + key) == ":0", "Redis to expire the key"
    )
    assert await a.manifests.get(key) is None
    assert await b.manifests.get(key) is None


async def test_two_replicas_share_manifests_and_layer_facts(replicas):
    a, b, _ = replicas
    await a.manifests.set("blob:r/x@sha256:1", "application/octet-stream", b"config", None)
    assert await b.manifests.get("blob:r/x@sha256:1") == ("application/octet-stream", b"config")
    facts = {"files": 12, "os_release": {"ID": "debian"}, "paths": ["bin/sh"]}
    await b.layers.put("sha256:" + "b" * 64, facts)
    assert await a.layers.get("sha256:" + "b" * 64) == facts
    assert await a.layers.get("sha256:" + "c" * 64) is None
    # the local caches behind them stayed empty: the sharing went through Redis
    assert isinstance(a.manifests, type(b.manifests))
    assert await a.manifests.local.get("blob:r/x@sha256:1") is None


async def test_layer_facts_computed_once_across_replicas(replicas, redis_server):
    a, b, namespace = replicas
    digest = "sha256:" + "e" * 64
    facts = {
        "v": 1,
        "digest": digest,
        "entries": {f"usr/lib/f{i}": ["file", i, None] for i in range(500)},
    }
    computed = 0
    gate = asyncio.Event()

    async def compute() -> dict[str, Any]:
        nonlocal computed
        computed += 1
        await gate.wait()
        return facts

    calls = [
        asyncio.create_task((a if i % 2 else b).layer_facts(digest, compute)) for i in range(10)
    ]
    await wait_for(lambda: computed == 1, "the scan to start")
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*calls), DEADLINE) == [facts] * 10
    assert computed == 1
    # stored in Redis as zlib-compressed JSON, decoded here independently of the code
    import zlib

    import redis as sync_redis

    raw = sync_redis.Redis.from_url(redis_server.url).get(namespace + "layer:" + digest)
    assert isinstance(raw, bytes)
    assert json.loads(zlib.decompress(raw)) == facts
    assert len(raw) < len(json.dumps(facts)) / 3
    assert await b.layers.get(digest) == facts


async def test_sqlite_is_the_default_local_cache(tmp_path):
    from bot.cache.sqlite import SqliteLayerCache, SqliteManifestCache

    caches = make_caches(settings_for(None, tmp_path))
    digest = "sha256:" + "f" * 64
    computed = 0

    async def compute() -> dict[str, Any]:
        nonlocal computed
        computed += 1
        return {"v": 1, "n": 7}

    assert await caches.layer_facts(digest, compute) == {"v": 1, "n": 7}
    assert await caches.layer_facts(digest, compute) == {"v": 1, "n": 7}
    assert computed == 1
    await caches.manifests.set("manifest:r/x:1", "t", b"m", 60)
    # a fresh process' caches on the same directory see both
    assert await SqliteLayerCache(tmp_path).get(digest) == {"v": 1, "n": 7}
    assert await SqliteManifestCache(tmp_path).get("manifest:r/x:1") == ("t", b"m")
    await caches.aclose()


async def test_without_redis_the_local_caches_serve(tmp_path):
    local_layers = MemoryLayerFactsCache()
    local_manifests = MemoryManifestCache()
    caches = make_caches(
        settings_for(None, tmp_path), local_layers=local_layers, local_manifests=local_manifests
    )
    assert caches.backend is None
    assert caches.manifests is local_manifests
    assert caches.layers is local_layers
    assert await caches.ready()
    assert await redis_ping(settings_for(None, tmp_path))
    await caches.aclose()


# --------------------------------------------------------------------------- single-flight


async def test_twenty_calls_from_two_replicas_produce_once(own_redis, tmp_path):
    settings = settings_for(own_redis.url, tmp_path)
    a, b = make_caches(settings), make_caches(settings)
    try:
        produced = 0
        gate = asyncio.Event()

        async def produce() -> bytes:
            nonlocal produced
            produced += 1
            await gate.wait()
            return b"layer facts json"

        key = layer_key("sha256:" + "d" * 64)
        calls = [
            asyncio.create_task((a if i % 2 else b).flight.fetch_once(key, produce))
            for i in range(20)
        ]
        await wait_for(lambda: produced == 1, "one replica to start producing")
        # Both replicas tried the lock (SET NX) before the producer may finish:
        # ground truth from the server's own command statistics.
        await wait_for(
            lambda: _command_calls(own_redis, "set") >= 2, "the second replica to try the lock"
        )
        assert produced == 1
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(*calls), DEADLINE)
        assert results == [b"layer facts json"] * 20
        assert produced == 1
        # a later call anywhere reads the stored result
        assert await b.flight.fetch_once(key, produce) == b"layer facts json"
        assert produced == 1
        assert own_redis.command("EXISTS", "dockwise:" + key) == ":1"
    finally:
        await a.aclose()
        await b.aclose()


def _command_calls(server: RedisServer, command: str) -> int:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2:
            data += sock.recv(65536)
        header, _, rest = data.partition(b"\r\n")
        size = int(header[1:])
        while len(rest) < size:
            rest += sock.recv(65536)
    for line in rest.decode().splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_failed_produce_raises_everywhere_and_stores_nothing(replicas):
    a, b, _ = replicas
    attempts = 0

    async def broken() -> bytes:
        nonlocal attempts
        attempts += 1
        raise ValueError("registry said no")

    calls = [a.flight.fetch_once("layer:bad", broken) for _ in range(5)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    assert attempts == 1  # the five calls shared one attempt

    async def fine() -> bytes:
        return b"ok now"

    assert await b.flight.fetch_once("layer:bad", fine) == b"ok now"


async def test_holder_keeps_lock_alive_while_working(replicas, redis_server):
    a, b, namespace = replicas
    a.flight.lock_timeout = b.flight.lock_timeout = 0.3
    started, release = asyncio.Event(), asyncio.Event()
    produced = {"a": 0, "b": 0}

    def producer(name: str) -> Callable[[], Awaitable[bytes]]:
        async def produce() -> bytes:
            produced[name] += 1
            started.set()
            await release.wait()
            return name.encode()

        return produce

    first = asyncio.create_task(a.flight.fetch_once("layer:slow", producer("a")))
    await asyncio.wait_for(started.wait(), DEADLINE)
    second = asyncio.create_task(b.flight.fetch_once("layer:slow", producer("b")))
    began = time.monotonic()
    # four lock lifetimes pass while A works: the renewed lock must keep B out
    await wait_for(lambda: time.monotonic() - began > 1.2, "four lock lifetimes")
    assert produced == {"a": 1, "b": 0}
    assert redis_server.command("EXISTS", namespace + "lock:layer:slow") == ":1"
    release.set()
    assert list(await asyncio.wait_for(asyncio.gather(first, second), DEADLINE)) == [b"a", b"a"]
    assert produced == {"a": 1, "b": 0}
    assert redis_server.command("EXISTS", namespace + "lock:layer:slow") == ":0"


CRASHING_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from bot.cache.redis import RedisBackend, SingleFlight

    async def main() -> None:
        flight = SingleFlight(RedisBackend(sys.argv[1], namespace=sys.argv[2]), lock_timeout=1.0)

        async def produce() -> bytes:
            print("producing", flush=True)
            await asyncio.Event().wait()  # works forever, until killed
            return b""

        await flight.fetch_once("layer:crash", produce)

    asyncio.run(main())
    """
)


async def test_lock_of_a_crashed_holder_expires_and_another_takes_over(
    redis_server, tmp_path, replicas
):
    _, b, namespace = replicas
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_HOLDER,
        redis_server.url,
        namespace,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), DEADLINE)
        assert line.strip() == b"producing"
        holder.send_signal(signal.SIGKILL)  # a crash: no finally blocks, no lock release
        await asyncio.wait_for(holder.wait(), DEADLINE)
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
    # the dead holder's lock is still there...
    assert int(redis_server.command("PTTL", namespace + "lock:layer:crash")[1:]) > 0
    produced = 0

    async def produce() -> bytes:
        nonlocal produced
        produced += 1
        return b"taken over"

    began = time.monotonic()
    assert await asyncio.wait_for(b.flight.fetch_once("layer:crash", produce), DEADLINE) == (
        b"taken over"
    )
    # ...and the waiter got it when it expired (about 1 s), not after its wait timeout
    assert produced == 1
    assert time.monotonic() - began < b.flight.wait_timeout


async def test_in_process_single_flight_without_redis(tmp_path):
    caches = make_caches(settings_for(None, tmp_path))
    produced = 0
    gate = asyncio.Event()

    async def produce() -> bytes:
        nonlocal produced
        produced += 1
        await gate.wait()
        return b"v"

    calls = [asyncio.create_task(caches.flight.fetch_once("k", produce)) for _ in range(20)]
    await wait_for(lambda: produced == 1, "the producer to start")
    gate.set()
    assert await asyncio.gather(*calls) == [b"v"] * 20
    assert produced == 1
    async with caches.flight.lock("k") as shared:
        assert shared is False


async def test_cancelled_caller_does_not_cancel_the_shared_attempt(replicas):
    a, _, _ = replicas
    gate = asyncio.Event()

    async def produce() -> bytes:
        await gate.wait()
        return b"done"

    impatient = asyncio.create_task(a.flight.fetch_once("layer:c", produce))
    patient = asyncio.create_task(a.flight.fetch_once("layer:c", produce))
    await wait_for(lambda: "layer:c" in a.flight._inflight, "the attempt to start")
    impatient.cancel()
    gate.set()
    assert await asyncio.wait_for(patient, DEADLINE) == b"done"
    assert impatient.cancelled()


# --------------------------------------------------------------------------- Redis failure


def _outage_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]


async def test_redis_dying_mid_run_falls_back_and_recovers(own_redis, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="bot.cache.redis")
    settings = settings_for(own_redis.url, tmp_path)
    local_layers = MemoryLayerFactsCache()
    a = make_caches(settings, local_layers=local_layers, backoff=0.2)
    b = make_caches(settings, backoff=0.2)
    try:
        await a.manifests.set("manifest:r/x:1", "t/one", b"before", 60)
        assert own_redis.command("EXISTS", "dockwise:manifest:r/x:1") == ":1"
        assert await a.ready()

        own_redis.stop()  # crash: no shutdown handshake
        # every operation still answers, from the local caches
        assert await a.manifests.get("manifest:r/x:1") is None  # it lived only in Redis
        await a.manifests.set("manifest:r/x:2", "t/two", b"during", 60)
        assert await a.manifests.get("manifest:r/x:2") == ("t/two", b"during")
        await a.layers.put("sha256:1", {"files": 1})
        assert await a.layers.get("sha256:1") == {"files": 1}
        assert await local_layers.get("sha256:1") == {"files": 1}
        produced = 0

        async def produce() -> bytes:
            nonlocal produced
            produced += 1
            return b"made locally"

        assert await a.flight.fetch_once("layer:x", produce) == b"made locally"
        assert produced == 1
        scans = 0

        async def scan() -> dict[str, Any]:
            nonlocal scans
            scans += 1
            return {"v": 1, "scanned": "during outage"}

        assert await a.layer_facts("sha256:5", scan) == {"v": 1, "scanned": "during outage"}
        assert await local_layers.get("sha256:5") == {"v": 1, "scanned": "during outage"}
        assert await a.layer_facts("sha256:5", scan) == {"v": 1, "scanned": "during outage"}
        assert scans == 1
        assert not await a.ready()
        # past the backoff Redis is tried again, fails again: still no second log line
        await wait_for(lambda: a.backend is not None and a.backend.available, "the backoff")
        assert await a.manifests.get("manifest:r/x:2") == ("t/two", b"during")
        assert len(_outage_logs(caplog)) == 1

        own_redis.start()  # same port, empty
        assert await a.ready()  # the probe sees it at once

        async def written_to_redis() -> bool:
            await a.manifests.set("manifest:r/x:3", "t/three", b"after", 60)
            return bool(own_redis.command("EXISTS", "dockwise:manifest:r/x:3") == ":1")

        await wait_for(written_to_redis, "writes to reach Redis again")
        assert await b.manifests.get("manifest:r/x:3") == ("t/three", b"after")
        # entries written during the outage are still served by the replica that wrote them
        assert await a.manifests.get("manifest:r/x:2") == ("t/two", b"during")
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        await a.aclose()
        await b.aclose()


async def test_password_never_reaches_logs(own_redis_with_password, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    server = own_redis_with_password
    assert server.password
    good = settings_for(server.url, tmp_path)
    assert await redis_ping(good)
    wrong = settings_for(server.url.replace(server.password, "wrong-password"), tmp_path)
    assert not await redis_ping(wrong)

    caches: Caches = make_caches(good, backoff=0.1)
    try:
        await caches.layers.put("sha256:2", {"ok": True})
        assert await caches.layers.get("sha256:2") == {"ok": True}
        server.stop()
        assert await caches.layers.get("sha256:2") is None
        await caches.layers.put("sha256:3", {"ok": True})
        assert await caches.layers.get("sha256:3") == {"ok": True}
        assert not await redis_ping(good)
        logged = _outage_logs(caplog)
        assert len(logged) == 1
        assert f"127.0.0.1:{server.port}/0" in logged[0]
        assert server.password not in caplog.text
    finally:
        await caches.aclose()


async def test_no_redis_at_all_never_errors(tmp_path):
    from tests.fixtures.redis import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    caches = make_caches(settings_for(url, tmp_path))
    try:
        await caches.manifests.set("blob:r@sha256:9", "t", b"x", None)
        assert await caches.manifests.get("blob:r@sha256:9") == ("t", b"x")

        async def produce() -> bytes:
            return b"y"

        assert await caches.flight.fetch_once("k", produce) == b"y"
        async with caches.flight.lock("k") as shared:
            assert shared is False
        assert not await redis_ping(settings_for(url, tmp_path))
    finally:
        await caches.aclose()


async def test_single_flight_class_is_usable_directly():
    flight = SingleFlight()

    async def produce() -> bytes:
        return b"z"

    assert await flight.fetch_once("k", produce) == b"z"


@pytest.mark.parametrize("url", ["http://:hunter2@host/0", "redis://:hunter2@host:port/0"])
async def test_malformed_url_is_a_clear_error_without_the_password(url, tmp_path):
    from bot.errors import InvalidInput

    with pytest.raises(InvalidInput) as info:
        make_caches(settings_for(url, tmp_path))
    message = str(info.value)
    assert "DOCKWISE_REDIS_URL" in message
    assert "\n" not in message
    assert "hunter2" not in message
    assert not await redis_ping(settings_for(url, tmp_path))


# --------------------------------------------------------------------------- with the explainer


async def test_two_explainer_replicas_download_each_layer_once(own_redis, registry, tmp_path):
    """Issue 6 end to end: two Explainers (own SQLite dirs, one Redis) explain the same
    new image at the same time; a counting proxy in front of the registry shows each
    layer blob was downloaded once, and a third replica later downloads none."""
    from bot.image.explain import Explainer
    from tests.fixtures.registry import Pusher, make_layer, push_image
    from tests.fixtures.services import CountingProxy

    os_release = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
    layers = [
        make_layer({"etc/os-release": os_release, "bin/sh": os.urandom(1 << 20)}),
        make_layer({"usr/share/data.bin": os.urandom(2 << 20)}),
    ]
    repo = f"redis-e2e/{os.urandom(4).hex()}"
    image = push_image(Pusher(registry.url), repo, "v1", layers)
    proxy = CountingProxy(registry.url)

    def replica(name: str) -> Explainer:
        settings = Settings(
            _env_file=None,
            redis_url=SecretStr(own_redis.url),
            cache_dir=tmp_path / name,
            insecure_registries=[proxy.host],
            explain_timeout=60.0,
        )
        return Explainer(settings=settings)

    a, b, c = replica("a"), replica("b"), replica("c")
    try:
        reference = f"{proxy.host}/{repo}:v1"
        first, second = await asyncio.wait_for(
            asyncio.gather(
                a.facts(reference, source="registry"), b.facts(reference, source="registry")
            ),
            DEADLINE * 4,
        )
        assert first.to_json() == second.to_json()
        assert first.os is not None and first.os.id == "debian"
        layer_digests = image.layer_digests
        assert {d: proxy.blob_gets.get(d, 0) for d in layer_digests} == dict.fromkeys(
            layer_digests, 1
        )
        proxy.reset()
        third = await c.facts(reference, source="registry")
        assert third.to_json() == first.to_json()
        assert all(proxy.blob_gets.get(d, 0) == 0 for d in layer_digests)
    finally:
        for explainer in (a, b, c):
            await explainer.aclose()
        proxy.stop()
