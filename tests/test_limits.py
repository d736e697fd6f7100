"""Rate limits, the explanation queue and timeouts, with real asyncio tasks.

Tasks block on events the test controls; a task signals ``started`` right before entering
``admission.explanation`` and runs on (no await in between) until it either holds a slot,
waits on the semaphore or is refused, so when the test resumes, the task is in that state.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from bot.config import Settings
from bot.engine import Asker, Engine
from bot.errors import Busy, InvalidInput, TimedOut
from bot.knowledge import KnowledgeBase
from bot.limits import Admission, RateLimited, with_timeout
from bot.reply import ReplyKind
from tests.fixtures.redis import RedisServer
from tests.fixtures.router import seed_router

USER_REFUSAL = "You're asking faster than I can answer: try again in a few seconds."
BUSY = "I'm busy explaining other images: try again shortly."


async def ask(admission: Admission, user: str, channel: str | None = "C1") -> None:
    async with admission.question("slack", user, channel):
        pass


async def test_user_rate_limit_refuses_only_that_user() -> None:
    admission = Admission()  # 10 questions a minute per user by default
    for _ in range(10):
        await ask(admission, "alice")
    with pytest.raises(RateLimited) as caught:
        await ask(admission, "alice")
    assert str(caught.value) == USER_REFUSAL
    assert caught.value.kind == "rate_limited"
    await ask(admission, "bob")  # same channel, another user: still fine
    await asyncio.wait_for(ask(admission, "bob", "C2"), timeout=5)
    with pytest.raises(RateLimited):  # alice stays limited in every channel
        await ask(admission, "alice", "C2")


async def test_same_user_id_on_another_platform_is_another_user() -> None:
    admission = Admission(questions_per_user=1)
    async with admission.question("slack", "U1", "C1"):
        pass
    with pytest.raises(RateLimited):
        async with admission.question("slack", "U1", "C1"):
            pass
    async with admission.question("discord", "U1", "C1"):
        pass


async def test_channel_rate_limit() -> None:
    admission = Admission()  # 30 a minute per channel by default
    for n in range(30):
        await ask(admission, f"user{n}", "busy-channel")
    with pytest.raises(RateLimited, match="This channel is asking faster"):
        await ask(admission, "newcomer", "busy-channel")
    await ask(admission, "newcomer", "quiet-channel")
    await ask(admission, "newcomer", None)  # no channel (e.g. a terminal): user limit only


async def test_a_refusal_costs_nothing() -> None:
    admission = Admission(questions_per_user=2, questions_per_channel=3)
    await ask(admission, "alice", "C")
    await ask(admission, "alice", "C")
    for _ in range(5):  # refused by her own bucket: the channel bucket is not touched
        with pytest.raises(RateLimited, match="You're asking"):
            await ask(admission, "alice", "C")
    await ask(admission, "bob", "C")  # channel had room for exactly one more
    with pytest.raises(RateLimited, match="This channel"):
        await ask(admission, "carol", "C")


async def test_explanations_have_their_own_per_user_rate() -> None:
    admission = Admission(explanations_per_user=4)
    for _ in range(4):
        async with admission.explanation("discord", "dave", "C"):
            pass
    with pytest.raises(RateLimited, match="explain a lot of images"):
        async with admission.explanation("discord", "dave", "C"):
            pass
    async with admission.explanation("discord", "erin", "C"):
        pass
    await ask(admission, "dave")  # questions are a separate budget


@dataclass
class Worker:
    """A task holding (or waiting for) an explanation slot until ``release`` is set."""

    admission: Admission
    user: str
    release: asyncio.Event
    peaks: list[int]
    started: asyncio.Event = field(default_factory=asyncio.Event)
    inside: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self.started.set()
        async with self.admission.explanation("slack", self.user, "C"):
            self.peaks.append(self.admission.gate.running)
            self.inside.set()
            await self.release.wait()

    async def start(self) -> Worker:
        self.task = asyncio.create_task(self.run())
        await self.started.wait()
        return self


async def test_concurrency_and_queue_bounds() -> None:
    admission = Admission(max_concurrent=2, max_waiting=3)
    release = asyncio.Event()
    peaks: list[int] = []

    def worker(user: str) -> Worker:
        return Worker(admission, user, release, peaks)

    running = [await worker(f"r{n}").start() for n in range(2)]
    await asyncio.wait_for(asyncio.gather(*(w.inside.wait() for w in running)), 5)
    waiting = [await worker(f"w{n}").start() for n in range(3)]
    assert (admission.gate.running, admission.gate.waiting) == (2, 3)
    assert not any(w.inside.is_set() for w in waiting)

    with pytest.raises(Busy) as caught:  # full: refused at once, not queued
        async with admission.explanation("slack", "late", "C"):
            pass
    assert str(caught.value) == BUSY
    assert caught.value.kind == "busy"
    with pytest.raises(Busy, match="still explaining an image for you"):
        async with admission.explanation("slack", "r0", "C"):  # one at a time per user
            pass
    assert admission.gate.waiting == 3

    release.set()
    tasks = [w.task for w in running + waiting if w.task is not None]
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert len(peaks) == 5
    assert max(peaks) == 2
    assert (admission.gate.running, admission.gate.waiting) == (0, 0)
    async with admission.explanation("slack", "late", "C"):  # room again
        pass


async def test_a_cancelled_waiter_frees_its_place_in_line() -> None:
    admission = Admission(max_concurrent=1, max_waiting=1)
    release = asyncio.Event()
    holder = await Worker(admission, "a", release, []).start()
    await asyncio.wait_for(holder.inside.wait(), 5)
    waiter = await Worker(admission, "b", release, []).start()
    with pytest.raises(Busy):
        async with admission.explanation("slack", "c", "C"):
            pass
    assert waiter.task is not None
    waiter.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter.task
    assert admission.gate.waiting == 0
    replacement = await Worker(admission, "c", release, []).start()
    assert admission.gate.waiting == 1
    release.set()
    assert holder.task is not None and replacement.task is not None
    await asyncio.wait_for(asyncio.gather(holder.task, replacement.task), 5)
    assert replacement.inside.is_set() and not waiter.inside.is_set()


async def test_being_busy_costs_no_explanation_budget() -> None:
    admission = Admission(explanations_per_user=1, max_concurrent=1, max_waiting=0)
    release = asyncio.Event()
    holder = await Worker(admission, "a", release, []).start()
    await asyncio.wait_for(holder.inside.wait(), 5)
    for _ in range(3):
        with pytest.raises(Busy, match="busy explaining other images"):
            async with admission.explanation("slack", "b", "C"):
                pass
    release.set()
    assert holder.task is not None
    await asyncio.wait_for(holder.task, 5)
    async with admission.explanation("slack", "b", "C"):  # b's one explanation is intact
        pass
    with pytest.raises(RateLimited):
        async with admission.explanation("slack", "b", "C"):
            pass


async def test_waiting_in_line_is_bounded_by_the_explain_timeout() -> None:
    admission = Admission(Settings(explain_timeout=0.05), max_concurrent=1, max_waiting=4)
    release = asyncio.Event()
    holder = await Worker(admission, "a", release, []).start()
    await asyncio.wait_for(holder.inside.wait(), 5)
    with pytest.raises(Busy) as caught:
        async with admission.explanation("slack", "b", "C"):
            pass
    assert str(caught.value) == BUSY
    assert admission.gate.waiting == 0
    release.set()
    assert holder.task is not None
    await asyncio.wait_for(holder.task, 5)


async def test_with_timeout_names_what_was_slow() -> None:
    never = asyncio.Event()
    with pytest.raises(TimedOut) as caught:
        await with_timeout(never.wait(), 0.05, "looking up the image in the registry")
    assert str(caught.value) == "Looking up the image in the registry took longer than 0.05 s."
    assert caught.value.kind == "timeout"

    async def answer() -> int:
        return 42

    assert await with_timeout(answer(), 60, "answering") == 42


async def test_with_timeout_passes_other_timeouts_through() -> None:
    async def inner_timeout() -> None:
        raise TimeoutError("the coroutine's own timeout")

    with pytest.raises(TimeoutError, match="own timeout") as caught:
        await with_timeout(inner_timeout(), 60, "anything")
    assert not isinstance(caught.value, TimedOut)


async def test_rates_come_from_the_settings() -> None:
    admission = Admission(Settings(rate_limit="2/minute", explain_rate_limit="1 per hour"))
    await ask(admission, "alice")
    await ask(admission, "alice")
    with pytest.raises(RateLimited, match="You're asking"):
        await ask(admission, "alice")
    async with admission.explanation("slack", "bob", "C"):
        pass
    with pytest.raises(RateLimited, match="explain a lot of images"):
        async with admission.explanation("slack", "bob", "C"):
            pass


async def test_several_windows_in_one_setting_all_hold() -> None:
    admission = Admission(Settings(rate_limit="5/minute;2/second"))
    await ask(admission, "alice")
    await ask(admission, "alice")
    with pytest.raises(RateLimited):  # the per-second window is full first
        await ask(admission, "alice")


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("DOCKWISE_RATE_LIMIT", "rate_limit", "lots"),
        ("DOCKWISE_RATE_LIMIT", "rate_limit", "20/fortnight"),
        ("DOCKWISE_EXPLAIN_RATE_LIMIT", "explain_rate_limit", "0/minute"),
    ],
)
def test_a_bad_rate_is_one_clear_line(name: str, field: str, value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Admission(Settings.model_validate({field: value}))
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r} is not a rate limit")
    assert "20/minute" in message and "\n" not in message


def test_a_bad_rate_stops_dockwise_serve_with_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DOCKWISE_RATE_LIMIT": "twenty a minute",
        "DOCKWISE_CACHE_DIR": str(seed_router(tmp_path)),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": "s3cret",
        "DOCKWISE_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "DOCKWISE_RATE_LIMIT='twenty a minute' is not a rate limit" in lines[-1]
    assert "Traceback" not in done.stderr


@pytest.mark.services
async def test_a_user_rate_limit_holds_across_engines_sharing_redis(
    redis_server: RedisServer,
) -> None:
    settings = Settings(redis_url=redis_server.url, rate_limit="3/minute")
    kb = KnowledgeBase.load()
    one, two = (
        Engine(knowledge=kb, admission=Admission(settings)),
        Engine(knowledge=kb, admission=Admission(settings)),
    )
    user = f"U{uuid.uuid4().hex[:10]}"  # the session Redis is shared: a user of our own
    asker = Asker("slack", user, f"C{user}")
    answers = [
        await engine.handle("what is a container?", asker=asker) for engine in (one, two, one)
    ]
    assert all(reply.kind is not ReplyKind.ERROR for reply in answers)
    for engine in (two, one):
        refused = await engine.handle("what is a container?", asker=asker)
        assert refused.kind is ReplyKind.ERROR
        assert USER_REFUSAL in refused.plain_text()
    other = await two.handle("what is a container?", asker=Asker("slack", user + "x", f"C{user}"))
    assert other.kind is not ReplyKind.ERROR
    with redis.Redis.from_url(redis_server.url) as client:  # the window lives in Redis
        (key,) = client.keys(f"dockwise:limits*/user/slack/{user}/*")
        assert 0 < client.ttl(key) <= 60
    for engine in (one, two):
        await engine.aclose()


@pytest.mark.services
async def test_rate_limits_count_locally_while_redis_is_down(own_redis: RedisServer) -> None:
    admission = Admission(Settings(redis_url=own_redis.url, rate_limit="2/minute"))
    await ask(admission, "alice")
    own_redis.stop()
    await ask(admission, "alice")  # Redis down: answered, counted in this process
    await ask(admission, "alice")
    with pytest.raises(RateLimited):
        await ask(admission, "alice")


async def test_timeout_names_the_stage_reported_by_nested_work_and_child_tasks() -> None:
    from bot.limits import report_stage

    blocked = asyncio.Event()

    async def download() -> None:
        report_stage("downloading layer sha256:abc from registry.test")
        await blocked.wait()  # never set: the deadline ends it

    async def explain() -> None:
        report_stage("looking up app:1 in the registry registry.test")
        await asyncio.gather(asyncio.create_task(download()))

    with pytest.raises(TimedOut) as raised:
        await with_timeout(with_timeout(explain(), 10, "explaining app:1"), 0.05, "outer")
    assert str(raised.value) == (
        "Downloading layer sha256:abc from registry.test took longer than 0.05 s."
    )
