"""Explanations on a job queue in Redis (saq), shared by every replica of the bot.

In the distributed roles (``dockwise serve --role web|gateway``) the engine does not read
images itself: ``JobQueue.explain`` enqueues one saq job per (reference, source, platform)
and waits for its result, while ``dockwise serve --role worker`` processes (``JobWorker``)
run the explanations. Every piece of work that reads images is a job of its own kind, with
the same guarantees (one job per key, progress, retries, deliveries, the bound):

=====================  ==================  ===========================================
kind (saq function)    key (``*_key``)     work on the worker
=====================  ==================  ===========================================
``explain``            ``job_key``         ``Explainer.explain`` of one image
``compare``            ``compare_key``     ``compare_images`` of A and B (in order)
``dockerfile``         ``dockerfile_key``  ``explain_dockerfile`` with its bases read
=====================  ==================  ===========================================

Comparisons take deliveries as explanations do (``JobQueue.compare_later``, below).

Roles and their parts::

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
  saq's sweep also aborts a job caught in the instant between a worker's dequeue
  (``BLMOVE`` to the active list) and its ACTIVE mark, then retries it from the copy it
  read, so the job runs twice and shows an attempt more (``attempts == 2``).
  ``ExplainQueue.sweep`` closes that race: such a job is swept only when it is unchanged
  since the previous sweep (a dead worker's), never under a live one.
- **Stopping workers.** SIGTERM (rolling update, scale-down) makes ``JobWorker.stop``
  take no new job, give running ones ``DOCKWISE_WORKER_GRACE`` seconds, then hand those
  still explaining back to the queue (``ExplainQueue.hand_back``: one WATCH transaction,
  only while the job is still ACTIVE on this worker in this attempt; ``attempts - 1``,
  ``meta["handed_back"]`` counted) for another worker. saq itself would cancel them after
  its ``shutdown_grace_period_s`` and retry them as a used attempt.
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
TTLs. *Attach* (Lua) pushes only while the list is not closed; *drain* (the worker, once
the reply is known) moves the whole list into the job generation's posting list
(``posting_keys``: the generation is ``Job.queued``, which retries keep) with the result
the deliveries get, and closes the list, in one step. An attach refused because the job
just finished is delivered by the submitting replica itself from the job's result
(``explain``). The drain runs in the job function, before saq stores the result, so a
worker killed before it leaves the deliveries to the retried job.

Posting is **at most once per delivery**: each is claimed (``LMOVE`` posting → in-flight)
right before its post and dropped from the in-flight list after it. A worker killed while
posting leaves the unclaimed deliveries and the kept result: the job's retry (the sweep
finds the dead worker's job) posts them without explaining again, and a sweep that gives
the job up after its last attempt does the same. The one delivery whose post was in
flight is not posted again (its post may have reached the platform, and a response_url
or interaction follow-up posted twice shows twice): the window where an answer can be
lost is one HTTP post of one delivery, logged as "not repeated". When the last attempt
crashes, its deliveries get the "failed on the workers" error; when it times out (saq's
job timeout) or is swept, "took too long; try again" (or the kept reply, when an earlier
attempt had one), once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from prometheus_client import Gauge
from redis import asyncio as redis_asyncio
from redis.exceptions import RedisError, WatchError
from saq import Job, Worker
from saq.job import Status
from saq.queue.redis import RedisQueue
from saq.utils import now

from bot.errors import Busy, DockwiseError, InvalidInput, TimedOut, Unreachable
from bot.progress import ExplainProgress, ProgressCallback, ProgressRelay
from bot.reply import Reply

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.image.explain import Explainer
    from bot.image.source import Platform

__all__ = [
    "COMPARE_FUNCTION",
    "DOCKERFILE_FUNCTION",
    "EXPLAIN_FUNCTION",
    "QUEUE_NAME",
    "Delivery",
    "JobQueue",
    "JobSpec",
    "JobWorker",
    "NoWorker",
    "QueueFull",
    "compare_key",
    "dockerfile_key",
    "job_key",
]

log = logging.getLogger(__name__)

#: The saq queue's name (its Redis keys are ``saq:dockwise-explain:*`` and
#: ``saq:job:dockwise-explain:<key>``).
QUEUE_NAME: Final = "dockwise-explain"
#: The worker functions' names in the queue: one image, two images compared, a Dockerfile
#: with its base images read.
EXPLAIN_FUNCTION: Final = "explain"
COMPARE_FUNCTION: Final = "compare"
DOCKERFILE_FUNCTION: Final = "dockerfile"
PROGRESS_PREFIX: Final = "dockwise:jobs:progress:"
DELIVERIES_PREFIX: Final = "dockwise:jobs:deliveries:"
POSTING_PREFIX: Final = "dockwise:jobs:posting:"
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
# KEYS[1..2] as above, KEYS[3] = the generation's posting list, KEYS[4] = its result;
# ARGV = TTL s, the job's result JSON. Moves every attached delivery to the posting list
# and closes the deliveries, in one step; the result is kept unless one is there already
# (a previous attempt's: its reply is the one every delivery of this generation gets).
# Returns how many deliveries moved.
_DRAIN_TO_POSTING: Final = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[1]))
for _, item in ipairs(items) do redis.call('RPUSH', KEYS[3], item) end
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[1]))
redis.call('SET', KEYS[4], ARGV[2], 'EX', tonumber(ARGV[1]), 'NX')
return #items
"""
# KEYS[1] = the sweep lock, KEYS[2] = saq's active list; ARGV = lock TTL s. saq's own
# sweep listing: every active job id with its stored job, when this worker holds the lock.
_ACTIVE_JOBS: Final = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""
#: A waiter re-reads the job at least this often (seconds), so a missed notification
#: costs at most this much latency.
POLL_INTERVAL: Final = 1.0

