"""``bot.cache.share.Shared``: one run per key, every caller gets the same result; a
cancelled caller leaves the others alone; an error reaches everyone; the key is free
after. Ordering is driven by events, never by sleeps."""

from __future__ import annotations

import asyncio

import pytest

from bot.cache.share import Shared


class Work:
    """A piece of work whose start is observable and whose end the test decides."""

    def __init__(self, result: object = "done", error: BaseException | None = None) -> None:
        self.result = result
        self.error = error
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def __call__(self) -> object:
        self.runs += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return self.result


async def settle() -> None:
    """Let every ready task run until it blocks (no timing involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_many_callers_share_one_run_and_get_the_same_result() -> None:
    shared: Shared[str, object] = Shared("test")
    result = object()
    work = Work(result)
    callers = [asyncio.create_task(shared.run("k", work)) for _ in range(25)]
    await work.started.wait()
    await settle()
    assert "k" in shared and len(shared) == 1
    work.release.set()
    results = await asyncio.gather(*callers)
    assert work.runs == 1
    assert all(r is result for r in results)


async def test_different_keys_run_separately() -> None:
    shared: Shared[str, object] = Shared()
    a, b = Work("a"), Work("b")
    ta = asyncio.create_task(shared.run("a", a))
    tb = asyncio.create_task(shared.run("b", b))
    await a.started.wait()
    await b.started.wait()
    assert len(shared) == 2
    a.release.set()
    b.release.set()
    assert list(await asyncio.gather(ta, tb)) == ["a", "b"]
    assert (a.runs, b.runs) == (1, 1)


async def test_a_cancelled_caller_does_not_cancel_the_others() -> None:
    shared: Shared[str, object] = Shared()
    work = Work("ok")
    first, second, third = (asyncio.create_task(shared.run("k", work)) for _ in range(3))
    await work.started.wait()
    await settle()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not work.cancelled and "k" in shared
    work.release.set()
    assert list(await asyncio.gather(second, third)) == ["ok", "ok"]
    assert work.runs == 1 and not work.cancelled


async def test_work_outlives_all_its_callers_by_default() -> None:
    """Engine explanations and SingleFlight produces finish (and fill caches) even when
    every asker went away; the key stays taken until then."""
    shared: Shared[str, object] = Shared()
    work = Work("late")
    caller = asyncio.create_task(shared.run("k", work))
    await work.started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert "k" in shared and not work.cancelled
    late = asyncio.create_task(shared.run("k", work))  # joins the running work
    await settle()
    work.release.set()
    assert await late == "late"
    assert work.runs == 1
    assert "k" not in shared


async def test_cancel_when_abandoned_stops_the_work_and_frees_the_key_at_once() -> None:
    shared: Shared[str, object] = Shared(cancel_when_abandoned=True)
    work = Work("x")
    callers = [asyncio.create_task(shared.run("k", work)) for _ in range(2)]
    await work.started.wait()
    await settle()
    callers[0].cancel()
    await asyncio.gather(callers[0], return_exceptions=True)
    await settle()
    assert not work.cancelled  # one caller still waits
    callers[1].cancel()
    await asyncio.gather(callers[1], return_exceptions=True)
    assert "k" not in shared  # free: a new caller does not join the cancelled work
    await settle()
    assert work.cancelled

    fresh = Work("again")
    task = asyncio.create_task(shared.run("k", fresh))
    await fresh.started.wait()
    fresh.release.set()
    assert await task == "again"
    assert fresh.runs == 1


async def test_an_exception_reaches_every_caller_and_frees_the_key() -> None:
    shared: Shared[str, object] = Shared()
    boom = ValueError("registry said no")
    work = Work(error=boom)
    callers = [asyncio.create_task(shared.run("k", work)) for _ in range(4)]
    await work.started.wait()
    await settle()
    work.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(o is boom for o in outcomes)
    assert work.runs == 1
    assert "k" not in shared and len(shared) == 0

    retry = Work("second try")
    retry.release.set()
    assert await shared.run("k", retry) == "second try"
    assert retry.runs == 1


async def test_the_key_is_free_when_a_caller_resumes() -> None:
    shared: Shared[str, object] = Shared()
    work = Work("v")
    work.release.set()
    assert await shared.run("k", work) == "v"
    assert "k" not in shared  # no leftover entry, no await needed
    assert await shared.run("k", work) == "v"
    assert work.runs == 2  # results are not cached here


async def test_join_shares_the_running_work_and_refuses_when_none_runs() -> None:
    shared: Shared[str, object] = Shared()
    with pytest.raises(KeyError):
        await shared.join("k")
    work = Work("joined")
    owner = asyncio.create_task(shared.run("k", work))
    await work.started.wait()
    joiner = asyncio.create_task(shared.join("k"))
    await settle()
    work.release.set()
    assert list(await asyncio.gather(owner, joiner)) == ["joined", "joined"]
    assert work.runs == 1
