"""Many replicas (issue 13): two ``dockwise serve --role web`` processes and two
``dockwise serve --role worker`` processes on loopback, one real redis-server, one real
docker-registry behind a counting, gated proxy, the Slack emulator speaking the wire
protocol (signed HTTP events in, Web API calls out).

Asserted: the same Slack event delivered to both replicas is answered once; a first
delivery whose answer could not be posted is answered on the retry; a user's rate limit
holds across replicas; 50 concurrent explanations of one image spread over both replicas
fetch each blob once (the replicas post their placeholders and hand the asks over: the
worker edits all 50); a worker SIGKILLed mid-job still gives exactly one answer, both to
a mention (its placeholder edited by the surviving worker) and to a slash command
(answered by the worker through its response_url). The web replicas reach no registry
(their allowlist names only registry.invalid): comparisons and Dockerfiles with a base
image are computed by the workers, proven by a worker SIGKILLed mid-compare and by the
job records.

Readiness is polled on ``/readyz``; every wait is a condition with a deadline (records,
held proxy requests, pub/sub subscribers, job states), never a sleep of a guessed length.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.jobs import JobQueue, compare_key, job_key, progress_channel
from tests.emulators.slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackEmulator,
    new_event_id,
)
from tests.fixtures.gated_proxy import GatedProxy
from tests.fixtures.redis import RedisServer
from tests.fixtures.registry import RegistryServer, free_port, make_layer, push_image
from tests.fixtures.router import seed_router

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[1]
RETRY = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
RATE = 3  # questions per user per minute in these replicas
READY_WITHIN = 180.0  # two cores shared with other work: loading the model can be slow


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 60) -> None:
    """Poll ``check`` until it holds (a condition with a deadline, not a timed wait)."""
    end = time.monotonic() + within
    while not await check():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Proc:
    role: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events(self) -> str:
        return f"{self.base}/slack/events"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Cluster:
    web: list[Proc]
    workers: list[Proc]
    emulator: SlackEmulator
    proxy: GatedProxy
    redis_url: str
    queue: JobQueue  # the test's own handle, to look at jobs

    def logs(self) -> str:
        return "\n".join(f"--- {p.role}:{p.port}\n{p.tail()}" for p in self.web + self.workers)


def start_proc(role: str, env: dict[str, str], tmp: Path, n: int) -> Proc:
    port = free_port()
    log = tmp / f"{role}-{n}.log"
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKWISE_", "SLACK_"))}
    full.update(env)
    full.update(
        DOCKWISE_PORT=str(port),
        DOCKWISE_CACHE_DIR=str(seed_router(tmp / f"cache-{role}-{n}")),
        DOCKWISE_LOG_LEVEL="INFO",
    )
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--role", role],
            env=full,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Proc(role, port, popen, log)


async def ready(session: aiohttp.ClientSession, proc: Proc) -> bool:
    if proc.popen.poll() is not None:
        pytest.fail(f"{proc.role} exited {proc.popen.returncode}:\n{proc.tail()}")
    try:
        async with session.get(f"{proc.base}/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


@pytest.fixture
async def cluster(
    own_redis: RedisServer, registry: RegistryServer, tmp_path: Path
) -> AsyncIterator[Cluster]:
    emulator = SlackEmulator()
    await emulator.start()
    proxy = await GatedProxy(registry.url).start()
    env = {
        "DOCKWISE_REDIS_URL": own_redis.url,
        "DOCKWISE_HOST": "127.0.0.1",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "DOCKWISE_SLACK_API_URL": emulator.api_url,
        "DOCKWISE_INSECURE_REGISTRIES": proxy.host,
        "DOCKWISE_RATE_LIMIT": f"{RATE}/minute",
        "DOCKWISE_EXPLAIN_RATE_LIMIT": "1000/minute",
        # short, so the killed worker's job restarts within seconds (heartbeat + sweep +
        # saq's 5 s abort wait)
        "DOCKWISE_JOB_HEARTBEAT": "4",
        "DOCKWISE_JOB_SWEEP": "2",
        "DOCKWISE_EXPLAIN_TIMEOUT": "60",
    }
    # The web replicas cannot read images themselves: only the workers reach the registry.
    blind = {**env, "DOCKWISE_REGISTRY_ALLOWLIST": "registry.invalid"}
    procs = [start_proc("web", blind, tmp_path, n) for n in range(2)]
    procs += [start_proc("worker", env, tmp_path, n) for n in range(2)]
    queue = JobQueue(own_redis.url)
    await queue.connect()
    made = Cluster(procs[:2], procs[2:], emulator, proxy, own_redis.url, queue)
    try:
        async with aiohttp.ClientSession() as session:
            for proc in procs:
                await until(functools.partial(ready, session, proc), "readiness", READY_WITHIN)
        yield made
    except BaseException:
        print(made.logs())
        raise
    finally:
        for proc in procs:
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in procs:
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        await queue.close()
        await proxy.stop()
        await emulator.stop()


def answered_in(channel: str, record: Any) -> bool:
    """An answer or a private refusal in ``channel``."""
    return bool(
        record.ok
        and record.name in ("chat.postMessage", "chat.postEphemeral")
        and record.data.get("channel") == channel
    )


def from_user(event: dict[str, Any], user: str) -> dict[str, Any]:
    return {**event, "user": user}


def ok_posts(emu: SlackEmulator, channel: str) -> list[Any]:
    return [r for r in emu.posts(channel) if r.ok]


def final_text(emu: SlackEmulator, channel: str) -> str | None:
    """The channel's only message once it is no longer a progress placeholder."""
    current = emu.current(channel)
    if len(current) != 1:
        return None
    text = json.dumps(current[0])
    return None if "Inspecting" in text else text


