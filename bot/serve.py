"""``dockwise serve``: every configured adapter plus health and metrics on one HTTP port.

``--role`` picks the part of the bot this process is (``bot.chat.Role``): ``all`` runs
everything in one process as before (no new services); ``web`` and ``gateway`` run the
adapters' HTTP routes or long-lived connections and hand explanations to the job queue
(``bot.jobs``); ``worker`` runs no chat listener, only the queue's worker. The
distributed roles need ``DOCKWISE_REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.chat import ROLES, ChatAdapter, Role, adapters
from bot.config import Settings
from bot.engine import Engine
from bot.errors import InvalidInput

log = logging.getLogger("dockwise.serve")

Check = Callable[[], Awaitable[bool]]


def check_role(role: str, settings: Settings) -> Role:
    """``role`` as a ``Role``; raises InvalidInput (one line) for an unknown role, or for
    a distributed role (``web``, ``worker``, ``gateway``) without ``DOCKWISE_REDIS_URL``."""
    for known in ROLES:
        if role.strip().lower() == known:
            if known != "all" and settings.redis_url is None:
                raise InvalidInput(
                    f"--role {known} needs DOCKWISE_REDIS_URL (the job queue and shared "
                    "state live in Redis); use --role all for a single process"
                )
            return known
    raise InvalidInput(f"unknown role {role[:40]!r}: use one of {', '.join(ROLES)}")


REDIS_SCHEMES = ("redis", "rediss", "unix")


async def check_redis(settings: Settings, within: float = 5.0) -> None:
    """Fail fast when ``DOCKWISE_REDIS_URL`` cannot carry the job queue: InvalidInput for
    a URL that is not ``redis://``, ``rediss://`` or ``unix://`` (saq would otherwise pick
    another backend for ``http://``), Unreachable when Redis does not answer a PING within
    ``within`` seconds (no server, wrong password, missing database). Messages name the
    host, port and db and the error type, never the URL's password."""
    import urllib.parse

    from redis.exceptions import RedisError

    from bot.cache.redis import _client, describe_url
    from bot.errors import Unreachable

    if settings.redis_url is None:
        return
    url = settings.redis_url.get_secret_value()
    scheme = urllib.parse.urlsplit(url).scheme if "://" in url else ""
    if scheme not in REDIS_SCHEMES:
        raise InvalidInput(
            "DOCKWISE_REDIS_URL is not a usable Redis URL: expected "
            "redis://[:password@]host[:port][/db], rediss://... or unix:///path"
        )
    client = _client(url, within, retries=0)
    try:
        async with asyncio.timeout(within * 2):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        raise Unreachable(
            f"Redis at {describe_url(url)} (DOCKWISE_REDIS_URL) did not answer: "
            f"{type(exc).__name__}"
        ) from None
    finally:
        await client.aclose()


