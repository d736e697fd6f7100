"""Workers post what the asking replica only handed over (issue 13): a Slack mention in HTTP
mode at a ``web`` replica, a Slack mention over Socket Mode and a Discord mention and slash
command over the gateway at a ``gateway`` replica, each explained by a separate ``worker``
process that edits the asker's placeholder with the progress and replaces it with the
reply, once.

Three ``dockwise serve`` processes on loopback (web, gateway, worker), one real
redis-server, one real docker-registry behind a gated proxy holding the image's blobs (so
the jobs run as long as the test needs), the Slack and Discord emulators speaking the wire
protocols to the real slack-bolt and discord.py. The asking processes are SIGKILLed once
their placeholders are up and their deliveries attached to the jobs: every later edit
(progress and reply) can only come from the worker. Every wait is a condition with a
deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.engine import Engine
from bot.jobs import DELIVERIES_PREFIX, JobQueue, JobWorker, job_key, progress_channel
from tests.emulators.discord import DiscordEmulator
from tests.emulators.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    SIGNING_SECRET,
    Record,
    SlackEmulator,
    new_event_id,
)
from tests.fixtures.gated_proxy import GatedProxy
from tests.fixtures.redis import RedisServer
from tests.fixtures.registry import RegistryServer, free_port, make_layer, push_image
from tests.test_jobs import (  # noqa: F401  (fixtures)
    SlackWeb,
    blind_explainer,
    proxy,
    queues,
    slack_web,
    subscribers,
    worker,
)
from tests.test_replicas import READY_WITHIN, Proc, ready, until
from tests.test_slack import (  # noqa: F401  (fixtures)
    catalog,
    emulator,
    engine,
    knowledge_engine,
)

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[1]
BLOBS = "/blobs/"


@dataclass
class Cluster:
    web: Proc
    gateway: Proc
    worker: Proc
    slack: SlackEmulator
    discord: DiscordEmulator
    proxy: GatedProxy
    redis_url: str

    def logs(self) -> str:
        procs = (self.web, self.gateway, self.worker)
        return "\n".join(f"--- {p.role}:{p.port}\n{p.tail()}" for p in procs)


def start(role: str, env: dict[str, str], tmp: Path) -> Proc:
    port = free_port()
    log = tmp / f"{role}.log"
    full = {
        k: v for k, v in os.environ.items() if not k.startswith(("DOCKWISE_", "SLACK_", "DISCORD_"))
    }
    full.update(env)
    full.update(
        DOCKWISE_PORT=str(port),
        DOCKWISE_CACHE_DIR=str(tmp / f"cache-{role}"),
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


@pytest.fixture
async def cluster(
    own_redis: RedisServer, registry: RegistryServer, tmp_path: Path
) -> AsyncIterator[Cluster]:
    slack = SlackEmulator()
    await slack.start()
    discord = DiscordEmulator()
    await discord.start()
    gated = await GatedProxy(registry.url).start()
    env = {
        "DOCKWISE_REDIS_URL": own_redis.url,
        "DOCKWISE_HOST": "127.0.0.1",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,  # the web replica: HTTP mode
        "SLACK_APP_TOKEN": APP_TOKEN,  # the gateway: Socket Mode
        "DOCKWISE_SLACK_API_URL": slack.api_url,
        "DISCORD_TOKEN": discord.token,
        "DOCKWISE_DISCORD_API_URL": discord.api_url,
        "DOCKWISE_DISCORD_GATEWAY_URL": discord.gateway_url,
        "DOCKWISE_INSECURE_REGISTRIES": gated.host,
        "DOCKWISE_EXPLAIN_RATE_LIMIT": "1000/minute",
        "DOCKWISE_WORKER_CONCURRENCY": "8",  # all six jobs run at once
        "DOCKWISE_EXPLAIN_TIMEOUT": "120",
    }
    procs = [start(role, env, tmp_path) for role in ("web", "gateway", "worker")]
    made = Cluster(procs[0], procs[1], procs[2], slack, discord, gated, own_redis.url)
    try:
        async with aiohttp.ClientSession() as session:
            for proc in procs:
                await until(functools.partial(ready, session, proc), "readiness", READY_WITHIN)
        await slack.wait_socket()
        await discord.wait_ready(1)
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
        await gated.stop()
        await discord.close()
        await slack.stop()


async def kill(proc: Proc) -> None:
    proc.popen.send_signal(signal.SIGKILL)
    await asyncio.to_thread(proc.popen.wait, 30)


def slack_edits(emu: SlackEmulator, channel: str, ts: str, after: int = 0) -> list[Record]:
    """Accepted chat.update calls on the placeholder ``ts`` (after record ``after``)."""
    return [
        r
        for r in emu.api_calls("chat.update")
        if r.ok and r.seq > after and r.data.get("channel") == channel and r.data.get("ts") == ts
    ]


def as_check(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


def is_progress(data: Any) -> bool:
    return "Inspecting" in json.dumps(data)


def discord_edits(emu: DiscordEmulator, path: str, after: int = 0) -> list[Any]:
    """Accepted PATCH calls on ``path`` (a channel message or an interaction's original)."""
    return [
        c for c in emu.calls[after:] if c.method == "PATCH" and c.path == path and c.status == 200
    ]


async def test_workers_edit_the_placeholders_of_mentions_and_gateway_commands(
    cluster: Cluster, registry: RegistryServer
) -> None:
    slack, discord, proxy = cluster.slack, cluster.discord, cluster.proxy  # noqa: F811
    refs: dict[str, str] = {}
    repos: dict[str, str] = {}
    for name in ("http", "dm", "socket", "mention", "command"):
        repo = repos[name] = f"deliver{uuid.uuid4().hex[:8]}/{name}"
        layer = make_layer({"etc/os-release": b"ID=debian\n", "srv/app": name.encode()})
        push_image(registry.pusher(), repo, "1", [layer])
        refs[name] = f"{proxy.host}/{repo}:1"
    missing = f"nosuch{uuid.uuid4().hex[:8]}/app"  # never pushed: the asker's mistake
    refs["missing"] = f"{proxy.host}/{missing}:1"
    keys = {name: job_key(ref, "auto", None) for name, ref in refs.items()}
    proxy.hold(BLOBS)  # every job stays inside its image until released
    proxy.hold(missing)  # ... or, for the missing one, inside its lookup

    # The asks: a Slack mention at the web replica (HTTP mode), one over Socket Mode at the
    # gateway, a Discord mention and a Discord slash command over the gateway.
    http_event, http_id = slack.mention(f"explain {refs['http']}", channel="C0HTTP"), new_event_id()
    answer = await slack.http_event(cluster.web.events, http_event, event_id=http_id)
    assert answer.data["status"] == 200
    dm_event, dm_id = (
        slack.dm(f"explain {refs['dm']}", channel="D0DAVE", user="U0DAVE"),
        new_event_id(),
    )
    await slack.http_event(cluster.web.events, dm_event, event_id=dm_id)
    error_event = {**slack.mention(f"explain {refs['missing']}", channel="C0ERR"), "user": "U0ERIN"}
    error_id = new_event_id()
    await slack.http_event(cluster.web.events, error_event, event_id=error_id)
    socket_event = {
        **slack.mention(f"explain {refs['socket']}", channel="C0SOCKET"),
        "user": "U0BOB",
    }
    socket_id = new_event_id()
    await slack.socket_event(socket_event, event_id=socket_id)
    # (Four people: one person's asks are taken one at a time per replica.)
    asked = await discord.user_message(
        f"{discord.mention()} explain {refs['mention']}", author=discord.owner
    )
    interaction = await discord.slash_command("image-explain", {"image": refs["command"]})

    async with aioredis.Redis.from_url(cluster.redis_url) as client:

        async def handed_over() -> bool:
            for key in keys.values():
                if await client.llen(DELIVERIES_PREFIX + key) != 1:
                    return False
            ids = (http_id, dm_id, error_id, socket_id)
            states = [await client.get(f"dockwise:delivery:{i}") for i in ids]
            return states == [b"done"] * 4  # the askers are done with the events

        await until(handed_over, "six deliveries attached and the Slack events done")

    # Each asker posted its placeholder and nothing else.
    placeholders: dict[str, str] = {}
    for channel in ("C0HTTP", "D0DAVE", "C0ERR", "C0SOCKET"):
        (posted,) = slack.posts(channel)
        assert posted.ok and is_progress(posted.data)
        placeholders[channel] = str(posted.data["_ts"])
    (placeholder,) = [
        m
        for m in discord.messages
        if m.get("message_reference", {}).get("message_id") == asked["id"]
    ]
    assert placeholder["content"].startswith("Inspecting")
    assert interaction.acknowledged == 4  # "Inspecting IMAGE …" at once, in the channel
    assert interaction.original is not None and is_progress(interaction.original["content"])

    # The askers die: whatever is edited or posted from now on, the worker did.
    await kill(cluster.web)
    await kill(cluster.gateway)
    seq, calls = len(slack.records), len(discord.calls)
    message_path = f"/channels/{placeholder['channel_id']}/messages/{placeholder['id']}"
    original_path = f"/webhooks/{discord.application_id}/{interaction.token}/messages/@original"

    def progressed() -> bool:  # a progress line while the image is still held
        return (
            all(
                any(is_progress(r.data) for r in slack_edits(slack, ch, ts, seq))
                for ch, ts in placeholders.items()
            )
            and any(is_progress(c.body) for c in discord_edits(discord, message_path, calls))
            and any(is_progress(c.body) for c in discord_edits(discord, original_path, calls))
        )

    await until(as_check(progressed), "the worker's progress edits", within=60)

    async def inside() -> bool:
        return proxy.held(BLOBS) >= 5 and proxy.held(missing) >= 1

    await until(inside, "all six jobs inside their images (held)")
    proxy.release(BLOBS)
    proxy.release(missing)

    answered = {ch: ts for ch, ts in placeholders.items() if ch != "C0ERR"}

    def refusals() -> list[Record]:
        return [r for r in slack.api_calls("chat.postEphemeral") if r.data["channel"] == "C0ERR"]

    def finished() -> bool:
        slack_done = all(
            any(not is_progress(r.data) for r in slack_edits(slack, ch, ts))
            for ch, ts in answered.items()
        )
        return (
            slack_done
            and bool(refusals())
            and any(c.body.get("embeds") for c in discord_edits(discord, message_path))
            and any(c.body.get("embeds") for c in discord_edits(discord, original_path))
        )

    await until(as_check(finished), "the worker's answers", within=120)

    # The worker's answers, each exactly once, and no other message.
    async with aioredis.Redis.from_url(cluster.redis_url) as client:

        async def drained() -> bool:
            lengths = [await client.llen(DELIVERIES_PREFIX + k) for k in keys.values()]
            return lengths == [0] * len(keys)

        await until(drained, "every delivery taken")
    for name, channel in (("http", "C0HTTP"), ("dm", "D0DAVE"), ("socket", "C0SOCKET")):
        ts = placeholders[channel]
        (final,) = [r for r in slack_edits(slack, channel, ts) if not is_progress(r.data)]
        assert final.seq > seq
        shown = json.dumps(final.data)
        assert repos[name] in shown and "debian" in shown.lower()
        assert len(slack.posts(channel)) == 1  # the placeholder, edited into the answer
        (current,) = slack.current(channel)
        assert current["ts"] == ts and not is_progress(current)
        assert not [
            r for r in slack.api_calls("chat.postEphemeral") if r.data.get("channel") == channel
        ]
    # The asker's mistake (no such image): the placeholder is removed and the one-line
    # error goes to the asker alone.
    (refusal,) = refusals()
    assert refusal.ok and refusal.seq > seq and refusal.data["user"] == "U0ERIN"
    assert f"Couldn't explain {refs['missing']}" in json.dumps(refusal.data)
    (removed,) = [r for r in slack.api_calls("chat.delete") if r.data["channel"] == "C0ERR"]
    assert removed.ok and removed.data["ts"] == placeholders["C0ERR"]
    assert slack.current("C0ERR") == [] and len(slack.posts("C0ERR")) == 1
    assert not [
        r for r in slack_edits(slack, "C0ERR", placeholders["C0ERR"]) if not is_progress(r.data)
    ]
    (final_message,) = [c for c in discord_edits(discord, message_path) if c.body.get("embeds")]
    (final_original,) = [c for c in discord_edits(discord, original_path) if c.body.get("embeds")]
    for call, name in ((final_message, "mention"), (final_original, "command")):
        assert call.headers.get("Authorization", "").startswith("Bot ") == (name == "mention")
        shown = json.dumps(call.body["embeds"])
        assert repos[name] in shown and "debian" in shown.lower()
    replies = [
        m
        for m in discord.current_messages()
        if m.get("message_reference", {}).get("message_id") == asked["id"]
    ]
    assert [m["id"] for m in replies] == [placeholder["id"]]
    assert cluster.worker.popen.poll() is None


async def test_a_message_shortcut_at_a_web_replica_is_handed_over_too(
    queues: list[JobQueue],  # noqa: F811
    worker: JobWorker,  # noqa: F811
    slack_web: SlackWeb,  # noqa: F811
    proxy: GatedProxy,  # noqa: F811
    registry: RegistryServer,
) -> None:
    """The "Explain image" message shortcut on a web replica with a queue posts its
    placeholder in the message's thread and attaches it to the job without waiting (no
    subscriber on the job's progress); the worker's Slack adapter edits it into the
    answer, once."""
    emu = slack_web.emulator
    repo = f"shortcut{uuid.uuid4().hex[:8]}/app"
    push_image(registry.pusher(), repo, "1", [make_layer({"etc/os-release": b"ID=debian\n"})])
    ref = f"{proxy.host}/{repo}:1"
    key = job_key(ref, "auto", None)
    proxy.hold(BLOBS)
    shortcut = emu.message_shortcut(f"our build uses `docker pull {ref}`", channel="C0CUT")
    await emu.http_interactive(slack_web.url, shortcut)

    async def handed_over() -> bool:
        attached = await queues[0].redis.llen(DELIVERIES_PREFIX + key)
        return attached == 1 and proxy.held(BLOBS) >= 1

    await until(handed_over, "the shortcut's delivery attached, the worker inside the image")
    assert await subscribers(queues[0], progress_channel(key)) == 0  # nobody waits for it
    (placeholder,) = emu.posts("C0CUT")
    assert placeholder.data["thread_ts"] == shortcut["message"]["ts"]
    assert is_progress(placeholder.data)
    ts = str(placeholder.data["_ts"])
    proxy.release(BLOBS)

    def answered() -> bool:
        return any(not is_progress(r.data) for r in slack_edits(emu, "C0CUT", ts))

    await until(as_check(answered), "the worker's edit of the placeholder")
    (final,) = [r for r in slack_edits(emu, "C0CUT", ts) if not is_progress(r.data)]
    assert repo in json.dumps(final.data) and "debian" in json.dumps(final.data).lower()
    assert len(emu.posts("C0CUT")) == 1


async def test_only_single_image_explanations_are_handed_over(
    knowledge_engine: Engine,  # noqa: F811
) -> None:
    """``Engine.later_reference``: what an adapter may hand to the queue. Questions,
    Dockerfiles, comparisons and malformed references are answered in the asking
    process as before, and without a queue (``--role all``) nothing is handed over."""
    queued = Engine(knowledge=knowledge_engine.knowledge, jobs=JobQueue("redis://127.0.0.1:9/0"))
    alone = Engine(knowledge=knowledge_engine.knowledge)
    try:
        assert queued.later_reference("explain python:3.12-slim") == "python:3.12-slim"
        assert queued.later_reference("explain `docker pull nginx:alpine`") == "nginx:alpine"
        assert alone.later_reference("explain python:3.12-slim") is None
        for text in (
            "why do Dockerfiles start FROM ubuntu?",
            "compare alpine vs debian:bookworm-slim",
            "```dockerfile\nFROM alpine\n```",
            "explain Not An Image!!",
            "",
        ):
            assert queued.later_reference(text) is None, text
    finally:
        await queued.aclose()
        await alone.aclose()
