"""Slack event de-duplication by ``event_id`` (issue 13): real slack-bolt in HTTP mode
against the Slack emulator, the ledger in a real redis-server or in memory.

A retry (``X-Slack-Retry-Num``) is answered when no replica answered the first delivery,
and never twice. Waiting is on conditions (records, ledger states), never on sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from pydantic import SecretStr

from adapters.slack import SlackAdapter, SlackSettings, run_slack
from bot.config import Settings
from bot.deliveries import Claim, MemoryLedger, RedisLedger, Seen, make_ledger
from bot.engine import Engine
from tests.emulators.slack import SlackEmulator, new_event_id
from tests.fixtures.redis import RedisServer
from tests.test_slack import (  # noqa: F401  (fixtures)
    catalog,
    emulator,
    engine,
    knowledge_engine,
    slack_settings,
)

RETRY = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
RETRY2 = {"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"}


@dataclass
class Replica:
    url: str
    adapter: SlackAdapter
    runner: web.AppRunner


async def start_replica(
    bot_engine: Engine, settings: SlackSettings, shared: Settings | None = None
) -> Replica:
    app = web.Application()
    ledger = make_ledger(shared if shared is not None else Settings(_env_file=None))
    adapter = await run_slack(bot_engine, settings, web_app=app, ledger=ledger)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return Replica(f"http://127.0.0.1:{port}/slack/events", adapter, runner)


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 15) -> None:
    """Poll ``check`` until it holds (a condition with a deadline, not a timed wait)."""
    end = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def two_replicas(
    emulator: SlackEmulator,  # noqa: F811
    engine: Engine,  # noqa: F811
    redis_server: RedisServer,
) -> AsyncIterator[list[Replica]]:
    """Two bot replicas (two SlackAdapters, one engine each way) on one Redis."""
    settings = slack_settings(emulator, socket=False)
    shared = Settings(_env_file=None, redis_url=SecretStr(redis_server.url))
    replicas = [await start_replica(engine, settings, shared) for _ in range(2)]
    try:
        yield replicas
    finally:
        for replica in replicas:
            await replica.runner.cleanup()


@pytest.fixture
async def one_replica(
    emulator: SlackEmulator,  # noqa: F811
    engine: Engine,  # noqa: F811
) -> AsyncIterator[Replica]:
    """One replica without Redis: the in-process ledger."""
    replica = await start_replica(engine, slack_settings(emulator, socket=False))
    try:
        yield replica
    finally:
        await replica.runner.cleanup()


def answers(emu: SlackEmulator, channel: str) -> list[Any]:
    return [r for r in emu.posts(channel) if r.ok]


@pytest.mark.services
async def test_the_same_event_at_two_replicas_is_answered_once(
    two_replicas: list[Replica],
    emulator: SlackEmulator,  # noqa: F811
) -> None:
    emu, (a, b) = emulator, two_replicas
    event, event_id = emu.mention("why FROM ubuntu?"), new_event_id()
    first, second = await asyncio.gather(
        emu.http_event(a.url, event, event_id=event_id),
        emu.http_event(b.url, event, event_id=event_id, headers=RETRY),
    )
    assert first.data["status"] == second.data["status"] == 200
    await emu.wait_post("C0GENERAL")
    ledger = a.adapter.ledger
    assert isinstance(ledger, RedisLedger)
    await until(lambda: _is(ledger, event_id, Seen.DONE), "the event to be marked done")
    late = await emu.http_event(b.url, event, event_id=event_id, headers=RETRY2)
    assert late.data["status"] == 200
    assert late.data["headers"].get("x-slack-no-retry") == "1"
    # A later question is answered, and the duplicates still were not.
    await emu.http_event(b.url, emu.mention("is a container a VM?", channel="C0OTHER"))
    await emu.wait_post("C0OTHER")
    assert len(answers(emu, "C0GENERAL")) == 1


@pytest.mark.services
async def test_a_retry_at_another_replica_answers_when_the_first_post_failed(
    two_replicas: list[Replica],
    emulator: SlackEmulator,  # noqa: F811
) -> None:
    emu, (a, b) = emulator, two_replicas
    ledger = a.adapter.ledger
    event, event_id = emu.mention("why FROM ubuntu?"), new_event_id()
    emu.fail_next("chat.postMessage", count=2)  # the answer, then the apology
    await emu.http_event(a.url, event, event_id=event_id)
    await emu.wait_for(lambda r: len(emu.refused()) >= 2)
    await until(lambda: _is(ledger, event_id, None), "the failed claim to be released")
    assert answers(emu, "C0GENERAL") == []

    retry = await emu.http_event(b.url, event, event_id=event_id, headers=RETRY)
    assert retry.data["status"] == 200
    (answer,) = [r for r in await emu.wait_post("C0GENERAL", count=3) if r.ok]
    assert answer.data["thread_ts"] == event["ts"]
    await until(lambda: _is(ledger, event_id, Seen.DONE), "the event to be marked done")
    again = await emu.http_event(a.url, event, event_id=event_id, headers=RETRY2)
    assert again.data["headers"].get("x-slack-no-retry") == "1"
    await emu.http_event(a.url, emu.mention("is a container a VM?", channel="C0OTHER"))
    await emu.wait_post("C0OTHER")
    assert len(answers(emu, "C0GENERAL")) == 1


@pytest.mark.services
async def test_a_retry_after_the_first_delivery_died_is_answered(
    two_replicas: list[Replica],
    emulator: SlackEmulator,  # noqa: F811
    redis_server: RedisServer,
) -> None:
    emu, (a, b) = emulator, two_replicas
    ledger = a.adapter.ledger
    event, event_id = emu.mention("why FROM ubuntu?"), new_event_id()
    # A replica claimed the event and died: its claim is not renewed and runs out.
    async with aioredis.Redis.from_url(redis_server.url) as client:
        assert await client.set(f"dockwise:delivery:{event_id}", "dead-owner", px=800, nx=True)
    early = await emu.http_event(b.url, event, event_id=event_id, headers=RETRY)
    assert early.data["status"] == 200  # claimed (as far as anyone knows, alive): dropped
    await until(lambda: _is(ledger, event_id, None), "the dead claim to expire")
    assert answers(emu, "C0GENERAL") == []
    await emu.http_event(a.url, event, event_id=event_id, headers=RETRY2)
    (answer,) = await emu.wait_post("C0GENERAL")
    assert answer.ok and answer.data["thread_ts"] == event["ts"]
    await until(lambda: _is(ledger, event_id, Seen.DONE), "the event to be marked done")


async def test_without_redis_a_retry_answers_when_the_first_post_failed(
    one_replica: Replica,
    emulator: SlackEmulator,  # noqa: F811
) -> None:
    emu, bot = emulator, one_replica
    ledger = bot.adapter.ledger
    assert isinstance(ledger, MemoryLedger)
    event, event_id = emu.mention("why FROM ubuntu?"), new_event_id()
    emu.fail_next("chat.postMessage", count=2)
    await emu.http_event(bot.url, event, event_id=event_id)
    await emu.wait_for(lambda r: len(emu.refused()) >= 2)
    await until(lambda: _is(ledger, event_id, None), "the failed claim to be released")
    await emu.http_event(bot.url, event, event_id=event_id, headers=RETRY)
    await emu.wait_post("C0GENERAL", count=3)
    await until(lambda: _is(ledger, event_id, Seen.DONE), "the event to be marked done")
    for headers in (RETRY, RETRY2):
        dropped = await emu.http_event(bot.url, event, event_id=event_id, headers=headers)
        assert dropped.data["headers"].get("x-slack-no-retry") == "1"
    await emu.http_event(bot.url, emu.mention("is a container a VM?", channel="C0OTHER"))
    await emu.wait_post("C0OTHER")
    assert len(answers(emu, "C0GENERAL")) == 1


@pytest.mark.services
async def test_a_live_claim_is_renewed_past_its_ttl(redis_server: RedisServer) -> None:
    async with aioredis.Redis.from_url(redis_server.url) as client:
        ledger = RedisLedger(client, claim_ttl=0.6)
        event_id = new_event_id()
        claim = await Claim.take(ledger, event_id)
        assert isinstance(claim, Claim)
        assert await Claim.take(ledger, event_id) is Seen.CLAIMED
        key = f"dockwise:delivery:{event_id}"
        taken = time.monotonic()
        async with claim.keep_alive():

            async def outlived_its_ttl() -> bool:
                # Without renewal the key expires 0.6 s after it was taken; every poll
                # must still see it claimed until three TTLs have passed.
                assert await ledger.state(event_id) is Seen.CLAIMED
                return time.monotonic() - taken > 3 * ledger.claim_ttl

            await until(outlived_its_ttl, "the claim to outlive three of its TTLs")
        # Left without done(): released, free for a retry.
        assert await ledger.state(event_id) is None
        claim = await Claim.take(ledger, event_id)
        assert isinstance(claim, Claim)
        await claim.done()
        assert await Claim.take(ledger, event_id) is Seen.DONE
        assert 0 < await client.ttl(key) <= 3600


async def _is(ledger: Any, event_id: str, state: Seen | None) -> bool:
    return bool(await ledger.state(event_id) is state)


@pytest.mark.services
async def test_while_redis_is_down_the_ledger_deduplicates_in_process(
    own_redis: RedisServer,
) -> None:
    async with aioredis.Redis.from_url(
        own_redis.url, socket_timeout=1.0, socket_connect_timeout=1.0
    ) as client:
        ledger = RedisLedger(client)
        before = new_event_id()
        claim = await Claim.take(ledger, before)
        assert isinstance(claim, Claim)
        own_redis.stop()  # like a crash
        event_id = new_event_id()
        claim = await Claim.take(ledger, event_id)
        assert isinstance(claim, Claim)  # still answered
        assert await Claim.take(ledger, event_id) is Seen.CLAIMED  # and only once
        await claim.done()
        assert await Claim.take(ledger, event_id) is Seen.DONE