async def delivery_state(redis_url: str, event_id: str) -> bytes | None:
    async with aioredis.Redis.from_url(redis_url) as client:
        value = await client.get(f"dockwise:delivery:{event_id}")
        return value if isinstance(value, bytes) else None


async def test_questions_across_two_web_replicas(cluster: Cluster) -> None:
    emu, (a, b) = cluster.emulator, cluster.web

    # 0. Workers export the queue's depth (what their autoscaler reads).
    async with aiohttp.ClientSession() as session:

        async def depth_exported() -> bool:
            async with session.get(f"{cluster.workers[0].base}/metrics") as resp:
                return 'dockwise_queue_jobs{state="queued"} 0.0' in await resp.text()

        await until(depth_exported, "the queue depth on a worker's /metrics")

    # 1. The same event at both replicas (a retry racing the first delivery): one answer.
    event, event_id = from_user(emu.mention("why FROM ubuntu?"), "U0DUP"), new_event_id()
    first, second = await asyncio.gather(
        emu.http_event(a.events, event, event_id=event_id),
        emu.http_event(b.events, event, event_id=event_id, headers=RETRY),
    )
    assert first.data["status"] == second.data["status"] == 200
    await emu.wait_post("C0GENERAL", within=60)

    async def done() -> bool:
        return await delivery_state(cluster.redis_url, event_id) == b"done"

    await until(done, "the event to be marked done")
    assert len(ok_posts(emu, "C0GENERAL")) == 1

    # 2. The first delivery's answer (and its apology) cannot be posted: the claim is
    # released and Slack's retry, at the other replica, is answered, once.
    failing = from_user(emu.mention("is a container a VM?", channel="C0FAIL"), "U0FAIL")
    failing_id = new_event_id()
    emu.fail_next("chat.postMessage", count=2)
    await emu.http_event(a.events, failing, event_id=failing_id)
    await emu.wait_for(lambda r: len(emu.refused()) >= 2, within=60)

    async def released() -> bool:
        return await delivery_state(cluster.redis_url, failing_id) is None

    await until(released, "the failed claim to be released")
    assert ok_posts(emu, "C0FAIL") == []
    await emu.http_event(b.events, failing, event_id=failing_id, headers=RETRY)
    await emu.wait_for(lambda r: len(ok_posts(emu, "C0FAIL")) >= 1, within=60)

    async def failing_done() -> bool:
        return await delivery_state(cluster.redis_url, failing_id) == b"done"

    await until(failing_done, "the retried event to be marked done")
    (answer,) = ok_posts(emu, "C0FAIL")
    assert answer.data["thread_ts"] == failing["ts"]

    # 3. One user's rate limit (RATE a minute) holds across both replicas.
    for n in range(RATE + 1):
        replica = (a, b)[n % 2]
        asked = from_user(emu.mention("what is a layer?", channel=f"C0RATE{n}"), "U0RATE")
        await emu.http_event(replica.events, asked)
        await emu.wait_for(functools.partial(answered_in, f"C0RATE{n}"), within=60)
    answered = [n for n in range(RATE + 1) if ok_posts(emu, f"C0RATE{n}")]
    refused = [
        r
        for r in emu.records
        if r.name == "chat.postEphemeral" and str(r.data.get("channel", "")).startswith("C0RATE")
    ]
    assert answered == list(range(RATE))
    assert len(refused) == 1
    assert refused[0].data["channel"] == f"C0RATE{RATE}"
    assert "asking faster than I can answer" in json.dumps(refused[0].data)


