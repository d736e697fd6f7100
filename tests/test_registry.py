"""RegistryClient / RegistrySource against real docker-registry processes.

Images are pushed by the fixture's independent urllib pusher; loopback aiohttp servers in
front of the registry (proxies, a redirect target) record what arrived and inject
failures (429, 5xx, resets, corrupted bytes).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.config import Settings
from bot.errors import (
    Busy,
    ContentError,
    Forbidden,
    ImageNotFound,
    Unauthorized,
    Unreachable,
)
from bot.image.auth import CredentialStore, load_credentials, parse_challenge
from bot.image.reference import parse_reference
from bot.image.registry import (
    MemoryManifestCache,
    RegistryClient,
    RegistrySource,
    compression_for,
    parse_retry_after,
)
from bot.image.source import ImageSource, Platform
from tests.fixtures.registry import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    PUBLIC_REPOS,
    READER_PASSWORD,
    READER_USER,
    TOKEN_SERVICE,
    PushedImage,
    RegistryServer,
    basic_auth,
    free_port,
    make_layer,
    push_image,
    push_index,
    write_docker_config,
)

AMD64 = Platform("linux", "amd64")


def new_repo(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}/app"


def client_for(*hosts: str, creds: CredentialStore | None = None, **kw: Any) -> RegistryClient:
    kw.setdefault("backoff_initial", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return RegistryClient(credentials=creds, insecure_registries=hosts, **kw)


async def read_all(stream: AsyncIterator[bytes]) -> tuple[bytes, list[int]]:
    data, sizes = bytearray(), []
    async for chunk in stream:
        data += chunk
        sizes.append(len(chunk))
    return bytes(data), sizes


@pytest.fixture
async def client(registry: RegistryServer) -> AsyncIterator[RegistryClient]:
    async with client_for(registry.host) as c:
        yield c


# --------------------------------------------------------------------------- proxy


@dataclass
class Seen:
    method: str
    path: str
    host: str
    headers: dict[str, str]


Hook = Callable[[web.Request, int], Awaitable[web.StreamResponse | None]]


@dataclass
class Proxy:
    """Loopback HTTP server forwarding to ``upstream``; ``hook`` may answer instead
    (gets the request and how many times this path+query was seen), ``transform``
    may rewrite forwarded bodies. ``seen`` records every request."""

    upstream: str
    bind: str = "127.0.0.1"
    hook: Hook | None = None
    transform: Callable[[str, bytes], bytes] | None = None
    seen: list[Seen] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def host(self) -> str:
        return f"{self.bind}:{self.port}"

    async def start(self) -> Proxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port(self.bind)
        await web.TCPSite(self._runner, self.bind, self.port).start()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, self.host, dict(request.headers)))
        n = self.counts[request.path_qs] = self.counts.get(request.path_qs, 0) + 1
        if self.hook is not None:
            answer = await self.hook(request, n)
            if answer is not None:
                return answer
        assert self._session is not None
        fwd = {k: v for k, v in request.headers.items() if k in ("Authorization", "Accept")}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=fwd, allow_redirects=False
        ) as resp:
            body = await resp.read()
            headers = {
                k: v
                for k, v in resp.headers.items()
                if k in ("Content-Type", "Docker-Content-Digest", "WWW-Authenticate", "Location")
            }
            status = resp.status
        if self.transform is not None and status == 200:
            body = self.transform(request.path, body)
        return web.Response(status=status, body=body, headers=headers)


@pytest.fixture
async def proxies() -> AsyncIterator[Callable[..., Awaitable[Proxy]]]:
    started: list[Proxy] = []

    async def make(upstream: str, **kw: Any) -> Proxy:
        proxy = await Proxy(upstream, **kw).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.stop()


def blob_path(repo: str, digest: str) -> str:
    return f"/v2/{repo}/blobs/{digest}"


# --------------------------------------------------------------------------- basics


def test_source_satisfies_protocol() -> None:
    source: ImageSource = RegistrySource(RegistryClient())
    assert source.name == "registry"


async def test_resolve_oci_image_by_tag(registry: RegistryServer, client: RegistryClient) -> None:
    repo = new_repo()
    bottom = make_layer({"etc/os-release": b"ID=test\n", "bin/sh": b"#!fake"})
    top = make_layer({"app/main.py": b"print('hi')\n"})
    pushed = push_image(
        registry.pusher(), repo, "v1", [bottom, top], config_extra={"author": "tests"}
    )
    image = await RegistrySource(client).resolve(f"{registry.host}/{repo}:v1", AMD64)

    assert image.reference == f"{registry.host}/{repo}:v1"
    assert image.source == "registry"
    assert image.digest == "sha256:" + hashlib.sha256(pushed.manifest).hexdigest()
    assert image.platform == AMD64
    assert image.platforms == [AMD64]
    assert image.config == pushed.config
    assert image.config["author"] == "tests"
    assert [layer.digest for layer in image.layers] == pushed.layer_digests
    assert [layer.size for layer in image.layers] == [len(bottom), len(top)]
    assert [layer.compression for layer in image.layers] == ["gzip", "gzip"]
    assert [layer.diff_id for layer in image.layers] == pushed.config["rootfs"]["diff_ids"]
    data, _ = await read_all(image.layers[0].open())
    assert data == bottom
    again, _ = await read_all(image.layers[0].open())  # each open() is a fresh stream
    assert again == bottom


async def test_resolve_by_digest_and_tag_plus_digest(
    registry: RegistryServer, client: RegistryClient
) -> None:
    repo = new_repo()
    pushed = push_image(registry.pusher(), repo, "v1", [make_layer({"a": b"1"})])
    source = RegistrySource(client)
    by_digest = await source.resolve(f"{registry.host}/{repo}@{pushed.digest}", AMD64)
    assert by_digest.digest == pushed.digest
    assert by_digest.reference == f"{registry.host}/{repo}@{pushed.digest}"
    # With tag and digest the digest wins (as in Docker): the tag need not exist.
    both = await source.resolve(f"{registry.host}/{repo}:gone@{pushed.digest}", AMD64)
    assert both.digest == pushed.digest
    assert both.config == pushed.config


async def test_docker_schema2_media_types(registry: RegistryServer, client: RegistryClient) -> None:
    repo = new_repo()
    layer = make_layer({"x": b"docker"})
    pushed = push_image(registry.pusher(), repo, "d", [layer], media_type="docker")
    assert b"vnd.docker.distribution.manifest.v2" in pushed.manifest
    manifest = await client.get_manifest(parse_reference(f"{registry.host}/{repo}:d"))
    assert manifest.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    image = await RegistrySource(client).resolve(f"{registry.host}/{repo}:d", AMD64)
    assert image.layers[0].compression == "gzip"
    assert (await read_all(image.layers[0].open()))[0] == layer


async def test_uncompressed_layer(registry: RegistryServer, client: RegistryClient) -> None:
    repo = new_repo()
    layer = make_layer({"plain": b"tar"}, compression="none")
    push_image(registry.pusher(), repo, "raw", [layer])
    image = await RegistrySource(client).resolve(f"{registry.host}/{repo}:raw", AMD64)
    assert image.layers[0].compression == "none"
    assert image.layers[0].diff_id == image.layers[0].digest  # uncompressed: same bytes


async def test_large_layer_streams_in_chunks(
    registry: RegistryServer, client: RegistryClient
) -> None:
    repo = new_repo()
    layer = make_layer({"big.bin": os.urandom(3 * 1024 * 1024)})
    push_image(registry.pusher(), repo, "big", [layer])
    image = await RegistrySource(client).resolve(f"{registry.host}/{repo}:big", AMD64)
    data, sizes = await read_all(image.layers[0].open())
    assert data == layer
    assert len(sizes) > 4
    assert max(sizes) <= 256 * 1024


# --------------------------------------------------------------------------- platforms


@pytest.fixture(scope="module")
def multi_arch(registry: RegistryServer) -> tuple[str, dict[str, PushedImage], str]:
    repo = new_repo("multi")
    pusher = registry.pusher()
    images = {
        "linux/amd64": push_image(pusher, repo, None, [make_layer({"arch": b"amd64"})]),
        "linux/arm64/v8": push_image(
            pusher, repo, None, [make_layer({"arch": b"arm64"})], platform="linux/arm64/v8"
        ),
    }
    index_digest = push_index(pusher, repo, "multi", list(images.values()), attestations=True)
    return repo, images, index_digest


async def test_index_picks_platform_and_ignores_attestations(
    registry: RegistryServer,
    client: RegistryClient,
    multi_arch: tuple[str, dict[str, PushedImage], str],
) -> None:
    repo, images, index_digest = multi_arch
    source = RegistrySource(client)
    ref = f"{registry.host}/{repo}:multi"
    raw_index = await client.get_manifest(parse_reference(ref))
    assert any(
        e["platform"]["os"] == "unknown" for e in raw_index.data["manifests"]
    )  # the attestation entry is really there

    default = await source.resolve(ref, Platform())
    assert default.digest == index_digest
    assert default.platform == AMD64
    assert default.config == images["linux/amd64"].config
    assert default.platforms == [AMD64, Platform("linux", "arm64", "v8")]
    assert [str(p) for p in default.platforms] == ["linux/amd64", "linux/arm64/v8"]

    arm = await source.resolve(ref, Platform("linux", "arm64", "v8"))
    assert arm.layers[0].digest == images["linux/arm64/v8"].layer_digests[0]
    assert arm.platform == Platform("linux", "arm64", "v8")
    no_variant = await source.resolve(ref, Platform("linux", "arm64"))
    assert no_variant.config == images["linux/arm64/v8"].config

    by_digest = await source.resolve(f"{registry.host}/{repo}@{index_digest}", AMD64)
    assert by_digest.config == images["linux/amd64"].config


async def test_missing_platform_lists_available(
    registry: RegistryServer,
    client: RegistryClient,
    multi_arch: tuple[str, dict[str, PushedImage], str],
) -> None:
    repo, _, _ = multi_arch
    source = RegistrySource(client)
    with pytest.raises(ImageNotFound) as info:
        await source.resolve(f"{registry.host}/{repo}:multi", Platform("linux", "s390x"))
    message = str(info.value)
    assert "linux/s390x" in message
    assert "available: linux/amd64, linux/arm64/v8" in message
    assert "unknown" not in message
    with pytest.raises(ImageNotFound, match="linux/arm64/v7"):
        await source.resolve(f"{registry.host}/{repo}:multi", Platform("linux", "arm64", "v7"))


async def test_docker_manifest_list(registry: RegistryServer, client: RegistryClient) -> None:
    repo = new_repo()
    pusher = registry.pusher()
    amd = push_image(pusher, repo, None, [make_layer({"a": b"x"})], media_type="docker")
    arm = push_image(
        pusher, repo, None, [make_layer({"a": b"y"})], media_type="docker", platform="linux/arm/v7"
    )
    push_index(pusher, repo, "list", [amd, arm], attestations=False, media_type="docker")
    image = await RegistrySource(client).resolve(
        f"{registry.host}/{repo}:list", Platform("linux", "arm")
    )
    assert image.platform == Platform("linux", "arm", "v7")
    assert image.layers[0].digest == arm.layer_digests[0]


# --------------------------------------------------------------------------- failures


async def test_not_found(registry: RegistryServer, client: RegistryClient) -> None:
    repo = new_repo()
    push_image(registry.pusher(), repo, "v1", [make_layer({"a": b"1"})])
    source = RegistrySource(client)
    with pytest.raises(ImageNotFound) as info:
        await source.resolve(f"{registry.host}/{repo}:nope", AMD64)
    assert str(info.value) == f"image {registry.host}/{repo}:nope not found"
    with pytest.raises(ImageNotFound, match="not found"):
        await source.resolve(f"{registry.host}/never/pushed", AMD64)
    with pytest.raises(ImageNotFound):
        await source.resolve(f"{registry.host}/{repo}@sha256:{'0' * 64}", AMD64)


async def test_unreachable_port_names_host() -> None:
    host = f"127.0.0.1:{free_port()}"
    async with client_for(host) as c:
        with pytest.raises(Unreachable) as info:
            await RegistrySource(c).resolve(f"{host}/x/y:1", AMD64)
    assert host in str(info.value)
    assert "refused" in str(info.value)


async def test_plain_http_registry_needs_insecure_setting(registry: RegistryServer) -> None:
    async with client_for() as c:  # registry not listed: https is used and fails
        with pytest.raises(Unreachable, match=registry.host):
            await RegistrySource(c).resolve(f"{registry.host}/x/y:1", AMD64)


async def test_from_settings(
    registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = new_repo()
    push_image(registry.pusher(), repo, "v1", [make_layer({"a": b"1"})])
    monkeypatch.setenv("DOCKWISE_INSECURE_REGISTRIES", f"other:1, {registry.host}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    source = RegistrySource.from_settings(Settings())
    try:
        image = await source.resolve(f"{registry.host}/{repo}:v1", AMD64)
    finally:
        await source.aclose()
    assert image.platform == AMD64


# --------------------------------------------------------------------------- Basic auth


async def test_htpasswd_registry_credentials(
    htpasswd_registry: RegistryServer, tmp_path: Path, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    repo = new_repo()
    pushed = push_image(htpasswd_registry.pusher(), repo, "v1", [make_layer({"a": b"1"})])
    proxy = await proxies(htpasswd_registry.url)  # records what the client sends
    ref = f"{proxy.host}/{repo}:v1"

    good = load_credentials(
        write_docker_config(
            tmp_path / "good", {f"http://{proxy.host}/": (READER_USER, READER_PASSWORD)}
        )
    )
    async with client_for(proxy.host, creds=good) as c:
        image = await RegistrySource(c).resolve(ref, AMD64)
        data, _ = await read_all(image.layers[0].open())
    assert image.config == pushed.config
    assert data == make_layer({"a": b"1"})
    first = proxy.seen[0]
    assert "Authorization" not in first.headers  # anonymous until challenged
    authed = [s.headers.get("Authorization") for s in proxy.seen[1:]]
    assert authed and all(a == basic_auth(READER_USER, READER_PASSWORD) for a in authed)

    wrong = load_credentials(
        write_docker_config(tmp_path / "wrong", {proxy.host: (READER_USER, "not-the-password")})
    )
    async with client_for(proxy.host, creds=wrong) as c:
        with pytest.raises(Unauthorized) as info:
            await RegistrySource(c).resolve(ref, AMD64)
    assert "not-the-password" not in str(info.value)
    assert proxy.host in str(info.value)

    async with client_for(proxy.host, creds=CredentialStore()) as c:
        with pytest.raises(Unauthorized, match=f"docker login {proxy.host}"):
            await RegistrySource(c).resolve(ref, AMD64)


def test_docker_config_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {
        "auths": {
            "https://index.docker.io/v1/": {
                "auth": base64.b64encode(b"hub:pw:with:colons").decode()
            },
            "registry.example:5000": {"username": "u", "password": "p"},
            "https://ghcr.io": {"auth": base64.b64encode(b"gh:tok").decode()},
            "broken.example": {"auth": "%%%not-base64"},
            "nouser.example": {"auth": base64.b64encode(b"no-colon").decode()},
            "helper.example": {"identitytoken": "x"},
        },
        "credsStore": "desktop",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    store = load_credentials()
    hub = store.for_registry("docker.io")
    assert hub is not None and (hub.username, hub.password) == ("hub", "pw:with:colons")
    assert store.for_registry("index.docker.io") == hub
    ex = store.for_registry("registry.example:5000")
    assert ex is not None and (ex.username, ex.password) == ("u", "p")
    assert store.for_registry("registry.example") is None  # port is part of the key
    gh = store.for_registry("ghcr.io")
    assert gh is not None and gh.password == "tok"
    for host in ("broken.example", "nouser.example", "helper.example"):
        assert store.for_registry(host) is None
    assert "pw:with:colons" not in repr(store) + repr(hub)
    assert not load_credentials(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    assert not load_credentials(tmp_path / "bad")


# --------------------------------------------------------------------------- token auth


async def test_token_registry_anonymous_and_login(
    token_registry: RegistryServer, tmp_path: Path
) -> None:
    assert token_registry.token_server is not None
    issuer = token_registry.token_server
    pusher = token_registry.pusher()
    public_repo = sorted(PUBLIC_REPOS)[0]
    public = push_image(pusher, public_repo, "v1", [make_layer({"p": b"public"})])
    private_repo = new_repo("private")
    private = push_image(pusher, private_repo, "v1", [make_layer({"p": b"private"})])
    host = token_registry.host

    before = len(issuer.requests)
    async with client_for(host, creds=CredentialStore()) as c:
        source = RegistrySource(c)
        image = await source.resolve(f"{host}/{public_repo}:v1", AMD64)
        assert image.config == public.config
        assert (await read_all(image.layers[0].open()))[0] == make_layer({"p": b"public"})
        await source.resolve(f"{host}/{public_repo}:v1", AMD64)
        with pytest.raises(Unauthorized) as info:
            await source.resolve(f"{host}/{private_repo}:v1", AMD64)
    assert private_repo in str(info.value)
    asked = issuer.requests[before:]
    # One token for the public repo (cached for manifest, config, layer and the second
    # resolve), one (empty) for the private repo; all anonymous, all naming the service.
    assert [r["scope"] for r in asked] == [
        [f"repository:{public_repo}:pull"],
        [f"repository:{private_repo}:pull"],
    ]
    assert all(r["user"] is None and r["query"]["service"] == TOKEN_SERVICE for r in asked)

    creds = load_credentials(write_docker_config(tmp_path, {host: (ADMIN_USER, ADMIN_PASSWORD)}))
    before = len(issuer.requests)
    async with client_for(host, creds=creds) as c:
        image = await RegistrySource(c).resolve(f"{host}/{private_repo}:v1", AMD64)
    assert image.config == private.config
    assert [r["user"] for r in issuer.requests[before:]] == [ADMIN_USER]

    bad = load_credentials(write_docker_config(tmp_path / "bad", {host: (ADMIN_USER, "nope")}))
    async with client_for(host, creds=bad) as c:
        with pytest.raises(Unauthorized, match="refused"):
            await RegistrySource(c).resolve(f"{host}/{private_repo}:v1", AMD64)


# --------------------------------------------------------------------------- redirects


async def test_blob_redirect_does_not_leak_authorization(
    htpasswd_registry: RegistryServer, tmp_path: Path, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    repo = new_repo()
    layer = make_layer({"r": b"redirected"})
    pushed = push_image(htpasswd_registry.pusher(), repo, "v1", [layer])
    admin = basic_auth(ADMIN_USER, ADMIN_PASSWORD)

    async def with_admin(request: web.Request, n: int) -> web.StreamResponse | None:
        # The "CDN": serves blobs by fetching them from the registry itself.
        async with (
            aiohttp.ClientSession() as s,
            s.get(htpasswd_registry.url + request.path, headers={"Authorization": admin}) as resp,
        ):
            return web.Response(status=resp.status, body=await resp.read())

    cdn = await proxies(htpasswd_registry.url, bind="127.0.0.2", hook=with_admin)

    async def redirect_blobs(request: web.Request, n: int) -> web.StreamResponse | None:
        if "/blobs/" in request.path and "Authorization" in request.headers:
            raise web.HTTPTemporaryRedirect(f"http://{cdn.host}{request.path}?signature=abc")
        return None

    front = await proxies(htpasswd_registry.url, hook=redirect_blobs)
    creds = load_credentials(
        write_docker_config(tmp_path, {front.host: (READER_USER, READER_PASSWORD)})
    )
    async with client_for(front.host, creds=creds) as c:
        image = await RegistrySource(c).resolve(f"{front.host}/{repo}:v1", AMD64)
        data, _ = await read_all(image.layers[0].open())
    assert data == layer
    assert image.config == pushed.config
    cdn_paths = sorted(s.path for s in cdn.seen)
    assert cdn_paths == sorted(
        [blob_path(repo, pushed.config_digest), blob_path(repo, pushed.layer_digests[0])]
    )
    assert all("Authorization" not in s.headers for s in cdn.seen)
    front_blob_gets = [s for s in front.seen if "/blobs/" in s.path]
    assert front_blob_gets and all("Authorization" in s.headers for s in front_blob_gets)


async def test_url_guard_sees_redirect_targets(
    registry: RegistryServer, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    repo = new_repo()
    push_image(registry.pusher(), repo, "v1", [make_layer({"g": b"1"})])
    cdn = await proxies(registry.url, bind="127.0.0.2")

    async def redirect_blobs(request: web.Request, n: int) -> web.StreamResponse | None:
        if "/blobs/" in request.path:
            raise web.HTTPFound(f"http://{cdn.host}{request.path}")
        return None

    front = await proxies(registry.url, hook=redirect_blobs)
    checked: list[str] = []

    def guard(url: str) -> None:
        checked.append(url)
        if "127.0.0.2" in url:
            raise Forbidden("blocked by policy")

    async with client_for(front.host, url_guard=guard) as c:
        with pytest.raises(Forbidden):
            await RegistrySource(c).resolve(f"{front.host}/{repo}:v1", AMD64)
    assert cdn.seen == []
    assert checked[0] == f"http://{front.host}/v2/{repo}/manifests/v1"
    assert checked[-1].startswith(f"http://{cdn.host}/v2/{repo}/blobs/sha256:")


# --------------------------------------------------------------------------- integrity


def corrupt_paths(paths: set[str]) -> Callable[[str, bytes], bytes]:
    def transform(path: str, body: bytes) -> bytes:
        if path in paths:
            return body[:-1] + bytes([body[-1] ^ 0xFF])
        return body

    return transform


async def test_corrupted_layer_is_detected_at_end_of_stream(
    registry: RegistryServer, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    repo = new_repo()
    layer = make_layer({"c": b"corrupt me" * 1000})
    pushed = push_image(registry.pusher(), repo, "v1", [layer])
    proxy = await proxies(
        registry.url, transform=corrupt_paths({blob_path(repo, pushed.layer_digests[0])})
    )
    async with client_for(proxy.host) as c:
        image = await RegistrySource(c).resolve(f"{proxy.host}/{repo}:v1", AMD64)
        received = bytearray()
        with pytest.raises(ContentError, match="does not match its digest"):
            async for chunk in image.layers[0].open():
                received += chunk
    assert len(received) == len(layer)  # the whole stream arrived, then the check failed
    assert bytes(received) != layer


async def test_corrupted_config_and_manifest(
    registry: RegistryServer, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    repo = new_repo()
    pushed = push_image(registry.pusher(), repo, "v1", [make_layer({"c": b"1"})])
    proxy = await proxies(
        registry.url, transform=corrupt_paths({blob_path(repo, pushed.config_digest)})
    )
    async with client_for(proxy.host) as c:
        with pytest.raises(ContentError, match=pushed.config_digest):
            await RegistrySource(c).resolve(f"{proxy.host}/{repo}:v1", AMD64)

    def flip_manifest(path: str, body: bytes) -> bytes:
        return (
            body.replace(b'"schemaVersion": 2', b'"schemaVersion":  2')
            if "/manifests/" in path
            else body
        )

    proxy2 = await proxies(registry.url, transform=flip_manifest)
    async with client_for(proxy2.host) as c:
        for ref in (f"{proxy2.host}/{repo}@{pushed.digest}", f"{proxy2.host}/{repo}:v1"):
            # by digest: against the asked digest; by tag: against Docker-Content-Digest
            with pytest.raises(ContentError, match="does not match its digest"):
                await RegistrySource(c).resolve(ref, AMD64)


# --------------------------------------------------------------------------- retries


async def test_429_with_retry_after_seconds(
    registry: RegistryServer, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    repo = new_repo()
    pushed = push_image(registry.pusher(), repo, "v1", [make_layer({"a": b"1"})])

    async def limit_once(request: web.Request, n: int) -> web.StreamResponse | None:
        if "/manifests/" in request.path and n == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return None

    proxy = await proxies(registry.url, hook=limit_once)
    async with client_for(proxy.host) as c:
        started = time.monotonic()
        image = await RegistrySource(c).resolve(f"{proxy.host}/{repo}:v1", AMD64)
        elapsed = time.monotonic() - started
    assert image.digest == pushed.digest
    assert proxy.counts[f"/v2/{repo}/manifests/v1"] == 2
    assert elapsed >= 0.9  # the Retry-After second was honoured


async def test_5xx_and_http_date_retry_after_then_success(
    registry: RegistryServer, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    repo = new_repo()
    pushed = push_image(registry.pusher(), repo, "v1", [make_layer({"a": b"1"})])
    layer_path = blob_path(repo, pushed.layer_digests[0])

    async def flaky(request: web.Request, n: int) -> web.StreamResponse | None:
        if "/manifests/" in request.path and n <= 2:
            return web.Response(status=503 if n == 1 else 502)
        if request.path == layer_path and n == 1:
            when = email.utils.formatdate(time.time(), usegmt=True)  # "now": no wait
            return web.Response(status=429, headers={"Retry-After": when})
        return None

    proxy = await proxies(registry.url, hook=flaky)
    async with client_for(proxy.host) as c:
        image = await RegistrySource(c).resolve(f"{proxy.host}/{repo}:v1", AMD64)
        data, _ = await read_all(image.layers[0].open())
    assert data == make_layer({"a": b"1"})
    assert proxy.counts[f"/v2/{repo}/manifests/v1"] == 3
    assert proxy.counts[layer_path] == 2


async def test_connection_reset_is_retried(
    registry: RegistryServer, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    repo = new_repo()
    pushed = push_image(registry.pusher(), repo, "v1", [make_layer({"a": b"1"})])

    async def reset_first(request: web.Request, n: int) -> web.StreamResponse | None:
        if "/manifests/" in request.path and n == 1:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        return None

    proxy = await proxies(registry.url, hook=reset_first)
    async with client_for(proxy.host) as c:
        image = await RegistrySource(c).resolve(f"{proxy.host}/{repo}:v1", AMD64)
    assert image.digest == pushed.digest
    assert proxy.counts[f"/v2/{repo}/manifests/v1"] == 2


async def test_stalled_registry_times_out(
    registry: RegistryServer, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    release = asyncio.Event()

    async def stall(request: web.Request, n: int) -> web.StreamResponse | None:
        await release.wait()  # holds the answer until the client has given up
        return web.Response(status=500)

    proxy = await proxies(registry.url, hook=stall)
    async with client_for(proxy.host, read_timeout=0.3, max_attempts=2) as c:
        with pytest.raises(Unreachable, match=f"{proxy.host} keeps breaking off or timing out"):
            await RegistrySource(c).resolve(f"{proxy.host}/x/app:v1", AMD64)
    release.set()
    assert proxy.counts["/v2/x/app/manifests/v1"] == 2


async def test_retries_are_bounded(
    registry: RegistryServer, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    async def always(request: web.Request, n: int) -> web.StreamResponse | None:
        if "/manifests/" in request.path:
            return web.Response(status=429 if "busy" in request.path else 503)
        return None

    proxy = await proxies(registry.url, hook=always)
    async with client_for(proxy.host, max_attempts=3) as c:
        source = RegistrySource(c)
        with pytest.raises(Busy, match="429"):
            await source.resolve(f"{proxy.host}/busy/app:v1", AMD64)
        with pytest.raises(Unreachable, match="503"):
            await source.resolve(f"{proxy.host}/down/app:v1", AMD64)
    assert proxy.counts["/v2/busy/app/manifests/v1"] == 3
    assert proxy.counts["/v2/down/app/manifests/v1"] == 3


async def test_long_retry_after_gives_up_at_once(
    registry: RegistryServer, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    async def slow_down(request: web.Request, n: int) -> web.StreamResponse | None:
        return web.Response(status=429, headers={"Retry-After": "3600"})

    proxy = await proxies(registry.url, hook=slow_down)
    async with client_for(proxy.host) as c:
        with pytest.raises(Busy, match="3600s"):
            await RegistrySource(c).resolve(f"{proxy.host}/x/app:v1", AMD64)
    assert proxy.counts["/v2/x/app/manifests/v1"] == 1


# --------------------------------------------------------------------------- cache


async def test_manifest_cache_seam(
    registry: RegistryServer, proxies: Callable[..., Awaitable[Proxy]]
) -> None:
    repo = new_repo()
    pushed = push_image(registry.pusher(), repo, "v1", [make_layer({"a": b"1"})])
    proxy = await proxies(registry.url)
    cache = MemoryManifestCache()
    async with client_for(proxy.host, cache=cache) as c:
        source = RegistrySource(c)
        first = await source.resolve(f"{proxy.host}/{repo}:v1", AMD64)
        requests_after_first = len(proxy.seen)
        second = await source.resolve(f"{proxy.host}/{repo}:v1", AMD64)
        third = await source.resolve(f"{proxy.host}/{repo}@{pushed.digest}", AMD64)
    assert first.config == second.config == third.config
    assert len(proxy.seen) == requests_after_first  # all from the cache
    assert await cache.get(f"manifest:{proxy.host}/{repo}@{pushed.digest}") == (
        pushed.media_type,
        pushed.manifest,
    )


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        ("application/vnd.oci.image.layer.v1.tar+gzip", "gzip"),
        ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd"),
        ("application/vnd.oci.image.layer.v1.tar", "none"),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"),
        ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "gzip"),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "gzip"),
    ],
)
def test_compression_for(media_type: str, expected: str) -> None:
    assert compression_for(media_type) == expected


def test_compression_for_unknown() -> None:
    with pytest.raises(ContentError, match="unsupported layer type"):
        compression_for("application/vnd.in-toto+json")


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_parse_challenge() -> None:
    c = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push",error="insufficient_scope"'
    )
    assert c is not None and c.scheme == "bearer"
    assert c.realm == "https://auth.example/token"
    assert c.params["service"] == "registry.example"
    assert c.params["scope"] == "repository:a/b:pull,push"
    b = parse_challenge('Basic realm="Registry Realm"')
    assert b is not None and b.scheme == "basic" and b.realm == "Registry Realm"
    assert parse_challenge("") is None


def test_target_hosts_and_schemes() -> None:
    c = RegistryClient(insecure_registries=["Myreg.local:5000"])
    hub = c.target(parse_reference("nginx"))
    assert (hub.scheme, hub.api_host) == ("https", "registry-1.docker.io")
    assert hub.base == "https://registry-1.docker.io/v2/library/nginx"
    assert hub.scope == "repository:library/nginx:pull"
    local = c.target(parse_reference("myreg.local:5000/a/b"))
    assert (local.scheme, local.api_host) == ("http", "myreg.local:5000")
    # loopback is not implicitly insecure
    assert c.target(parse_reference("127.0.0.1:5000/a")).scheme == "https"
    assert c.target(parse_reference("localhost/a")).scheme == "https"