async def serve(settings: Settings, engine: Engine | None = None, *, role: Role = "all") -> None:
    """Run every adapter whose settings are complete (``bot.chat``) in ``role`` until
    cancelled. Raises InvalidInput when no platform is configured (any role but
    ``worker``) or when ``role`` needs Redis and ``DOCKWISE_REDIS_URL`` is unset."""
    from bot.chat import configured_adapters, how_to_configure
    from bot.observability import register_secrets_from

    check_role(role, settings)
    chosen = configured_adapters(settings)
    if not chosen and role != "worker":
        raise InvalidInput(how_to_configure())
    from bot.netguard import Trust
    from bot.server import build_web_app

    Trust.from_settings(settings)  # a bad DOCKWISE_INSECURE_REGISTRIES fails now, not in chat
    from bot.image.remote.transport import parse_mirrors

    parse_mirrors(settings.registry_mirrors)  # so does a bad DOCKWISE_REGISTRY_MIRRORS
    queue = None
    if role != "all":
        from bot.jobs import JobQueue

        await check_redis(settings)

        queue = JobQueue.from_settings(settings)
    if engine is None and role in ("web", "gateway"):
        from bot.limits import Admission

        # Workers bound the real work and the queue bounds the waiting: a replica holds
        # as many explanations as the queue (one per user still), not the 2 of a process
        # that reads images itself.
        wide = Admission(
            settings, max_concurrent=settings.queue_max, max_waiting=settings.queue_max
        )
        engine = Engine(admission=wide, jobs=queue)
    elif engine is None:  # all; a worker's adapters only post (deliver) with it
        engine = Engine()
    checks: dict[str, Check] = {}
    background: list[Awaitable[object]] = []

    async def readiness() -> dict[str, bool]:
        results = await asyncio.gather(*(check() for check in checks.values()))
        return dict(zip(checks, results, strict=True))

    app = build_web_app(readiness)

    if queue is not None:
        await queue.connect()

        async def queue_ready() -> bool:
            return await queue.ping()

        checks["queue"] = queue_ready
    worker = None
    if role == "worker":
        assert queue is not None
        from bot.jobs import JobWorker

        worker = JobWorker(queue, settings)  # started once the port is ours

        async def worker_ready() -> bool:
            return worker.running()

        checks["worker"] = worker_ready

    for adapter_class, own_settings in chosen:
        register_secrets_from(own_settings)
        adapter = adapter_class(engine, own_settings)
        adapter.role = role
        if queue is not None:  # results of queued explanations are posted through it
            queue.deliverers[adapter.name] = adapter
        if role == "worker":  # no listener: the adapter only delivers the worker's results
            continue
        await adapter.setup(app)  # credentials checked, HTTP routes added
        background.append(adapter.start())

        async def adapter_ready(adapter: ChatAdapter = adapter) -> bool:
            return adapter.ready()

        checks[adapter.name] = adapter_ready

    if worker is not None and queue is not None and not queue.deliverers:
        # It would take jobs and drop their replies: the askers' placeholders stay.
        if engine is not None:
            await engine.aclose()
        await queue.close()
        hints = "; ".join(a.how_to_configure for a in adapters().values())
        raise InvalidInput(
            "--role worker needs the chat settings of the web and gateway replicas to post "
            f"its results: {hints}"
        )

    if settings.redis_url is not None:
        from bot.cache.redis import redis_ping

        async def cache_ready() -> bool:
            return await redis_ping(settings)

        checks["cache"] = cache_ready

    # Kubernetes runs us as PID 1: turn SIGTERM into a clean shutdown.
    import signal

    current = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def stopping() -> None:  # one SIGTERM starts the shutdown; more do not cut it short
        log.info("SIGTERM: stopping")
        loop.add_signal_handler(signal.SIGTERM, log.info, "SIGTERM: already stopping")
        if current is not None:
            current.cancel()

    loop.add_signal_handler(signal.SIGTERM, stopping)

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        loop.remove_signal_handler(signal.SIGTERM)
        for pending in background:  # adapters' loops that never ran
            if asyncio.iscoroutine(pending):
                pending.close()
            elif isinstance(pending, asyncio.Future):
                pending.cancel()
        await runner.cleanup()
        if engine is not None:
            await engine.aclose()
        if queue is not None:
            await queue.close()
        raise InvalidInput(
            f"cannot listen on {settings.host}:{settings.port} (DOCKWISE_HOST, "
            f"DOCKWISE_PORT): {exc.strerror or exc}"
        ) from None
    if worker is not None:
        # shielded: a SIGTERM cancels the gather below, and stop() ends the worker gently
        background.append(asyncio.shield(worker.start()))
    log.info("serving health and metrics on http://%s:%s", settings.host, settings.port)
    try:
        if background:
            await asyncio.gather(*background)
        else:
            await asyncio.Event().wait()
    except asyncio.CancelledError:
        log.info("shutting down")
    finally:
        if worker is not None:
            # first, while the adapters can still post: running jobs finish or are handed
            # back (DOCKWISE_WORKER_GRACE); its task is not cancelled (that would cut them)
            await worker.stop()
        for task in background:
            if isinstance(task, asyncio.Task):
                task.cancel()
        await runner.cleanup()
        if engine is not None:
            await engine.aclose()
        if queue is not None:
            await queue.close()
        loop.remove_signal_handler(signal.SIGTERM)
