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

**Deliveries** (``JobQueue.explain_later``): instead of waiting, a replica can attach a
``Delivery`` (platform name + a JSON target the platform's adapter described, e.g. a
webhook URL) to the job and return at once; the worker that finishes the job posts the
reply through that platform's ``ChatAdapter.deliver``. Deliveries of job ``key`` are a
Redis list ``dockwise:jobs:deliveries:<key>`` with a ``...:closed`` marker, both with
TTLs. Two Lua scripts make each delivery happen exactly once: *attach* pushes only while
the list is not closed; *drain* (the worker, once the reply is known) takes the whole
list and closes it in one step. An attach refused because the job just finished is
delivered by the submitting replica itself from the job's result (``explain``). The
drain runs in the job function, before saq stores the result, so a worker killed before
it leaves the deliveries to the retried job; one killed between drain and posting loses
them (a window of one HTTP post). When the last attempt crashes, its deliveries get the
"failed on the workers" error; a last attempt that times out or is killed leaves them
unanswered.
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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from prometheus_client import Gauge
from redis.exceptions import RedisError
from saq import Job, Queue, Worker
from saq.job import Status

from bot.errors import Busy, DockwiseError, InvalidInput, TimedOut, Unreachable
from bot.progress import ExplainProgress, ProgressCallback, ProgressRelay
from bot.reply import Reply

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.image.explain import Explainer
    from bot.image.source import Platform

__all__ = [
    "EXPLAIN_FUNCTION",
    "QUEUE_NAME",
    "Delivery",
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
DELIVERIES_PREFIX: Final = "dockwise:jobs:deliveries:"
#: Seconds between two progress lines a worker shows one delivery (and between its looks
#: for deliveries attached to a running job).
DELIVERY_PROGRESS_INTERVAL: Final = 1.0
#: Seconds after which a delivery's progress line is shown again with the elapsed time
#: while the job reports nothing new.
DELIVERY_PROGRESS_HEARTBEAT: Final = 3.0

# KEYS[1] = the deliveries list, KEYS[2] = its closed marker; ARGV = delivery JSON, TTL s.
# Returns 1 when attached, 0 when the job's deliveries were already drained.
_ATTACH: Final = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
# Same KEYS; ARGV = TTL s of the closed marker. Returns every attached delivery, once.
_DRAIN: Final = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[1]))
return items
"""
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
    """The saq job key of one explanation: 32 hex digits of SHA-256 over the normalised
    reference (``alpine``, ``alpine:latest`` and ``docker.io/library/alpine`` are one image,
    as ``bot.image.reference.parse_reference`` reads them; anything it cannot parse, such as
    a local image id, as asked), the source choice and the platform (``"None"`` for the
    default), so every replica computes the same key for the same image."""
    from bot.errors import InvalidReference
    from bot.image.reference import parse_reference

    try:
        image = str(parse_reference(reference))
    except InvalidReference:
        image = reference
    raw = json.dumps([image, source, str(platform)])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def progress_channel(key: str) -> str:
    """The pub/sub channel carrying the progress events of job ``key``."""
    return PROGRESS_PREFIX + key


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a finished explanation goes: ``platform`` (a ``ChatAdapter.name``) and
    ``target``, a JSON-ready dict that adapter described (its ``deliver`` reads it)."""

    platform: str
    target: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"platform": self.platform, "target": self.target})

    @classmethod
    def from_json(cls, raw: str | bytes) -> Delivery:
        """Raises ValueError for anything but ``{"platform": str, "target": dict}``."""
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("platform"), str):
            raise ValueError("not a delivery")
        target = data.get("target")
        if not isinstance(target, dict):
            raise ValueError("not a delivery")
        return cls(data["platform"], target)


class Deliverer(Protocol):
    """Posts to deliveries: the adapter named by a delivery (``bot.chat.ChatAdapter``
    satisfies this). ``progress_updates(target)``: progress lines that delivery may get
    (None: no cap)."""

    def progress_updates(self, target: dict[str, Any]) -> int | None: ...

    async def deliver(self, target: dict[str, Any], reply: Reply) -> None: ...

    async def show_progress(self, target: dict[str, Any], line: str) -> None: ...


def deliveries_keys(key: str) -> list[str]:
    """The Redis keys of job ``key``'s deliveries: the list and its closed marker."""
    return [DELIVERIES_PREFIX + key, DELIVERIES_PREFIX + key + ":closed"]


def finished_reply(reference: str, result: Reply | DockwiseError) -> Reply:
    """What a delivery shows: an image reply with its buttons, or the one-line error
    (titled like ``Engine.explain``'s)."""
    from bot.actions import with_actions
    from bot.reply import ReplyKind

    if isinstance(result, DockwiseError):
        return Reply(
            kind=ReplyKind.ERROR, title=f"Couldn't explain {reference[:100]}", body=str(result)
        )
    return with_actions(result, None, image=reference)


