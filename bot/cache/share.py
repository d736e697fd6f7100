"""``Shared[K, V]``: run one piece of work per key; every caller awaits the same result.

The one "run once, share the result" helper of dockwise (in-process; across replicas
``bot.cache.redis.SingleFlight`` adds a Redis lock on top of it). Used for one
explanation per (image, source, platform) in ``bot.engine``, one resolve / analysis /
layer scan per key in ``bot.image.explain`` and one produce per key in ``SingleFlight``.

Semantics (asyncio, one event loop):

- ``await shared.run(key, make)``: when no work is running for ``key``, ``make()`` is
  started as a task; every call for ``key`` while it runs awaits that same task.
- A caller that is cancelled stops waiting; the work goes on for the others (the task is
  awaited through ``asyncio.shield``). With ``cancel_when_abandoned=True`` the work is
  cancelled when its last caller goes away (a stuck download does not outlive every
  request that wanted it) and the key is free at once.
- An exception raised by the work reaches every caller sharing it.
- The key is free as soon as the work finishes (before any caller resumes): the next
  ``run`` starts the work again. Results are not cached here; that is the stores' job.
- A result or exception nobody awaits any more is marked retrieved (no "exception was
  never retrieved" warning).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Entry(Generic[V]):
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[V]) -> None:
        self.task = task
        self.waiters = 0


class Shared(Generic[K, V]):
    """Run ``make()`` once per key while it lasts; every caller gets the same result.

    ``name`` prefixes the tasks' names (seen in debuggers and asyncio's debug logs).
    ``cancel_when_abandoned``: cancel the work when every caller has been cancelled
    (default False: the work runs to its end, e.g. to fill a cache)."""

    def __init__(self, name: str = "shared", *, cancel_when_abandoned: bool = False) -> None:
        self.name = name
        self.cancel_when_abandoned = cancel_when_abandoned
        self._running: dict[K, _Entry[V]] = {}

    def __contains__(self, key: object) -> bool:
        """Whether work for ``key`` is running now."""
        return key in self._running

    def __len__(self) -> int:
        """How many keys have work running now."""
        return len(self._running)

    async def run(self, key: K, make: Callable[[], Awaitable[V]]) -> V:
        """The result of the work for ``key``: the running one's, else ``make()``'s
        (started now). Raises what the work raises; ``asyncio.CancelledError`` when this
        caller is cancelled (or the work was cancelled)."""
        entry = self._running.get(key)
        if entry is None:

            async def work() -> V:
                return await make()

            entry = _Entry(asyncio.create_task(work(), name=f"{self.name} {str(key)[:80]}"))
            self._running[key] = entry
            entry.task.add_done_callback(lambda done: self._forget(key, done))
        return await self._wait(key, entry)

    async def join(self, key: K) -> V:
        """The result of the work running for ``key``, without starting any.
        Raises ``KeyError`` when none is running (check with ``key in shared`` first:
        nothing is awaited between that check and this lookup)."""
        return await self._wait(key, self._running[key])

    async def _wait(self, key: K, entry: _Entry[V]) -> V:
        entry.waiters += 1
        try:
            return await asyncio.shield(entry.task)
        finally:
            entry.waiters -= 1
            if self.cancel_when_abandoned and entry.waiters == 0 and not entry.task.done():
                entry.task.cancel()
                if self._running.get(key) is entry:
                    del self._running[key]  # a new caller starts afresh

    def _forget(self, key: K, task: asyncio.Task[V]) -> None:
        entry = self._running.get(key)
        if entry is not None and entry.task is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved, even when every caller went away


__all__ = ["Shared"]
