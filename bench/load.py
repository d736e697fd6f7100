"""Load: many concurrent questions and explanations, through the engine and the chat emulators.

    .venv/bin/python bench/load.py [--questions 1000] [--explains 50] [--chat 200]

Loopback only; needs Debian's ``docker-registry`` for the explanation part. Phases:

1. ``--questions`` concurrent ``Engine.handle`` questions from as many distinct askers:
   answered / refused, latency from the common start to each reply (p50, p99).
2. ``--explains`` concurrent ``Explainer.facts`` of one image pushed to a private registry
   behind a counting proxy (fresh cache dir): upstream fetches per blob (must be 1) and
   manifest fetches. Then the same number of concurrent ``Engine.explain`` calls from
   distinct users (fresh cache), to show how admission answers them (answered vs busy).
3. ``--chat`` concurrent mentions through the Slack emulator (Socket Mode) and the Discord
   emulator (gateway), each from its own user: answered exactly once, latency from event
   injection to the reply reaching the emulator. Discord messages all land in one channel,
   so that engine's per-channel question limit is raised to let them through.

Peak RSS is the process's high-water mark after each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.discord import DiscordSettings, build_discord_client
from adapters.slack import SlackSettings, run_slack
from bench._common import EVAL, load_set
from bot.config import Settings
from bot.engine import Asker, Engine
from bot.image.explain import Explainer
from bot.image.source import Platform
from bot.knowledge import KnowledgeBase
from bot.limits import BUSY_MESSAGE, Admission
from bot.reply import Reply, ReplyKind
from tests.emulators.discord import DiscordEmulator
from tests.emulators.slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, Record, SlackEmulator
from tests.fixtures.registry import make_layer, push_image, start_registry
from tests.test_faults import RegistryProxy

T = TypeVar("T")
AMD64 = Platform("linux", "amd64")
ROWS: list[tuple[str, str]] = []


def row(name: str, value: str) -> None:
    ROWS.append((name, value))
    print(f"  {name:<52} {value}", flush=True)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_text(seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return f"p50 {pct(ms, 0.5):.1f} ms  p99 {pct(ms, 0.99):.1f} ms  max {max(ms):.1f} ms"


class LoopLag:
    """Longest gap between ticks of a 5 ms ticker: how long the event loop was blocked."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - 0.005)
            last = now

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def timed(start: float, work: Awaitable[T]) -> tuple[T, float]:
    result = await work
    return result, time.perf_counter() - start


# --------------------------------------------------------------------------- 1. questions


async def questions_phase(knowledge: KnowledgeBase, count: int) -> None:
    on, off = load_set(EVAL)
    pool = [q for q, _ in on] + off
    engine = Engine(knowledge=knowledge)
    with LoopLag() as lag:
        await asyncio.sleep(0.02)  # let the ticker start
        start = time.perf_counter()
        results = await asyncio.gather(
            *(
                timed(
                    start,
                    engine.handle(
                        pool[i % len(pool)], asker=Asker("slack", f"U{i:05d}", f"C{i:05d}")
                    ),
                )
                for i in range(count)
            )
        )
        wall = time.perf_counter() - start
        await asyncio.sleep(0.02)
    kinds = collections.Counter(reply.kind for reply, _ in results)
    answered = kinds[ReplyKind.ANSWER] + kinds[ReplyKind.FALLBACK]
    print(f"\n[1] {count} concurrent questions through Engine.handle")
    row("answered (answer + fallback)", f"{answered}/{count}  ({dict(kinds)})")
    row("refused / errors", str(kinds[ReplyKind.ERROR]))
    row("latency from common start", latency_text([t for _, t in results]))
    row("wall time, throughput", f"{wall:.2f} s, {count / wall:.0f} questions/s")
    row("longest event-loop stall during the burst", f"{lag.worst * 1000:.0f} ms")
    row("peak RSS", f"{peak_rss_mib():.0f} MiB")


# --------------------------------------------------------------------------- 2. explanations


