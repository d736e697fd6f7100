"""Explanations on a job queue in Redis (saq), shared by every replica of the bot.

In the distributed roles (``dockwise serve --role web|gateway``) the engine does not read
images itself: ``JobQueue.explain`` enqueues one saq job per (reference, source, platform)
and waits for its result, while ``dockwise serve --role worker`` processes (``JobWorker``)
run the explanations. Roles and their parts::

    web / gateway replica                   Redis                       worker
    Engine.explain ─ JobQueue.explain ──▶ saq job (key = hash of ─▶ JobWorker runs
      relays progress ◀── pub/sub channel ◀─ ref, source, platform)    Explainer.explain,
      returns the Reply ◀── job result (Reply JSON, TTL) ◀────────────  publishes progress

The saq semantics this relies on (saq 0.26, ``saq/queue/redis.py``, ``saq/worker.py``):

- **One job per key.** ``Queue.enqueue`` of a job whose key is queued, scheduled or active
  returns None and stores nothing (one Lua script: the key is in the ``incomplete`` sorted
  set), so concurrent asks for one image on any replica join ONE job; once the job has
  finished, the next ask enqueues a fresh one (the image caches make it cheap).
- **Heartbeats and sweeps.** A running job is "stuck" when it was not touched for
  ``heartbeat`` seconds or has run longer than ``timeout`` seconds. The worker touches its
  job every third of ``DOCKWISE_JOB_HEARTBEAT`` (``Job.update()``); every
  ``DOCKWISE_JOB_SWEEP`` seconds one worker sweeps the active list: a stuck job is aborted
  (saq waits 5 s for its worker to acknowledge) and, while attempts are left
  (``DOCKWISE_JOB_ATTEMPTS``), queued again for any worker. A worker SIGKILLed mid-job is
  thus replaced within about heartbeat + sweep + 5 s (defaults 15 + 10 + 5 s), and its
  askers are still answered once: they wait for the job's final result, not for a worker.
  Known saq race: a sweep can also catch a job in the instant between a worker's dequeue
  and its "active" mark (more likely with short sweeps on starved CPUs); the job is then
  aborted and run again, and a waiter that sees it aborted asks for it again.
- **Results with a TTL.** A finished job (its result inside) is kept ``ttl`` seconds
  (``DOCKWISE_JOB_RESULT_TTL``), then Redis drops it.

User-caused failures (``DockwiseError``: unknown image, refused registry) are results, not
job failures: they are not retried and reach the asker as the same one-line error. The
queue is bounded: with ``DOCKWISE_QUEUE_MAX`` jobs waiting, a new image is refused with
``QueueFull`` ("busy, try again in a minute"); joining a job already queued is free.

Progress events (``bot.progress.ExplainProgress`` as JSON) go over Redis pub/sub on
``dockwise:jobs:progress:<key>``; a waiting replica relays them to its ``progress``
callback so the chat placeholders keep moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final, Literal

from prometheus_client import Gauge
from redis.exceptions import RedisError
from saq import Job, Queue, Worker
from saq.job import Status

from bot.errors import Busy, DockwiseError, TimedOut, Unreachable
from bot.progress import ExplainProgress, ProgressCallback
from bot.reply import Reply

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.image.explain import Explainer
    from bot.image.source import Platform

__all__ = [
    "EXPLAIN_FUNCTION",
    "QUEUE_NAME",
    "JobQueue",
    "JobWorker",
    "QueueFull",
    "job_key",
]

log = logging.getLogger(__name__)

#: The saq queue's name (its Redis keys are ``saq:dockwise-explain:*`` and
#: ``saq:job:dockwise-explain:<key>``).
QUEUE_NAME: Final = "dockwise-explain"
#: The worker function's name in the queue.
EXPLAIN_FUNCTION: Final = "explain"
PROGRESS_PREFIX: Final = "dockwise:jobs:progress:"
#: A waiter re-reads the job at least this often (seconds), so a missed notification
#: costs at most this much latency.
POLL_INTERVAL: Final = 1.0

#: Seconds between a worker's updates of ``QUEUE_JOBS``.
DEPTH_INTERVAL: Final = 5.0

SourceChoice = Literal["auto", "registry", "docker"]

#: ``dockwise_queue_jobs{state="queued"|"active"}``: the whole queue's jobs waiting for a
#: worker and running, as every worker sees them (scale workers on ``queued``).
QUEUE_JOBS = Gauge(
    "dockwise_queue_jobs",
    "Explanation jobs in the Redis queue, by state (queued: waiting for a worker).",
    ["state"],
)


class QueueFull(Busy):
    """The queue holds ``DOCKWISE_QUEUE_MAX`` waiting explanations: the user is told to try
    again in a minute."""

    kind = "queue_full"


def job_key(reference: str, source: str, platform: str | None) -> str:
    """The saq job key of one explanation: 32 hex digits of SHA-256 over the reference as
    asked, the source choice and the platform (``"None"`` for the default), so every
    replica computes the same key for the same ask."""
    raw = json.dumps([reference, source, str(platform)])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def progress_channel(key: str) -> str:
    """The pub/sub channel carrying the progress events of job ``key``."""
    return PROGRESS_PREFIX + key


def _error_classes() -> dict[str, type[DockwiseError]]:
    found: dict[str, type[DockwiseError]] = {}
    pending: list[type[DockwiseError]] = [DockwiseError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.kind, cls)
        pending.extend(cls.__subclasses__())
    return found


def _rebuild_error(kind: str, message: str) -> DockwiseError:
    """A worker's ``DockwiseError`` again, with its class when this process knows it."""
    cls = _error_classes().get(kind, DockwiseError)
    try:
        return cls(message)
    except TypeError:  # a subclass with another constructor
        exc = DockwiseError(message)
        exc.kind = kind
        return exc


