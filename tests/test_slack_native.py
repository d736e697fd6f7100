"""Slack features users expect, through real slack-bolt against the Slack emulator: buttons
and clicks, private errors, feedback, progress, App Home, the message shortcut and link
unfurls. Answers come from the real engine and knowledge base; image explanations from
``StagedExplainer`` (a stand-in for the image explainer that reports progress stages and
can be held at a stage by the test), except where a real registry is used."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from adapters.slack import SlackAdapter, SlackSettings, run_slack
from bot.engine import Engine
from bot.errors import ImageNotFound
from bot.image.reference import parse_reference
from bot.image.source import LayerBlob, Platform, ResolvedImage
from bot.knowledge import KnowledgeBase
from bot.observability import configure_logging
from bot.progress import ExplainProgress, ProgressCallback
from bot.reply import Fact, Reply, ReplyKind, Section
from tests.emulators.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    SIGNING_SECRET,
    Record,
    SlackEmulator,
    block_texts,
    buttons,
)


def _no_download() -> AsyncIterator[bytes]:
    raise AssertionError("a link unfurl must not download a layer")


class StagedExplainer:
    """Stands in for ``bot.image.explain.Explainer``: reports the stages a real explanation
    reports (lookup, then each of two layers), waiting on ``hold`` (when set by the test)
    after the first layer; ``missing`` images are not found. ``source("registry")``
    resolves config-level facts for link unfurls."""

    def __init__(self) -> None:
        self.hold: asyncio.Event | None = None
        self.at_layer_one = asyncio.Event()
        self.calls: list[str] = []

    async def explain(
        self, reference: str, *, progress: ProgressCallback | None = None, **_: Any
    ) -> Reply:
        self.calls.append(reference)
        ref = parse_reference(reference)
        report = progress or (lambda event: None)
        report(ExplainProgress(reference, "looking up the image"))
        if ref.name.endswith("missing"):
            raise ImageNotFound(f"{ref} was not found in the registry")
        report(ExplainProgress(reference, "reading layers", 0, 2, 0))
        report(ExplainProgress(reference, "reading layers", 1, 2, 3_100_000))
        self.at_layer_one.set()
        if self.hold is not None:
            await self.hold.wait()
        report(ExplainProgress(reference, "reading layers", 2, 2, 5_200_000))
        return Reply(
            kind=ReplyKind.IMAGE,
            title=f"{ref.familiar}: Debian 12 user space",
            body="A **Debian** user space with `apt` and `/bin/sh`.",
            facts=[Fact("Distro", "Debian 12")],
            sections=[
                Section("Layers", "1. `FROM debian` 3.1 MB\n2. `RUN apt-get install` 2.1 MB"),
                Section("Advice", "- Run as a non-root user."),
            ],
        )

    def source(self, name: str) -> StagedExplainer:
        return self

    async def resolve(self, reference: str, platform: Platform) -> ResolvedImage:
        ref = parse_reference(reference)
        return ResolvedImage(
            reference=str(ref),
            source="registry",
            digest="sha256:" + "ab" * 32,
            platform=platform,
            platforms=[platform],
            config={
                "created": "2024-05-01T10:00:00Z",
                "config": {"User": "", "Cmd": ["python3"]},
            },
            layers=[
                LayerBlob("sha256:" + "11" * 32, 29_000_000, "gzip", _no_download),
                LayerBlob("sha256:" + "22" * 32, 12_000_000, "gzip", _no_download),
            ],
        )

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


@pytest.fixture
def explainer() -> StagedExplainer:
    return StagedExplainer()


@pytest.fixture
def engine(knowledge: KnowledgeBase, explainer: StagedExplainer) -> Engine:
    return Engine(knowledge=knowledge, explainer=cast(Any, explainer))


def settings_for(emulator: SlackEmulator, *, socket: bool = True) -> SlackSettings:
    return SlackSettings(
        _env_file=None,
        slack_bot_token=BOT_TOKEN,
        slack_app_token=APP_TOKEN if socket else None,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=emulator.api_url,
    )


@pytest.fixture
async def emu() -> AsyncIterator[SlackEmulator]:
    emulator = SlackEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def bot(emu: SlackEmulator, engine: Engine) -> AsyncIterator[SlackEmulator]:
    """The bot in Socket Mode, edits as fast as events come (no throttle to wait out)."""
    adapters: list[SlackAdapter] = []
    original = SlackAdapter.__init__

    def spy(self: SlackAdapter, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.progress_min_interval = 0
        adapters.append(self)

    SlackAdapter.__init__ = spy  # type: ignore[method-assign]
    task = asyncio.create_task(run_slack(engine, settings_for(emu)))
    try:
        waiter = asyncio.create_task(emu.wait_socket())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            task.result()
        yield emu
    finally:
        SlackAdapter.__init__ = original  # type: ignore[method-assign]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def texts(message: dict[str, Any]) -> str:
    return "\n".join(block_texts([Record(0, "api", "", message)]))


def feedback_count(kind: str, vote: str) -> float:
    value = REGISTRY.get_sample_value("dockwise_feedback_total", {"kind": kind, "vote": vote})
    return value or 0.0


async def answered(emu: SlackEmulator, channel: str, count: int = 1) -> list[dict[str, Any]]:
    await emu.wait_for(lambda r: len(emu.current(channel)) >= count)
    return emu.current(channel)


# --- buttons ------------------------------------------------------------------------------


async def test_answer_carries_full_article_follow_ups_and_feedback(
    bot: SlackEmulator, knowledge: KnowledgeBase
) -> None:
    emu = bot
    await emu.socket_event(emu.mention("why do Dockerfiles start FROM ubuntu?"))
    (answer,) = await answered(emu, "C0GENERAL")
    elements = buttons(answer)
    ids = [b["action_id"] for b in elements]
    assert ids[0] == "dockwise_full_article"
    assert elements[0]["value"] == "why-base-image"
    asks = [b for b in elements if b["action_id"].startswith("dockwise_ask")]
    assert [b["action_id"] for b in asks] == ["dockwise_ask", "dockwise_ask_2", "dockwise_ask_3"][
        : len(asks)
    ]
    related = knowledge.articles["why-base-image"].related
    expected = [knowledge.articles[r].questions[0] for r in related if r in knowledge.articles]
    assert [b["value"] for b in asks] == expected[:3] and asks
    assert ids[-2:] == ["dockwise_feedback_up", "dockwise_feedback_down"]
    assert [b["value"] for b in elements[-2:]] == ["up|why-base-image", "down|why-base-image"]
    assert emu.refused() == []


async def test_clicks_are_answered_in_the_thread_from_the_engine(
    bot: SlackEmulator, knowledge: KnowledgeBase
) -> None:
    emu = bot
    question = emu.mention("why do Dockerfiles start FROM ubuntu?")
    await emu.socket_event(question)
    (answer,) = await answered(emu, "C0GENERAL")
    by_id = {b["action_id"]: b for b in buttons(answer)}
    await emu.socket_interactive(emu.block_action(answer, by_id["dockwise_full_article"]))
    article = knowledge.articles["why-base-image"]
    full = (await answered(emu, "C0GENERAL", 2))[1]
    assert full["thread_ts"] == question["ts"]
    assert full["blocks"][0]["text"]["text"] == article.title
    # The whole article: its last paragraph is there too.
    last_words = article.body.split("\n\n")[-1].split()[-3:]
    assert all(word.strip("*`.") in texts(full) for word in last_words)
    assert "dockwise_full_article" not in [b["action_id"] for b in buttons(full)]
    await emu.socket_interactive(emu.block_action(answer, by_id["dockwise_ask"]))
    follow_up = (await answered(emu, "C0GENERAL", 3))[2]
    assert follow_up["thread_ts"] == question["ts"]
    expected = await Engine(knowledge=knowledge).handle(by_id["dockwise_ask"]["value"])
    assert follow_up["blocks"][0]["text"]["text"] == expected.title
    assert emu.refused() == []


async def test_image_reply_has_section_buttons_that_open_the_section(bot: SlackEmulator) -> None:
    emu = bot
    event = emu.mention("explain debian:bookworm-slim")
    await emu.socket_event(event)
    await emu.wait_for(lambda r: r.name == "chat.update" and "Debian 12" in json.dumps(r.data))
    (reply,) = emu.current("C0GENERAL")
    sections = [b for b in buttons(reply) if b["action_id"].startswith("dockwise_section")]
    assert [(b["action_id"], b["value"]) for b in sections] == [
        ("dockwise_section", "debian:bookworm-slim|Layers"),
        ("dockwise_section_2", "debian:bookworm-slim|Advice"),
    ]
    feedback = [b["value"] for b in buttons(reply) if b["action_id"].startswith("dockwise_fe")]
    assert feedback == ["up|debian:bookworm-slim", "down|debian:bookworm-slim"]
    await emu.socket_interactive(emu.block_action(reply, sections[1]))
    opened = (await answered(emu, "C0GENERAL", 2))[1]
    assert opened["thread_ts"] == event["ts"]
    assert "debian:bookworm-slim: Advice" in texts(opened)
    assert "Run as a non-root user." in texts(opened)


async def test_feedback_is_counted_private_and_logged_without_text(
    bot: SlackEmulator,
) -> None:
    emu = bot
    stream = io.StringIO()
    configure_logging("INFO", json_output=True, stream=stream, environ={})
    question = "is a container a VM? asked-by-a-curious-person"
    await emu.socket_event(emu.mention(question))
    (answer,) = await answered(emu, "C0GENERAL")
    down = next(b for b in buttons(answer) if b["action_id"] == "dockwise_feedback_down")
    topic = down["value"].split("|", 1)[1]
    before = feedback_count("answer", "down")
    payload = emu.block_action(answer, down)
    await emu.socket_interactive(payload)
    thanks = await emu.wait_for(lambda r: r.kind == "response_url")
    assert payload["response_url"].endswith(thanks.name)
    assert thanks.data["response_type"] == "ephemeral"
    assert thanks.data["replace_original"] is False
    assert "Thanks" in thanks.data["text"]
    assert feedback_count("answer", "down") == before + 1
    assert len(emu.current("C0GENERAL")) == 1  # nothing new in the channel
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    (logged,) = [line for line in lines if line.get("event") == "feedback"]
    assert (logged["kind"], logged["vote"], logged["subject"]) == ("answer", "down", topic)
    assert "asked-by-a-curious-person" not in stream.getvalue()


async def test_metrics_endpoint_shows_feedback(bot: SlackEmulator) -> None:
    from bot.server import build_web_app

    emu = bot
    await emu.socket_event(emu.mention("explain debian:bookworm-slim"))
    await emu.wait_for(lambda r: r.name == "chat.update" and "Debian 12" in json.dumps(r.data))
    (reply,) = emu.current("C0GENERAL")
    up = next(b for b in buttons(reply) if b["action_id"] == "dockwise_feedback_up")
    await emu.socket_interactive(emu.block_action(reply, up))
    await emu.wait_for(lambda r: r.kind == "response_url")

    async def ready() -> dict[str, bool]:
        return {}

    runner = web.AppRunner(build_web_app(ready))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        import aiohttp

        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            body = await resp.text()
    finally:
        await runner.cleanup()
    assert 'dockwise_feedback_total{kind="image",vote="up"}' in body


# --- private errors -----------------------------------------------------------------------


async def test_command_error_removes_the_placeholder_and_is_private(bot: SlackEmulator) -> None:
    emu = bot
    command = emu.command("acme/missing:1")
    ack = await emu.wait_ack(await emu.socket_command(command))
    assert ack.data["payload"]["response_type"] == "in_channel"  # the placeholder
    await emu.wait_for(lambda r: r.kind == "response_url" and "was not found" in str(r.data))
    uses = [r for r in emu.records if r.kind == "response_url"]
    deleted = next(r for r in uses if r.data.get("delete_original"))
    private = next(r for r in uses if "was not found" in str(r.data))
    assert deleted.seq < private.seq
    assert private.data["response_type"] == "ephemeral"
    assert emu.original(command["response_url"]) is None  # nothing left in the channel
    assert all(r.ok for r in uses), [r.error for r in uses]


async def test_mention_error_is_posted_ephemeral_to_the_asker(bot: SlackEmulator) -> None:
    emu = bot
    event = emu.mention("explain acme/missing:1")
    await emu.socket_event(event)
    private = await emu.wait_for(lambda r: r.name == "chat.postEphemeral")
    assert private.ok, private.error
    assert (private.data["user"], private.data["channel"]) == ("U0ALICE", "C0GENERAL")
    assert private.data["thread_ts"] == event["ts"]
    assert "was not found" in str(private.data)
    assert emu.current("C0GENERAL") == []


# --- progress -----------------------------------------------------------------------------


async def test_mention_explanation_shows_progress_then_the_result(
    bot: SlackEmulator, explainer: StagedExplainer
) -> None:
    emu = bot
    explainer.hold = asyncio.Event()
    await emu.socket_event(emu.mention("explain python:3.12-slim"))
    update = await emu.wait_for(
        lambda r: r.name == "chat.update" and "layer 1 of 2" in str(r.data.get("text"))
    )
    (placeholder,) = emu.posts("C0GENERAL")
    assert placeholder.data["text"].startswith("Inspecting `python:3.12-slim` …")
    assert update.data["ts"] == placeholder.data["_ts"]
    assert "3.1 MB read" in update.data["text"]
    assert "Debian 12" not in json.dumps(emu.current("C0GENERAL"))  # still running
    explainer.hold.set()
    await emu.wait_for(lambda r: r.name == "chat.update" and "Debian 12" in json.dumps(r.data))
    (final,) = emu.current("C0GENERAL")
    assert final["ts"] == placeholder.data["_ts"] and final["edited"]
    assert final["blocks"][0]["text"]["text"] == "python:3.12-slim: Debian 12 user space"
    assert emu.refused() == []


async def test_slash_command_progress_replaces_the_original(
    bot: SlackEmulator, explainer: StagedExplainer
) -> None:
    emu = bot
    explainer.hold = asyncio.Event()
    command = emu.command("python:3.12-slim")
    ack = await emu.wait_ack(await emu.socket_command(command))
    assert ack.data["payload"]["text"].startswith("Inspecting `python:3.12-slim` …")
    progress = await emu.wait_for(
        lambda r: r.kind == "response_url" and "layer" in str(r.data.get("text"))
    )
    assert progress.data["replace_original"] is True
    explainer.hold.set()
    final = await emu.wait_for(lambda r: r.kind == "response_url" and "Debian 12" in str(r.data))
    assert final.data["replace_original"] is True
    assert final.data["response_type"] == "in_channel"
    uses = [r for r in emu.records if r.kind == "response_url"]
    assert len(uses) <= 5 and all(r.ok for r in uses)
    original = emu.original(command["response_url"])
    assert original is not None and "Debian 12" in json.dumps(original)


# --- App Home, shortcut, unfurls ------------------------------------------------------------


async def test_app_home_opened_publishes_the_home_tab(bot: SlackEmulator) -> None:
    emu = bot
    await emu.socket_event(emu.home_opened("U0CAROL"))
    published = await emu.wait_for(lambda r: r.name == "views.publish")
    assert published.ok, published.error
    assert published.data["user_id"] == "U0CAROL"
    text = json.dumps(published.data["view"])
    assert published.data["view"]["type"] == "home"
    for needed in ("/image-explain", "@dockwise", "Explain image", "why do Dockerfiles"):
        assert needed in text
    await emu.socket_event(emu.home_opened("U0CAROL", tab="messages"))
    await emu.socket_event(emu.mention("is a container a VM?"))
    await answered(emu, "C0GENERAL")
    assert len(emu.api_calls("views.publish")) == 1  # the Messages tab publishes nothing


async def test_message_shortcut_explains_the_first_image_in_the_message(
    bot: SlackEmulator, explainer: StagedExplainer
) -> None:
    emu = bot
    shortcut = emu.message_shortcut(
        "our build is slow, we do `docker pull python:3.12-slim` then FROM node:20"
    )
    ack = await emu.wait_ack(await emu.socket_interactive(shortcut))
    assert ack.ok
    await emu.wait_for(lambda r: r.name == "chat.update" and "Debian 12" in json.dumps(r.data))
    assert explainer.calls == ["python:3.12-slim"]
    (reply,) = emu.current("C0GENERAL")
    assert reply["thread_ts"] == shortcut["message"]["ts"]
    assert reply["blocks"][0]["text"]["text"] == "python:3.12-slim: Debian 12 user space"
    nothing = emu.message_shortcut("the meeting is at 10:30, bring snacks")
    await emu.socket_interactive(nothing)
    private = await emu.wait_for(lambda r: r.kind == "response_url")
    assert nothing["response_url"].endswith(private.name)
    assert private.data["response_type"] == "ephemeral"
    assert "no image reference" in private.data["text"]
    assert explainer.calls == ["python:3.12-slim"]


async def test_image_links_are_unfurled_with_a_one_line_summary(
    bot: SlackEmulator, explainer: StagedExplainer
) -> None:
    emu = bot
    urls = [
        "https://hub.docker.com/_/python",
        "https://ghcr.io/acme/api",
        "https://quay.io/repository/prometheus/node-exporter?tab=tags",
        "https://example.com/not-an-image",
    ]
    await emu.socket_event(emu.link_shared(urls))
    unfurl = await emu.wait_for(lambda r: r.name == "chat.unfurl")
    assert unfurl.ok, unfurl.error
    unfurls = unfurl.data["unfurls"]
    assert set(unfurls) == set(urls[:3])
    line = unfurls[urls[0]]["blocks"][0]["text"]["text"]
    assert line.startswith("*python*: ")
    for part in ("2 layers", "41.0 MB compressed", "user root", "runs `python3`", "2024-05-01"):
        assert part in line
    assert "ghcr.io/acme/api" in unfurls[urls[1]]["blocks"][0]["text"]["text"]
    assert "quay.io/prometheus/node-exporter" in json.dumps(unfurls[urls[2]])
    assert explainer.calls == []  # config only: nothing was explained, no layer read


# --- HTTP mode ------------------------------------------------------------------------------


async def test_http_mode_click_is_signed_and_answered(emu: SlackEmulator, engine: Engine) -> None:
    app = web.Application()
    await run_slack(engine, settings_for(emu, socket=False), web_app=app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        question = emu.mention("is a container a VM?")
        await emu.http_event(url, question)
        (answer,) = await answered(emu, "C0GENERAL")
        ask = next(b for b in buttons(answer) if b["action_id"] == "dockwise_ask")
        forged = await emu.http_interactive(url, emu.block_action(answer, ask), secret="nope")
        assert forged.data["status"] == 401
        clicked = await emu.http_interactive(url, emu.block_action(answer, ask))
        assert clicked.data["status"] == 200
        follow_up = (await answered(emu, "C0GENERAL", 2))[1]
        assert follow_up["thread_ts"] == question["ts"]
    finally:
        await runner.cleanup()


async def test_long_command_reply_with_progress_stays_within_five_response_url_uses(
    bot: SlackEmulator, explainer: StagedExplainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.slack_blocks import render_messages
    from tests.test_slack import long_reply

    emu = bot
    huge = long_reply("big:1")
    huge.body = "\n\n".join([huge.body] * 6)  # more messages than response_url uses left
    staged = explainer.explain

    async def explain_huge(reference: str, **kwargs: Any) -> Reply:
        await staged(reference, **kwargs)  # reports the progress stages
        return huge

    monkeypatch.setattr(explainer, "explain", explain_huge)
    expected = len(render_messages(huge))
    assert expected > 4
    explainer.hold = asyncio.Event()
    command = emu.command("big:1")
    await emu.socket_command(command)
    await emu.wait_for(lambda r: r.kind == "response_url" and "layer" in str(r.data))
    explainer.hold.set()
    await emu.wait_for(
        lambda r: (
            len([x for x in emu.records if x.kind == "response_url"]) + len(emu.posts("C0GENERAL"))
            >= expected + 1
        )
    )
    uses = [r for r in emu.records if r.kind == "response_url"]
    assert len(uses) == 5 and all(r.ok for r in uses), [r.error for r in uses]
    assert "layer" in uses[0].data["text"]  # one progress edit
    assert [u.data["replace_original"] for u in uses[1:]] == [True, False, False, False]
    posted = emu.posts("C0GENERAL")  # the rest, in the channel
    assert len(posted) == expected - 4 and all(p.ok for p in posted)
