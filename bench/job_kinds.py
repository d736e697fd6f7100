"""Compares and Dockerfiles on the job queue (issue 13): what does the queue cost them?

Starts a throwaway redis-server and docker-registry with a base image and an app built on
it (the base's two layers plus 1 MB of incompressible bytes), then times, with cold caches
every run (fresh cache directory, Redis flushed):

1. ``Engine.compare(base, app)`` in this process (``--role all``), and the same through
   ``JobQueue.compare`` with one ``JobWorker`` in this process (what a web replica and a
   worker do, minus the network hop between machines);
2. the same for ``Engine.explain_dockerfile`` of a Dockerfile ``FROM`` the app;
3. ``ASKS`` concurrent identical compares through the queue: jobs made and wall time.

Prints numbers only (no asserts). Run: ``.venv/bin/python bench/job_kinds.py [ASKS]``
(needs redis-server and /usr/bin/docker-registry).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.config import Settings  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.image.explain import Explainer  # noqa: E402
from bot.jobs import JobQueue, JobWorker  # noqa: E402
from bot.knowledge import KnowledgeBase  # noqa: E402
from bot.reply import Reply, ReplyKind  # noqa: E402
from tests.fixtures.redis import start_redis  # noqa: E402
from tests.fixtures.registry import make_layer, push_image, start_registry  # noqa: E402

RUNS = 3


def push(pusher: object) -> tuple[str, str]:
    base_layers = [
        make_layer({"etc/os-release": b'ID=debian\nVERSION_ID="12"\n'}),
        make_layer({f"usr/share/doc/{i}.txt": b"doc\n" * 50 for i in range(200)}),
    ]
    app = [*base_layers, make_layer({"usr/local/bin/app": os.urandom(1 << 20)})]
    push_image(pusher, "bench/cmp", "base", base_layers)  # type: ignore[arg-type]
    push_image(pusher, "bench/cmp", "app", app)  # type: ignore[arg-type]
    return "bench/cmp:base", "bench/cmp:app"


async def timed(work: Callable[[Engine], Awaitable[Reply]], engine: Engine) -> float:
    start = time.perf_counter()
    reply = await work(engine)
    if reply.kind is ReplyKind.ERROR:
        raise SystemExit(f"failed: {reply.body}")
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


async def main(asks: int) -> None:
    with tempfile.TemporaryDirectory() as raw:
        tmp = Path(raw)
        redis = start_redis(tmp / "redis")
        registry = start_registry(tmp / "registry")
        try:
            base, app = (f"{registry.host}/{r}" for r in push(registry.pusher()))
            dockerfile = f"FROM {app}\nRUN apt-get update && apt-get install -y curl\n"
            knowledge = KnowledgeBase.load()
            rows: dict[str, list[float]] = {}
            for run in range(RUNS):

                def settings(name: str, run: int = run) -> Settings:
                    return Settings(
                        _env_file=None,
                        cache_dir=tmp / f"cache-{name}-{run}",
                        insecure_registries=[registry.host],
                    )

                asks_by_kind: dict[str, Callable[[Engine], Awaitable[Reply]]] = {
                    "compare": lambda e: e.compare(base, app),
                    "dockerfile": lambda e: e.explain_dockerfile(dockerfile),
                }
                for kind, ask in asks_by_kind.items():
                    local = Engine(knowledge=knowledge, explainer=Explainer(settings(f"l{kind}")))
                    rows.setdefault(f"{kind}, one process", []).append(await timed(ask, local))
                    await local.aclose()
                    queue, handle = JobQueue(redis.url), JobQueue(redis.url)
                    await queue.connect()
                    await handle.connect()
                    await queue.redis.flushdb()
                    worker = JobWorker(handle, settings(f"w{kind}"))
                    worker.start()
                    web = Engine(knowledge=knowledge, jobs=queue)
                    rows.setdefault(f"{kind}, through the queue", []).append(await timed(ask, web))
                    await worker.stop()
                    await queue.close()
                    await handle.close()
            for name, values in rows.items():
                print(f"{name:32s} median {median(values) * 1000:7.0f} ms over {RUNS} cold runs")

            queue, handle = JobQueue(redis.url, queue_max=asks + 1), JobQueue(redis.url)
            await queue.connect()
            await handle.connect()
            await queue.redis.flushdb()
            worker = JobWorker(handle, settings("burst"))
            worker.start()
            start = time.perf_counter()
            replies = await asyncio.gather(*(queue.compare(base, app) for _ in range(asks)))
            took = time.perf_counter() - start
            jobs = len(await queue.redis.keys("saq:job:*"))
            ok = sum(r.kind is ReplyKind.IMAGE for r in replies)
            print(
                f"{asks} concurrent identical compares: {jobs} job(s), {ok} answers, {took:.2f} s"
            )
            await worker.stop()
            await queue.close()
            await handle.close()
        finally:
            registry.stop()
            redis.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