async def explain_phase(knowledge: KnowledgeBase, count: int, work: Path) -> None:
    registry = start_registry(work / "registry")
    proxy = RegistryProxy(registry.url)
    await proxy.start()
    try:
        rnd = os.urandom
        layers = [
            make_layer(
                {
                    "etc/os-release": b'ID=debian\nVERSION_ID="12"\n',
                    "var/lib/dpkg/status": b"Package: libc6\nStatus: install ok installed\n\n",
                    "bin/sh": b"\x7fELF" + rnd(64),
                    "usr/lib/big.bin": rnd(2 << 20),
                }
            ),
            make_layer({"usr/local/lib/mid.bin": rnd(512 << 10)}),
            make_layer({"srv/app/main.py": b"print('hi')\n" * 100}),
        ]
        image = push_image(registry.pusher(), "bench/app", "1", layers)
        reference = f"{proxy.host}/bench/app:1"
        blobs = [image.config_digest, *image.layer_digests]

        def settings(name: str) -> Settings:
            return Settings(_env_file=None, cache_dir=work / name, insecure_registries=[proxy.host])

        explainer = Explainer(settings("cache-facts"))
        start = time.perf_counter()
        results = await asyncio.gather(
            *(
                timed(start, explainer.facts(reference, source="registry", platform=AMD64))
                for _ in range(count)
            ),
            return_exceptions=True,
        )
        wall = time.perf_counter() - start
        await explainer.aclose()
        ok = [r for r in results if isinstance(r, tuple) and r[0].digest == image.digest]
        print(f"\n[2a] {count} concurrent Explainer.facts of one image (fresh cache)")
        row("explained", f"{len(ok)}/{count}")
        per_blob = [proxy.blob_fetches(d) for d in blobs]
        row("upstream fetches per layer blob (want 1 each)", str(per_blob[1:]))
        row("upstream fetches of the config blob", str(per_blob[0]))
        row("upstream manifest fetches", str(proxy.manifest_fetches()))
        row("latency from common start", latency_text([r[1] for r in ok]) if ok else "-")
        row("wall time", f"{wall:.2f} s")
        failures = [r for r in results if not isinstance(r, tuple)]
        if failures:
            row("failures", repr(failures[0])[:120])

        proxy.counts.clear()
        engine = Engine(knowledge=knowledge, explainer=Explainer(settings("cache-engine")))
        start = time.perf_counter()
        replies: list[tuple[Reply, float]] = await asyncio.gather(
            *(
                timed(
                    start,
                    engine.explain(
                        reference,
                        source="registry",
                        platform=AMD64,
                        asker=Asker("slack", f"U{i:03d}", "C0LOAD"),
                    ),
                )
                for i in range(count)
            )
        )
        await engine.aclose()
        answered = [t for r, t in replies if r.kind == ReplyKind.IMAGE]
        busy = sum(1 for r, _ in replies if r.kind == ReplyKind.ERROR and r.body == BUSY_MESSAGE)
        other = len(replies) - len(answered) - busy
        print(f"\n[2b] {count} concurrent Engine.explain (admission: 2 running + 8 waiting)")
        row("answered with the image", f"{len(answered)}/{count}")
        row('refused "busy" at once', str(busy))
        row("other replies", str(other))
        if answered:
            row("latency of the answered ones", latency_text(answered))
        row(
            "upstream fetches per layer blob / manifests",
            f"{[proxy.blob_fetches(d) for d in image.layer_digests]} / {proxy.manifest_fetches()}",
        )
        row("peak RSS", f"{peak_rss_mib():.0f} MiB")
    finally:
        await proxy.stop()
        registry.stop()


# --------------------------------------------------------------------------- 3. chat


class StampedSlack(SlackEmulator):
    """The Slack emulator, noting when each record (a post, an ack) arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[int, float] = {}

    async def _record(
        self, kind: str, name: str, data: dict[str, Any], error: str | None = None
    ) -> Record:
        record = await super()._record(kind, name, data, error)
        self.arrived[record.seq] = time.perf_counter()
        return record


class StampedDiscord(DiscordEmulator):
    """The Discord emulator, noting when the bot's reply to each user message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.replied: dict[str, list[float]] = collections.defaultdict(list)

    def _create_channel_message(self, channel: str, payload: dict[str, Any]) -> dict[str, Any]:
        message = super()._create_channel_message(channel, payload)
        reference = message.get("message_reference") or {}
        self.replied[str(reference.get("message_id"))].append(time.perf_counter())
        return message


async def until(
    wait: Callable[[], Awaitable[object]], bot: asyncio.Task[Any], within: float
) -> None:
    """Await ``wait()`` unless the bot task dies first (then raise its error)."""
    waiter = asyncio.ensure_future(wait())
    done, _ = await asyncio.wait({waiter, bot}, timeout=within, return_when="FIRST_COMPLETED")
    if waiter not in done:
        waiter.cancel()
        if bot in done:
            bot.result()
        raise TimeoutError("the emulator did not see what it waited for")
    waiter.result()


