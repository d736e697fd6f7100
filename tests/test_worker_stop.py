"""Workers that stop (issue 13): real ``dockwise serve --role worker`` processes on one
real redis-server, one real docker-registry behind a counting, gated proxy, the Slack
emulator receiving the workers' response_url posts.

Asserted: a SIGTERM lets the running job finish on its worker (no attempt lost, no new
job taken); a SIGTERM whose grace runs out hands the job to the other worker without
counting an attempt; a worker SIGKILLed while posting a finished job's deliveries leaves
the unposted ones to the job's retry, which posts each once without reading the image
again and does not repeat the post that was in flight; a job whose last attempt times
out answers each attached asker with one "took too long" reply.

Every wait is a condition with a deadline (Redis state, held proxy requests, emulator
records, process exit, /readyz), never a sleep of a guessed length.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from saq.job import Status

from adapters.slack_blocks import render_messages
from bot.errors import DockwiseError
from bot.jobs import Delivery, JobQueue, finished_reply, job_key, posting_keys
from bot.reply import Reply
from tests.emulators.slack import BOT_TOKEN, SIGNING_SECRET, Record, SlackEmulator
from tests.fixtures.gated_proxy import GatedProxy
from tests.fixtures.redis import RedisServer
from tests.fixtures.registry import RegistryServer, make_layer, push_image
from tests.test_replicas import READY_WITHIN, Proc, ready, start_proc, until

pytestmark = pytest.mark.services


@dataclass
class Stack:
    emulator: SlackEmulator
    proxy: GatedProxy  # in front of the registry
    redis_url: str
    queue: JobQueue  # the asking replica's handle (and the test's view of the jobs)
    tmp: Path
    procs: list[Proc]

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "DOCKWISE_REDIS_URL": self.redis_url,
            "DOCKWISE_HOST": "127.0.0.1",
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "DOCKWISE_SLACK_API_URL": self.emulator.api_url,
            "DOCKWISE_INSECURE_REGISTRIES": self.proxy.host,
            # short, so a dead worker's job restarts within seconds
            "DOCKWISE_JOB_HEARTBEAT": "4",
            "DOCKWISE_JOB_SWEEP": "2",
            **extra,
        }

    async def workers(self, count: int, **extra: str) -> list[Proc]:
        started = [
            start_proc("worker", self.env(**extra), self.tmp, len(self.procs) + n)
            for n in range(count)
        ]
        self.procs += started
        async with aiohttp.ClientSession() as session:
            for proc in started:
                await until(functools.partial(ready, session, proc), "readiness", READY_WITHIN)
        return started

    def logs(self) -> str:
        return "\n".join(f"--- {p.role}:{p.port}\n{p.tail()}" for p in self.procs)


@pytest.fixture
async def stack(
    own_redis: RedisServer, registry: RegistryServer, tmp_path: Path
) -> AsyncIterator[Stack]:
    emulator = SlackEmulator()
    await emulator.start()
    proxy = await GatedProxy(registry.url).start()
    queue = JobQueue(own_redis.url, heartbeat=4, sweep=2)
    await queue.connect()
    made = Stack(emulator, proxy, own_redis.url, queue, tmp_path, [])
    try:
        yield made
    except BaseException:
        print(made.logs())
        raise
    finally:
        for proc in made.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
        for proc in made.procs:
            proc.popen.wait()
        await queue.close()
        await proxy.stop()
        await emulator.stop()


def push(registry: RegistryServer, proxy: GatedProxy, name: str, distro: str) -> str:
    """A one-layer image in the registry; its reference through the proxy."""
    repo = f"{name}{uuid.uuid4().hex[:8]}/app"
    push_image(
        registry.pusher(), repo, "1", [make_layer({"etc/os-release": f"ID={distro}\n".encode()})]
    )
    return f"{proxy.host}/{repo}:1"


def command_target(emu: SlackEmulator) -> tuple[str, dict[str, Any]]:
    """A slash command's response_url (its in_channel ack already posted) and its
    delivery target."""
    url = emu.new_response_url()
    emu.set_original(url, {"response_type": "in_channel", "text": "Inspecting…"})
    return url, {"response_url": url, "channel_id": "C0GENERAL", "user_id": "U0ALICE"}


def posts_to(emu: SlackEmulator, response_url: str) -> list[Record]:
    rid = response_url.rsplit("/", 1)[-1]
    return [r for r in emu.records if r.kind == "response_url" and r.name == rid]


def answers(emu: SlackEmulator, response_url: str, text: str) -> list[Record]:
    return [r for r in posts_to(emu, response_url) if r.data.get("text") == text]


async def final_text(queue: JobQueue, key: str, ref: str) -> str:
    """The first message's text of the job's reply as a delivery shows it."""
    job = await queue.queue.job(key)
    assert job is not None and job.status.value == "complete", job
    return str(
        render_messages(finished_reply(ref, Reply.from_json(job.result["reply"])))[0]["text"]
    )


def pid_of(worker_id: str | None) -> int:
    assert worker_id is not None
    return int(worker_id.rsplit("-", 2)[1])


async def holder(stack: Stack, key: str, held: str, seen: int = 1) -> Proc:
    """Wait until a worker runs job ``key`` and reads the held blobs; that worker."""

    async def running() -> bool:
        job = await stack.queue.queue.job(key)
        return (
            job is not None
            and job.status.value == "active"
            and stack.proxy.held(held) >= seen
            and await stack.queue.redis.llen("dockwise:jobs:deliveries:" + key) >= 1
        )

    await until(running, "a worker reading the held image, a delivery attached")
    job = await stack.queue.queue.job(key)
    assert job is not None
    (proc,) = [p for p in stack.procs if p.popen.pid == pid_of(job.worker_id)]
    return proc


async def exited(proc: Proc, within: float = 60) -> int:
    return await asyncio.wait_for(asyncio.to_thread(proc.popen.wait), within)


async def not_ready(proc: Proc) -> bool:
    if proc.popen.poll() is not None:
        return True
    async with aiohttp.ClientSession() as session:
        return not await ready(session, proc)


async def test_a_sigterm_lets_the_running_job_finish_and_takes_no_new_job(
    stack: Stack, registry: RegistryServer
) -> None:
    emu, proxy = stack.emulator, stack.proxy
    ref = push(registry, proxy, "sigterm", "debian")
    key = job_key(ref, "auto", None)
    proxy.hold("/blobs/")
    (worker,) = await stack.workers(1)
    url, target = command_target(emu)
    await stack.queue.explain_later(ref, delivery=Delivery("slack", target))
    waiting = asyncio.create_task(stack.queue.explain(ref))
    assert await holder(stack, key, "/blobs/") is worker

    worker.popen.send_signal(signal.SIGTERM)
    await until(functools.partial(not_ready, worker), "the worker to report it is stopping")
    # A new image now: the stopping worker does not start it (at most hands it back).
    later = push(registry, proxy, "later", "alpine")
    later_key = job_key(later, "auto", None)
    await stack.queue.explain_later(later, delivery=Delivery("slack", command_target(emu)[1]))
    assert worker.popen.poll() is None  # still finishing its job (grace 60 s)
    proxy.release("/blobs/")
    assert await exited(worker) == 0
    reply = await asyncio.wait_for(waiting, 30)
    assert ref.split("/", 1)[1].split(":")[0] in reply.title
    final = await final_text(stack.queue, key, ref)
    (answer,) = answers(emu, url, final)
    assert answer.ok
    job = await stack.queue.queue.job(key)
    assert job is not None and job.attempts == 1 and pid_of(job.worker_id) == worker.popen.pid
    assert "handed_back" not in job.meta
    untouched = await stack.queue.queue.job(later_key)
    assert untouched is not None and untouched.status.value == "queued"
    assert untouched.attempts == 0, untouched  # taken in the instant of the stop: handed back
    assert "worker stopping" in worker.tail()


async def test_a_sigterm_past_the_grace_hands_the_job_to_another_worker(
    stack: Stack, registry: RegistryServer
) -> None:
    emu, proxy = stack.emulator, stack.proxy
    ref = push(registry, proxy, "handback", "alpine")
    key = job_key(ref, "auto", None)
    proxy.hold("/blobs/")
    workers = await stack.workers(2, DOCKWISE_WORKER_GRACE="1")
    url, target = command_target(emu)
    await stack.queue.explain_later(ref, delivery=Delivery("slack", target))
    waiting = asyncio.create_task(stack.queue.explain(ref))
    victim = await holder(stack, key, "/blobs/")
    (other,) = [w for w in workers if w is not victim]

    victim.popen.send_signal(signal.SIGTERM)
    assert await exited(victim) == 0  # grace over: handed back, not waited for
    await holder(stack, key, "/blobs/", seen=2)  # the other worker reads the image again
    job = await stack.queue.queue.job(key)
    assert job is not None and pid_of(job.worker_id) == other.popen.pid
    proxy.release("/blobs/")
    await asyncio.wait_for(waiting, 60)
    final = await final_text(stack.queue, key, ref)
    await until(lambda: _has(answers(emu, url, final)), "the answer")
    job = await stack.queue.queue.job(key)
    assert job is not None and job.attempts == 1 and job.meta.get("handed_back") == 1
    assert pid_of(job.worker_id) == other.popen.pid
    (answer,) = answers(emu, url, final)  # the job is over: no second answer is coming
    assert answer.ok and answer.data["replace_original"] is True
    assert "handed back" in victim.tail()


async def _has(records: list[Record]) -> bool:
    return bool(records)


async def test_a_worker_killed_while_posting_leaves_the_rest_to_the_retry(
    stack: Stack, registry: RegistryServer
) -> None:
    """Two commands on one job; the first one's answer is held on its way to Slack and
    the worker posting it is SIGKILLed: the retry posts the second from the kept result
    (no second read of the image) and does not repeat the first (at most once)."""
    emu, proxy = stack.emulator, stack.proxy
    ref = push(registry, proxy, "postkill", "debian")
    key = job_key(ref, "auto", None)
    posts = await GatedProxy(emu.base).start()
    try:
        first_real, first_target = command_target(emu)
        first_rid = first_real.rsplit("/", 1)[-1]
        first_target["response_url"] = f"http://{posts.host}/response/{first_rid}"
        second, second_target = command_target(emu)
        proxy.hold("/blobs/")
        posts.hold(first_rid)
        await stack.workers(2)
        await stack.queue.explain_later(ref, delivery=Delivery("slack", first_target))
        await stack.queue.explain_later(ref, delivery=Delivery("slack", second_target))
        waiting = asyncio.create_task(stack.queue.explain(ref))
        victim = await holder(stack, key, "/blobs/")
        job = await stack.queue.queue.job(key)
        assert job is not None
        posting, inflight, _ = posting_keys(key, job.queued)
        proxy.release("/blobs/")

        async def posting_the_first() -> bool:
            return (
                await stack.queue.redis.llen(inflight) == 1
                and await stack.queue.redis.llen(posting) == 1
                and posts.held(first_rid) >= 1
            )

        await until(posting_the_first, "the first answer on its way, the second drained")
        blob_gets = proxy.count("GET", "/blobs/")
        victim.popen.kill()
        await exited(victim)
        reply = await asyncio.wait_for(waiting, 90)
        final = str(render_messages(finished_reply(ref, reply))[0]["text"])
        await until(lambda: _has(answers(emu, second, final)), "the second answer", 90)
        job = await stack.queue.queue.job(key)
        assert job is not None and job.status.value == "complete" and job.attempts == 2
        assert pid_of(job.worker_id) != victim.popen.pid
        (answer,) = answers(emu, second, final)
        assert answer.ok and answer.data["replace_original"] is True
        assert proxy.count("GET", "/blobs/") == blob_gets  # the retry did not read the image
        assert await stack.queue.redis.llen(posting) == 0
        # The post that was in flight when its worker died is not repeated...
        assert answers(emu, first_real, final) == []
        posts.release(first_rid)
        # ...so the first asker gets at most the one held post, when it goes on.
        assert len(answers(emu, first_real, final)) <= 1
    finally:
        await posts.stop()


async def test_a_last_attempt_timing_out_tells_each_asker_once(
    stack: Stack, registry: RegistryServer, own_redis: RedisServer
) -> None:
    emu, proxy = stack.emulator, stack.proxy
    ref = push(registry, proxy, "timeout", "debian")
    key = job_key(ref, "auto", None)
    asking = JobQueue(own_redis.url, job_timeout=3, attempts=1, heartbeat=4, sweep=2)
    await asking.connect()
    try:
        proxy.hold("/blobs/")
        await stack.workers(1)
        targets = [command_target(emu) for _ in range(2)]
        for _, target in targets:
            await asking.explain_later(ref, delivery=Delivery("slack", target))
        waiting = asyncio.create_task(asking.explain(ref))
        with pytest.raises(DockwiseError) as failed:
            await asyncio.wait_for(waiting, 60)
        assert "took too long; try again" in str(failed.value)
        for url, _ in targets:
            await until(functools.partial(_said, emu, url, "took too long"), "the error reply")
        job = await asking.queue.job(key)
        assert job is not None and job.status.value == "failed" and job.attempts == 1
        proxy.release("/blobs/")
        # Nothing else is coming: the job is over and its deliveries drained once.
        assert await asking.redis.llen("dockwise:jobs:deliveries:" + key) == 0
        for url, _ in targets:
            sent = posts_to(emu, url)
            errors = [r for r in sent if "took too long" in json.dumps(r.data)]
            assert len(errors) == 1, sent
            assert BOT_TOKEN not in json.dumps([r.data for r in sent])
    finally:
        await asking.close()


async def test_a_job_swept_after_its_last_attempt_tells_each_asker_once(
    stack: Stack, registry: RegistryServer, own_redis: RedisServer
) -> None:
    """The worker running a job's only attempt is SIGKILLed: the other worker's sweep
    gives the job up and answers its deliveries "took too long", once each."""
    emu, proxy = stack.emulator, stack.proxy
    ref = push(registry, proxy, "swept", "debian")
    key = job_key(ref, "auto", None)
    asking = JobQueue(own_redis.url, attempts=1, heartbeat=4, sweep=2)
    await asking.connect()
    try:
        proxy.hold("/blobs/")
        await stack.workers(2)
        targets = [command_target(emu) for _ in range(2)]
        for _, target in targets:
            await asking.explain_later(ref, delivery=Delivery("slack", target))
        victim = await holder(stack, key, "/blobs/")
        victim.popen.kill()
        await exited(victim)
        await until(
            functools.partial(_job_status, asking, key, "aborted"), "the job to be given up", 60
        )
        for url, _ in targets:
            await until(functools.partial(_said, emu, url, "took too long"), "the error reply")
        job = await asking.queue.job(key)
        assert job is not None and job.attempts == 1
        proxy.release("/blobs/")
        for url, _ in targets:
            sent = posts_to(emu, url)
            assert len([r for r in sent if "took too long" in json.dumps(r.data)]) == 1, sent
    finally:
        await asking.close()


async def _job_status(queue: JobQueue, key: str, status: str) -> bool:
    job = await queue.queue.job(key)
    return job is not None and job.status.value == status


async def test_a_sweep_leaves_a_job_being_dequeued_to_its_worker(own_redis: RedisServer) -> None:
    """saq's race: a job moved to the active list by a worker's dequeue is still QUEUED
    until that worker marks it ACTIVE. A sweep then leaves it alone; only when it is
    unchanged at the next sweep (its worker died in between) is it queued again, its
    attempt not counted."""
    from saq import Job
    from saq.utils import now

    queue = JobQueue(own_redis.url, sweep=1)
    await queue.connect()
    saq = queue.queue
    lock = saq.namespace("sweep")
    try:
        for marked in (True, False):
            key = uuid.uuid4().hex
            await saq.enqueue(Job(function="explain", key=key, timeout=60, heartbeat=30))
            dequeued = await saq.dequeue(timeout=1)  # a worker's BLMOVE, no ACTIVE mark yet
            assert dequeued is not None and dequeued.key == key
            assert await saq.sweep(lock=1, abort=0.2) == []
            if marked:  # the live worker marks it, as saq's Worker.process does
                dequeued.started = now()
                dequeued.attempts += 1
                await dequeued.update(status=Status.ACTIVE)
            await queue.redis.delete(lock)  # the next sweep, without waiting for the lock
            swept = await saq.sweep(lock=1, abort=0.2)
            job = await saq.job(key)
            assert job is not None
            if marked:
                assert swept == [] and job.status is Status.ACTIVE and job.attempts == 1
            else:
                assert swept == [saq.job_id(key)]
                assert job.status is Status.QUEUED and job.attempts == 0
                assert await saq.count("queued") == 1
                await saq.dequeue(timeout=1)  # out of the way of the next round
            await queue.redis.delete(lock)
    finally:
        await queue.close()


async def _said(emu: SlackEmulator, response_url: str, words: str) -> bool:
    return any(words in json.dumps(r.data) for r in posts_to(emu, response_url))


def test_worker_grace_is_a_setting() -> None:
    from bot.config import Settings

    assert Settings(_env_file=None).worker_grace == 60.0
    with pytest.raises(ValueError):
        Settings(_env_file=None, DOCKWISE_WORKER_GRACE="-1")