#: Seconds a stopping worker allows, past its grace, for handing back or posting before
#: saq cancels what is left.
HAND_BACK_MARGIN: Final = 15

#: Seconds between a worker's updates of ``QUEUE_JOBS`` (and of ``WORKERS_SEEN_KEY``).
DEPTH_INTERVAL: Final = 5.0

#: Set by every running worker each ``DEPTH_INTERVAL`` seconds with a TTL of
#: ``WORKER_SEEN_TTL``: while it is missing no worker runs, and a replica refuses new jobs
#: with ``NoWorker`` instead of queueing them where nothing would ever take them.
WORKERS_SEEN_KEY: Final = "dockwise:jobs:worker_seen"

#: Seconds a worker counts as seen after its last mark: covers a worker restarting (a
#: rolling update, a pod rescheduled) without refusing the asks made meanwhile.
WORKER_SEEN_TTL: Final = 120

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


class NoWorker(Busy):
    """No worker marked ``WORKERS_SEEN_KEY`` within ``WORKER_SEEN_TTL`` seconds (and Redis
    has been up longer than two marking intervals): a new job would wait in the queue with
    nothing to run it, so the asker is told at once."""

    kind = "no_worker"


NO_WORKER_MESSAGE: Final = (
    "No worker is running to explain images right now, so I can't start this one. "
    "Try again in a few minutes."
)


def _image_name(reference: str) -> str:
    """``reference`` as the explainer will read it: pasted forms undone
    (``bot.image.reference.from_paste``) and normalised by ``parse_reference``; anything
    it cannot parse, such as a local image id, as asked."""
    from bot.errors import InvalidReference
    from bot.image.reference import from_paste, parse_reference

    try:
        return str(parse_reference(from_paste(reference)))
    except InvalidReference:
        return reference


def _hashed(parts: list[str]) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def job_key(reference: str, source: str, platform: str | None) -> str:
    """The saq job key of one explanation: 32 hex digits of SHA-256 over the normalised
    reference (``alpine``, ``alpine:latest`` and ``docker.io/library/alpine`` are one image,
    as ``bot.image.reference.parse_reference`` reads them; anything it cannot parse, such as
    a local image id, as asked), the source choice and the platform (``"None"`` for the
    default), so every replica computes the same key for the same image."""
    return _hashed([_image_name(reference), source, str(platform)])


def compare_key(a: str, b: str, source: str, platform: str | None) -> str:
    """The saq job key of one comparison: like ``job_key`` over both normalised
    references in the order asked ("A vs B" and "B vs A" are two replies), the source and
    the platform; never equal to an explanation's key."""
    return _hashed([COMPARE_FUNCTION, _image_name(a), _image_name(b), source, str(platform)])


def dockerfile_key(text: str, source: str) -> str:
    """The saq job key of one Dockerfile explanation: over the Dockerfile's exact text
    and the source its bases are read from."""
    return _hashed([DOCKERFILE_FUNCTION, text, source])


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job as a replica asks for it: the worker ``function`` (``EXPLAIN_FUNCTION``,
    ``COMPARE_FUNCTION`` or ``DOCKERFILE_FUNCTION``), its JSON-ready ``kwargs``, its saq
    ``key`` and ``what`` names the work in errors (e.g. ``"Explaining alpine"``)."""

    function: str
    key: str
    kwargs: dict[str, Any]
    what: str

    @classmethod
    def explain(cls, reference: str, source: str, platform: Platform | None) -> JobSpec:
        chosen = None if platform is None else str(platform)
        return cls(
            EXPLAIN_FUNCTION,
            job_key(reference, source, chosen),
            {"reference": reference, "source": source, "platform": chosen},
            _what(EXPLAIN_FUNCTION, {"reference": reference}),
        )

    @classmethod
    def compare(cls, a: str, b: str, source: str, platform: Platform | None) -> JobSpec:
        chosen = None if platform is None else str(platform)
        return cls(
            COMPARE_FUNCTION,
            compare_key(a, b, source, chosen),
            {"a": a, "b": b, "source": source, "platform": chosen},
            _what(COMPARE_FUNCTION, {"a": a, "b": b}),
        )

    @classmethod
    def dockerfile(cls, text: str, source: str) -> JobSpec:
        return cls(
            DOCKERFILE_FUNCTION,
            dockerfile_key(text, source),
            {"text": text, "source": source},
            _what(DOCKERFILE_FUNCTION, {}),
        )

    @classmethod
    def of_job(cls, job: Job) -> JobSpec:
        """The spec of a stored saq ``job`` (its function, key and kwargs)."""
        kwargs = dict(job.kwargs or {})
        return cls(job.function, job.key, kwargs, _what(job.function, kwargs))

    def finished(self, result: Reply | DockwiseError) -> Reply:
        """What a delivery of this job shows: ``job_reply``."""
        return job_reply(self.function, self.kwargs, result)


def _what(function: str, kwargs: Mapping[str, Any]) -> str:
    """How errors name the work of a ``function`` job with ``kwargs``."""
    if function == COMPARE_FUNCTION:
        return f"Comparing {str(kwargs.get('a', ''))[:60]} and {str(kwargs.get('b', ''))[:60]}"
    if function == DOCKERFILE_FUNCTION:
        return "Explaining that Dockerfile"
    return f"Explaining {str(kwargs.get('reference', 'the image'))[:100]}"


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


def job_reply(function: str, kwargs: Mapping[str, Any], result: Reply | DockwiseError) -> Reply:
    """What a delivery of a ``function`` job with ``kwargs`` shows, as the engine would
    return it in one process: ``finished_reply`` for an image; a comparison as is, or its
    one-line error titled like ``Engine.compare``'s, with its buttons; a Dockerfile likewise."""
    from bot.actions import DOCKERFILE_SUBJECT, with_actions

    if function == COMPARE_FUNCTION:
        a, b = str(kwargs.get("a", "")).strip(), str(kwargs.get("b", "")).strip()
        if isinstance(result, DockwiseError):
            return _error(f"Couldn't compare {a[:60]} and {b[:60]}", result)
        return with_actions(result, None, image=f"{a} vs {b}")
    if function == DOCKERFILE_FUNCTION:
        if isinstance(result, DockwiseError):
            return _error("Couldn't explain that Dockerfile", result)
        return with_actions(result, None, subject=DOCKERFILE_SUBJECT)
    return finished_reply(str(kwargs.get("reference", "")), result)


