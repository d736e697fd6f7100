"""``dockwise serve``: every configured adapter plus health and metrics on one HTTP port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.chat import ChatAdapter
from bot.config import Settings
from bot.engine import Engine

log = logging.getLogger("dockwise.serve")

Check = Callable[[], Awaitable[bool]]


async def serve(settings: Settings, engine: Engine | None = None) -> None:
    """Run every adapter whose settings are complete (``bot.chat``) until cancelled.
    Raises InvalidInput when no platform is configured."""
    from bot.chat import configured_adapters, how_to_configure
    from bot.errors import InvalidInput
    from bot.observability import register_secrets_from

    chosen = configured_adapters(settings)
    if not chosen:
        raise InvalidInput(how_to_configure())
    from bot.netguard import Trust
    from bot.server import build_web_app

    Trust.from_settings(settings)  # a bad DOCKWISE_INSECURE_REGISTRIES fails now, not in chat
    from bot.image.remote.transport import parse_mirrors

    parse_mirrors(settings.registry_mirrors)  # so does a bad DOCKWISE_REGISTRY_MIRRORS
    engine = engine or Engine()
    checks: dict[str, Check] = {}
    background: list[Awaitable[object]] = []

    async def readiness() -> dict[str, bool]:
        results = await asyncio.gather(*(check() for check in checks.values()))
        return dict(zip(checks, results, strict=True))

    app = build_web_app(readiness)

    for adapter_class, own_settings in chosen:
        register_secrets_from(own_settings)
        adapter = adapter_class(engine, own_settings)
        await adapter.setup(app)  # credentials checked, HTTP routes added
        background.append(adapter.start())

        async def adapter_ready(adapter: ChatAdapter = adapter) -> bool:
            return adapter.ready()

        checks[adapter.name] = adapter_ready

    if settings.redis_url is not None:
        from bot.cache.redis import redis_ping

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
