"""Faults end to end: a registry that dies or trickles mid-download, no Docker Engine, Redis
killed mid-run, chat gateways dropping the bot's websocket.

Every fault must end in a one-line reply or a reconnect, the bot must keep serving other
users meanwhile, and the layer cache must hold nothing for a layer that was not read in
full. The registry is Debian's real ``docker-registry``; faults are injected by
``RegistryProxy``, a loopback HTTP proxy in front of it (bench/load.py reuses it to count
upstream fetches). Caches are checked with ``sqlite3`` and the Redis wire protocol, not
through the code under test.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web

from adapters.discord import DiscordSettings, build_discord_client
from adapters.slack import SlackSettings, run_slack
from bot.cache.sqlite import DB_NAME
from bot.config import Settings
from bot.engine import Asker, Engine
from bot.image.explain import Explainer
from bot.image.source import Platform
from bot.knowledge import KnowledgeBase
from bot.reply import Reply, ReplyKind
from tests.emulators.discord import DiscordEmulator, GatewaySession
from tests.emulators.slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, SlackEmulator
from tests.fixtures.redis import RedisServer
from tests.fixtures.registry import (
    PushedImage,
    RegistryServer,
    make_layer,
    push_image,
)

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason="docker-registry not installed"
)

AMD64 = Platform("linux", "amd64")
OS_RELEASE = b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
QUESTION = "is a container a VM?"
# Headers worth passing through from the registry (hop-by-hop ones are not).
FORWARDED = ("Content-Type", "Docker-Content-Digest", "Location", "WWW-Authenticate", "Etag")

Fault = Literal["cut", "trickle"]


@dataclass
class RegistryProxy:
    """A loopback HTTP proxy in front of ``upstream`` (a registry URL) that counts every
    request by path and can break chosen blobs: ``cut`` sends half the body (with the full
    Content-Length) and then aborts the connection; ``trickle`` sends one byte every
    ``trickle_interval`` seconds until the client goes away.

    ``blob_started`` is set when a faulty blob's first bytes are on the wire,
    ``client_left`` when a trickled download's client closed the connection."""

    upstream: str
    trickle_interval: float = 0.1
    faults: dict[str, Fault] = field(default_factory=dict)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    blob_started: asyncio.Event = field(default_factory=asyncio.Event)
    client_left: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def blob_fetches(self, digest: str) -> int:
        return sum(n for path, n in self.counts.items() if path.endswith(f"/blobs/{digest}"))

    def manifest_fetches(self) -> int:
        return sum(n for path, n in self.counts.items() if "/manifests/" in path)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.counts[request.path] += 1
        headers = {k: v for k, v in request.headers.items() if k in ("Accept", "Authorization")}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            out = {k: upstream.headers[k] for k in FORWARDED if k in upstream.headers}
            status = upstream.status
        fault = self.faults.get(request.path.rsplit("/", 1)[-1])
        if fault is None or status != 200 or "/blobs/" not in request.path:
            return web.Response(status=status, body=body, headers=out)
        resp = web.StreamResponse(status=200, headers=out)
        resp.content_length = len(body)
        await resp.prepare(request)
        if fault == "cut":
            await resp.write(body[: len(body) // 2])
            self.blob_started.set()
            assert request.transport is not None
            request.transport.abort()
            return resp
        try:
            for i in range(len(body)):
                await resp.write(body[i : i + 1])
                self.blob_started.set()
                await asyncio.sleep(self.trickle_interval)  # the fault itself: a slow server
        except ConnectionError:  # the client hung up: what a stuck download should end in
            self.client_left.set()
        except asyncio.CancelledError:
            self.client_left.set()
            raise
        return resp


def layer_cache_digests(cache_dir: Path) -> set[str]:
    """Digests in the SQLite layer cache, read with sqlite3 directly."""
    path = cache_dir / DB_NAME
    if not path.exists():
        return set()
    with sqlite3.connect(path) as db:
        return {str(row[0]) for row in db.execute("SELECT digest FROM layer_facts")}


def leftover_temp_files(cache_dir: Path) -> list[Path]:
    tmp = cache_dir / "tmp"
    return sorted(tmp.rglob("*")) if tmp.exists() else []


def push_debian_like(registry: RegistryServer, marker: str) -> PushedImage:
    """An image with a Debian base layer and an app layer unique to ``marker`` (so its
    digests are new to every cache)."""
    base = make_layer({"etc/os-release": OS_RELEASE, "bin/sh": b"\x7fELF" + b"\0" * 64})
    app = make_layer({f"srv/{marker}/app.py": f"print({marker!r})\n".encode() * 40})
    return push_image(registry.pusher(), f"faults/{marker}", "1", [base, app])


def one_line_error(reply: Reply) -> str:
    assert reply.kind == ReplyKind.ERROR, reply
    assert reply.body and "\n" not in reply.body, reply.body
    assert "Traceback" not in reply.body
    return reply.body


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


@pytest.fixture
async def proxy(registry: RegistryServer) -> AsyncIterator[RegistryProxy]:
    prox = RegistryProxy(registry.url)
    await prox.start()
    try:
        yield prox
    finally:
        await prox.stop()


def image_settings(cache_dir: Path, *hosts: str, **extra: Any) -> Settings:
    return Settings(_env_file=None, cache_dir=cache_dir, insecure_registries=list(hosts), **extra)


# --------------------------------------------------------------------------- registry faults


async def test_registry_dying_mid_download_gives_one_line_and_caches_nothing(
    registry: RegistryServer, proxy: RegistryProxy, knowledge: KnowledgeBase, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex[:10]
    broken = push_debian_like(registry, marker)
    healthy = push_debian_like(registry, f"{marker}-ok")
    app_layer = broken.layer_digests[1]
    proxy.faults[app_layer] = "cut"
    cache_dir = tmp_path / "cache"
    engine = Engine(
        knowledge=knowledge,
        explainer=Explainer(image_settings(cache_dir, proxy.host)),
        explain_timeout=60,
    )
    alice = Asker("slack", "U0ALICE", "C0GENERAL")
    try:
        reply = await engine.explain(
            f"{proxy.host}/{broken.repo}:1", source="registry", platform=AMD64, asker=alice
        )
        message = one_line_error(reply)
        assert proxy.blob_started.is_set()  # the fault really happened mid-body
        assert app_layer in message or "layer" in message, message
        assert app_layer not in layer_cache_digests(cache_dir)
        assert leftover_temp_files(cache_dir) == []

        # Another image explains fine through the same explainer.
        ok = await engine.explain(
            f"{proxy.host}/{healthy.repo}:1", source="registry", platform=AMD64, asker=alice
        )
        assert ok.kind == ReplyKind.IMAGE, ok
        assert ok.data is not None and ok.data["os"]["id"] == "debian"
        assert set(healthy.layer_digests) <= layer_cache_digests(cache_dir)

        # Once the registry is healthy again the broken image is explained (no poisoned entry).
        del proxy.faults[app_layer]
        again = await engine.explain(
            f"{proxy.host}/{broken.repo}:1", source="registry", platform=AMD64, asker=alice
        )
        assert again.kind == ReplyKind.IMAGE, again
        assert app_layer in layer_cache_digests(cache_dir)
    finally:
        await engine.aclose()


async def test_trickling_registry_times_out_while_others_are_answered(
    registry: RegistryServer, proxy: RegistryProxy, knowledge: KnowledgeBase, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex[:10]
    slow = push_debian_like(registry, marker)
    app_layer = slow.layer_digests[1]
    proxy.faults[app_layer] = "trickle"
    cache_dir = tmp_path / "cache"
    engine = Engine(
        knowledge=knowledge,
        explainer=Explainer(image_settings(cache_dir, proxy.host)),
        explain_timeout=2,
    )
    reference = f"{proxy.host}/{slow.repo}:1"
    try:
        explaining = asyncio.create_task(
            engine.explain(
                reference,
                source="registry",
                platform=AMD64,
                asker=Asker("slack", "U0ALICE", "C0GENERAL"),
            )
        )
        async with asyncio.timeout(30):
            await proxy.blob_started.wait()
        answer = await engine.handle(QUESTION, asker=Asker("slack", "U0BOB", "C0RANDOM"))
        assert not explaining.done()  # answered while the download was still trickling
        assert answer.kind == ReplyKind.ANSWER, answer

        async with asyncio.timeout(30):
            reply = await explaining
        message = one_line_error(reply)
        assert "took longer than 2 s" in message, message
        assert slow.repo in message  # names what was slow
        async with asyncio.timeout(30):
            await proxy.client_left.wait()  # the stuck download was abandoned, not leaked
        assert app_layer not in layer_cache_digests(cache_dir)
        assert leftover_temp_files(cache_dir) == []
    finally:
        await engine.aclose()


# --------------------------------------------------------------------------- no Docker Engine


async def test_unreachable_docker_engine(
    registry: RegistryServer,
    knowledge: KnowledgeBase,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nonexistent.sock")
    image = push_debian_like(registry, uuid.uuid4().hex[:10])
    engine = Engine(
        knowledge=knowledge,
        explainer=Explainer(image_settings(tmp_path / "cache", registry.host)),
        explain_timeout=60,
    )
    reference = f"{registry.host}/{image.repo}:1"
    asker = Asker("discord", "1001", "2002")
    try:
        reply = await engine.explain(reference, source="docker", platform=AMD64, asker=asker)
        assert "Docker Engine" in one_line_error(reply)

        fallback = await engine.explain(reference, source="auto", platform=AMD64, asker=asker)
        assert fallback.kind == ReplyKind.IMAGE, fallback
        assert fallback.data is not None
        assert fallback.data["source"] == "registry"
        assert fallback.data["digest"] == image.digest
    finally:
        await engine.aclose()


async def test_wedged_docker_engine_falls_back_to_the_registry(
    registry: RegistryServer,
    knowledge: KnowledgeBase,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Docker socket that accepts connections but never answers (a hung dockerd) must
    count as "no engine" for ``--source auto``, well within the explanation timeout."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, never answer

    sock = tmp_path / "wedged.sock"
    server = await asyncio.start_unix_server(hold, path=str(sock))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    image = push_debian_like(registry, uuid.uuid4().hex[:10])
    engine = Engine(
        knowledge=knowledge,
        explainer=Explainer(image_settings(tmp_path / "cache", registry.host)),
        explain_timeout=10,
    )
    try:
        reply = await engine.explain(
            f"{registry.host}/{image.repo}:1",
            source="auto",
            platform=AMD64,
            asker=Asker("discord", "1001", "2002"),
        )
        assert held  # the engine was really asked first
        assert reply.kind == ReplyKind.IMAGE, reply
        assert reply.data is not None and reply.data["source"] == "registry"
    finally:
        for writer in held:  # EOF frees the worker thread stuck in docker-py
            writer.close()
        server.close()
        await server.wait_closed()
        await engine.aclose()


# --------------------------------------------------------------------------- Redis killed


async def test_explainer_keeps_explaining_when_redis_dies(
    registry: RegistryServer, own_redis: RedisServer, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex[:10]
    first = push_debian_like(registry, marker)
    second = push_debian_like(registry, f"{marker}-2")
    settings = image_settings(tmp_path / "cache", registry.host, redis_url=own_redis.url)
    explainer = Explainer(settings)
    try:
        async with asyncio.timeout(60):
            facts = await explainer.facts(
                f"{registry.host}/{first.repo}:1", source="registry", platform=AMD64
            )
        assert facts.digest == first.digest
        assert int(own_redis.command("DBSIZE").lstrip(":")) > 0  # Redis really was in use

        own_redis.stop()
        async with asyncio.timeout(60):
            after = await explainer.facts(
                f"{registry.host}/{second.repo}:1", source="registry", platform=AMD64
            )
            again = await explainer.facts(
                f"{registry.host}/{first.repo}:1", source="registry", platform=AMD64
            )
        assert after.digest == second.digest
        assert again.digest == first.digest
        assert [layer.digest for layer in after.layers] == second.layer_digests
    finally:
        await explainer.aclose()


# --------------------------------------------------------------------------- chat gateways


async def test_slack_reconnects_after_the_socket_drops(
    knowledge: KnowledgeBase,
) -> None:
    emulator = SlackEmulator()
    await emulator.start()
    settings = SlackSettings(
        _env_file=None,
        slack_bot_token=BOT_TOKEN,
        slack_app_token=APP_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=emulator.api_url,
    )
    bot = asyncio.create_task(run_slack(Engine(knowledge=knowledge), settings))

    def opened() -> int:
        return sum(1 for r in emulator.records if r.name == "apps.connections.open")

    def connections() -> int:
        return sum(1 for r in emulator.records if r.kind == "socket_connected")

    try:
        await emulator.wait_socket()
        assert (opened(), connections()) == (1, 1)
        first = emulator._ws
        assert first is not None
        await first.close()  # the server drops the Socket Mode websocket

        await emulator.wait_for(lambda _: connections() == 2, within=30)
        assert opened() == 2  # asked Slack for a fresh websocket URL
        assert emulator._ws is not first

        event = emulator.mention(QUESTION, channel="C0AFTER")
        await emulator.wait_ack(await emulator.socket_event(event))
        (post,) = await emulator.wait_post("C0AFTER")
        assert post.data.get("thread_ts") == event["ts"]
    finally:
        bot.cancel()
        with pytest.raises(asyncio.CancelledError):
            await bot
        await emulator.stop()


async def test_discord_identifies_afresh_when_the_gateway_forgot_its_session(
    knowledge: KnowledgeBase,
) -> None:
    """tests/test_discord.py covers a plain resume; here the resume is refused (Discord
    answers INVALID_SESSION when it has forgotten the session), so discord.py must
    IDENTIFY again (a new session) and keep answering."""
    emulator = DiscordEmulator()
    await emulator.start()
    settings = DiscordSettings(
        _env_file=None,
        discord_token=emulator.token,
        discord_api_url=emulator.api_url,
        discord_gateway_url=emulator.gateway_url,
    )
    client = build_discord_client(Engine(knowledge=knowledge), settings)
    bot = asyncio.create_task(client.start(emulator.token))
    try:
        await emulator.wait_ready()
        first = emulator.sessions[0]
        old_id = first.session_id
        first.session_id = "forgotten"  # the gateway no longer knows the bot's session
        await emulator.drop_connections()

        def fresh() -> list[GatewaySession]:
            return [
                s
                for s in emulator.sessions[1:]
                if s.identified and not s.resumed and not s.ws.closed
            ]

        (session,) = await emulator.wait_for(fresh, within=30)
        assert session.session_id not in (old_id, "forgotten")
        # discord.py identifies on the last URL it used (the announced resume URL): fine,
        # Discord accepts IDENTIFY there too; what matters is that it is this emulator.
        assert session.path in ("/gateway", "/resume")
        tried = emulator.sessions[1]
        assert not tried.resumed  # the resume attempt was refused

        asked = await emulator.user_message(f"{emulator.mention()} {QUESTION}")
        replies = await emulator.wait_for(lambda: emulator.replies_to(asked["id"]))
        assert len(replies) == 1
    finally:
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(bot, 15)
        await emulator.close()