def _error(title: str, exc: DockwiseError) -> Reply:
    from bot.reply import ReplyKind

    return Reply(kind=ReplyKind.ERROR, title=title, body=str(exc))


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


def posting_keys(key: str, generation: int) -> list[str]:
    """The Redis keys of job ``key``'s drained deliveries in one generation (``Job.queued``,
    the enqueue time in ms, which saq's retries keep): the list still to post, the list
    being posted (claimed, outcome unknown) and the result they are answered with."""
    base = f"{POSTING_PREFIX}{key}:{generation}"
    return [base, base + ":inflight", base + ":result"]


class ExplainQueue(RedisQueue):
    """saq's Redis queue with two changes for explanation jobs (saq 0.26,
    ``saq/queue/redis.py``):

    - **sweep** follows saq's (a job in the active list that is stuck or not ACTIVE is
      aborted, then retried or, after its last attempt, finished ABORTED) except that a
      job still QUEUED in the active list (the instant between a worker's ``BLMOVE`` and
      its ACTIVE mark) is swept only when it is unchanged since the previous sweep, so a
      live worker's fresh job is never aborted under it (saq would abort it, then retry it
      and count an attempt the worker also ran). Before a job in its last attempt is
      finished ABORTED, ``given_up`` (set by the worker) answers its deliveries. A sweep
      runs shielded: cancelling the worker does not cut it between abort and retry
      (``sweeping`` is the one in progress).
    - **hand_back** re-queues a job this worker holds without counting its attempt.
    """

    #: Answers the deliveries of a job swept after its last attempt (``JobWorker``).
    given_up: Callable[[Job], Awaitable[None]] | None = None
    sweeping: asyncio.Future[list[str]] | None = None

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        self.sweeping = asyncio.ensure_future(self._sweep_once(lock, abort))
        return await asyncio.shield(self.sweeping)

    async def _sweep_once(self, lock: int, abort: float) -> list[str]:
        id_jobs = await self.redis.eval(_ACTIVE_JOBS, 2, self._sweep, self._active, lock)
        swept: list[str] = []
        for job_id, job_bytes in id_jobs or []:
            job = self.deserialize(job_bytes)
            if job is None:  # saq: a job id without its job
                swept.append(job_id.decode())
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                continue
            if job.status is Status.ACTIVE and not job.stuck:
                continue
            if job.status is Status.QUEUED and not await self._unchanged(job_id, job_bytes, lock):
                continue  # being dequeued right now
            swept.append(job_id.decode())
            last = not job.retryable
            log.info("sweeping explanation job %s (%s)", job.key, job.status.value)
            await self.abort(job, error=self.swept_error_message)
            if last and self.given_up is not None:
                try:
                    await self.given_up(job)
                except (RedisError, OSError) as exc:
                    log.error("job %s: its deliveries unanswered: %s", job.key, type(exc).__name__)
            try:
                await job.refresh(abort)
            except (TimeoutError, RuntimeError):
                log.info("explanation job %s: its worker did not acknowledge the abort", job.key)
            if last:
                await self.finish(job, Status.ABORTED, error=self.swept_error_message)
            else:
                await self.retry(job, error=self.swept_error_message)
        return swept

    async def _unchanged(self, job_id: bytes, job_bytes: bytes, lock: int) -> bool:
        """True when the stored job is byte for byte what the previous sweep saw."""
        seen = self.namespace("sweep-seen:") + job_id.decode()
        digest = hashlib.sha256(job_bytes).hexdigest()
        previous = await self.redis.set(seen, digest, ex=3 * lock + 10, get=True)
        return bool(previous == digest.encode())

    async def hand_back(self, job: Job, worker_id: str, why: str) -> bool:
        """Put ``job``, running on ``worker_id``, back at the end of the queue for any
        worker, its attempt not counted (``attempts - 1``; ``meta["handed_back"]`` counts
        hand-backs), in one transaction that holds only while the stored job is still
        ACTIVE on this worker in this attempt (a sweep may have taken it: then nothing
        changes and False is returned). The caller must have stopped touching the job
        (``Job.update`` rewrites the whole job). Raises RedisError/OSError."""
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(job.id)
                    stored = self.deserialize(await pipe.get(job.id))
                    if (
                        stored is None
                        or stored.status is not Status.ACTIVE
                        or stored.worker_id != worker_id
                        or stored.attempts != job.attempts
                    ):
                        await pipe.reset()  # type: ignore[no-untyped-call]
                        return False
                    stored.status = Status.QUEUED
                    stored.attempts -= 1
                    stored.started = 0
                    stored.touched = now()
                    stored.error = why
                    stored.meta = {
                        **stored.meta,
                        "handed_back": stored.meta.get("handed_back", 0) + 1,
                    }
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.lrem(self._active, 1, job.id)
                    pipe.lrem(self._queued, 0, job.id)
                    pipe.zadd(self._incomplete, {job.id: stored.scheduled})
                    pipe.rpush(self._queued, job.id)
                    pipe.set(job.id, self.serialize(stored))
                    pipe.publish(job.id, stored.status)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue


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


