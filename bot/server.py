"""The bot's HTTP side: liveness, readiness and Prometheus metrics (aiohttp).

``build_web_app(readiness)`` returns an ``aiohttp.web.Application`` with

- ``GET /healthz``: 200 ``ok`` while the process serves requests (liveness);
- ``GET /readyz``: 200 when every check ``readiness()`` returns is true, else 503 with JSON
  naming the checks that are not (readiness: "send me traffic");
- ``GET /metrics``: the default Prometheus registry in the text exposition format.

``dockwise serve`` adds the chat adapters' HTTP routes to the same app and runs it on
``DOCKWISE_HOST:DOCKWISE_PORT``; ``start_web_app`` does that part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from bot.observability import bind_correlation_id, get_logger

Readiness = Callable[[], Awaitable[Mapping[str, bool]]]

READINESS_KEY: web.AppKey[Readiness] = web.AppKey("dockwise_readiness")
REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("dockwise_metrics_registry")

#: Longest a readiness probe waits for the checks before answering 503.
READINESS_TIMEOUT = 5.0
#: Request header carrying a caller's correlation id (echoed back on the response).
REQUEST_ID_HEADER = "X-Request-ID"

log = get_logger(__name__)


async def _always_ready() -> Mapping[str, bool]:
    return {}


@web.middleware
async def correlation_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Bind a correlation id for the request (the caller's ``X-Request-ID`` if it looks
    sane, else a new one) and return it in the response header."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    wanted = given if 0 < len(given) <= 64 and given.isascii() and given.isprintable() else None
    with bind_correlation_id(wanted) as cid:
        response = await handler(request)
        response.headers[REQUEST_ID_HEADER] = cid
        return response


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    readiness = request.app[READINESS_KEY]
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            checks = {str(name): bool(ok) for name, ok in (await readiness()).items()}
    except TimeoutError:
        log.warning("readiness checks timed out", timeout=READINESS_TIMEOUT)
        body = {"ready": False, "not_ready": ["readiness"], "error": "checks timed out"}
        return web.json_response(body, status=503)
    except Exception as exc:  # a failing check means "not ready", never a 500
        log.warning("readiness checks failed", error=type(exc).__name__)
        body = {"ready": False, "not_ready": ["readiness"], "error": type(exc).__name__}
        return web.json_response(body, status=503)
    not_ready = sorted(name for name, ok in checks.items() if not ok)
    body = {"ready": not not_ready, "checks": checks, "not_ready": not_ready}
    return web.json_response(body, status=503 if not_ready else 200)


async def metrics(request: web.Request) -> web.Response:
    payload = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_web_app(
    readiness: Readiness | None = None, *, registry: CollectorRegistry = REGISTRY
) -> web.Application:
    """The app with ``/healthz``, ``/readyz`` and ``/metrics``. ``readiness`` returns
    ``{check name: ready?}``; without it the app is ready as soon as it is up."""
    app = web.Application(middlewares=[correlation_middleware])
    app[READINESS_KEY] = readiness or _always_ready
    app[REGISTRY_KEY] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_web_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (port 0: any free one). Returns the runner (call
    ``await runner.cleanup()`` to stop) and the port actually bound."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:  # (host, port[, flow, scope]) of each bound socket
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    log.info("http server listening", host=host, port=bound)
    return runner, bound