async def test_explanations_across_replicas_and_a_worker_killed_mid_job(
    cluster: Cluster, registry: RegistryServer
) -> None:
    emu, proxy, (a, b) = cluster.emulator, cluster.proxy, cluster.web

    # 1. 50 concurrent explanations of one image, spread over both replicas: one job,
    # each blob fetched once.
    repo = f"replicas{uuid.uuid4().hex[:8]}/app"
    layers = [make_layer({"etc/os-release": b"ID=debian\n"}), make_layer({"srv/x": b"x" * 5000})]
    image = push_image(registry.pusher(), repo, "1", layers)
    ref = f"{proxy.host}/{repo}:1"
    key = job_key(ref, "auto", None)
    channels = [f"C0MANY{n:02d}" for n in range(50)]
    proxy.hold(f"/{repo}/blobs/")
    await asyncio.gather(
        *(
            emu.http_event(
                (a, b)[n % 2].events,
                from_user(emu.mention(f"explain {ref}", channel=ch), f"U0MANY{n:02d}"),
            )
            for n, ch in enumerate(channels)
        )
    )

    async def all_handed_over() -> bool:
        placeholders = all(emu.posts(ch) for ch in channels)
        attached = await cluster.queue.redis.llen("dockwise:jobs:deliveries:" + key)
        # every ask is a delivery of the one job; no replica waits for it
        return placeholders and proxy.held(f"/{repo}/blobs/") >= 1 and attached == 50

    await until(all_handed_over, "50 placeholders, a worker reading the image, 50 deliveries")
    counts = await cluster.queue.redis.pubsub_numsub(progress_channel(key))
    assert counts[0][1] == 0
    proxy.release(f"/{repo}/blobs/")
    await emu.wait_for(lambda r: all(final_text(emu, ch) for ch in channels), within=120)
    for ch in channels:
        text = final_text(emu, ch)
        assert text is not None and repo in text and "debian" in text.lower(), ch
        assert len(emu.posts(ch)) == 1, ch  # one placeholder, edited into the answer
    for digest in [image.config_digest, *image.layer_digests]:
        assert proxy.count("GET", digest) == 1, digest

    # 2. The worker reading an image is SIGKILLed: another worker runs the job again and
    # the asker gets exactly one answer.
    repo = f"replicas{uuid.uuid4().hex[:8]}/slow"
    push_image(registry.pusher(), repo, "1", [make_layer({"etc/os-release": b"ID=alpine\n"})])
    ref = f"{proxy.host}/{repo}:1"
    key = job_key(ref, "auto", None)
    proxy.hold(f"/{repo}/blobs/")
    event = from_user(emu.mention(f"explain {ref}", channel="C0KILL"), "U0KILL")
    await emu.http_event(a.events, event)
    # A slash command for the same image at the other replica: its reply is a delivery
    # attached to the job, posted through its response_url by whichever worker ends it.
    command = emu.command(ref, channel="C0KILLCMD")
    ack = await emu.http_command(b.events, command)
    assert ack.data["status"] == 200 and ack.data["json"]["response_type"] == "in_channel"

    async def running() -> bool:
        job = await cluster.queue.queue.job(key)
        attached = await cluster.queue.redis.llen("dockwise:jobs:deliveries:" + key)
        return (
            job is not None
            and job.worker_id is not None
            and proxy.held(f"/{repo}/blobs/") > 0
            and attached == 2
        )

    await until(running, "a worker to be reading the slow image, mention and command attached")
    job = await cluster.queue.queue.job(key)
    assert job is not None and job.worker_id is not None
    pid = int(job.worker_id.rsplit("-", 2)[1])
    (victim,) = [w for w in cluster.workers if w.popen.pid == pid]
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(victim.popen.wait, 30)
    proxy.release(f"/{repo}/blobs/")
    await emu.wait_for(lambda r: final_text(emu, "C0KILL") is not None, within=120)
    text = final_text(emu, "C0KILL")
    assert text is not None and repo in text and "alpine" in text.lower()
    assert len(emu.posts("C0KILL")) == 1
    rid = str(command["response_url"]).rsplit("/", 1)[-1]

    def command_answers() -> list[Any]:
        return [
            r
            for r in emu.records
            if r.kind == "response_url" and r.name == rid and "alpine" in json.dumps(r.data).lower()
        ]

    await emu.wait_for(lambda r: bool(command_answers()), within=120)
    job = await cluster.queue.queue.job(key)
    assert job is not None and job.attempts == 2 and job.worker_id is not None
    (survivor,) = [w for w in cluster.workers if w is not victim]
    assert job.worker_id.rsplit("-", 2)[1] == str(survivor.popen.pid)
    (answer,) = command_answers()  # the job is over: no second answer is coming
    assert answer.ok and answer.data["replace_original"] is True
    assert answer.data["response_type"] == "in_channel" and repo in json.dumps(answer.data)