class JobQueue:
    """The client side (web and gateway replicas) and the shared handle (workers) of the
    explanation queue in Redis. ``connect()`` before use, ``close()`` after."""

    def __init__(
        self,
        redis_url: str,
        *,
        queue_max: int = 100,
        job_timeout: int = 70,
        heartbeat: int = 15,
        sweep: int = 10,
        attempts: int = 3,
        result_ttl: int = 600,
    ) -> None:
        self.queue: Queue = Queue.from_url(redis_url, name=QUEUE_NAME)
        self.queue_max = queue_max
        self.job_timeout = job_timeout
        self.heartbeat = heartbeat
        self.sweep = sweep
        self.attempts = attempts
        self.result_ttl = result_ttl
        # job key -> (the one local wait on Redis, progress callbacks of its askers)
        self._local: dict[str, tuple[asyncio.Future[Reply], list[ProgressCallback]]] = {}
        # The depth check and the enqueue of this process's asks in turn, so a burst of new
        # images cannot all read the same depth and overfill the queue.
        self._enqueueing = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> JobQueue:
        """The queue on ``DOCKWISE_REDIS_URL`` (raises InvalidInput when unset) with the
        ``DOCKWISE_QUEUE_MAX`` / ``DOCKWISE_JOB_*`` settings; the job timeout is
        ``DOCKWISE_EXPLAIN_TIMEOUT`` plus 10 s."""
        from bot.errors import InvalidInput

        if settings.redis_url is None:
            raise InvalidInput("the job queue needs DOCKWISE_REDIS_URL")
        return cls(
            settings.redis_url.get_secret_value(),
            queue_max=settings.queue_max,
            job_timeout=int(settings.explain_timeout) + 10,
            heartbeat=settings.job_heartbeat,
            sweep=settings.job_sweep,
            attempts=settings.job_attempts,
            result_ttl=settings.job_result_ttl,
        )

    @property
    def redis(self) -> Any:
        """The ``redis.asyncio.Redis`` client the saq queue uses."""
        return self.queue.redis  # type: ignore[attr-defined]

    async def connect(self) -> None:
        await self.queue.connect()

    async def close(self) -> None:
        """Stop the waits of this process (their askers get CancelledError) and
        disconnect."""
        for waiting, _listeners in list(self._local.values()):
            waiting.cancel()
        with contextlib.suppress(RedisError, OSError):
            await self.queue.disconnect()

    async def ping(self) -> bool:
        """For ``/readyz``: Redis answers."""
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def depth(self) -> int:
        """Jobs waiting for a worker (not counting running ones)."""
        return await self.queue.count("queued")

    async def explain(
        self,
        reference: str,
        *,
        source: SourceChoice = "auto",
        platform: Platform | None = None,
        progress: ProgressCallback | None = None,
    ) -> Reply:
        """The explainer's reply for ``reference``, computed by a worker: joins the job
        already queued or running for the same (reference, source, platform) or enqueues
        one, relays its progress events to ``progress`` (on this event loop) and returns
        its result. Asks for one key in this process share one wait (one pub/sub
        connection). Raises the worker's ``DockwiseError`` (same kind and message),
        ``QueueFull`` when ``queue_max`` jobs wait, ``TimedOut`` when no result came within
        every attempt's timeout plus the sweeps, ``Unreachable`` when Redis fails."""
        key = job_key(reference, source, None if platform is None else str(platform))
        entry = self._local.get(key)
        if entry is None:  # the first local ask waits on Redis for every ask in this process
            listeners: list[ProgressCallback] = []

            def fan_out(event: ExplainProgress) -> None:
                for listener in list(listeners):
                    listener(event)

            waiting: asyncio.Future[Reply] = asyncio.ensure_future(
                self._explain_or_fail(key, reference, source, platform, fan_out)
            )
            entry = self._local[key] = (waiting, listeners)
            waiting.add_done_callback(functools.partial(self._forget, key, entry))
        task, listeners = entry
        if progress is not None:
            listeners.append(progress)
        try:
            return await asyncio.shield(task)
        finally:
            if progress is not None and progress in listeners:
                listeners.remove(progress)

    def _forget(
        self, key: str, entry: tuple[asyncio.Future[Reply], Any], done: asyncio.Future[Reply]
    ) -> None:
        if self._local.get(key) is entry:
            del self._local[key]
        if not done.cancelled():
            done.exception()  # retrieved: no "never retrieved" warning when every asker left

    async def _explain_or_fail(
        self,
        key: str,
        reference: str,
        source: SourceChoice,
        platform: Platform | None,
        progress: ProgressCallback,
    ) -> Reply:
        try:
            return await self._explain(key, reference, source, platform, progress)
        except (RedisError, OSError) as exc:
            raise Unreachable(f"The job queue (Redis) failed: {type(exc).__name__}") from None

    async def _explain(
        self,
        key: str,
        reference: str,
        source: SourceChoice,
        platform: Platform | None,
        progress: ProgressCallback | None,
    ) -> Reply:
        pubsub = self.redis.pubsub()
        try:
            # Subscribe before the job can start, so no progress event is missed.
            await pubsub.subscribe(progress_channel(key), self.queue.job_id(key))
            job = await self._join_or_enqueue(key, reference, source, platform)
            deadline = time.monotonic() + self._patience()
            while True:
                stored = await self.queue.job(key)
                if stored is None:  # expired or swept away: ask again
                    job = await self._join_or_enqueue(key, reference, source, platform)
                    stored = job
                if stored.status is Status.COMPLETE:
                    return self._result(stored.result)
                if stored.status is Status.FAILED:  # crashed or timed out in every attempt
                    log.warning("explanation job %s failed: %s", key, (stored.error or "")[-200:])
                    raise Unreachable(
                        f"Explaining {reference[:100]} failed on the workers; try again."
                    )
                if stored.status is Status.ABORTED:
                    # A sweep can abort a job a worker has just dequeued (saq marks it
                    # active a moment later) and queue it again: ask for it again, which
                    # joins the retry or, once saq's abort marker is gone, enqueues anew.
                    await self._join_or_enqueue(key, reference, source, platform)
                if time.monotonic() > deadline:
                    raise TimedOut(f"Explaining {reference[:100]} took too long; try again.")
                await self._relay_until_change(pubsub, key, progress, POLL_INTERVAL)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    def _patience(self) -> float:
        """Seconds a waiter waits for a result: every attempt's timeout, and the
        heartbeat, sweep and saq's 5 s abort wait between attempts."""
        return self.attempts * (self.job_timeout + self.heartbeat + self.sweep + 5) + 5

    async def _join_or_enqueue(
        self, key: str, reference: str, source: SourceChoice, platform: Platform | None
    ) -> Job:
        existing = await self.queue.job(key)
        if existing is not None and existing.status in (Status.QUEUED, Status.ACTIVE):
            return existing
        async with self._enqueueing:
            return await self._enqueue(key, reference, source, platform)

    async def _enqueue(
        self, key: str, reference: str, source: SourceChoice, platform: Platform | None
    ) -> Job:
        waiting = await self.depth()
        if waiting >= self.queue_max:
            raise QueueFull(
                f"I'm busy: {waiting} image explanations are waiting. Try again in a minute."
            )
        job = Job(
            function=EXPLAIN_FUNCTION,
            kwargs={
                "reference": reference,
                "source": source,
                "platform": None if platform is None else str(platform),
            },
            key=key,
            timeout=self.job_timeout,
            heartbeat=self.heartbeat,
            retries=self.attempts,
            ttl=self.result_ttl,
        )
        enqueued = await self.queue.enqueue(job)
        if enqueued is None:  # another replica enqueued it first: join that one
            joined = await self.queue.job(key)
            if joined is not None:
                return joined
        return job

    async def _relay_until_change(
        self, pubsub: Any, key: str, progress: ProgressCallback | None, within: float
    ) -> None:
        """Relay progress events until a job status message arrives or ``within``
        seconds pass."""
        end = time.monotonic() + within
        channel = progress_channel(key).encode()
        while (left := end - time.monotonic()) > 0:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is None:
                continue
            if message.get("channel") != channel:
                return  # saq published a status change
            if progress is not None:
                with contextlib.suppress(ValueError, TypeError):
                    progress(ExplainProgress(**json.loads(message["data"])))

    @staticmethod
    def _result(result: Any) -> Reply:
        if isinstance(result, dict) and "error" in result:
            error = result["error"]
            raise _rebuild_error(str(error.get("kind")), str(error.get("message")))
        if isinstance(result, dict) and "reply" in result:
            return Reply.from_json(result["reply"])
        raise Unreachable("A worker returned something that is not an explanation.")


