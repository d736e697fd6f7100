"""How far do the distributed roles scale on one machine? (issue 13)

1. **Explanations per minute for 1, 2 and 4 workers.** Starts a throwaway redis-server
   and docker-registry with ``IMAGES`` distinct test images (three layers each: an
   os-release and dpkg status, 1 MB of incompressible bytes, 200 small files), then for
   each worker count starts that many ``dockwise serve --role worker`` processes (each
   ``DOCKWISE_WORKER_CONCURRENCY`` jobs at a time), submits every image at once through
   ``bot.jobs.JobQueue`` (what a web replica does) and times first submission to last
   result. Caches are cold for every run: Redis is flushed and each worker gets a fresh
   cache directory (the registry's files are in the page cache: warm).
2. **The web tier's question throughput.** One and two ``dockwise serve --role web``
   replicas in Slack HTTP mode against the Slack emulator; ``QUESTIONS`` signed
   ``app_mention`` events (distinct users and channels, so no rate limit applies) are
   sent round-robin, ``CONCURRENCY`` in flight, timed until every answer was posted
   (after one warm-up question per replica: the first answer loads the retrieval index).
   Also the engine alone (``Engine.handle`` in this process) for comparison.

Prints numbers only (no asserts). Run:
``.venv/bin/python bench/scale.py [IMAGES] [QUESTIONS]`` (needs redis-server and
/usr/bin/docker-registry; takes a few minutes on two cores).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.jobs import JobQueue  # noqa: E402
from bot.reply import ReplyKind  # noqa: E402
from tests.emulators.slack import (  # noqa: E402
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackEmulator,
)
from tests.fixtures.redis import start_redis  # noqa: E402
from tests.fixtures.registry import free_port, make_layer, push_image, start_registry  # noqa: E402

WORKER_COUNTS = (1, 2, 4)
CONCURRENCY = 32
DPKG_STATUS = "".join(
    f"Package: pkg{n}\nStatus: install ok installed\nVersion: 1.{n}\nArchitecture: amd64\n"
    f"Description: package {n}\n\n"
    for n in range(60)
)


def push_images(pusher: object, count: int) -> list[str]:
    repos = []
    for n in range(count):
        layers = [
            make_layer(
                {
                    "etc/os-release": b'ID=debian\nVERSION_ID="12"\n',
                    "var/lib/dpkg/status": DPKG_STATUS.encode(),
                }
            ),
            make_layer({"usr/local/bin/app": os.urandom(1 << 20)}),
            make_layer(
                {f"srv/data/{i}.txt": f"row {i} of {n}\n".encode() * 20 for i in range(200)}
            ),
        ]
        repo = f"scale/app{n}"
        push_image(pusher, repo, "1", layers)  # type: ignore[arg-type]
        repos.append(repo)
    return repos


def start(
    role: str, env: dict[str, str], tmp: Path, name: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKWISE_", "SLACK_"))}
    full.update(env)
    full.update(DOCKWISE_PORT=str(port), DOCKWISE_CACHE_DIR=str(tmp / f"cache-{name}"))
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--role", role],
        env=full,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, port


async def wait_ready(ports: list[int], procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 300
    async with aiohttp.ClientSession() as session:
        for port, proc in zip(ports, procs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"a process exited with {proc.returncode}")
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("processes not ready within 300 s")
                await asyncio.sleep(0.1)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def explanations(env: dict[str, str], refs: list[str], tmp: Path, redis_url: str) -> None:
    concurrency = int(env.get("DOCKWISE_WORKER_CONCURRENCY", "4"))
    print(f"explanations: {len(refs)} distinct images (3 layers, ~1.1 MB each), cold caches,")
    print(f"  {concurrency} jobs at a time per worker, {os.cpu_count()} CPUs on this machine")
    for workers in WORKER_COUNTS:
        queue = JobQueue(redis_url)
        await queue.connect()
        await queue.redis.flushall()
        run = tmp / f"run{workers}"
        run.mkdir()
        started = [start("worker", env, run, f"worker{n}") for n in range(workers)]
        procs = [p for p, _ in started]
        try:
            await wait_ready([port for _, port in started], procs)
            t0, cpu0 = time.perf_counter(), cpu_seconds(procs)
            replies = await asyncio.gather(*(queue.explain(ref) for ref in refs))
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds(procs) - cpu0
        finally:
            stop(procs)
            await queue.close()
        good = sum(1 for r in replies if r.kind is ReplyKind.IMAGE)
        print(
            f"  {workers} worker(s): {good}/{len(refs)} explained in {elapsed:.1f} s = "
            f"{good / elapsed * 60:.0f} explanations/min (workers used {cpu:.1f} CPU-s)"
        )


async def questions(env: dict[str, str], count: int, tmp: Path) -> None:
    from bot.engine import Asker, Engine

    print(f"questions: {count} app_mention events, {CONCURRENCY} in flight")
    engine = Engine()
    asked = ["why FROM ubuntu?", "is a container a VM?", "what is a layer?", "alpine or slim?"]
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(n: int) -> None:
        async with semaphore:
            await engine.handle(asked[n % len(asked)], asker=Asker("bench", f"U{n}", f"C{n}"))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    elapsed = time.perf_counter() - t0
    print(f"  engine alone (this process): {count / elapsed:.0f} questions/s")
    await engine.aclose()

    for replicas in (1, 2):
        rate = await web_throughput(replicas, env, count, tmp, asked)
        print(
            f"  {replicas} web replica(s), Slack HTTP mode: {rate:.0f} questions/s "
            "(signed event in to answer posted)"
        )


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU seconds the processes used so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in procs:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def posted(emu: SlackEmulator, count: int) -> bool:
    return sum(1 for p in emu.posts() if p.ok) >= count


async def web_throughput(
    replicas: int, env: dict[str, str], count: int, tmp: Path, asked: list[str]
) -> float:
    """Questions per second through ``replicas`` web processes (event in, answer out)."""
    emu = SlackEmulator()
    await emu.start()
    web_env = {
        **env,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "DOCKWISE_SLACK_API_URL": emu.api_url,
    }
    run = tmp / f"web{replicas}"
    run.mkdir()
    started = [start("web", web_env, run, f"web{n}") for n in range(replicas)]
    procs = [p for p, _ in started]
    semaphore = asyncio.Semaphore(CONCURRENCY)
    urls = [f"http://127.0.0.1:{port}/slack/events" for _, port in started]

    async def send(n: int) -> None:
        event = emu.mention(asked[n % len(asked)], channel=f"C{replicas}Q{n}")
        event["user"] = f"U{replicas}Q{n}"
        async with semaphore:
            await emu.http_event(urls[n % len(urls)], event)

    try:
        await wait_ready([port for _, port in started], procs)
        for n, url in enumerate(urls):  # warm up: the first answer loads the retrieval index
            await emu.http_event(url, emu.mention(asked[0], channel=f"CWARM{n}"))
        await emu.wait_for(lambda _r: posted(emu, len(urls)), within=300)
        count += len(urls)
        t0, own0, theirs0 = time.perf_counter(), time.process_time(), cpu_seconds(procs)
        await asyncio.gather(*(send(n) for n in range(len(urls), count)))
        await emu.wait_for(lambda _r: posted(emu, count), within=600)
        count -= len(urls)
        wall = time.perf_counter() - t0
        own, theirs = time.process_time() - own0, cpu_seconds(procs) - theirs0
        print(
            f"    (over {wall:.1f} s: this process, the emulator and client, used {own:.1f} "
            f"CPU-s; the replicas {theirs:.1f} CPU-s)"
        )
        return count / wall
    finally:
        stop(procs)
        await emu.stop()


async def main(images: int, count: int) -> None:
    from bot.observability import configure_logging

    configure_logging("WARNING")  # the engine in this process logs each answer at INFO
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp / "redis")
        registry = start_registry(tmp / "registry")
        try:
            repos = push_images(registry.pusher(), images)
            refs = [f"{registry.host}/{repo}:1" for repo in repos]
            env = {
                "DOCKWISE_REDIS_URL": redis.url,
                "DOCKWISE_HOST": "127.0.0.1",
                "DOCKWISE_INSECURE_REGISTRIES": registry.host,
                "DOCKWISE_RATE_LIMIT": "1000000/minute",
                "DOCKWISE_EXPLAIN_RATE_LIMIT": "1000000/minute",
                "DOCKWISE_LOG_LEVEL": "WARNING",
            }
            await explanations(env, refs, tmp, redis.url)
            await questions(env, count, tmp)
        finally:
            registry.stop()
            redis.stop()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(args[0] if args else 24, args[1] if len(args) > 1 else 400))