def _outcome(result: Mapping[str, Any]) -> Reply | DockwiseError:
    """A job result (``{"reply": ...}`` or ``{"error": ...}``) as what a delivery shows."""
    try:
        return JobQueue._result(result)
    except DockwiseError as exc:
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
        need_worker: bool = False,
    ) -> None:
        self.queue = ExplainQueue(redis_asyncio.from_url(redis_url), name=QUEUE_NAME)
        self.queue_max = queue_max
        self.job_timeout = job_timeout
        self.heartbeat = heartbeat
        self.sweep = sweep
        self.attempts = attempts
        self.result_ttl = result_ttl
        #: Refuse a new job with ``NoWorker`` when no worker was seen (replicas built by
        #: ``from_settings``); off for a bare handle that only looks at the queue.
        self.need_worker = need_worker
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
            need_worker=True,
        )

    @property
    def redis(self) -> Any:
        """The ``redis.asyncio.Redis`` client the saq queue uses."""
        return self.queue.redis

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
        return await self.run(JobSpec.explain(reference, source, platform), progress=progress)

    async def compare(
        self,
        a: str,
        b: str,
        *,
        source: SourceChoice = "auto",
        platform: Platform | None = None,
        progress: ProgressCallback | None = None,
    ) -> Reply:
        """``bot.image.compare.compare_images`` of ``a`` and ``b``, computed by a worker
        (one job per ``compare_key``, shared as in ``explain``); ``progress`` gets both
        images' events. Raises as ``explain`` does."""
        return await self.run(JobSpec.compare(a, b, source, platform), progress=progress)

    async def dockerfile(
        self,
        text: str,
        *,
        source: SourceChoice = "auto",
        progress: ProgressCallback | None = None,
    ) -> Reply:
        """``bot.dockerfile_explain.explain_dockerfile`` of ``text`` with its base images
        inspected (their layers read, hadolint run) by a worker: one job per
        ``dockerfile_key``, shared as in ``explain``; ``progress`` gets the bases' events.
        Raises as ``explain`` does (``InvalidInput`` for a Dockerfile it cannot read)."""
        return await self.run(JobSpec.dockerfile(text, source), progress=progress)

    async def run(self, spec: JobSpec, *, progress: ProgressCallback | None = None) -> Reply:
        """The result of job ``spec`` (joined or enqueued; see ``explain``)."""
        entry = self._local.get(spec.key)
        if entry is None:  # the first local ask waits on Redis for every ask in this process
            listeners: list[ProgressCallback] = []

            def fan_out(event: ExplainProgress) -> None:
                for listener in list(listeners):
                    listener(event)

            waiting: asyncio.Future[Reply] = asyncio.ensure_future(
                self._wait_or_fail(spec, fan_out)
            )
            entry = self._local[spec.key] = (waiting, listeners)
            waiting.add_done_callback(functools.partial(self._forget, spec.key, entry))
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
        await self.run_later(JobSpec.explain(reference, source, platform), delivery=delivery)

    async def compare_later(
        self,
        a: str,
        b: str,
        *,
        source: SourceChoice = "auto",
        platform: Platform | None = None,
        delivery: Delivery,
    ) -> None:
        """``compare`` with its reply posted to ``delivery`` (as in ``explain_later``):
        the comparison, or its one-line error titled "Couldn't compare A and B"."""
        await self.run_later(JobSpec.compare(a, b, source, platform), delivery=delivery)

    async def run_later(self, spec: JobSpec, *, delivery: Delivery) -> None:
        """Job ``spec``'s reply (``JobSpec.finished``) posted to ``delivery``; see
        ``explain_later``."""
        try:
            await self._join_or_enqueue(spec)
            attached = await self.redis.eval(
                _ATTACH, 2, *deliveries_keys(spec.key), delivery.to_json(), self._delivery_ttl()
            )
        except (RedisError, OSError) as exc:
            raise Unreachable(f"The job queue (Redis) failed: {type(exc).__name__}") from None
        if not attached:  # drained already: that job's worker won't post this one
            log.info(
                "%s job %s finished before its delivery: posting it here", spec.function, spec.key
            )
            task = asyncio.create_task(self._deliver_here(spec, delivery))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def drain_deliveries(self, key: str) -> list[Delivery]:
        """Take every delivery attached to job ``key`` and close its list, in one atomic
        step: later attaches are refused until a fresh job for ``key`` is enqueued (the
        worker uses ``drain_to_posting``, which keeps them for a retry until posted).
        Raises RedisError/OSError."""
        drained = await self.redis.eval(_DRAIN, 2, *deliveries_keys(key), self._delivery_ttl())
        out: list[Delivery] = []
        for raw in drained or []:
            try:
                out.append(Delivery.from_json(raw))
            except ValueError:
                log.warning("explanation job %s: a malformed delivery was dropped", key)
        return out

    async def drain_to_posting(self, key: str, generation: int, result: dict[str, Any]) -> int:
        """Move every delivery attached to job ``key`` into the posting list of its
        ``generation`` (``posting_keys``) and close its deliveries, in one atomic step,
        keeping ``result`` (the job function's return value) for them unless a previous
        attempt of the generation kept one. Returns how many deliveries moved. Raises
        RedisError/OSError."""
        keys = [*deliveries_keys(key), *posting_keys(key, generation)[0::2]]
        moved = await self.redis.eval(
            _DRAIN_TO_POSTING, 4, *keys, self._delivery_ttl(), json.dumps(result)
        )
        return int(moved or 0)

    async def kept_result(self, key: str, generation: int) -> dict[str, Any] | None:
        """The result an attempt of job ``key``'s ``generation`` drained its deliveries
        with, if one did. Raises RedisError/OSError."""
        raw = await self.redis.get(posting_keys(key, generation)[2])
        if raw is None:
            return None
        loaded = json.loads(raw)
        return loaded if isinstance(loaded, dict) else None

    async def post_drained(
        self,
        key: str,
        generation: int,
        finish: Callable[[Reply | DockwiseError], Reply],
    ) -> int:
        """Post the kept result to every delivery still in the generation's posting
        list as ``finish`` shows it (``JobSpec.finished``); returns how many posts
        succeeded. At most once per delivery: each is
        claimed (``LMOVE`` to the in-flight list, so two posters never take the same one)
        before its post and dropped from the in-flight list after it; a worker killed
        during one post leaves that delivery in flight, and it is not posted again (the
        post may have reached the platform). Raises RedisError/OSError."""
        posting, inflight, _ = posting_keys(key, generation)
        kept = await self.kept_result(key, generation)
        if kept is None:
            return 0
        reply = finish(_outcome(kept))
        posted = 0
        while (raw := await self.redis.lmove(posting, inflight, "LEFT", "RIGHT")) is not None:
            await self.redis.expire(inflight, self._delivery_ttl())
            try:
                delivery = Delivery.from_json(raw)
            except ValueError:
                log.warning("explanation job %s: a malformed delivery was dropped", key)
            else:
                posted += await post_delivery(self.deliverers, delivery, reply)
            await self.redis.lrem(inflight, 1, raw)
        return posted

    def _delivery_ttl(self) -> int:
        """Seconds deliveries and their closed marker live: a job's whole patience."""
        return int(self._patience()) + self.result_ttl

    async def _deliver_here(self, spec: JobSpec, delivery: Delivery) -> None:
        try:
            result: Reply | DockwiseError = await self.run(spec)
        except DockwiseError as exc:
            result = exc
        await post_delivery(self.deliverers, delivery, spec.finished(result))

    def _forget(
        self, key: str, entry: tuple[asyncio.Future[Reply], Any], done: asyncio.Future[Reply]
    ) -> None:
        if self._local.get(key) is entry:
            del self._local[key]
        if not done.cancelled():
            done.exception()  # retrieved: no "never retrieved" warning when every asker left

    async def _wait_or_fail(self, spec: JobSpec, progress: ProgressCallback) -> Reply:
        try:
            return await self._wait(spec, progress)
        except (RedisError, OSError) as exc:
            raise Unreachable(f"The job queue (Redis) failed: {type(exc).__name__}") from None

    async def _wait(self, spec: JobSpec, progress: ProgressCallback | None) -> Reply:
        key = spec.key
        pubsub = self.redis.pubsub()
        try:
            # Subscribe before the job can start, so no progress event is missed.
            await pubsub.subscribe(progress_channel(key), self.queue.job_id(key))
            job = await self._join_or_enqueue(spec)
            deadline = time.monotonic() + self._patience()
            while True:
                stored = await self.queue.job(key)
                if stored is None:  # expired or swept away: ask again
                    job = await self._join_or_enqueue(spec)
                    stored = job
                if stored.status is Status.COMPLETE:
                    return self._result(stored.result)
                if stored.status is Status.FAILED:  # crashed or timed out in every attempt
                    log.warning(
                        "%s job %s failed: %s", spec.function, key, (stored.error or "")[-200:]
                    )
                    if "TimeoutError" in (stored.error or ""):  # saq's job timeout
                        raise TimedOut(f"{spec.what} took too long; try again.")
                    raise Unreachable(f"{spec.what} failed on the workers; try again.")
                if stored.status is Status.ABORTED:
                    # A sweep can abort a job a worker has just dequeued (saq marks it
                    # active a moment later) and queue it again: ask for it again, which
                    # joins the retry or, once saq's abort marker is gone, enqueues anew.
                    await self._join_or_enqueue(spec)
                if time.monotonic() > deadline:
                    raise TimedOut(f"{spec.what} took too long; try again.")
                await self._relay_until_change(pubsub, key, progress, POLL_INTERVAL)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    def _patience(self) -> float:
        """Seconds a waiter waits for a result: every attempt's timeout, and the
        heartbeat, sweep and saq's 5 s abort wait between attempts."""
        return self.attempts * (self.job_timeout + self.heartbeat + self.sweep + 5) + 5

    async def _join_or_enqueue(self, spec: JobSpec) -> Job:
        existing = await self.queue.job(spec.key)
        if existing is not None and existing.status is Status.ACTIVE:
            return existing
        if self.need_worker and not await self._worker_seen():
            log.warning(
                "no worker seen for %d s: refusing a new %s job (start `dockwise serve "
                "--role worker` on this DOCKWISE_REDIS_URL)",
                WORKER_SEEN_TTL,
                spec.function,
            )
            raise NoWorker(NO_WORKER_MESSAGE)
        if existing is not None and existing.status is Status.QUEUED:
            return existing
        async with self._enqueueing:
            return await self._enqueue(spec)

    async def _worker_seen(self) -> bool:
        """A worker marked ``WORKERS_SEEN_KEY`` lately, or Redis (re)started too recently
        for the running workers to have marked it again (a restart without persistence
        drops the mark). Raises RedisError/OSError."""
        if await self.redis.exists(WORKERS_SEEN_KEY):
            return True
        server = await self.redis.info("server")
        return int(server.get("uptime_in_seconds", 0)) <= 2 * DEPTH_INTERVAL

    async def _enqueue(self, spec: JobSpec) -> Job:
        waiting = await self.depth()
        if waiting >= self.queue_max:
            raise QueueFull(
                f"I'm busy: {waiting} image explanations are waiting. Try again in a minute."
            )
        job = Job(
            function=spec.function,
            kwargs=dict(spec.kwargs),
            key=spec.key,
            timeout=self.job_timeout,
            heartbeat=self.heartbeat,
            retries=self.attempts,
            ttl=self.result_ttl,
        )
        # A fresh job takes deliveries again (the last one's drain closed its list).
        await self.redis.delete(deliveries_keys(spec.key)[1])
        enqueued = await self.queue.enqueue(job)
        if enqueued is None:  # another replica enqueued it first: join that one
            joined = await self.queue.job(spec.key)
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
    """A worker process's side: a saq ``Worker`` running ``concurrency`` jobs (explanations,
    comparisons, Dockerfiles) at a time with its own ``Explainer`` (the image caches are
    shared as configured), touching each job every third of the heartbeat and publishing
    its progress.

    ``stop()`` is graceful (SIGTERM of ``dockwise serve --role worker``): no new job starts
    (one dequeued in that instant is handed back at once), running jobs get ``grace``
    seconds (``DOCKWISE_WORKER_GRACE``) to finish and post, and a job still working then
    is handed back to the queue (``ExplainQueue.hand_back``) for another worker, its
    attempt not counted; its askers wait on (they wait for the job, not for a worker) and
    are answered once by the worker that finishes it."""

    def __init__(
        self,
        jobs: JobQueue,
        settings: Settings,
        *,
        explainer: Explainer | None = None,
        concurrency: int | None = None,
        grace: float | None = None,
    ) -> None:
        self.jobs = jobs
        self.settings = settings
        self._explainer = explainer
        #: Seconds a stopping worker lets its running jobs finish before handing them back.
        self.grace = settings.worker_grace if grace is None else grace
        self.worker: Worker[Any] = Worker(
            jobs.queue,
            # host-pid-random: which process holds a job (saq's Job.worker_id) at a glance
            id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            functions=[
                (EXPLAIN_FUNCTION, self._explain_job),
                (COMPARE_FUNCTION, self._compare_job),
                (DOCKERFILE_FUNCTION, self._dockerfile_job),
            ],
            concurrency=concurrency if concurrency is not None else settings.worker_concurrency,
            timers={"sweep": jobs.sweep, "schedule": 1, "abort": 1, "worker_info": 10},
            dequeue_timeout=1.0,
            # saq cancels what still runs after this (its retry then counts an attempt):
            # our jobs hand themselves back at ``grace``, this is the backstop.
            shutdown_grace_period_s=math.ceil(self.grace) + HAND_BACK_MARGIN,
        )
        self.worker.SIGNALS = []  # `dockwise serve` owns SIGTERM
        jobs.queue.given_up = self._given_up
        #: Seconds between progress lines shown to a job's deliveries.
        self.progress_interval = DELIVERY_PROGRESS_INTERVAL
        self._task: asyncio.Task[None] | None = None
        self._gauges: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._stopped_at = 0.0
        self._answering: set[asyncio.Task[None]] = set()

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
                if not self._stopping.is_set():
                    await self.jobs.redis.set(WORKERS_SEEN_KEY, self.worker.id, ex=WORKER_SEEN_TTL)
                for state in ("queued", "active"):
                    QUEUE_JOBS.labels(state=state).set(await self.jobs.queue.count(state))
            await asyncio.sleep(DEPTH_INTERVAL)

    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping.is_set()

    async def stop(self) -> None:
        """Stop gracefully: take no new job, let running ones finish within ``grace``
        seconds, hand back those still explaining then (saq cancels anything left
        ``HAND_BACK_MARGIN`` seconds later), finish a sweep in progress, close the
        explainer. Returns when the worker is idle."""
        if self._gauges is not None:
            self._gauges.cancel()
        if not self._stopping.is_set():
            self._stopped_at = time.monotonic()
            self._stopping.set()
        if self._task is not None and not self._task.done():
            log.info("worker stopping: running jobs get %.0f s to finish", self.grace)
            # saq's upkeep (sweep, schedule, abort, worker info) ends now; saq's start()
            # sees the event, waits for its job tasks (up to shutdown_grace_period_s)
            upkeep = [task for task in self.worker.tasks if task.get_name() != "process"]
            self.worker.event.set()
            for task in upkeep:
                task.cancel()
            await asyncio.wait([self._task])
        else:
            await self.worker.stop()
        sweeping = self.jobs.queue.sweeping
        if sweeping is not None:
            await asyncio.wait([sweeping])
        if self._answering:
            await asyncio.wait(self._answering, timeout=HAND_BACK_MARGIN)
        if self._explainer is not None:
            await self._explainer.aclose()

    async def _explain_job(
        self, ctx: dict[str, Any], *, reference: str, source: SourceChoice, platform: str | None
    ) -> dict[str, Any]:
        """The saq job function of ``EXPLAIN_FUNCTION``: ``Explainer.explain``; see
        ``_run_job`` for the result."""
        spec = JobSpec.explain(reference, source, None)

        async def work(progress: ProgressCallback) -> Reply:
            from bot.image.source import Platform

            chosen = Platform.parse(platform) if platform else None
            return await self.explainer.explain(
                reference, source=source, platform=chosen, progress=progress
            )

        return await self._run_job(ctx, spec, work)

    async def _compare_job(
        self, ctx: dict[str, Any], *, a: str, b: str, source: SourceChoice, platform: str | None
    ) -> dict[str, Any]:
        """The saq job function of ``COMPARE_FUNCTION``: ``compare_images`` of ``a`` and
        ``b`` within ``DOCKWISE_EXPLAIN_TIMEOUT``, as ``Engine.compare`` runs it in one
        process; see ``_run_job`` for the result."""
        spec = JobSpec.compare(a, b, source, None)

        async def work(progress: ProgressCallback) -> Reply:
            from bot.engine import compare_work
            from bot.image.source import Platform

            chosen = Platform.parse(platform) if platform else None
            return await compare_work(
                self.explainer,
                a,
                b,
                source=source,
                platform=chosen,
                timeout=self.settings.explain_timeout,
                progress=progress,
            )

        return await self._run_job(ctx, spec, work)

    async def _dockerfile_job(
        self, ctx: dict[str, Any], *, text: str, source: SourceChoice
    ) -> dict[str, Any]:
        """The saq job function of ``DOCKERFILE_FUNCTION``: ``explain_dockerfile`` of
        ``text`` with each base read by ``Explainer.facts`` within
        ``DOCKWISE_EXPLAIN_TIMEOUT`` (a base that fails is named in the report, as in one
        process); see ``_run_job`` for the result."""
        spec = JobSpec.dockerfile(text, source)

        async def work(progress: ProgressCallback) -> Reply:
            from bot.dockerfile_explain import explain_dockerfile
            from bot.engine import base_facts_lookup

            facts_for = base_facts_lookup(
                self.explainer,
                source=source,
                timeout=self.settings.explain_timeout,
                progress=progress,
            )
            return await explain_dockerfile(text, facts_for=facts_for)

        return await self._run_job(ctx, spec, work)

    async def _run_job(
        self,
        ctx: dict[str, Any],
        spec: JobSpec,
        work: Callable[[ProgressCallback], Awaitable[Reply]],
    ) -> dict[str, Any]:
        """Run one job's ``work`` (given the progress callback): ``{"reply": Reply JSON}``
        or, for a user-caused failure, ``{"error": {"kind", "message"}}`` (a result: not
        retried). Before returning, the job's deliveries are drained into its posting list
        with the result and posted (``JobQueue.post_drained`` of ``spec.finished``);
        progress lines go to them meanwhile (at most one per ``progress_interval``
        seconds). An attempt after one that drained (its worker died while posting) posts
        what is left with the kept result instead of working again. The last attempt
        answers its deliveries with an error when it crashes or is cancelled (saq's job
        timeout or a sweep's abort)."""
        job: Job = ctx["job"]
        if self._stopping.is_set():  # dequeued as this worker began to stop
            return await self._hand_back(ctx, job, "the worker stopped before the job began")
        beat = asyncio.create_task(self._beat(job))
        try:
            kept = await self.jobs.kept_result(job.key, job.queued)
            if kept is None:
                done = await self._work_unless_stopped(job, work)
                if done is None:
                    await _cancelled(beat)
                    return await self._hand_back(ctx, job, "the worker stopped (grace ran out)")
                kept = done
                await self.jobs.drain_to_posting(job.key, job.queued, kept)
            else:
                await self._note_in_flight(job)
            await self.jobs.post_drained(job.key, job.queued, spec.finished)
            return kept
        except asyncio.CancelledError:
            if not job.retryable and not self._stopping.is_set():  # timed out or aborted
                self._answer_later(job)
            raise
        except (RedisError, OSError) as exc:
            log.error("%s job %s: Redis failed: %s", spec.function, job.key, type(exc).__name__)
            raise
        except Exception:  # a bug: saq retries it; after the last attempt nobody else answers
            if not job.retryable:
                failed = Unreachable(f"{spec.what} failed on the workers; try again.")
                with contextlib.suppress(RedisError, OSError):
                    await self.jobs.drain_to_posting(job.key, job.queued, _as_result(failed))
                    await self.jobs.post_drained(job.key, job.queued, spec.finished)
            raise
        finally:
            beat.cancel()

    async def _beat(self, job: Job) -> None:
        while True:
            await asyncio.sleep(max(self.jobs.heartbeat / 3, 0.2))
            with contextlib.suppress(RedisError, OSError):
                await job.update()

    async def _work_unless_stopped(
        self, job: Job, work: Callable[[ProgressCallback], Awaitable[Reply]]
    ) -> dict[str, Any] | None:
        """The job result of ``work``, or None when this worker stopped and its grace ran
        out first (the work is cancelled). Raises what a bug raises."""
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

        async def run() -> Reply | DockwiseError:
            try:
                return await work(events.put_nowait)
            except DockwiseError as exc:
                return exc
            except ValueError as exc:  # a platform string no replica would send
                return InvalidInput(str(exc)[:200])

        publisher = asyncio.create_task(publish())
        explaining = asyncio.create_task(run())
        due = asyncio.create_task(self._hand_back_due())
        try:
            await asyncio.wait([explaining, due], return_when=asyncio.FIRST_COMPLETED)
        finally:
            due.cancel()
            if not explaining.done():
                await _cancelled(explaining)
            events.put_nowait(None)  # the events before the result are published first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(publisher), 2.0)
            await _cancelled(publisher)
        if explaining.cancelled():
            return None
        return _as_result(explaining.result())

    async def _hand_back_due(self) -> None:
        """Returns ``grace`` seconds after ``stop()`` began."""
        await self._stopping.wait()
        await asyncio.sleep(max(0.0, self._stopped_at + self.grace - time.monotonic()))

    async def _hand_back(self, ctx: dict[str, Any], job: Job, why: str) -> dict[str, Any]:
        """Give ``job`` back to the queue (``ExplainQueue.hand_back``) and tell saq's
        ``Worker.process`` not to finish it: a job task marked aborted that returns is
        left as it is stored (saq 0.26 ``worker.py``: ``finish`` runs only when
        ``task_ctx["aborted"] is None``)."""
        try:
            handed = await self.jobs.queue.hand_back(job, self.worker.id, why)
        except (RedisError, OSError) as exc:  # the sweep will retry it, counting an attempt
            log.error("explanation job %s not handed back: %s", job.key, type(exc).__name__)
            handed = False
        log.info("explanation job %s %s: %s", job.key, "handed back" if handed else "kept", why)
        task_ctx = self.worker.job_task_contexts.get(job)
        if task_ctx is not None:
            task_ctx["aborted"] = "handed back" if handed else "swept"
        return {}

    async def _note_in_flight(self, job: Job) -> None:
        """Log the deliveries a previous attempt was posting when it stopped: at most
        once, they are not posted again."""
        count = await self.jobs.redis.llen(posting_keys(job.key, job.queued)[1])
        if count:
            log.warning(
                "explanation job %s: %d delivery post(s) of a stopped worker had an unknown "
                "outcome and are not repeated",
                job.key,
                count,
            )

    def _answer_later(self, job: Job) -> None:
        """``_given_up`` in the background (the job task is being cancelled)."""
        task = asyncio.create_task(self._given_up(job))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _given_up(self, job: Job) -> None:
        """The deliveries of ``job``, whose last attempt timed out or was swept, get "took
        too long; try again" once (or, when an attempt kept a reply before it stopped,
        that reply)."""
        spec = JobSpec.of_job(job)
        slow = TimedOut(f"{spec.what} took too long; try again.")
        try:
            await self.jobs.drain_to_posting(job.key, job.queued, _as_result(slow))
            await self._note_in_flight(job)
            await self.jobs.post_drained(job.key, job.queued, spec.finished)
        except (RedisError, OSError) as exc:
            log.error(
                "%s job %s: deliveries unanswered: %s", job.function, job.key, type(exc).__name__
            )

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


def _as_result(result: Reply | DockwiseError) -> dict[str, Any]:
    """What the job function returns (and a delivery's kept result): the reply's JSON or
    the user-caused error's kind and message."""
    if isinstance(result, Reply):
        return {"reply": result.to_json()}
    return {"error": {"kind": result.kind, "message": str(result)}}


async def _cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it is done (whatever it raises)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
