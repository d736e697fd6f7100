"""Progress of an explanation: the real explainer against a real registry, held mid-way by
a gate in front of one layer blob, and the relay that turns progress into message edits.
Nothing here waits on the clock: the tests hold and release the work with events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.config import Settings
from bot.engine import Engine
from bot.image.explain import Explainer
from bot.knowledge import KnowledgeBase
from bot.progress import ExplainProgress, ProgressRelay, human_bytes
from bot.reply import ReplyKind
from tests.fixtures.registry import PushedImage, make_layer, push_image


class GatedRegistry:
    """A reverse proxy in front of a real registry that holds GETs of one blob until
    ``gate`` is set (the registry itself is untouched)."""

    def __init__(self, upstream: str, held_digest: str) -> None:
        self.upstream = upstream
        self.held_digest = held_digest
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.host = ""

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.host = f"127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        self.gate.set()
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        if request.method == "GET" and request.path.endswith(f"/blobs/{self.held_digest}"):
            self.holding.set()
            await self.gate.wait()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._http.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            keep = ("content-type", "docker-content-digest", "location", "www-authenticate")
            out = {k: v for k, v in upstream.headers.items() if k.lower() in keep}
            return web.Response(status=upstream.status, body=body, headers=out)


@pytest.fixture
def two_layer_image(registry: Any) -> PushedImage:
    os_release = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
    base = make_layer({"etc/os-release": os_release, "bin/sh": b"#!shell\n"})
    app = make_layer({"app/data.bin": bytes(range(256)) * 400})
    return push_image(registry.pusher(), "demo/progress", "v1", [base, app])


@pytest.fixture
async def gated(registry: Any, two_layer_image: PushedImage) -> AsyncIterator[GatedRegistry]:
    proxy = GatedRegistry(registry.url, two_layer_image.layer_digests[1])
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_real_explanation_reports_each_stage_while_held(
    gated: GatedRegistry, two_layer_image: PushedImage, tmp_path: Path
) -> None:
    settings = Settings(_env_file=None, insecure_registries=[gated.host], cache_dir=tmp_path)
    engine = Engine(knowledge=KnowledgeBase.load(), explainer=Explainer(settings))
    reference = f"{gated.host}/demo/progress:v1"
    events: list[ExplainProgress] = []
    first_layer_done = asyncio.Event()

    def progress(event: ExplainProgress) -> None:
        events.append(event)
        if event.layer == 1:
            first_layer_done.set()

    try:
        work = asyncio.create_task(engine.explain(reference, progress=progress))
        await gated.holding.wait()
        await first_layer_done.wait()
        assert not work.done()  # held on the second layer: progress arrived meanwhile
        sizes = [len_of(two_layer_image, 0), len_of(two_layer_image, 1)]
        assert [e.stage for e in events[:3]] == [
            "starting",
            "looking up the image",
            "reading layers",
        ]
        assert {e.image for e in events} == {reference}  # as the asker typed it
        assert (events[-1].layer, events[-1].layers, events[-1].bytes_read) == (1, 2, sizes[0])
        gated.gate.set()
        reply = await work
    finally:
        await engine.aclose()
    assert reply.kind is ReplyKind.IMAGE, reply.body
    assert (events[-1].layer, events[-1].layers, events[-1].bytes_read) == (2, 2, sum(sizes))
    assert "layer 2 of 2" in events[-1].text()


def len_of(image: PushedImage, index: int) -> int:
    import json

    return int(json.loads(image.manifest)["layers"][index]["size"])


# --- the relay ----------------------------------------------------------------------------


class Screen:
    """What the relay shows: each ``show`` call, and an event per call for the test."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = asyncio.Event()
        self.block: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def show(self, line: str) -> None:
        self.entered.set()
        if self.block is not None:
            await self.block.wait()
        self.lines.append(line)
        self.changed.set()

    async def next(self, count: int) -> None:
        while len(self.lines) < count:
            self.changed.clear()
            await self.changed.wait()


