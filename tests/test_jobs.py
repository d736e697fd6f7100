"""The explanation job queue (bot.jobs, issue 13) on a real redis-server and a real
docker-registry behind a counting, gated proxy: asks from two clients share one saq job,
user errors come back as the same one-line error without retries, the queue is bounded,
progress reaches every waiter; plus ``Reply`` JSON and the ``serve --role`` checks.

Waiting is on conditions (held proxy requests, pub/sub subscribers, queue depth), never on
sleeps.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from pydantic import SecretStr
from saq.job import Status

from adapters.slack import EVENTS_PATH, SlackPlatform
from bot.config import Settings
from bot.engine import Asker, Engine
from bot.errors import ImageNotFound
from bot.image.explain import Explainer
from bot.jobs import (
    DEPTH_INTERVAL,
    WORKER_SEEN_TTL,
    WORKERS_SEEN_KEY,
    Delivery,
    JobQueue,
    JobSpec,
    JobWorker,
    NoWorker,
    QueueFull,
    compare_key,
    dockerfile_key,
    job_key,
    progress_channel,
)
from bot.progress import ExplainProgress
from bot.reply import (
    ACTION_FEEDBACK,
    Action,
    Fact,
    Reply,
    ReplyKind,
    Section,
    Source,
)
from tests.emulators.slack import BOT_TOKEN, SIGNING_SECRET, Record, SlackEmulator
from tests.fixtures.gated_proxy import GatedProxy
from tests.fixtures.redis import RedisServer
from tests.fixtures.registry import RegistryServer, make_layer, push_image
from tests.test_slack import (  # noqa: F401  (fixtures)
    CatalogExplainer,
    catalog,
    emulator,
    engine,
    knowledge_engine,
    slack_settings,
)

ROOT = Path(__file__).resolve().parents[1]


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 30) -> None:
    """Poll ``check`` until it holds (a condition with a deadline, not a timed wait)."""
    end = time.monotonic() + within
    while not await check():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_a_reply_survives_its_json_round_trip() -> None:
    reply = Reply(
        kind=ReplyKind.IMAGE,
        title="python:3.12 ✓",
        body="**Debian** 12 user space",
        facts=[Fact("User", "root")],
        sections=[Section("Layers", "- 5 layers")],
        sources=[Source("Docs", "https://docs.docker.com/")],
        suggestions=["why slim?"],
        topic="images",
        related=["base-images"],
        data={"digest": "sha256:ab", "layers": [1, 2], "nested": {"x": None}},
        actions=[Action(ACTION_FEEDBACK, "👍", "up|python:3.12")],
        article="# A\n\ntext",
        section="A",
    )
    assert Reply.from_json(reply.to_json()) == reply
    assert Reply.from_json(Reply(ReplyKind.ERROR, "t", "b").to_json()).kind is ReplyKind.ERROR
    for bad in ("not json", '{"kind": "nope", "title": "t", "body": "b"}', '{"kind": "answer"}'):
        with pytest.raises(ValueError):
            Reply.from_json(bad)


def _serve(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKWISE_", "SLACK_"))}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot", "serve", *args],
        env=clean,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_distributed_roles_need_redis_and_unknown_roles_are_refused() -> None:
    for role in ("web", "worker", "gateway"):
        done = _serve("--role", role, env={})
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"dockwise: error: --role {role} needs DOCKWISE_REDIS_URL (the job queue and "
            "shared state live in Redis); use --role all for a single process"
        ]
    done = _serve(env={"DOCKWISE_ROLE": "cook"})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "dockwise: error: unknown role 'cook': use one of all, web, worker, gateway"
    )


def test_distributed_roles_refuse_an_unusable_redis_in_one_line(
    own_redis_with_password: RedisServer, unused_tcp_port: int
) -> None:
    """A Redis URL that is garbage, names another scheme (saq would pick its HTTP queue),
    has no server behind it, a wrong password or a database Redis lacks stops the role at
    start-up with one line and a non-zero exit, never a retry loop of tracebacks."""
    secret = own_redis_with_password.password
    assert secret is not None
    good = own_redis_with_password.url
    wrong_password = good.replace(secret, "not-the-password")
    bad_db = good.rsplit("/", 1)[0] + "/99"
    cases = {
        "garbage": "is not a usable Redis URL",
        "http://127.0.0.1:1/": "is not a usable Redis URL",
        f"redis://127.0.0.1:{unused_tcp_port}/0": f"127.0.0.1:{unused_tcp_port}/0",
        wrong_password: "AuthenticationError",
        bad_db: "ResponseError",
    }
    for url, says in cases.items():
        env = {"DOCKWISE_REDIS_URL": url, "DOCKWISE_PORT": "0"}
        try:
            done = _serve("--role", "worker", env=env, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve --role worker kept running on {url}")
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0, (url, done.stderr[-400:])
        assert len(lines) == 1 and lines[0].startswith("dockwise: error: "), (url, lines[-3:])
        assert says in lines[0], (url, lines)
        assert "not-the-password" not in done.stderr and secret not in done.stderr


async def test_a_worker_without_chat_settings_is_one_line_and_takes_no_job(
    own_redis: RedisServer,
) -> None:
    """A worker with no chat platform configured could not post the replies of the asks
    handed over to it (their placeholders would stay): it stops at start-up with one line
    naming the settings, and the queued job stays for a worker that can answer."""
    queue = JobQueue(own_redis.url)
    await queue.connect()
    ref = "registry.invalid/tokenless:1"
    asked = asyncio.create_task(queue.explain(ref))
    try:
        await until(lambda: _depth_is(queue, 1), "the job to be queued")
        bare = {"DOCKWISE_REDIS_URL": own_redis.url, "DOCKWISE_PORT": "0"}
        # a Slack bot token alone is no Slack platform (it needs the signing secret or
        # the app token as well): that worker could not post to Slack either
        for env in (bare, {**bare, "SLACK_BOT_TOKEN": BOT_TOKEN}):
            done = await asyncio.to_thread(_serve, "--role", "worker", env=env, timeout=60)
            lines = done.stderr.strip().splitlines()
            assert done.returncode != 0, done.stderr[-400:]
            assert len(lines) == 1, lines[-3:]
            assert lines[0].startswith("dockwise: error: --role worker needs"), lines
            for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_TOKEN"):
                assert name in lines[0], lines
            assert BOT_TOKEN not in done.stderr
        job = await queue.queue.job(job_key(ref, "auto", None))
        assert job is not None and job.status is Status.QUEUED and job.attempts == 0
        assert not asked.done()
    finally:
        asked.cancel()
        await asyncio.gather(asked, return_exceptions=True)
        await queue.close()


def test_a_busy_port_is_one_line_and_no_worker_starts(own_redis: RedisServer) -> None:
    """DOCKWISE_PORT already taken: the operator reads which address and why in one line
    (exit 1, not "internal error"), and no worker joined the queue meanwhile (it could have
    taken a job and burnt one of its attempts)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "DOCKWISE_REDIS_URL": own_redis.url,
            "DOCKWISE_PORT": str(port),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        }
        done = _serve("--role", "worker", env=env, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr[-400:]
    assert lines[-1].startswith("dockwise: error: cannot listen on 127.0.0.1:"), lines[-3:]
    assert "DOCKWISE_PORT" in lines[-1]
    assert "Worker starting" not in done.stderr


# --- the queue on real Redis ------------------------------------------------------------


@pytest.fixture
async def proxy(registry: RegistryServer) -> AsyncIterator[GatedProxy]:
    gated = await GatedProxy(registry.url).start()
    try:
        yield gated
    finally:
        await gated.stop()


def worker_settings(proxy: GatedProxy, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None, cache_dir=tmp_path / "worker-cache", insecure_registries=[proxy.host]
    )


def blind_settings(tmp_path: Path) -> Settings:
    """An asking replica's image settings that reach none of the tests' registries (the
    allowlist names only registry.invalid): whatever it computed itself would fail."""
    return Settings(
        _env_file=None,
        cache_dir=tmp_path / "web-cache",
        registry_allowlist=["registry.invalid"],
    )


@pytest.fixture
async def blind_explainer(tmp_path: Path) -> AsyncIterator[Explainer]:
    """The ``Explainer`` of asking replicas: no registry access (``blind_settings``)."""
    made = Explainer(blind_settings(tmp_path))
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def queues(own_redis: RedisServer) -> AsyncIterator[list[JobQueue]]:
    """Three handles on one queue in a private redis-server: two askers, one worker."""
    made = [JobQueue(own_redis.url, heartbeat=5, sweep=3) for _ in range(3)]
    for queue in made:
        await queue.connect()
    try:
        yield made
    finally:
        for queue in made:
            await queue.close()


@pytest.fixture
async def worker(
    queues: list[JobQueue], proxy: GatedProxy, tmp_path: Path
) -> AsyncIterator[JobWorker]:
    running = JobWorker(queues[2], worker_settings(proxy, tmp_path), concurrency=2)
    running.start()
    try:
        yield running
    finally:
        await running.stop()


async def subscribers(queue: JobQueue, channel: str) -> int:
    counts = await queue.redis.pubsub_numsub(channel)
    return int(counts[0][1])


@pytest.mark.services
async def test_two_askers_share_one_job_and_both_see_its_progress(
    queues: list[JobQueue], worker: JobWorker, proxy: GatedProxy, registry: RegistryServer
) -> None:
    repo = f"jobs{uuid.uuid4().hex[:8]}/app"
    layers = [make_layer({"etc/os-release": b"ID=debian\n"}), make_layer({"srv/a": b"a" * 999})]
    image = push_image(registry.pusher(), repo, "1", layers)
    ref = f"{proxy.host}/{repo}:1"
    key = job_key(ref, "auto", None)
    seen: list[list[ExplainProgress]] = [[], []]
    proxy.hold("/blobs/")
    asks = [asyncio.create_task(queues[i].explain(ref, progress=seen[i].append)) for i in range(2)]

    async def both_waiting() -> bool:
        return (
            proxy.held("/blobs/") >= 1 and await subscribers(queues[0], progress_channel(key)) == 2
        )

    await until(both_waiting, "a worker inside the image and both askers subscribed")
    proxy.release("/blobs/")
    first, second = await asyncio.gather(*asks)
    assert first.kind is ReplyKind.IMAGE
    assert first == second
    for digest in [image.config_digest, *image.layer_digests]:
        assert proxy.count("GET", digest) == 1, digest
    job = await queues[0].queue.job(key)
    assert job is not None and job.attempts == 1
    for events in seen:
        assert any(e.layers == 2 and e.layer >= 1 for e in events), events


@pytest.mark.services
async def test_a_user_error_reaches_every_asker_once_and_is_not_retried(
    queues: list[JobQueue], worker: JobWorker, proxy: GatedProxy
) -> None:
    ref = f"{proxy.host}/jobs-missing/{uuid.uuid4().hex[:8]}:1"
    results = await asyncio.gather(
        queues[0].explain(ref), queues[1].explain(ref), return_exceptions=True
    )
    assert all(isinstance(r, ImageNotFound) for r in results), results
    assert str(results[0]) == str(results[1])
    job = await queues[0].queue.job(job_key(ref, "auto", None))
    assert job is not None and job.attempts == 1
    ttl = await queues[0].redis.ttl(queues[0].queue.job_id(job.key))
    assert 0 < ttl <= queues[0].result_ttl


@pytest.mark.services
async def test_a_full_queue_refuses_new_images_with_a_busy_reply(
    own_redis: RedisServer, queues: list[JobQueue]
) -> None:
    small, other = JobQueue(own_redis.url, queue_max=1), JobQueue(own_redis.url, queue_max=1)
    await small.connect()
    await other.connect()
    waiting = asyncio.create_task(small.explain("registry.invalid/a:1"))  # no worker runs
    try:
        await until(lambda: _depth_is(small, 1), "the first job to be queued")
        with pytest.raises(QueueFull, match=r"busy.*Try again in a minute"):
            await small.explain("registry.invalid/b:1")
        engine = Engine(jobs=small)
        reply = await engine.explain("registry.invalid/c:1")
        assert reply.kind is ReplyKind.ERROR
        assert "busy" in reply.body and "Try again in a minute" in reply.body
        # The image already queued is joined, not refused (from another replica's handle;
        # in one process, asks for one image share one wait).
        joined = asyncio.create_task(other.explain("registry.invalid/a:1"))
        await until(
            lambda: _subscribed(small, job_key("registry.invalid/a:1", "auto", None), 2),
            "the second ask to join the queued job",
        )
        assert not joined.done()
        joined.cancel()
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await small.close()
        await other.close()


@pytest.mark.services
async def test_with_no_worker_running_a_replica_refuses_new_jobs_at_once(
    own_redis: RedisServer,
    knowledge_engine: Engine,  # noqa: F811
    blind_explainer: Explainer,
    proxy: GatedProxy,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    """A web replica with no worker running: the asker hears so at once (nothing is
    queued to wait forever under a placeholder); once a worker runs, the same ask is
    answered."""
    settings = blind_settings(tmp_path).model_copy(update={"redis_url": SecretStr(own_redis.url)})
    replica = JobQueue.from_settings(settings)
    await replica.connect()
    web = Engine(knowledge=knowledge_engine.knowledge, explainer=blind_explainer, jobs=replica)
    repo = f"jobs{uuid.uuid4().hex[:8]}/app"
    push_image(registry.pusher(), repo, "1", [make_layer({"etc/os-release": b"ID=debian\n"})])
    ref = f"{proxy.host}/{repo}:1"
    running: JobWorker | None = None

    async def redis_up_a_while() -> bool:  # a fresh Redis gives the workers time to mark
        server = await replica.redis.info("server")
        return int(server["uptime_in_seconds"]) > 2 * DEPTH_INTERVAL

    try:
        await until(redis_up_a_while, "Redis to be up longer than two marking intervals")
        with pytest.raises(NoWorker, match="No worker is running"):
            await replica.explain(ref)
        later = await web.explain_later(
            f"explain {ref}",
            asker=Asker("slack", "U0NOWORKER"),
            delivery_target={"response_url": "http://127.0.0.1:9/never"},
        )
        assert later is not None and later.kind is ReplyKind.ERROR
        assert "No worker is running" in later.body, later.body
        compared = await web.compare(ref, f"{proxy.host}/{repo}:2")
        assert compared.kind is ReplyKind.ERROR and "No worker is running" in compared.body
        assert await replica.depth() == 0
        assert await replica.queue.job(job_key(ref, "auto", None)) is None

        worker_queue = JobQueue(own_redis.url)
        await worker_queue.connect()
        running = JobWorker(worker_queue, worker_settings(proxy, tmp_path), concurrency=1)
        running.start()

        async def seen() -> bool:
            return bool(await replica.redis.exists(WORKERS_SEEN_KEY))

        await until(seen, "the worker to mark itself seen")
        assert 0 < await replica.redis.ttl(WORKERS_SEEN_KEY) <= WORKER_SEEN_TTL
        reply = await replica.explain(ref)
        assert reply.kind is ReplyKind.IMAGE and repo in reply.title
    finally:
        if running is not None:
            await running.stop()
            await running.jobs.close()
        await web.aclose()
        await replica.close()


@pytest.mark.services
async def test_a_burst_of_new_images_does_not_overfill_the_queue(own_redis: RedisServer) -> None:
    """Six different images asked at once on one replica with DOCKWISE_QUEUE_MAX=2 and no
    worker: two wait in the queue, four get the busy reply (the depth check and the
    enqueue must not interleave)."""
    queue = JobQueue(own_redis.url, queue_max=2)
    await queue.connect()
    asks = [asyncio.create_task(queue.explain(f"registry.invalid/burst{i}:1")) for i in range(6)]
    try:
        await until(lambda: _settled(asks, 4), "every ask to be queued or refused", within=30)
        refused = [a for a in asks if a.done() and isinstance(a.exception(), QueueFull)]
        assert len(refused) == 4
        assert await queue.depth() == 2
    finally:
        for ask in asks:
            ask.cancel()
        await asyncio.gather(*asks, return_exceptions=True)
        await queue.close()


async def _settled(asks: list[asyncio.Task[Reply]], refused: int) -> bool:
    return sum(a.done() for a in asks) >= refused


@pytest.mark.services
async def test_a_malformed_reference_is_refused_before_it_takes_a_queue_slot(
    own_redis: RedisServer,
) -> None:
    """A web replica refuses what no worker could explain (non-ASCII, a newline, shell or
    path tricks, a bad digest) with the same one-line error as one process, and nothing
    reaches the queue."""
    queue = JobQueue(own_redis.url, queue_max=5)
    await queue.connect()
    web = Engine(jobs=queue)
    try:
        for bad, says in (
            ("ünïcødé/ïmage:😀", "invalid tag"),
            ("x\ny", "invalid repository name"),
            ("$(rm -rf /)", "invalid repository name"),
            ("../../etc/passwd", "invalid registry host"),
            ("alpine@sha256:zz", "invalid digest"),
            ("UPPER/Case:1", "lowercase"),
        ):
            reply = await asyncio.wait_for(web.explain(bad), 10)
            assert reply.kind is ReplyKind.ERROR and says in reply.body, (bad, reply.body)
        assert await queue.depth() == 0
        assert await queue.queue.count("incomplete") == 0
    finally:
        await web.aclose()
        await queue.close()


async def _depth_is(queue: JobQueue, n: int) -> bool:
    return await queue.depth() == n


async def _subscribed(queue: JobQueue, key: str, n: int) -> bool:
    return await subscribers(queue, progress_channel(key)) == n


# --- roles in the Slack adapter ---------------------------------------------------------


async def test_slack_setup_follows_the_role(
    emulator: SlackEmulator,  # noqa: F811
    engine: Engine,  # noqa: F811
) -> None:
    """web: the HTTP route only; gateway: Socket Mode only; worker: nothing."""
    both = slack_settings(emulator, socket=True)  # app token and signing secret
    expected = {"all": (True, False), "web": (False, True), "gateway": (True, False)}
    expected["worker"] = (False, False)
    for role, (socket_mode, route) in expected.items():
        app = web.Application()
        platform = SlackPlatform(engine, both)
        platform.role = role  # type: ignore[assignment]
        await platform.setup(app)
        paths = [r.resource.canonical for r in app.router.routes() if r.resource is not None]
        assert platform.socket_mode is socket_mode, role
        assert (EVENTS_PATH in paths) is route, role
    http_only = slack_settings(emulator, socket=False)
    gateway = SlackPlatform(engine, http_only)
    gateway.role = "gateway"
    app = web.Application()
    await gateway.setup(app)  # nothing of Slack runs here: no credentials check, no route
    assert not gateway.socket_mode and not list(app.router.routes())


# --- deliveries: the worker posts the reply (Slack slash command via response_url) ----------


class SlackWeb:
    """A ``web`` replica's Slack HTTP endpoint (engine on queue 0) serving the emulator."""

    def __init__(self, emu: SlackEmulator, platform: SlackPlatform, url: str) -> None:
        self.emulator = emu
        self.platform = platform
        self.url = url


@pytest.fixture
async def slack_web(
    queues: list[JobQueue],
    worker: JobWorker,
    emulator: SlackEmulator,  # noqa: F811
    knowledge_engine: Engine,  # noqa: F811
    blind_explainer: Explainer,
) -> AsyncIterator[SlackWeb]:
    """Queue 0 is a web replica running the Slack route (no registry access of its own);
    the worker (queue 2) has its own Slack adapter in role ``worker`` to deliver results
    with."""
    settings = slack_settings(emulator, socket=False)
    web_engine = Engine(
        knowledge=knowledge_engine.knowledge, explainer=blind_explainer, jobs=queues[0]
    )
    web_platform = SlackPlatform(web_engine, settings)
    web_platform.role = "web"
    queues[0].deliverers["slack"] = web_platform
    worker_platform = SlackPlatform(Engine(knowledge=knowledge_engine.knowledge), settings)
    worker_platform.role = "worker"
    queues[2].deliverers["slack"] = worker_platform
    app = web.Application()
    await web_platform.setup(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield SlackWeb(emulator, web_platform, f"http://127.0.0.1:{port}{EVENTS_PATH}")
    finally:
        await runner.cleanup()
        await web_platform.stop()
        await worker_platform.stop()


def _answers(emu: SlackEmulator, response_url: str, text: str) -> list[Record]:
    rid = response_url.rsplit("/", 1)[-1]
    return [
        r
        for r in emu.records
        if r.kind == "response_url" and r.name == rid and r.data.get("text") == text
    ]


async def _answered(emu: SlackEmulator, response_url: str, text: str) -> bool:
    return bool(_answers(emu, response_url, text))


async def _final_text(queue: JobQueue, key: str, ref: str) -> str:
    """The first message's text of the job's reply as a delivery shows it."""
    from adapters.slack_blocks import render_messages
    from bot.jobs import finished_reply

    job = await queue.queue.job(key)
    assert job is not None and job.status.value == "complete", job
    reply = Reply.from_json(job.result["reply"])
    return str(render_messages(finished_reply(ref, reply))[0]["text"])


async def _job_is(queue: JobQueue, key: str, status: str) -> bool:
    job = await queue.queue.job(key)
    return job is not None and job.status.value == status


async def _job_done(queue: JobQueue, key: str) -> bool:
    job = await queue.queue.job(key)
    return job is not None and job.status.value == "complete"


@pytest.mark.services
async def test_slash_commands_are_answered_once_by_the_worker_through_response_url(
    queues: list[JobQueue],
    worker: JobWorker,
    slack_web: SlackWeb,
    proxy: GatedProxy,
    registry: RegistryServer,
) -> None:
    """Two asks for one image on a web replica attach to ONE job; the web replica returns
    after its ack, and the worker posts each answer through its response_url once."""
    emu = slack_web.emulator
    repo = f"deliver{uuid.uuid4().hex[:8]}/app"
    layers = [make_layer({"etc/os-release": b"ID=debian\n"}), make_layer({"srv/a": b"a" * 999})]
    image = push_image(registry.pusher(), repo, "1", layers)
    ref = f"{proxy.host}/{repo}:1"
    key = job_key(ref, "auto", None)
    proxy.hold("/blobs/")
    # Two people (one person's second ask would be refused while the first is queued).
    commands = [emu.command(ref), {**emu.command(ref), "user_id": "U0BOB"}]
    for command in commands:
        ack = await emu.http_command(slack_web.url, command)
        assert ack.data["status"] == 200
        assert ack.data["json"]["response_type"] == "in_channel"

    async def both_attached() -> bool:
        return (
            proxy.held("/blobs/") >= 1
            and await queues[0].redis.llen("dockwise:jobs:deliveries:" + key) == 2
        )

    await until(both_attached, "a worker inside the image and both deliveries attached")
    worker.progress_interval = 0  # every layer event may reach the deliveries
    proxy.release("/blobs/")
    await until(lambda: _job_done(queues[0], key), "the job to complete")
    final = await _final_text(queues[0], key, ref)
    for command in commands:
        url = str(command["response_url"])
        await until(functools.partial(_answered, emu, url, final), "the answer to a command")
    for digest in [image.config_digest, *image.layer_digests]:
        assert proxy.count("GET", digest) == 1, digest
    job = await queues[0].queue.job(key)
    assert job is not None and job.attempts == 1
    assert await queues[0].redis.llen("dockwise:jobs:deliveries:" + key) == 0
    for command in commands:
        (answer,) = _answers(emu, command["response_url"], final)
        assert answer.ok and answer.data["replace_original"] is True
        assert answer.data["response_type"] == "in_channel"
        # One progress line (the most a response_url spares), then the answer.
        rid = str(command["response_url"]).rsplit("/", 1)[-1]
        sent = [r for r in emu.records if r.kind == "response_url" and r.name == rid]
        assert [r.seq for r in sent][-1] == answer.seq and len(sent) == 2, sent
        assert sent[0].ok and sent[0].data["text"].startswith(f"Inspecting `{ref}`")


@pytest.mark.services
async def test_a_delivery_too_late_for_its_job_is_posted_by_the_asking_replica(
    queues: list[JobQueue], slack_web: SlackWeb, proxy: GatedProxy, registry: RegistryServer
) -> None:
    """The attach-vs-finish race, forced: the job's deliveries are drained (as its worker
    does once the reply is known) before the command attaches, so the attach is refused
    and the web replica posts the job's result itself, once."""
    emu = slack_web.emulator
    repo = f"late{uuid.uuid4().hex[:8]}/app"
    push_image(registry.pusher(), repo, "1", [make_layer({"etc/os-release": b"ID=alpine\n"})])
    ref = f"{proxy.host}/{repo}:1"
    key = job_key(ref, "auto", None)
    proxy.hold("/blobs/")
    first = asyncio.create_task(queues[1].explain(ref))  # the job, held inside the image

    async def held() -> bool:
        return proxy.held("/blobs/") >= 1

    await until(held, "a worker inside the image")
    assert await queues[0].drain_deliveries(key) == []  # closed: attaches are refused now
    command = emu.command(ref)
    ack = await emu.http_command(slack_web.url, command)
    assert ack.data["status"] == 200
    assert await queues[0].redis.llen("dockwise:jobs:deliveries:" + key) == 0
    proxy.release("/blobs/")
    await first
    final = await _final_text(queues[0], key, ref)
    url = str(command["response_url"])
    await until(functools.partial(_answered, emu, url, final), "the replica's own delivery")
    job = await queues[0].queue.job(key)
    assert job is not None and job.attempts == 1
    (answer,) = _answers(emu, url, final)
    assert answer.ok and answer.data["replace_original"] is True


# --- deliveries: Discord HTTP interactions finished by the worker ---------------------------


@pytest.mark.services
async def test_a_discord_interaction_is_finished_once_by_the_worker(
    queues: list[JobQueue],
    worker: JobWorker,
    knowledge_engine: Engine,  # noqa: F811
    proxy: GatedProxy,
    registry: RegistryServer,
) -> None:
    """``/image-explain`` over HTTP interactions on a web replica is deferred and queued;
    the worker's Discord adapter edits the original response with the reply, once."""
    from adapters.discord import DiscordPlatform
    from adapters.discord_embeds import render_reply
    from bot.jobs import finished_reply
    from tests.emulators.discord import DiscordEmulator
    from tests.test_discord_interactions import serving, settings_for, webhook_calls

    repo = f"discord{uuid.uuid4().hex[:8]}/app"
    push_image(registry.pusher(), repo, "1", [make_layer({"etc/os-release": b"ID=debian\n"})])
    ref = f"{proxy.host}/{repo}:1"
    key = job_key(ref, "auto", None)
    discord = DiscordEmulator()
    await discord.start()
    worker_engine = Engine(knowledge=knowledge_engine.knowledge)
    delivering = DiscordPlatform(worker_engine, settings_for(discord))
    delivering.role = "worker"
    queues[2].deliverers["discord"] = delivering
    web_engine = Engine(knowledge=knowledge_engine.knowledge, jobs=queues[0])
    try:
        async with serving(discord, web_engine, role="web"):
            proxy.hold("/blobs/")
            interaction = await discord.slash_command("image-explain", {"image": ref})
            assert interaction.acknowledged == 5  # deferred

            async def attached() -> bool:
                return (
                    proxy.held("/blobs/") >= 1
                    and await queues[0].redis.llen("dockwise:jobs:deliveries:" + key) == 1
                )

            await until(attached, "a worker inside the image and the delivery attached")
            worker.progress_interval = 0
            proxy.release("/blobs/")
            await until(lambda: _job_done(queues[0], key), "the job to complete")
            job = await queues[0].queue.job(key)
            assert job is not None
            reply = finished_reply(ref, Reply.from_json(job.result["reply"]))
            want = render_reply(reply)[0].to_dict()

            async def shown() -> bool:
                original = interaction.original or {}
                return bool(original.get("embeds") == want["embeds"])

            await until(shown, "the worker's edit of the original response")
    finally:
        await delivering.stop()
        await discord.close()
    assert reply.kind is ReplyKind.IMAGE
    assert interaction.original is not None
    assert interaction.original["components"] == want["components"]
    final_edits = [
        c
        for c in webhook_calls(discord)
        if c.method == "PATCH" and c.body and c.body.get("embeds") == want["embeds"]
    ]
    assert len(final_edits) == 1 and final_edits[0].status == 200
    assert interaction.token in final_edits[0].path
    progress = [
        c
        for c in webhook_calls(discord)
        if c.method == "PATCH" and c.body and str(c.body.get("content", "")).startswith("Inspect")
    ]
    assert progress and all(c.status == 200 for c in progress)
    assert discord.calls.index(progress[-1]) < discord.calls.index(final_edits[0])


@pytest.mark.services
async def test_a_job_crashing_in_its_last_attempt_tells_its_deliveries(
    own_redis: RedisServer,
    emulator: SlackEmulator,  # noqa: F811
    knowledge_engine: Engine,  # noqa: F811
    catalog: CatalogExplainer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A bug in the explainer (CatalogExplainer's ``boom``) in the job's only attempt: the
    attached delivery gets the one-line "failed on the workers" error, no secret."""
    asking, side = JobQueue(own_redis.url, attempts=1), JobQueue(own_redis.url, attempts=1)
    await asking.connect()
    await side.connect()
    delivering = SlackPlatform(
        Engine(knowledge=knowledge_engine.knowledge), slack_settings(emulator, socket=False)
    )
    delivering.role = "worker"
    side.deliverers["slack"] = delivering
    running = JobWorker(
        side, Settings(_env_file=None, cache_dir=tmp_path), explainer=cast(Any, catalog)
    )
    running.start()
    ref = f"registry.invalid/crash{uuid.uuid4().hex[:8]}/boom:1"
    url = emulator.new_response_url()
    emulator.set_original(url, {"response_type": "in_channel", "text": "Inspecting…"})  # the ack
    target = {"response_url": url, "channel_id": "C0GENERAL", "user_id": "U0ALICE"}
    try:
        await asking.explain_later(ref, delivery=Delivery("slack", target))
        await until(
            functools.partial(_said, emulator, url, "failed on the workers"), "the error reply"
        )
        key = job_key(ref, "auto", None)
        await until(functools.partial(_job_is, asking, key, "failed"), "the job to fail")
        job = await asking.queue.job(key)
        assert job is not None and job.attempts == 1
    finally:
        await running.stop()
        await delivering.stop()
        await asking.close()
        await side.close()
    rid = url.rsplit("/", 1)[-1]
    sent = [r for r in emulator.records if r.kind == "response_url" and r.name == rid]
    assert [r.data.get("delete_original") for r in sent] == [True, None]
    assert sent[1].data["response_type"] == "ephemeral"
    assert BOT_TOKEN not in json.dumps([r.data for r in sent])


async def _said(emu: SlackEmulator, response_url: str, words: str) -> bool:
    rid = response_url.rsplit("/", 1)[-1]
    return any(
        r.kind == "response_url" and r.name == rid and words in json.dumps(r.data)
        for r in emu.records
    )


def test_one_image_asked_in_different_words_is_one_job() -> None:
    """The job key follows the normalised reference (the Docker CLI's reading), so asks
    for one image typed differently share one job; other images, sources or platforms,
    and what is not a reference, get their own."""
    same = {
        job_key(r, "auto", None)
        for r in ("alpine", "alpine:latest", "docker.io/library/alpine", "library/alpine:latest")
    }
    assert len(same) == 1
    assert job_key("alpine:3.20", "auto", None) not in same
    assert job_key("alpine", "registry", None) not in same
    assert job_key("alpine", "auto", "linux/arm64") not in same
    assert job_key("not a reference!", "auto", None) == job_key("not a reference!", "auto", None)


# --- comparisons and Dockerfiles are jobs too ------------------------------------------------


def two_images(registry: RegistryServer, proxy: GatedProxy) -> tuple[str, str, set[str]]:
    """A base image and an app built on it (the base's layer plus one) pushed to the
    registry: their references through the proxy, and every blob digest."""
    repo = f"cmp{uuid.uuid4().hex[:8]}/app"
    base_layer = make_layer({"etc/os-release": b"ID=debian\nVERSION_ID=12\n"})
    base = push_image(registry.pusher(), repo, "base", [base_layer])
    app = push_image(
        registry.pusher(), repo, "app", [base_layer, make_layer({"srv/app": b"a" * 999})]
    )
    digests = {base.config_digest, app.config_digest, *base.layer_digests, *app.layer_digests}
    return f"{proxy.host}/{repo}:base", f"{proxy.host}/{repo}:app", digests


@pytest.mark.services
async def test_two_replicas_comparing_one_pair_share_one_job_run_by_the_worker(
    queues: list[JobQueue],
    worker: JobWorker,
    proxy: GatedProxy,
    registry: RegistryServer,
    knowledge_engine: Engine,  # noqa: F811
    blind_explainer: Explainer,
) -> None:
    """ "compare A and B" (a mention) on one replica and "/image-explain A vs B" on another,
    both with a queue and no registry access of their own: one compare job, computed by the
    worker (each blob fetched once), the same reply to both, progress relayed."""
    a, b, digests = two_images(registry, proxy)
    knowledge = knowledge_engine.knowledge
    alone = Engine(knowledge=knowledge, explainer=blind_explainer)
    refused = await alone.compare(a, b)  # without the queue, these replicas cannot compare
    assert refused.kind is ReplyKind.ERROR and "allowlist" in refused.body
    webs = [Engine(knowledge=knowledge, explainer=blind_explainer, jobs=q) for q in queues[:2]]
    asker = Asker("slack", "U0CMP", "C0CMP")
    key = compare_key(a, b, "auto", None)
    seen: list[ExplainProgress] = []
    proxy.hold("/blobs/")
    asks = [
        asyncio.create_task(
            webs[0].handle(f"compare {a} and {b}", asker=asker, progress=seen.append)
        ),
        asyncio.create_task(webs[1].explain(f"{a} vs {b}", asker=asker)),
    ]

    async def both_waiting() -> bool:
        return (
            proxy.held("/blobs/") >= 1 and await subscribers(queues[0], progress_channel(key)) == 2
        )

    await until(both_waiting, "the worker inside the images and both replicas on the job")
    proxy.release("/blobs/")
    first, second = await asyncio.gather(*asks)
    assert first.kind is ReplyKind.IMAGE and (first.data or {}).get("shared_layers") == 1, first
    assert first == second
    job = await queues[0].queue.job(key)
    assert job is not None and job.attempts == 1 and job.worker_id == worker.worker.id
    computed = Reply.from_json(job.result["reply"])
    assert computed.actions == [] and first.actions  # the buttons are the asker's engine's
    assert replace(computed, actions=first.actions) == first
    for digest in digests:
        assert proxy.count("GET", digest) == 1, digest
    assert any(e.layers >= 1 for e in seen), seen
    assert await queues[0].queue.count("incomplete") == 0


@pytest.mark.services
async def test_a_failing_compare_on_the_worker_is_the_one_process_error(
    queues: list[JobQueue],
    worker: JobWorker,
    proxy: GatedProxy,
    registry: RegistryServer,
    knowledge_engine: Engine,  # noqa: F811
    blind_explainer: Explainer,
    tmp_path: Path,
) -> None:
    """A missing image in a comparison: the asking replica gets the error reply one process
    would give (title and one line), the queue's caller gets ImageNotFound itself, and the
    job ends with that error as its result, not retried."""
    a, _b, _digests = two_images(registry, proxy)
    missing = f"{proxy.host}/cmp-missing/{uuid.uuid4().hex[:8]}:1"
    knowledge = knowledge_engine.knowledge
    web = Engine(knowledge=knowledge, explainer=blind_explainer, jobs=queues[0])
    reply = await web.compare(a, missing, asker=Asker("slack", "U0CMPERR"))
    local = Engine(
        knowledge=knowledge, explainer=Explainer(worker_settings(proxy, tmp_path / "local"))
    )
    try:
        want = await local.compare(a, missing)
    finally:
        await local.aclose()
    assert want.kind is ReplyKind.ERROR and "not found" in want.body.lower(), want
    assert reply == want
    job = await queues[0].queue.job(compare_key(a, missing, "auto", None))
    assert job is not None and job.attempts == 1 and job.worker_id == worker.worker.id
    assert job.result["error"]["kind"] == ImageNotFound.kind
    with pytest.raises(ImageNotFound) as raised:
        await queues[1].compare(a, missing)
    assert str(raised.value) == want.body


@pytest.mark.services
async def test_a_dockerfile_with_an_inspectable_base_is_explained_by_the_worker(
    queues: list[JobQueue],
    worker: JobWorker,
    proxy: GatedProxy,
    registry: RegistryServer,
    knowledge_engine: Engine,  # noqa: F811
    blind_explainer: Explainer,
    tmp_path: Path,
) -> None:
    """A Dockerfile whose FROM is a registry image, asked on a replica with a queue and no
    registry access: the worker reads the base (its blobs once) and the reply is the one a
    single process with registry access gives; a Dockerfile with no base to inspect takes
    no job."""
    base, _app, _digests = two_images(registry, proxy)
    text = f'FROM {base}\nRUN apt-get update && apt-get install -y curl\nCMD ["app"]\n'
    knowledge = knowledge_engine.knowledge
    blind = await Engine(knowledge=knowledge, explainer=blind_explainer).explain_dockerfile(text)
    assert "allowlist" in str((blind.data or {})["stages"][0]["base_error"])
    web = Engine(knowledge=knowledge, explainer=blind_explainer, jobs=queues[0])
    reply = await web.explain_dockerfile(text, asker=Asker("slack", "U0DF", "C0DF"))
    (stage,) = (reply.data or {})["stages"]
    assert stage["base_error"] is None and str(stage["base_summary"]).startswith("debian 12, "), (
        stage
    )
    job = await queues[0].queue.job(dockerfile_key(text, "auto"))
    assert job is not None and job.attempts == 1 and job.worker_id == worker.worker.id
    fetched = [d for d in _digests if proxy.count("GET", d)]
    assert fetched and all(proxy.count("GET", d) == 1 for d in fetched), fetched
    local = Engine(
        knowledge=knowledge, explainer=Explainer(worker_settings(proxy, tmp_path / "local"))
    )
    try:
        assert await local.explain_dockerfile(text) == reply
    finally:
        await local.aclose()
    jobs_before = await queues[0].redis.keys("saq:job:*")
    plain = await web.explain_dockerfile('FROM scratch\nCOPY app /app\nCMD ["/app"]\n')
    assert (
        plain.kind is not ReplyKind.ERROR
        and (plain.data or {})["stages"][0]["base_kind"] == "scratch"
    )
    assert sorted(await queues[0].redis.keys("saq:job:*")) == sorted(jobs_before)


@pytest.mark.services
async def test_a_full_queue_refuses_compares_and_dockerfiles_with_the_busy_reply(
    own_redis: RedisServer,
    knowledge_engine: Engine,  # noqa: F811
    blind_explainer: Explainer,
) -> None:
    small = JobQueue(own_redis.url, queue_max=1)
    await small.connect()
    waiting = asyncio.create_task(small.explain("registry.invalid/occupied:1"))  # no worker
    web = Engine(knowledge=knowledge_engine.knowledge, explainer=blind_explainer, jobs=small)
    try:
        await until(lambda: _depth_is(small, 1), "the first job to be queued")
        replies = [
            await web.compare("registry.invalid/a:1", "registry.invalid/b:1"),
            await web.explain("registry.invalid/a:1 vs registry.invalid/c:1"),
            await web.explain_dockerfile("FROM registry.invalid/d:1\nRUN true\n"),
        ]
        later = await web.explain_later(
            "registry.invalid/a:1 vs registry.invalid/e:1",
            asker=Asker("slack", "U0BUSY"),
            delivery_target={"response_url": "http://127.0.0.1:9/never"},
        )
        assert later is not None
        for reply in [*replies, later]:
            assert reply.kind is ReplyKind.ERROR, reply
            assert "busy" in reply.body and "Try again in a minute" in reply.body, reply.body
        assert replies[0].title.startswith("Couldn't compare") and later.title.startswith(
            "Couldn't compare"
        )
        assert await small.depth() == 1
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await web.aclose()
        await small.close()


@pytest.mark.services
async def test_a_slash_command_compare_is_answered_by_the_worker_through_response_url(
    queues: list[JobQueue],
    worker: JobWorker,
    slack_web: SlackWeb,
    proxy: GatedProxy,
    registry: RegistryServer,
) -> None:
    """ "/image-explain A vs B" on a web replica that cannot post deliveries itself (no
    Slack deliverer) nor read images: the compare job's worker posts the comparison through
    the response_url, once, after a progress line."""
    emu = slack_web.emulator
    del queues[0].deliverers["slack"]
    a, b, _digests = two_images(registry, proxy)
    key = compare_key(a, b, "auto", None)
    proxy.hold("/blobs/")
    command = emu.command(f"{a} vs {b}")
    ack = await emu.http_command(slack_web.url, command)
    assert ack.data["status"] == 200 and ack.data["json"]["response_type"] == "in_channel"

    async def attached() -> bool:
        return (
            proxy.held("/blobs/") >= 1
            and await queues[0].redis.llen("dockwise:jobs:deliveries:" + key) == 1
        )

    await until(attached, "the worker inside the images and the command attached")
    worker.progress_interval = 0
    proxy.release("/blobs/")
    await until(lambda: _job_done(queues[0], key), "the compare job to complete")
    from adapters.slack_blocks import render_messages

    job = await queues[0].queue.job(key)
    assert job is not None and job.attempts == 1 and job.worker_id == worker.worker.id
    reply = Reply.from_json(job.result["reply"])
    assert reply.kind is ReplyKind.IMAGE and reply.title == f"{a} vs {b}", reply.title
    final = str(render_messages(JobSpec.compare(a, b, "auto", None).finished(reply))[0]["text"])
    url = str(command["response_url"])
    await until(functools.partial(_answered, emu, url, final), "the worker's answer")
    (answer,) = _answers(emu, url, final)
    assert answer.ok and answer.data["replace_original"] is True
    assert answer.data["response_type"] == "in_channel"
    rid = url.rsplit("/", 1)[-1]
    sent = [r for r in emu.records if r.kind == "response_url" and r.name == rid]
    assert sent[-1].seq == answer.seq and len(sent) == 2, sent
    assert sent[0].ok and sent[0].data["text"].startswith("Inspecting `")


@pytest.mark.services
async def test_a_discord_interaction_compare_is_finished_by_the_worker(
    queues: list[JobQueue],
    worker: JobWorker,
    knowledge_engine: Engine,  # noqa: F811
    blind_explainer: Explainer,
    proxy: GatedProxy,
    registry: RegistryServer,
) -> None:
    """``/image-explain image:"A vs B"`` over HTTP interactions on a blind web replica:
    deferred, queued as a compare job, and the worker's Discord adapter edits the original
    response into the comparison, once."""
    from adapters.discord import DiscordPlatform
    from adapters.discord_embeds import render_reply
    from tests.emulators.discord import DiscordEmulator
    from tests.test_discord_interactions import serving, settings_for, webhook_calls

    a, b, _digests = two_images(registry, proxy)
    key = compare_key(a, b, "auto", None)
    discord = DiscordEmulator()
    await discord.start()
    delivering = DiscordPlatform(
        Engine(knowledge=knowledge_engine.knowledge), settings_for(discord)
    )
    delivering.role = "worker"
    queues[2].deliverers["discord"] = delivering
    web_engine = Engine(
        knowledge=knowledge_engine.knowledge, explainer=blind_explainer, jobs=queues[0]
    )
    try:
        async with serving(discord, web_engine, role="web"):
            proxy.hold("/blobs/")
            interaction = await discord.slash_command("image-explain", {"image": f"{a} vs {b}"})
            assert interaction.acknowledged == 5  # deferred

            async def attached() -> bool:
                return (
                    proxy.held("/blobs/") >= 1
                    and await queues[0].redis.llen("dockwise:jobs:deliveries:" + key) == 1
                )

            await until(attached, "the worker inside the images and the delivery attached")
            proxy.release("/blobs/")
            await until(lambda: _job_done(queues[0], key), "the compare job to complete")
            job = await queues[0].queue.job(key)
            assert job is not None and job.worker_id == worker.worker.id
            reply = JobSpec.compare(a, b, "auto", None).finished(
                Reply.from_json(job.result["reply"])
            )
            want = render_reply(reply)[0].to_dict()

            async def shown() -> bool:
                original = interaction.original or {}
                return bool(original.get("embeds") == want["embeds"])

            await until(shown, "the worker's edit of the original response")
    finally:
        await delivering.stop()
        await discord.close()
    assert reply.kind is ReplyKind.IMAGE and "shared_layers" in (reply.data or {})
    final_edits = [
        c
        for c in webhook_calls(discord)
        if c.method == "PATCH" and c.body and c.body.get("embeds") == want["embeds"]
    ]
    assert len(final_edits) == 1 and final_edits[0].status == 200
    assert interaction.token in final_edits[0].path


def test_compare_and_dockerfile_keys_follow_what_the_workers_compute() -> None:
    """One comparison typed differently (tags spelled out, a pasted `docker pull`) is one
    key; the order of the pair, the source and the platform make other keys, and no key of
    one kind is another kind's. A Dockerfile's key is its exact text and source."""
    same = {
        compare_key("alpine", "debian:12", "auto", None),
        compare_key("docker.io/library/alpine:latest", "library/debian:12", "auto", None),
        compare_key("`docker pull alpine`", "debian:12", "auto", None),
    }
    assert len(same) == 1
    others = {
        compare_key("debian:12", "alpine", "auto", None),
        compare_key("alpine", "debian:12", "registry", None),
        compare_key("alpine", "debian:12", "auto", "linux/arm64"),
        job_key("alpine", "auto", None),
        dockerfile_key("FROM alpine\n", "auto"),
        dockerfile_key("FROM alpine\n", "docker"),
        dockerfile_key("FROM alpine \n", "auto"),
    }
    assert len(others) == 7 and not same & others
    assert job_key("`docker pull alpine`", "auto", None) == job_key("alpine", "auto", None)


@pytest.mark.services
async def test_pasted_references_pass_the_replica_check_like_in_one_process(
    own_redis: RedisServer,
    knowledge_engine: Engine,  # noqa: F811
    blind_explainer: Explainer,
) -> None:
    """What users paste (`docker pull X`, backticks) is read as the explainer reads it, so
    a replica with a queue does not refuse it as a malformed reference: with no room in
    the queue (DOCKWISE_QUEUE_MAX=0) the answer is the busy reply, i.e. it got as far as
    the queue, for an image and for both sides of a comparison."""
    queue = JobQueue(own_redis.url, queue_max=0)
    await queue.connect()
    web = Engine(knowledge=knowledge_engine.knowledge, explainer=blind_explainer, jobs=queue)
    try:
        for reply in (
            await web.explain("docker pull registry.invalid/pasted:1"),
            await web.compare("`registry.invalid/a:1`", "docker pull registry.invalid/b:1"),
        ):
            assert reply.kind is ReplyKind.ERROR and "busy" in reply.body, reply.body
        bad = await web.compare("registry.invalid/a:1", "docker pull")
        assert bad.kind is ReplyKind.ERROR and "busy" not in bad.body, bad.body
        assert await queue.queue.count("incomplete") == 0
    finally:
        await web.aclose()
        await queue.close()