class JobWorker:
    """A worker process's side: a saq ``Worker`` running ``concurrency`` explanations at a
    time with its own ``Explainer`` (the image caches are shared as configured), touching
    each job every third of the heartbeat and publishing its progress."""

    def __init__(
        self,
        jobs: JobQueue,
        settings: Settings,
        *,
        explainer: Explainer | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.jobs = jobs
        self.settings = settings
        self._explainer = explainer
        self.worker: Worker[Any] = Worker(
            jobs.queue,
            # host-pid-random: which process holds a job (saq's Job.worker_id) at a glance
            id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            functions=[(EXPLAIN_FUNCTION, self._explain_job)],
            concurrency=concurrency if concurrency is not None else settings.worker_concurrency,
            timers={"sweep": jobs.sweep, "schedule": 1, "abort": 1, "worker_info": 10},
            dequeue_timeout=1.0,
            shutdown_grace_period_s=5,
        )
        self.worker.SIGNALS = []  # `dockwise serve` owns SIGTERM
        self._task: asyncio.Task[None] | None = None
        self._gauges: asyncio.Task[None] | None = None

    @property
    def explainer(self) -> Explainer:
        if self._explainer is None:
            from bot.image.explain import Explainer

            self._explainer = Explainer(self.settings)
        return self._explainer

    def start(self) -> asyncio.Task[None]:
        """The worker as a background task (runs until ``stop()`` or cancellation), and
        the ``dockwise_queue_jobs`` gauges updated every ``DEPTH_INTERVAL`` seconds."""
        self._task = asyncio.create_task(self.worker.start(), name="dockwise-worker")
        self._gauges = asyncio.create_task(self._report_depth(), name="dockwise-queue-depth")
        return self._task

    async def _report_depth(self) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                for state in ("queued", "active"):
                    QUEUE_JOBS.labels(state=state).set(await self.jobs.queue.count(state))
            await asyncio.sleep(DEPTH_INTERVAL)

    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._gauges is not None:
            self._gauges.cancel()
        await self.worker.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._explainer is not None:
            await self._explainer.aclose()

    async def _explain_job(
        self, ctx: dict[str, Any], *, reference: str, source: SourceChoice, platform: str | None
    ) -> dict[str, Any]:
        """The saq job function: ``{"reply": Reply JSON}`` or, for a user-caused failure,
        ``{"error": {"kind", "message"}}`` (a result: not retried)."""
        from bot.image.source import Platform

        job: Job = ctx["job"]
        events: asyncio.Queue[ExplainProgress | None] = asyncio.Queue()
        channel = progress_channel(job.key)

        async def publish() -> None:  # in order, until the None that ends the job
            while (event := await events.get()) is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self.jobs.redis.publish(channel, json.dumps(asdict(event)))

        async def beat() -> None:
            while True:
                await asyncio.sleep(max(self.jobs.heartbeat / 3, 0.2))
                with contextlib.suppress(RedisError, OSError):
                    await job.update()

        helpers = [asyncio.create_task(publish()), asyncio.create_task(beat())]
        try:
            chosen = Platform.parse(platform) if platform else None
            reply = await self.explainer.explain(
                reference, source=source, platform=chosen, progress=events.put_nowait
            )
            return {"reply": reply.to_json()}
        except DockwiseError as exc:
            return {"error": {"kind": exc.kind, "message": str(exc)}}
        except ValueError as exc:  # a platform string no replica would send
            return {"error": {"kind": "invalid_input", "message": str(exc)[:200]}}
        finally:
            events.put_nowait(None)  # the events before the result are published first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(helpers[0]), 2.0)
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