async def test_relay_shows_the_placeholder_first_then_each_change() -> None:
    screen = Screen()
    relay = ProgressRelay(screen.show, min_interval=0, heartbeat=3600)
    relay(ExplainProgress("nginx"))
    await screen.next(1)
    assert screen.lines == ["Inspecting `nginx` …"]
    relay(ExplainProgress("nginx", "reading layers", 1, 3, 2_500_000))
    await screen.next(2)
    assert screen.lines[1].startswith("Inspecting `nginx` … reading layers: layer 1 of 3, 2.5 MB")
    await relay.close()
    relay(ExplainProgress("nginx", "reading layers", 2, 3, 4_000_000))  # after close: ignored
    assert len(screen.lines) == 2


async def test_relay_coalesces_a_burst_and_close_waits_for_the_edit_in_flight() -> None:
    screen = Screen()
    screen.block = asyncio.Event()
    relay = ProgressRelay(screen.show, min_interval=0, heartbeat=3600, shown=True)
    for layer in range(1, 6):
        relay(ExplainProgress("nginx", "reading layers", layer, 5, layer * 1000))
    await screen.entered.wait()  # the edit is in flight
    closing = asyncio.create_task(relay.close())
    for _ in range(20):  # let close() run as far as it can (yields, not time)
        await asyncio.sleep(0)
    assert not closing.done()  # close() waits for the edit in flight
    screen.block.set()
    await closing
    # One edit, showing the newest state, not five.
    assert len(screen.lines) == 1 and "layer 5 of 5" in screen.lines[0]


async def test_relay_respects_max_updates_and_survives_a_failing_show() -> None:
    screen = Screen()
    relay = ProgressRelay(screen.show, min_interval=0, heartbeat=3600, max_updates=1, shown=True)
    relay(ExplainProgress("a", "reading layers", 1, 2, 1))
    await screen.next(1)
    relay(ExplainProgress("a", "reading layers", 2, 2, 2))
    await relay.close()
    assert len(screen.lines) == 1

    async def broken(line: str) -> None:
        raise RuntimeError("chat API down")

    failing = ProgressRelay(broken, min_interval=0, heartbeat=3600)
    failing(ExplainProgress("a"))
    await failing.close()  # no exception escapes: progress is a nicety


def test_progress_text_and_sizes() -> None:
    assert human_bytes(999) == "999 B"
    assert human_bytes(31_200_000) == "31.2 MB"
    event = ExplainProgress("py`thon", "reading layers", 2, 5, 31_200_000)
    assert event.text(4.2) == (
        "Inspecting `python` … reading layers: layer 2 of 5, 31.2 MB read (4 s)"
    )


async def test_relay_heartbeat_edits_while_nothing_changes() -> None:
    """An explanation stuck in one stage still shows movement: the elapsed time."""
    screen = Screen()
    relay = ProgressRelay(screen.show, min_interval=0, heartbeat=0.05, shown=True)
    relay(ExplainProgress("big", "reading layers", 1, 9, 1_000))
    await screen.next(2)  # the first edit, then a heartbeat edit with no new event
    await relay.close()
    assert "layer 1 of 9" in screen.lines[1]
    assert screen.lines[1].endswith(" s)")


async def test_relay_with_one_update_spends_it_after_first_after_on_the_newest_stage() -> None:
    """A reply channel with one edit left (Slack's response_url) keeps it for work that
    runs longer than ``first_after``: the lookup at 0 s is skipped, the layers are shown."""
    screen = Screen()
    relay = ProgressRelay(
        screen.show, min_interval=0, heartbeat=3600, max_updates=1, shown=True, first_after=0.05
    )
    relay(ExplainProgress("big", "looking up the image"))
    for _ in range(20):  # let the relay run as far as it can (yields, not time)
        await asyncio.sleep(0)
    relay(ExplainProgress("big", "reading layers", 2, 9, 31_200_000))
    await screen.next(1)
    await relay.close()
    assert len(screen.lines) == 1
    assert "layer 2 of 9, 31.2 MB read" in screen.lines[0]

    quick = Screen()
    short = ProgressRelay(
        quick.show, min_interval=0, heartbeat=3600, max_updates=1, shown=True, first_after=3600
    )
    short(ExplainProgress("small", "looking up the image"))
    await short.close()  # done before first_after: the edit is kept for the result
    assert quick.lines == []
