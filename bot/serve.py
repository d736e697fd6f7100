"""``dockwise serve``: every configured adapter plus health and metrics on one HTTP port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.config import Settings
from bot.engine import Engine

log = logging.getLogger("dockwise.serve")

HOW_TO_CONFIGURE = (
    "no chat platform is configured: set SLACK_BOT_TOKEN plus SLACK_APP_TOKEN (Socket Mode) "
    "or SLACK_SIGNING_SECRET (HTTP mode) for Slack, and/or DISCORD_TOKEN for Discord "
    "(or run `dockwise chat` to try the bot in this terminal)"
)

Check = Callable[[], Awaitable[bool]]


async def serve(settings: Settings, engine: Engine | None = None) -> None:
    """Run until cancelled. Raises InvalidInput when no platform is configured."""
    from bot.errors import InvalidInput

    if not (settings.slack_enabled or settings.discord_enabled):
        raise InvalidInput(HOW_TO_CONFIGURE)
    from bot.netguard import Trust
    from bot.server import build_web_app

    Trust.from_settings(settings)  # a bad DOCKWISE_INSECURE_REGISTRIES fails now, not in chat
    engine = engine or Engine()
    checks: dict[str, Check] = {}
    background: list[Awaitable[object]] = []

    async def readiness() -> dict[str, bool]:
        results = await asyncio.gather(*(check() for check in checks.values()))
        return dict(zip(checks, results, strict=True))

    app = build_web_app(readiness)

    if settings.slack_enabled:
        from adapters.slack import run_slack

        if settings.slack_app_token is not None:
            slack_task = asyncio.create_task(run_slack(engine, settings), name="slack")
            background.append(slack_task)

            async def slack_ready() -> bool:
                return not slack_task.done()

            checks["slack"] = slack_ready
        else:
            await run_slack(engine, settings, web_app=app)  # adds POST /slack/events

            async def slack_http_ready() -> bool:
                return True

            checks["slack"] = slack_http_ready

    if settings.discord_enabled:
        from adapters.discord import run_discord

        discord_task = asyncio.create_task(run_discord(engine, settings), name="discord")
        background.append(discord_task)

        async def discord_ready() -> bool:
            return not discord_task.done()

        checks["discord"] = discord_ready

    if settings.redis_url is not None:
        from bot.image.redis_cache import redis_ping

        async def cache_ready() -> bool:
            return await redis_ping(settings)

        checks["cache"] = cache_ready

    # Kubernetes runs us as PID 1: turn SIGTERM into a clean shutdown.
    import signal

    current = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if current is not None:
        loop.add_signal_handler(signal.SIGTERM, current.cancel)

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("serving health and metrics on http://%s:%s", settings.host, settings.port)
    try:
        if background:
            await asyncio.gather(*background)
        else:
            await asyncio.Event().wait()
    except asyncio.CancelledError:
        log.info("shutting down")
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        for task in background:
            if isinstance(task, asyncio.Task):
                task.cancel()
        await runner.cleanup()
        await engine.aclose()