async def slack_phase(knowledge: KnowledgeBase, count: int) -> None:
    emu = StampedSlack()
    await emu.start()
    settings = SlackSettings(
        _env_file=None,
        slack_bot_token=BOT_TOKEN,
        slack_app_token=APP_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=emu.api_url,
    )
    on, _ = load_set(EVAL)
    bot = asyncio.create_task(run_slack(Engine(knowledge=knowledge), settings))
    try:
        await until(emu.wait_socket, bot, 30)
        events = []
        for i in range(count):
            event = emu.mention(on[i % len(on)][0], channel=f"C{i:05d}")
            event["user"] = f"U{i:05d}"
            events.append(event)
        injected: dict[str, float] = {}
        envelopes: dict[str, float] = {}

        async def inject(event: dict[str, Any]) -> None:
            t0 = injected[event["channel"]] = time.perf_counter()
            envelopes[await emu.socket_event(event)] = t0

        start = time.perf_counter()
        await asyncio.gather(*(inject(e) for e in events))
        channels = set(injected)

        def all_posted(_: Record) -> bool:
            return {r.data.get("channel") for r in emu.posts()} >= channels

        await until(lambda: emu.wait_for(all_posted, within=120), bot, 130)
        wall = time.perf_counter() - start
        posts = emu.posts()
        per_channel = collections.Counter(str(r.data.get("channel")) for r in posts)
        latencies = [
            emu.arrived[r.seq] - injected[str(r.data.get("channel"))]
            for r in posts
            if r.data.get("channel") in injected
        ]
        print(f"\n[3a] {count} concurrent mentions through the Slack emulator (Socket Mode)")
        row("answered", f"{len(per_channel)}/{count}")
        row("answered exactly once", str(sum(1 for n in per_channel.values() if n == 1)))
        row(
            "refused posts / acks",
            f"{len(emu.refused())} / {sum(1 for r in emu.records if r.kind == 'ack')}",
        )
        row("injection -> reply at the emulator", latency_text(latencies))
        acks = [
            emu.arrived[r.seq] - envelopes[r.name]
            for r in emu.records
            if r.kind == "ack" and r.name in envelopes
        ]
        row("injection -> ack (Slack wants < 3 s)", latency_text(acks) if acks else "-")
        row("wall time", f"{wall:.2f} s")
        row("peak RSS", f"{peak_rss_mib():.0f} MiB")
    finally:
        bot.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bot
        await emu.stop()


async def discord_phase(knowledge: KnowledgeBase, count: int) -> None:
    emu = StampedDiscord()
    await emu.start()
    settings = DiscordSettings(
        _env_file=None,
        discord_token=emu.token,
        discord_api_url=emu.api_url,
        discord_gateway_url=emu.gateway_url,
    )
    # All injected messages share the emulator's one channel: lift the per-channel limit.
    engine = Engine(knowledge=knowledge, admission=Admission(questions_per_channel=count * 2))
    client = build_discord_client(engine, settings)
    bot = asyncio.create_task(client.start(emu.token))
    on, _ = load_set(EVAL)
    try:
        await until(emu.wait_ready, bot, 30)
        authors = [emu.new_user(f"learner{i}") for i in range(count)]
        injected: dict[str, float] = {}

        async def inject(i: int) -> None:
            t0 = time.perf_counter()
            message = await emu.user_message(
                f"{emu.mention()} {on[i % len(on)][0]}", author=authors[i]
            )
            injected[message["id"]] = t0

        start = time.perf_counter()
        await asyncio.gather(*(inject(i) for i in range(count)))
        await until(
            lambda: emu.wait_for(lambda: all(emu.replied.get(m) for m in injected), within=120),
            bot,
            130,
        )
        wall = time.perf_counter() - start
        once = sum(1 for m in injected if len(emu.replied[m]) == 1)
        latencies = [emu.replied[m][0] - t0 for m, t0 in injected.items()]
        print(f"\n[3b] {count} concurrent mentions through the Discord emulator (gateway)")
        row("answered", f"{sum(1 for m in injected if emu.replied.get(m))}/{count}")
        row("answered exactly once", str(once))
        row("injection -> reply at the emulator", latency_text(latencies))
        row("wall time", f"{wall:.2f} s")
        row("peak RSS", f"{peak_rss_mib():.0f} MiB")
    finally:
        await client.close()
        bot.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await bot
        await emu.close()


def quiet_logs() -> None:
    """Warnings only: per-request info logs would drown the table (and cost time)."""
    for noisy in ("discord", "bm25s"):  # voice-support notices, index-build debug lines
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from bot.observability import configure_logging
    except ImportError:  # a tree without structured logging
        logging.basicConfig(level=logging.WARNING)
        return
    configure_logging(logging.WARNING)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--explains", type=int, default=50)
    parser.add_argument("--chat", type=int, default=200)
    args = parser.parse_args()
    quiet_logs()
    t0 = time.perf_counter()
    knowledge = KnowledgeBase.load()
    print(
        f"knowledge base loaded in {time.perf_counter() - t0:.2f} s; "
        f"peak RSS {peak_rss_mib():.0f} MiB"
    )
    await questions_phase(knowledge, args.questions)
    with tempfile.TemporaryDirectory(prefix="dockwise-load-") as tmp:
        await explain_phase(knowledge, args.explains, Path(tmp))
    await slack_phase(knowledge, args.chat)
    await discord_phase(knowledge, args.chat)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s; peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
