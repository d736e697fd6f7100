"""Discord HTTP interactions on loopback: signature cost, PING and /ask throughput.

    .venv/bin/python bench/discord_interactions_bench.py [--pings 500] [--asks 200]

The adapter's real aiohttp server (role ``web``) is driven by the Discord emulator acting
as Discord: every request signed with Ed25519, the response applied as the callback within
Discord's 3-second limit. Phases:

1. Ed25519 verification of one request (PyNaCl), microseconds.
2. ``--pings`` sequential PINGs: requests per second and latency.
3. ``--asks`` concurrent ``/ask`` commands (questions from the evaluation set; rate limits
   lifted, as all come from one emulated user): answered inline (callback 4) or deferred
   (5), failed (no answer within 3 s), latency from the POST to the applied callback, and
   the questions answered per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from adapters.discord import DiscordPlatform, DiscordSettings
from adapters.discord_http import INTERACTIONS_PATH, verify_key, verify_signature
from bench._common import EVAL, load_set
from bench.load import latency_text, quiet_logs, row
from bot.engine import Engine
from bot.knowledge import KnowledgeBase
from bot.limits import Admission
from bot.server import build_web_app
from tests.emulators.discord import DiscordEmulator


def signature_phase(emu: DiscordEmulator, rounds: int = 2000) -> None:
    key = verify_key(emu.public_key)
    body = b'{"type": 2, "data": {"name": "ask"}}' * 20
    stamp = str(int(time.time()))
    signature = emu.sign(stamp, body)
    start = time.perf_counter()
    for _ in range(rounds):
        verify_signature(key, signature, stamp, body, now=time.time())
    each = (time.perf_counter() - start) / rounds
    print("\n[1] Ed25519 verification (PyNaCl)")
    row("one request verified", f"{each * 1e6:.0f} µs")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--asks", type=int, default=200)
    args = parser.parse_args()
    quiet_logs()
    logging.getLogger("adapters.discord").setLevel(logging.WARNING)
    knowledge = KnowledgeBase.load()
    emu = DiscordEmulator()
    await emu.start()
    settings = DiscordSettings(
        _env_file=None,
        discord_token=emu.token,
        discord_api_url=emu.api_url,
        discord_gateway_url=emu.gateway_url,
        discord_public_key=emu.public_key,
        discord_application_id=emu.application_id,
    )
    lifted = args.asks * 2
    engine = Engine(
        knowledge=knowledge,
        admission=Admission(questions_per_user=lifted, questions_per_channel=lifted),
    )
    adapter = DiscordPlatform(engine, settings)
    adapter.role = "web"
    app = build_web_app()
    await adapter.setup(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    emu.interactions_url = f"http://127.0.0.1:{port}{INTERACTIONS_PATH}"
    task = adapter.start()
    try:
        await emu.wait_for(lambda: emu.commands.get(None), within=30)
        signature_phase(emu)

        latencies: list[float] = []
        start = time.perf_counter()
        for _ in range(args.pings):
            t0 = time.perf_counter()
            delivery = await emu.ping()
            assert delivery.error is None, delivery.error
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - start
        print(f"\n[2] {args.pings} sequential PINGs")
        row("PINGs per second", f"{args.pings / wall:.0f}")
        row("POST -> PONG", latency_text(latencies))

        on, _ = load_set(EVAL)
        timed: list[tuple[float, float]] = []

        async def ask(i: int) -> None:
            t0 = time.perf_counter()
            await emu.slash_command("ask", {"question": on[i % len(on)][0]})
            timed.append((t0, time.perf_counter()))

        emu.deliveries.clear()
        start = time.perf_counter()
        await asyncio.gather(*(ask(i) for i in range(args.asks)))
        assert adapter.interactions is not None
        await adapter.interactions.drain()  # deferred answers edited in
        wall = time.perf_counter() - start
        acks = [d.response.get("type") for d in emu.deliveries if isinstance(d.response, dict)]
        failed = [d for d in emu.deliveries if d.error is not None]
        print(f"\n[3] {args.asks} concurrent /ask over HTTP interactions")
        row("inline (callback 4) / deferred (callback 5)", f"{acks.count(4)} / {acks.count(5)}")
        row("failed (no answer within 3 s, or refused)", str(len(failed)))
        row("POST -> callback applied", latency_text([t1 - t0 for t0, t1 in timed]))
        row("questions answered per second", f"{args.asks / wall:.0f}")
    finally:
        await adapter.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()
        await engine.aclose()
        await emu.close()


if __name__ == "__main__":
    asyncio.run(main())
