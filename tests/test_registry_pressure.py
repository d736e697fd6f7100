"""Registry pressure (issue 13): tags resolved with HEAD, manifests by digest from the
cache, pull-through mirrors with fallback to the registry.

A real ``docker-registry`` holds the images; ``CountingProxy`` (a small aiohttp reverse
proxy in front of it) records every request a client makes, so the tests count GETs and
HEADs exactly. A mirror is such a proxy too (it serves the same content under another
address), a mirror that is down is a port nobody listens on, and a failing mirror answers
500.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.config import Settings
from bot.errors import InvalidInput
from bot.image.reference import parse_reference
from bot.image.registry import MemoryManifestCache, RegistryClient, RegistrySource
from bot.image.remote.transport import parse_mirrors
from bot.image.source import Platform
from tests.fixtures.registry import RegistryServer, free_port, make_layer, push_image

HOP = {"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"}
AMD64 = Platform("linux", "amd64")


class CountingProxy:
    """A reverse proxy to ``upstream`` that records (method, path, user agent); with
    ``fail`` set it answers that status to everything instead."""

    def __init__(self, upstream: str, fail: int | None = None) -> None:
        self.upstream = upstream
        self.fail = fail
        self.requests: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.host = ""

    async def start(self) -> CountingProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.host = f"127.0.0.1:{self._runner.addresses[0][1]}"
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.fail is not None:
            return web.Response(status=self.fail, text="mirror trouble")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP | {"host"}}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as resp:
            body = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP}
            return web.Response(status=resp.status, body=body or None, headers=out)

    def count(self, method: str, path_part: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and path_part in p)


@pytest.fixture
async def proxies(registry: RegistryServer) -> AsyncIterator[list[CountingProxy]]:
    """Two counting proxies to the session registry: [upstream, mirror]."""
    made = [await CountingProxy(registry.url).start() for _ in range(2)]
    try:
        yield made
    finally:
        for proxy in made:
            await proxy.stop()


def pushed(registry: RegistryServer, tag: str = "v1", marker: bytes = b"one") -> tuple[str, str]:
    repo = f"pressure{uuid.uuid4().hex[:10]}/app"
    image = push_image(registry.pusher(), repo, tag, [make_layer({"etc/marker": marker})])
    return repo, image.digest


async def test_a_tag_is_resolved_with_head_and_its_manifest_read_by_digest_once(
    registry: RegistryServer, proxies: list[CountingProxy]
) -> None:
    upstream = proxies[0]
    repo, digest = pushed(registry)
    ref = parse_reference(f"{upstream.host}/{repo}:v1")
    # tag_ttl=0: every ask resolves the tag again (as when the tag cache has expired)
    async with RegistryClient(
        insecure_registries=[upstream.host], cache=MemoryManifestCache(), tag_ttl=0
    ) as client:
        first = await client.get_manifest(ref)
        assert first.digest == digest
        assert upstream.count("HEAD", "/manifests/v1") == 1
        assert upstream.count("GET", "/manifests/v1") == 0  # a tag is never GET
        assert upstream.count("GET", f"/manifests/{digest}") == 1
        for _ in range(3):
            again = await client.get_manifest(ref)
            assert again.digest == digest and again.body == first.body
        assert upstream.count("HEAD", "/manifests/v1") == 4
        assert upstream.count("GET", "/manifests/") == 1  # the digest came from the cache

        # The tag moves: HEAD sees the new digest, which is fetched (once).
        moved = push_image(registry.pusher(), repo, "v1", [make_layer({"etc/marker": b"two"})])
        assert (await client.get_manifest(ref)).digest == moved.digest
        assert upstream.count("GET", f"/manifests/{moved.digest}") == 1
        assert upstream.count("GET", "/manifests/v1") == 0


async def test_a_missing_tag_is_still_a_clear_not_found(
    registry: RegistryServer, proxies: list[CountingProxy]
) -> None:
    upstream = proxies[0]
    repo, _ = pushed(registry)
    ref = parse_reference(f"{upstream.host}/{repo}:nope")
    async with RegistryClient(insecure_registries=[upstream.host]) as client:
        with pytest.raises(Exception, match=f"image {upstream.host}/{repo}:nope not found"):
            await client.get_manifest(ref)


async def test_a_mirror_that_serves_is_used_and_the_registry_is_not_asked(
    registry: RegistryServer, proxies: list[CountingProxy], tmp_path: Path
) -> None:
    upstream, mirror = proxies
    repo, digest = pushed(registry)
    settings = Settings(
        _env_file=None,
        cache_dir=tmp_path,
        insecure_registries=[upstream.host, mirror.host],
        registry_mirrors=[f"{upstream.host}=http://{mirror.host}"],
    )
    source = RegistrySource.from_settings(settings)
    try:
        image = await source.resolve(f"{upstream.host}/{repo}:v1", AMD64)
        assert image.digest == digest
        data = b"".join([chunk async for chunk in image.layers[0].open()])
        assert len(data) == image.layers[0].size
    finally:
        await source.aclose()
    assert upstream.requests == []
    assert mirror.count("HEAD", "/manifests/v1") == 1
    assert mirror.count("GET", "/blobs/") == 2  # the config and the layer


@pytest.mark.parametrize("mirror_state", ["down", "failing"])
async def test_a_mirror_that_fails_falls_back_to_the_registry(
    registry: RegistryServer,
    proxies: list[CountingProxy],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mirror_state: str,
) -> None:
    upstream = proxies[0]
    failing = await CountingProxy(registry.url, fail=500).start()
    mirror_host = f"127.0.0.1:{free_port()}" if mirror_state == "down" else failing.host
    repo, digest = pushed(registry)
    settings = Settings(
        _env_file=None,
        cache_dir=tmp_path,
        insecure_registries=[upstream.host, mirror_host],
        registry_mirrors=[f"{upstream.host}=http://{mirror_host}"],
    )
    source = RegistrySource.from_settings(settings)
    caplog.set_level(logging.WARNING, logger="bot.image.remote.client")
    try:
        image = await source.resolve(f"{upstream.host}/{repo}:v1", AMD64)
        assert image.digest == digest
        data = b"".join([chunk async for chunk in image.layers[0].open()])
        assert len(data) == image.layers[0].size
    finally:
        await source.aclose()
        await failing.stop()
    assert upstream.count("HEAD", "/manifests/v1") == 1
    assert upstream.count("GET", "/blobs/") == 2
    # The mirror was tried once, then rested: every later request went to the registry.
    warnings = [r for r in caplog.records if "registry mirror" in r.getMessage()]
    assert len(warnings) == 1
    assert mirror_host in warnings[0].getMessage()
    if mirror_state == "failing":
        assert failing.requests == [("HEAD", f"/v2/{repo}/manifests/v1")]


async def test_a_mirror_without_the_image_is_asked_again_next_time(
    registry: RegistryServer, proxies: list[CountingProxy]
) -> None:
    upstream, _ = proxies
    empty = await CountingProxy(registry.url, fail=404).start()
    repo, digest = pushed(registry)
    ref = parse_reference(f"{upstream.host}/{repo}:v1")
    try:
        async with RegistryClient(
            insecure_registries=[upstream.host, empty.host],
            mirrors=parse_mirrors([f"{upstream.host}=http://{empty.host}"]),
        ) as client:
            assert (await client.get_manifest(ref)).digest == digest
            assert (await client.get_manifest(ref, digest)).digest == digest
    finally:
        await empty.stop()
    # Not rested after a 404: the HEAD and both manifest GETs (by digest) asked it first.
    assert empty.count("HEAD") == 1 and empty.count("GET") == 2
    assert upstream.count("HEAD", "/manifests/v1") == 1


def test_mirror_settings_parse_and_bad_ones_are_one_line() -> None:
    assert parse_mirrors(
        [
            "docker.io=https://Mirror.Internal",
            "index.docker.io=http://10.0.0.5:5000/",
            "ghcr.io=https://ghcr-mirror.internal:8443",
        ]
    ) == {
        "docker.io": ("https://mirror.internal", "http://10.0.0.5:5000"),
        "ghcr.io": ("https://ghcr-mirror.internal:8443",),
    }
    settings = Settings(_env_file=None, DOCKWISE_REGISTRY_MIRRORS="docker.io=https://m.internal")
    assert settings.registry_mirrors == ["docker.io=https://m.internal"]
    for bad in (
        "https://mirror.internal",
        "docker.io=mirror.internal",
        "docker.io=ftp://mirror.internal",
        "docker.io=https://user:pw@mirror.internal",
        "docker.io=https://mirror.internal/some/path",
    ):
        with pytest.raises(InvalidInput) as caught:
            parse_mirrors([bad])
        message = str(caught.value)
        assert message.startswith("DOCKWISE_REGISTRY_MIRRORS entry") and "\n" not in message
        assert "docker.io=https://mirror.internal" in message