async def post_delivery(
    deliverers: Mapping[str, Deliverer], delivery: Delivery, reply: Reply
) -> bool:
    """Post ``reply`` through the adapter named by ``delivery``; True when it was posted.
    A missing adapter or a failed post is logged (never raised: the job's result stands)."""
    adapter = deliverers.get(delivery.platform)
    if adapter is None:
        log.error("no %s adapter in this process: a reply was not delivered", delivery.platform)
        return False
    try:
        await adapter.deliver(delivery.target, reply)
    except Exception as exc:
        log.error("delivering to %s failed: %s", delivery.platform, type(exc).__name__)
        return False
    return True


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
        #: The adapters of this process by platform name, for deliveries it posts itself
        #: (a worker's finished jobs; a replica's attach that came too late).
        self.deliverers: dict[str, Deliverer] = {}
        self._background: set[asyncio.Task[None]] = set()
        # The depth check and the enqueue of this process's asks in turn, so a burst of new
        # images cannot all read the same depth and overfill the queue.
        self._enqueueing = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> JobQueue:
        """The queue on ``DOCKWISE_REDIS_URL`` (raises InvalidInput when unset) with the
        ``DOCKWISE_QUEUE_MAX`` / ``DOCKWISE_JOB_*`` settings; the job timeout is
        ``DOCKWISE_EXPLAIN_TIMEOUT`` plus 10 s."""
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
        for task in list(self._background):
            task.cancel()
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

    async def explain_later(
        self,
        reference: str,
        *,
        source: SourceChoice = "auto",
        platform: Platform | None = None,
        delivery: Delivery,
    ) -> None:
        """Have the reply for ``reference`` posted to ``delivery`` by the worker that
        finishes its job (joined or enqueued as in ``explain``), and return at once. When
        the job finished before the delivery could be attached, this process waits for
        the result in the background and posts it through ``self.deliverers`` itself.
        Raises ``QueueFull`` (synchronously) when ``queue_max`` jobs wait and
        ``Unreachable`` when Redis fails; errors of the explanation reach the delivery as
        an error reply."""
        key = job_key(reference, source, None if platform is None else str(platform))
        try:
            await self._join_or_enqueue(key, reference, source, platform)
            attached = await self.redis.eval(
                _ATTACH, 2, *deliveries_keys(key), delivery.to_json(), self._delivery_ttl()
            )
        except (RedisError, OSError) as exc:
            raise Unreachable(f"The job queue (Redis) failed: {type(exc).__name__}") from None
        if not attached:  # drained already: that job's worker won't post this one
            log.info("explanation job %s finished before its delivery: posting it here", key)
            task = asyncio.create_task(self._deliver_here(reference, source, platform, delivery))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def drain_deliveries(self, key: str) -> list[Delivery]:
        """Take every delivery attached to job ``key`` and close its list, in one atomic
        step: later attaches are refused until a fresh job for ``key`` is enqueued. What
        a worker does when the job's reply is known. Raises RedisError/OSError."""
        drained = await self.redis.eval(_DRAIN, 2, *deliveries_keys(key), self._delivery_ttl())
        out: list[Delivery] = []
        for raw in drained or []:
            try:
                out.append(Delivery.from_json(raw))
            except ValueError:
                log.warning("explanation job %s: a malformed delivery was dropped", key)
        return out

    def _delivery_ttl(self) -> int:
        """Seconds deliveries and their closed marker live: a job's whole patience."""
        return int(self._patience()) + self.result_ttl

    async def _deliver_here(
        self,
        reference: str,
        source: SourceChoice,
        platform: Platform | None,
        delivery: Delivery,
    ) -> None:
        try:
            result: Reply | DockwiseError = await self.explain(
                reference, source=source, platform=platform
            )
        except DockwiseError as exc:
            result = exc
        await post_delivery(self.deliverers, delivery, finished_reply(reference, result))

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
        # A fresh job takes deliveries again (the last one's drain closed its list).
        await self.redis.delete(deliveries_keys(key)[1])
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
        #: Seconds between progress lines shown to a job's deliveries.
        self.progress_interval = DELIVERY_PROGRESS_INTERVAL
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
        ``{"error": {"kind", "message"}}`` (a result: not retried). Before returning, the
        job's deliveries are drained and posted (``post_delivery``); progress lines go to
        them meanwhile (at most one per ``progress_interval`` seconds)."""
        from bot.image.source import Platform

        job: Job = ctx["job"]
        events: asyncio.Queue[ExplainProgress | None] = asyncio.Queue()
        channel = progress_channel(job.key)

        async def publish() -> None:  # in order, until the None that ends the job
            relays: dict[str, ProgressRelay] = {}
            latest: ExplainProgress | None = None
            try:
                while True:
                    fresh = True
                    try:  # a new event, or a look for deliveries attached meanwhile
                        event = await asyncio.wait_for(events.get(), DELIVERY_PROGRESS_INTERVAL)
                    except TimeoutError:
                        event, fresh = latest, False
                    else:
                        if event is None:
                            return
                        latest = event
                        with contextlib.suppress(RedisError, OSError):
                            await self.jobs.redis.publish(channel, json.dumps(asdict(event)))
                    if event is not None:
                        with contextlib.suppress(RedisError, OSError):
                            await self._show_progress(job.key, event, relays, fresh=fresh)
            finally:  # a progress line in flight lands before the reply
                await asyncio.gather(*(r.close() for r in relays.values()))

        async def beat() -> None:
            while True:
                await asyncio.sleep(max(self.jobs.heartbeat / 3, 0.2))
                with contextlib.suppress(RedisError, OSError):
                    await job.update()

        helpers = [asyncio.create_task(publish()), asyncio.create_task(beat())]
        result: Reply | DockwiseError = Unreachable(
            f"Explaining {reference[:100]} failed on the workers; try again."
        )
        crashed: Exception | None = None
        try:
            try:
                chosen = Platform.parse(platform) if platform else None
                result = await self.explainer.explain(
                    reference, source=source, platform=chosen, progress=events.put_nowait
                )
            except DockwiseError as exc:
                result = exc
            except ValueError as exc:  # a platform string no replica would send
                result = InvalidInput(str(exc)[:200])
            except Exception as exc:
                crashed = exc
        except BaseException:  # cancelled (aborted, shutting down): no more heartbeats
            helpers[1].cancel()
            raise
        finally:
            events.put_nowait(None)  # the events before the result are published first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(helpers[0]), 2.0)
            helpers[0].cancel()
            await asyncio.gather(helpers[0], return_exceptions=True)
        # Heartbeats go on while the replies are posted (many deliveries take seconds): a
        # sweep must not take the job for stuck and abort it mid-posting.
        try:
            if crashed is not None:  # saq retries it; after the last attempt nobody else answers
                if not job.retryable:
                    await self._deliver(job.key, reference, result)
                raise crashed
            await self._deliver(job.key, reference, result)
        finally:
            helpers[1].cancel()
            await asyncio.gather(helpers[1], return_exceptions=True)
        if isinstance(result, Reply):
            return {"reply": result.to_json()}
        return {"error": {"kind": result.kind, "message": str(result)}}

    async def _show_progress(
        self,
        key: str,
        event: ExplainProgress,
        relays: dict[str, ProgressRelay],
        *,
        fresh: bool = True,
    ) -> None:
        """``event`` (the job's latest; ``fresh`` when it just arrived, else only
        deliveries attached since get it) to every delivery attached to job ``key`` so
        far, each through its own ``ProgressRelay`` (kept in ``relays`` by delivery): at
        most one line per ``progress_interval`` seconds, the elapsed time every
        ``DELIVERY_PROGRESS_HEARTBEAT`` seconds while nothing changes, within the
        adapter's ``progress_updates(target)``."""
        for raw in await self.jobs.redis.lrange(deliveries_keys(key)[0], 0, -1):
            relay = relays.get(str(raw))
            if relay is not None and not fresh:
                continue
            if relay is None:
                try:
                    delivery = Delivery.from_json(raw)
                except ValueError:
                    continue
                adapter = self.jobs.deliverers.get(delivery.platform)
                if adapter is None:
                    continue
                relay = relays[str(raw)] = ProgressRelay(
                    functools.partial(adapter.show_progress, delivery.target),
                    min_interval=self.progress_interval,
                    heartbeat=DELIVERY_PROGRESS_HEARTBEAT,
                    max_updates=adapter.progress_updates(delivery.target),
                    shown=True,  # the asker's placeholder
                )
            relay(event)

    async def _deliver(self, key: str, reference: str, result: Reply | DockwiseError) -> None:
        """Drain job ``key``'s deliveries (atomically: each is taken by one worker once)
        and post the reply to each."""
        try:
            drained = await self.jobs.drain_deliveries(key)
        except (RedisError, OSError) as exc:
            log.error("explanation job %s: deliveries unreadable: %s", key, type(exc).__name__)
            return
        if drained:
            reply = finished_reply(reference, result)
            for delivery in drained:
                await post_delivery(self.jobs.deliverers, delivery, reply)