async def test_compares_and_dockerfiles_run_on_the_workers(
    cluster: Cluster, registry: RegistryServer
) -> None:
    emu, proxy, (a, b) = cluster.emulator, cluster.proxy, cluster.web
    repo = f"replicas{uuid.uuid4().hex[:8]}/cmp"
    base_layer = make_layer({"etc/os-release": b"ID=debian\nVERSION_ID=12\n"})
    push_image(registry.pusher(), repo, "base", [base_layer])
    push_image(registry.pusher(), repo, "app", [base_layer, make_layer({"srv/a": b"a" * 999})])
    first, second = f"{proxy.host}/{repo}:base", f"{proxy.host}/{repo}:app"
    key = compare_key(first, second, "auto", None)

    # 1. "compare A and B" mentioned at one replica, "/image-explain A vs B" at the other:
    # one job; the worker running it is SIGKILLed; the other worker runs it again, and the
    # mention and the command are each answered once.
    proxy.hold(f"/{repo}/blobs/")
    mention = from_user(emu.mention(f"compare {first} and {second}", channel="C0CMP"), "U0CMP")
    await emu.http_event(a.events, mention)
    command = emu.command(f"{first} vs {second}", channel="C0CMPCMD")
    ack = await emu.http_command(b.events, command)
    assert ack.data["status"] == 200 and ack.data["json"]["response_type"] == "in_channel"

    async def running() -> bool:
        job = await cluster.queue.queue.job(key)
        attached = await cluster.queue.redis.llen("dockwise:jobs:deliveries:" + key)
        counts = await cluster.queue.redis.pubsub_numsub(progress_channel(key))
        return (
            job is not None
            and job.worker_id is not None
            and proxy.held(f"/{repo}/blobs/") > 0
            and attached == 1
            and counts[0][1] == 1  # the mention's replica waits for the job
        )

    await until(running, "a worker comparing, the command attached, the mention waiting")
    job = await cluster.queue.queue.job(key)
    assert job is not None and job.worker_id is not None
    pid = int(job.worker_id.rsplit("-", 2)[1])
    (victim,) = [w for w in cluster.workers if w.popen.pid == pid]
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(victim.popen.wait, 30)
    proxy.release(f"/{repo}/blobs/")
    await emu.wait_for(lambda r: final_text(emu, "C0CMP") is not None, within=120)
    text = final_text(emu, "C0CMP")
    assert text is not None and f"{first} vs {second}" in text, text
    assert len(emu.posts("C0CMP")) == 1
    rid = str(command["response_url"]).rsplit("/", 1)[-1]

    def command_answers() -> list[Any]:
        return [
            r
            for r in emu.records
            if r.kind == "response_url"
            and r.name == rid
            and f"{first} vs {second}" in json.dumps(r.data)
        ]

    await emu.wait_for(lambda r: bool(command_answers()), within=120)
    job = await cluster.queue.queue.job(key)
    assert job is not None and job.attempts == 2 and job.worker_id is not None
    (survivor,) = [w for w in cluster.workers if w is not victim]
    assert job.worker_id.rsplit("-", 2)[1] == str(survivor.popen.pid)
    (answer,) = command_answers()
    assert answer.ok and answer.data["replace_original"] is True
    assert answer.data["response_type"] == "in_channel"

    # 2. A Dockerfile whose base is in the registry, mentioned at a web replica: the
    # worker reads the base, so the answer carries its summary (a web replica reading it
    # would have said it is not on the allowlist).
    dockerfile = f"```FROM {first}\nRUN apt-get update && apt-get install -y curl\n```"
    asked = from_user(emu.mention(f"what does this do?\n{dockerfile}", channel="C0DF"), "U0DF")
    await emu.http_event(b.events, asked)
    await emu.wait_for(lambda r: bool(ok_posts(emu, "C0DF")), within=120)
    shown = json.dumps(emu.current("C0DF"))
    assert "debian 12" in shown and "allowlist" not in shown, shown[:2000]
    jobs = [
        await cluster.queue.queue.job(k.decode().rsplit(":", 1)[-1])
        for k in await cluster.queue.redis.keys("saq:job:*")
    ]
    (made,) = [j for j in jobs if j is not None and j.function == "dockerfile"]
    assert made.worker_id is not None and made.attempts == 1
    assert made.worker_id.rsplit("-", 2)[1] == str(survivor.popen.pid)
