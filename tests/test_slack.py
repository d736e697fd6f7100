"""The Slack adapter against the Slack emulator, with real slack-bolt and slack_sdk.

Every assertion is on what reached the emulator (posted messages, acks, HTTP responses).
The knowledge answers come from the real engine and knowledge base; image explanations
come from ``CatalogExplainer`` (a stand-in for the image explainer, which is not what
these tests are about) except in the registry test, which uses the real one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import frontmatter
import pytest
import yaml
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from adapters.slack import (
    SHORTCUT,
    SeenEvents,
    SlackAdapter,
    SlackSettings,
    run_slack,
    slack_to_plain,
)
from adapters.slack_blocks import render_blocks, render_messages
from bot.config import Settings
from bot.engine import Engine
from bot.errors import ImageNotFound
from bot.image.reference import parse_reference
from bot.reply import Fact, Reply, ReplyKind, Section, Source
from tests.emulators.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER_ID,
    SIGNING_SECRET,
    Record,
    SlackEmulator,
    block_error,
    block_texts,
    message_error,
)
from tests.fixtures.registry import free_port

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "slack" / "manifest.yml"
WHY_BASE_IMAGE_TITLE = str(frontmatter.load(ROOT / "knowledge" / "why-base-image.md")["title"])

# The long reply: numbered words, so completeness and order can be checked exactly.
LONG_WORDS = [f"w{i:05d}" for i in range(3000)]


def long_reply(reference: str) -> Reply:
    """A 20,000+ character reply needing more than 50 blocks: body, bullets, 20 small
    sections, fenced code and long advice, with every word numbered in reading order."""
    paragraphs = [" ".join(LONG_WORDS[i : i + 40]) for i in range(0, len(LONG_WORDS), 40)]
    packages = "\n".join(f"- {w}" for w in LONG_WORDS[1200:1400])
    layers = [
        Section(f"Layer {n}", " ".join(LONG_WORDS[i : i + 10]))
        for n, i in enumerate(range(1400, 1600, 10), start=1)
    ]
    code = "```\n" + "\n".join(" ".join(LONG_WORDS[i : i + 10]) for i in range(1600, 2000, 10))
    return Reply(
        kind=ReplyKind.IMAGE,
        title=f"{reference} " + "very long title " * 20,
        body="\n\n".join(paragraphs[:30]),
        facts=[Fact(f"fact{i}", f"value{i}") for i in range(14)],
        sections=[
            Section("Packages", packages),
            *layers,
            Section("History", code + "\n```"),
            Section("Advice", "\n\n".join(paragraphs[50:])),
        ],
        sources=[Source("Image docs", "https://docs.docker.com/get-started/docker-concepts/")],
    )


class CatalogExplainer:
    """Stands in for ``bot.image.explain.Explainer``: validates the reference with the real
    parser, then answers from a tiny catalogue (``big`` gives a 20,000+ character reply,
    ``boom`` fails the way a bug would)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def explain(self, reference: str, **_: Any) -> Reply:
        self.calls.append(reference)
        ref = parse_reference(reference)
        name = ref.name.rsplit("/", 1)[-1]
        if name == "big":
            return long_reply(reference)
        if name == "boom":
            raise RuntimeError(f"internal failure with {BOT_TOKEN}")
        if name == "echo":
            label = "<!channel> ping <@U0EVERYONE> & <https://evil.example|click>"
            return Reply(
                kind=ReplyKind.IMAGE,
                title=f"{reference}: {label}",
                body=f"Label maintainer: {label}",
                facts=[Fact("ENV GREETING", label)],
                sections=[Section("History", f"RUN echo '{label}'")],
            )
        if name == "missing":
            raise ImageNotFound(f"{ref} was not found in the registry")
        return Reply(
            kind=ReplyKind.IMAGE,
            title=f"{ref.familiar}: Debian 12 user space",
            body="A **Debian** user space with `apt` and `/bin/sh`.",
            facts=[Fact("Distro", "Debian 12"), Fact("Shell", "/bin/sh")],
        )

    async def aclose(self) -> None:
        return None


def slack_settings(emulator: SlackEmulator, *, socket: bool) -> SlackSettings:
    return SlackSettings(
        _env_file=None,
        slack_bot_token=BOT_TOKEN,
        slack_app_token=APP_TOKEN if socket else None,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=emulator.api_url,
    )


@pytest.fixture(scope="module")
def knowledge_engine() -> Engine:
    return Engine()


@pytest.fixture
def catalog() -> CatalogExplainer:
    return CatalogExplainer()


@pytest.fixture
def engine(knowledge_engine: Engine, catalog: CatalogExplainer) -> Engine:
    return Engine(knowledge=knowledge_engine.knowledge, explainer=cast(Any, catalog))


@pytest.fixture
async def emulator() -> AsyncIterator[SlackEmulator]:
    emu = SlackEmulator()
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def socket_bot(emulator: SlackEmulator, engine: Engine) -> AsyncIterator[SlackEmulator]:
    """The bot running in Socket Mode through ``run_slack``, connected to the emulator."""
    task = asyncio.create_task(run_slack(engine, slack_settings(emulator, socket=True)))
    try:
        await connected(emulator, task)
        yield emulator
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def connected(emulator: SlackEmulator, bot: asyncio.Task[Any]) -> None:
    """Wait until the bot's websocket is up (or raise what made ``run_slack`` fail)."""
    waiter = asyncio.create_task(emulator.wait_socket())
    done, _ = await asyncio.wait({bot, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        bot.result()
        raise AssertionError("run_slack returned before connecting")
    waiter.result()


class HttpBot:
    def __init__(self, emulator: SlackEmulator, url: str) -> None:
        self.emulator = emulator
        self.url = url


@pytest.fixture
async def http_bot(emulator: SlackEmulator, engine: Engine) -> AsyncIterator[HttpBot]:
    """The bot in HTTP mode: ``run_slack`` adds its route to an aiohttp app we serve."""
    app = web.Application()
    await run_slack(engine, slack_settings(emulator, socket=False), web_app=app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield HttpBot(emulator, f"http://127.0.0.1:{port}/slack/events")
    finally:
        await runner.cleanup()


def _as_record(message: dict[str, Any]) -> Record:
    return Record(0, "api", "chat.postMessage", message)


def all_text(record: Record) -> str:
    return "\n".join([str(record.data.get("text") or ""), *block_texts([record])])


# --- manifest -----------------------------------------------------------------------------


def test_manifest_has_what_the_adapter_needs() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["display_information"]["name"]
    assert manifest["features"]["bot_user"]["display_name"]
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert commands["/image-explain"]["usage_hint"]
    assert set(manifest["oauth_config"]["scopes"]["bot"]) >= {
        "app_mentions:read",
        "chat:write",
        "commands",
        "im:history",
        "im:read",
        "im:write",
    }
    app_settings = manifest["settings"]
    assert set(app_settings["event_subscriptions"]["bot_events"]) >= {
        "app_mention",
        "message.im",
        "app_home_opened",
        "link_shared",
    }
    assert app_settings["interactivity"]["is_enabled"] is True  # buttons, shortcut
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    (shortcut,) = manifest["features"]["shortcuts"]
    assert (shortcut["type"], shortcut["callback_id"]) == ("message", SHORTCUT)
    assert set(manifest["features"]["unfurl_domains"]) == {"hub.docker.com", "ghcr.io", "quay.io"}
    assert {"links:read", "links:write"} <= set(manifest["oauth_config"]["scopes"]["bot"])
    assert app_settings["socket_mode_enabled"] is True
    assert app_settings["org_deploy_enabled"] is False


# --- rendering (pure) -----------------------------------------------------------------------


def test_markdown_subset_becomes_mrkdwn() -> None:
    reply = Reply(
        kind=ReplyKind.ANSWER,
        title="T",
        body="**Bold** and `**not bold**` and [the docs](https://docs.docker.com/?a=1&b=2)\n\n"
        "- one\n- two\n\n```dockerfile\nFROM scratch\nCOPY app /\n```",
    )
    (message,) = render_messages(reply)
    body = message["blocks"][1]["text"]["text"]
    assert body.startswith("*Bold* and `**not bold**` and ")
    assert "<https://docs.docker.com/?a=1&amp;b=2|the docs>" in body
    assert "• one\n• two" in body
    assert "```\nFROM scratch\nCOPY app /\n```" in body


def test_long_reply_renders_within_limits_and_complete() -> None:
    reply = long_reply("big:1")
    assert len(reply.plain_text()) > 20_000
    assert len(render_blocks(reply)) > 50
    messages = render_messages(reply)
    assert len(messages) > 1
    for message in messages:
        assert message_error(message) is None, message_error(message)
        assert len(message["text"]) <= 3000
    assert "(continued)" in messages[0]["text"]
    for continuation in messages[1:]:
        assert continuation["text"].startswith("(continued)")
        assert continuation["blocks"][0]["type"] == "context"
        assert "(continued)" in continuation["blocks"][0]["elements"][0]["text"]
    words = re.findall(r"w\d{5}", "\n".join(t for m in messages for t in _texts(m)))
    assert words == LONG_WORDS


def test_single_huge_line_is_cut_only_when_it_must() -> None:
    word = "x" * 7000
    reply = Reply(kind=ReplyKind.ANSWER, title="t" * 400, body=f"short words here\n{word}")
    (message,) = render_messages(reply)
    assert block_error(message["blocks"]) is None
    assert len(message["blocks"][0]["text"]["text"]) <= 150
    sections = [b["text"]["text"] for b in message["blocks"][1:]]
    assert sections[0] == "short words here"
    assert "".join(sections[1:]) == word


_pieces = st.sampled_from(
    [
        "word",
        "**bold**",
        "`code`",
        "```",
        "\n",
        "\n\n",
        "- ",
        "<!channel>",
        "<@U0BOB>",
        "&",
        "<",
        ">",
        "[docs](https://docs.docker.com/)",
        "[x](javascript:alert(1))",
        " ",
        "|",
        "x" * 3500,
        "y " * 700,
        "# Heading\n",
        "é€🐳",
    ]
)
_markdown = st.lists(_pieces, max_size=30).map("".join)


@settings(max_examples=60, deadline=None)
@given(
    title=_markdown,
    body=_markdown,
    facts=st.lists(st.tuples(_markdown, _markdown), max_size=12),
    sections=st.lists(st.tuples(_markdown, _markdown), max_size=12),
    suggestions=st.lists(_markdown, max_size=5),
)
def test_any_reply_renders_to_messages_slack_accepts(
    title: str,
    body: str,
    facts: list[tuple[str, str]],
    sections: list[tuple[str, str]],
    suggestions: list[str],
) -> None:
    reply = Reply(
        kind=ReplyKind.ANSWER,
        title=title,
        body=body,
        facts=[Fact(n, v) for n, v in facts],
        sections=[Section(t, b) for t, b in sections],
        sources=[Source("<!here> docs", "https://docs.docker.com/")],
        suggestions=suggestions,
    )
    for message in render_messages(reply):
        assert message_error(message) is None, message
        assert len(message["text"]) <= 3000
        texts = [message["text"], *_texts(message)]
        texts += [b["text"]["text"] for b in message["blocks"] if b["type"] == "header"]
        for text in texts:
            assert "<!" not in text and "<@" not in text
            assert "<javascript" not in text


def _texts(message: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for block in message["blocks"]:
        if block["type"] == "header":
            continue
        if "text" in block:
            out.append(block["text"]["text"])
        out += [f["text"] for f in block.get("fields", [])]
    return out


# --- Socket Mode ----------------------------------------------------------------------------


async def test_mention_is_answered_in_a_thread(socket_bot: SlackEmulator) -> None:
    emu = socket_bot
    event = emu.mention("why FROM ubuntu?")
    await emu.wait_ack(await emu.socket_event(event))
    (post,) = await emu.wait_post("C0GENERAL")
    assert post.ok, post.error
    assert post.data["thread_ts"] == event["ts"]
    assert post.data["blocks"][0]["text"]["text"] == WHY_BASE_IMAGE_TITLE
    assert WHY_BASE_IMAGE_TITLE in post.data["text"]


async def test_mention_inside_a_thread_answers_in_that_thread(socket_bot: SlackEmulator) -> None:
    emu = socket_bot
    event = emu.mention("is a container a VM?", thread_ts="1699999999.000100")
    await emu.socket_event(event)
    (post,) = await emu.wait_post("C0GENERAL")
    assert post.data["thread_ts"] == "1699999999.000100"


async def test_auto_linked_image_reference_reaches_the_engine_as_typed(
    socket_bot: SlackEmulator, catalog: CatalogExplainer
) -> None:
    emu = socket_bot
    event = emu.mention("explain <http://ghcr.io/acme/app:1|ghcr.io/acme/app:1>")
    await emu.socket_event(event)
    (placeholder,) = await emu.wait_post("C0GENERAL")
    assert "Inspecting `ghcr.io/acme/app:1`" in all_text(placeholder)
    await emu.wait_for(lambda r: r.name == "chat.update")
    assert catalog.calls == ["ghcr.io/acme/app:1"]
    (final,) = emu.current("C0GENERAL")
    assert final["blocks"][0]["text"]["text"] == "ghcr.io/acme/app:1: Debian 12 user space"


async def test_direct_message_without_mention(socket_bot: SlackEmulator) -> None:
    emu = socket_bot
    await emu.socket_event(emu.dm("why FROM ubuntu?"))
    (post,) = await emu.wait_post("D0ALICE")
    assert post.ok
    assert post.data["blocks"][0]["text"]["text"] == WHY_BASE_IMAGE_TITLE


async def test_own_messages_and_subtypes_are_ignored(socket_bot: SlackEmulator) -> None:
    emu = socket_bot
    ignored = [
        emu.dm("why FROM ubuntu?", user=BOT_USER_ID),
        emu.dm("why FROM ubuntu?", bot_id="B0OTHER"),
        emu.dm("why FROM ubuntu?", subtype="message_changed"),
        emu.dm("", subtype="channel_join"),
    ]
    for event in ignored:
        await emu.wait_ack(await emu.socket_event(event))
    sentinel = emu.dm("is a container a VM?")
    await emu.socket_event(sentinel)
    posts = await emu.wait_post("D0ALICE")
    assert len(posts) == 1
    assert "virtual machine" in all_text(posts[0]).lower() or "vm" in all_text(posts[0]).lower()


async def test_socket_redelivery_is_answered_once(socket_bot: SlackEmulator) -> None:
    emu = socket_bot
    event = emu.mention("why FROM ubuntu?")
    first = await emu.socket_event(event, event_id="Ev0DUPLICATE")
    again = await emu.socket_event(event, event_id="Ev0DUPLICATE")
    retried = await emu.socket_event(event, event_id="Ev0DUPLICATE", retry_attempt=1)
    for envelope in (first, again, retried):
        await emu.wait_ack(envelope)
    await emu.wait_post("C0GENERAL")
    # A later, different question is answered too, and the duplicates still were not.
    await emu.socket_event(emu.mention("is a container a VM?", channel="C0OTHER"))
    await emu.wait_post("C0OTHER")
    assert len(emu.posts("C0GENERAL")) == 1


async def test_slash_command_help_is_ephemeral_usage(socket_bot: SlackEmulator) -> None:
    emu = socket_bot
    for text in ("", "help"):
        ack = await emu.wait_ack(await emu.socket_command(emu.command(text)))
        payload = ack.data["payload"]
        assert payload["response_type"] == "ephemeral"
        assert "/image-explain IMAGE" in payload["text"]
    assert not [r for r in emu.records if r.kind == "response_url"]
    assert emu.posts() == []


async def test_slash_command_acks_first_then_posts_in_channel(socket_bot: SlackEmulator) -> None:
    emu = socket_bot
    command = emu.command("debian:bookworm-slim")
    ack = await emu.wait_ack(await emu.socket_command(command))
    # The placeholder is the ack, in the channel; the result replaces it.
    assert ack.data["payload"]["response_type"] == "in_channel"
    assert "Inspecting `debian:bookworm-slim`" in ack.data["payload"]["text"]
    post = await emu.wait_for(
        lambda r: r.kind == "response_url" and "Debian 12" in json.dumps(r.data)
    )
    assert command["response_url"].endswith(post.name)
    assert post.ok
    assert post.data["response_type"] == "in_channel"
    assert post.data["replace_original"] is True
    assert post.data["blocks"][0]["text"]["text"] == "debian:bookworm-slim: Debian 12 user space"
    assert ack.seq < post.seq
    original = emu.original(command["response_url"])
    assert original is not None and "Debian 12" in json.dumps(original)


async def test_twenty_thousand_char_reply_is_threaded_within_limits(
    socket_bot: SlackEmulator,
) -> None:
    emu = socket_bot
    assert len(long_reply("big:1").plain_text()) > 20_000
    event = emu.mention("explain big:1")
    await emu.socket_event(event)
    expected = len(render_messages(long_reply("big:1")))
    # The placeholder (replaced by the first message) and the continuations.
    posts = await emu.wait_post("C0GENERAL", count=expected)
    assert len(posts) >= 2
    assert all(p.ok for p in posts), [p.error for p in posts]
    assert {p.data["thread_ts"] for p in posts} == {event["ts"]}
    final = emu.current("C0GENERAL")
    assert len(final) == expected
    words = re.findall(r"w\d{5}", "\n".join(block_texts([_as_record(m) for m in final])))
    assert words == LONG_WORDS
    assert all(len(m["text"]) <= 3000 for m in final)


async def test_long_slash_command_reply_continues_via_response_url(
    socket_bot: SlackEmulator,
) -> None:
    emu = socket_bot
    command = emu.command("big:2")
    await emu.socket_command(command)
    expected = len(render_messages(long_reply("big:2")))
    await emu.wait_for(
        lambda r: len([x for x in emu.records if x.kind == "response_url"]) >= expected
    )
    posts = [r for r in emu.records if r.kind == "response_url"]
    assert len(posts) >= 2
    assert all(p.ok for p in posts), [p.error for p in posts]
    assert {p.data["response_type"] for p in posts} == {"in_channel"}
    assert [p.data["replace_original"] for p in posts] == [True] + [False] * (len(posts) - 1)
    words = re.findall(r"w\d{5}", "\n".join(block_texts(posts)))
    assert words == LONG_WORDS


async def test_user_text_never_pings(socket_bot: SlackEmulator) -> None:
    emu = socket_bot
    # Slack sends typed "<" and ">" as entities; a real @channel arrives as <!channel>.
    typed = "&lt;!channel&gt; &lt;@U0BOB&gt; <!here> &amp;"
    ack = await emu.wait_ack(await emu.socket_command(emu.command(typed)))
    # Not an image reference: refused at once, to the asker only.
    assert ack.data["payload"]["response_type"] == "ephemeral"
    event = emu.mention("explain acme/echo:1")
    await emu.socket_event(event)
    await emu.wait_for(lambda r: r.name == "chat.update")
    (threaded,) = emu.current("C0GENERAL")
    threaded_text = json.dumps(threaded)
    for text in (str(ack.data["payload"]), threaded_text):
        assert "<!channel>" not in text
        assert "<!here>" not in text
        assert "<@U0" not in text
        assert "<https://evil" not in text
    assert "&lt;!channel&gt; &lt;@U0BOB&gt; @here &amp;" in str(ack.data["payload"])
    assert "&lt;!channel&gt; ping &lt;@U0EVERYONE&gt; &amp;" in threaded_text


async def test_engine_failure_is_friendly_and_bot_keeps_going(
    socket_bot: SlackEmulator,
) -> None:
    emu = socket_bot
    broken = emu.mention("explain acme/boom:1")
    await emu.socket_event(broken)
    failure = await emu.wait_for(lambda r: r.name == "chat.postEphemeral")
    text = all_text(failure)
    assert failure.ok
    assert failure.data["thread_ts"] == broken["ts"]
    assert failure.data["user"] == "U0ALICE"  # only the asker sees it
    assert "try again" in text
    for leak in ("Traceback", "RuntimeError", BOT_TOKEN, "internal failure"):
        assert leak not in text
    assert emu.current("C0GENERAL") == []  # the placeholder is gone
    # A user-caused error is a one-line private message, and the next question is answered.
    missing = emu.mention("explain acme/missing:1")
    await emu.socket_event(missing)
    await emu.wait_for(lambda r: len(emu.api_calls("chat.postEphemeral")) >= 2)
    assert "was not found" in all_text(emu.api_calls("chat.postEphemeral")[1])
    nxt = emu.mention("why FROM ubuntu?")
    await emu.socket_event(nxt)
    await emu.wait_for(lambda r: len(emu.current("C0GENERAL")) >= 1)
    (answer,) = emu.current("C0GENERAL")
    assert answer["blocks"][0]["text"]["text"] == WHY_BASE_IMAGE_TITLE
    assert emu.refused() == []


# --- HTTP mode ------------------------------------------------------------------------------


async def test_http_mention_is_answered_in_a_thread(http_bot: HttpBot) -> None:
    emu = http_bot.emulator
    event = emu.mention("why FROM ubuntu?")
    response = await emu.http_event(http_bot.url, event)
    assert response.data["status"] == 200
    (post,) = await emu.wait_post("C0GENERAL")
    assert post.data["thread_ts"] == event["ts"]
    assert post.data["blocks"][0]["text"]["text"] == WHY_BASE_IMAGE_TITLE


async def test_http_slash_command_acks_first(http_bot: HttpBot) -> None:
    emu = http_bot.emulator
    command = emu.command("debian:bookworm-slim")
    ack = await emu.http_command(http_bot.url, command)
    assert ack.data["status"] == 200
    assert ack.data["json"]["response_type"] == "in_channel"
    assert "Inspecting `debian:bookworm-slim`" in ack.data["json"]["text"]
    post = await emu.wait_for(
        lambda r: r.kind == "response_url" and "Debian 12" in json.dumps(r.data)
    )
    assert post.data["response_type"] == "in_channel"
    assert post.data["blocks"][0]["text"]["text"] == "debian:bookworm-slim: Debian 12 user space"
    assert ack.seq < post.seq


async def test_http_retry_is_acked_and_skipped(http_bot: HttpBot) -> None:
    emu = http_bot.emulator
    event = emu.mention("why FROM ubuntu?")
    first = await emu.http_event(http_bot.url, event, event_id="Ev0HTTPRETRY")
    retry = await emu.http_event(
        http_bot.url,
        event,
        event_id="Ev0HTTPRETRY",
        headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    assert first.data["status"] == 200
    assert retry.data["status"] == 200
    await emu.wait_post("C0GENERAL")
    await emu.http_event(http_bot.url, emu.mention("is a container a VM?", channel="C0OTHER"))
    await emu.wait_post("C0OTHER")
    assert len(emu.posts("C0GENERAL")) == 1


async def test_http_forged_and_stale_requests_are_rejected(http_bot: HttpBot) -> None:
    emu = http_bot.emulator
    forged = await emu.http_event(
        http_bot.url, emu.mention("why FROM ubuntu?"), secret="not-the-secret"
    )
    stale = await emu.http_event(
        http_bot.url, emu.mention("why FROM ubuntu?"), timestamp=int(time.time()) - 6 * 60
    )
    unsigned = await emu.http_event(
        http_bot.url, emu.mention("why FROM ubuntu?"), signature="v0=" + "0" * 64
    )
    assert forged.data["status"] == 401
    assert stale.data["status"] == 401
    assert unsigned.data["status"] == 401
    # A genuine request afterwards still works, and only it was answered.
    await emu.http_event(http_bot.url, emu.mention("is a container a VM?", channel="C0OTHER"))
    await emu.wait_post("C0OTHER")
    assert emu.posts("C0GENERAL") == []


async def test_http_url_verification_challenge(http_bot: HttpBot) -> None:
    emu = http_bot.emulator
    body = '{"token": "legacy", "challenge": "c-12345", "type": "url_verification"}'
    response = await emu.http_post(http_bot.url, body, "application/json")
    assert response.data["status"] == 200
    assert response.data["json"] == {"challenge": "c-12345"}


# --- small pieces -----------------------------------------------------------------------------


def test_slack_text_becomes_what_the_user_typed() -> None:
    bot = "UBOT0001"
    assert slack_to_plain("<@UBOT0001> why FROM ubuntu?", bot) == "why FROM ubuntu?"
    assert slack_to_plain("<@UBOT0001|dockwise>   explain  x:1", bot) == "explain x:1"
    assert slack_to_plain("hey <@UBOT0001> is a container a VM?", bot) == (
        "hey is a container a VM?"
    )
    assert slack_to_plain("ask <@U0BOB|bob> or <@U0EVE> in <#C1|general>", bot) == (
        "ask @bob or @U0EVE in #general"
    )
    assert slack_to_plain("explain <http://ghcr.io/acme/app:1|ghcr.io/acme/app:1>", bot) == (
        "explain ghcr.io/acme/app:1"
    )
    assert slack_to_plain("see <https://docs.docker.com/>", bot) == "see https://docs.docker.com/"
    assert slack_to_plain("<!channel> <!here|@here> <!subteam^S1|@ops>", bot) == (
        "@channel @here @ops"
    )
    assert slack_to_plain("is a &lt; b &amp;&amp; c &gt; d?", bot) == "is a < b && c > d?"
    assert slack_to_plain("&amp;lt;", bot) == "&lt;"


def test_seen_events_is_bounded() -> None:
    seen = SeenEvents(maxsize=2)
    assert seen.add("a") and seen.add("b")
    assert not seen.add("a")
    assert seen.add("c")  # evicts "a", the oldest
    assert seen.add("a")
    assert not seen.add("c")
    expired = SeenEvents(ttl=0)
    assert expired.add("x") and expired.add("x")


# --- configuration ----------------------------------------------------------------------------


async def test_missing_tokens_are_one_line_errors(emulator: SlackEmulator, engine: Engine) -> None:
    from bot.errors import InvalidInput

    with pytest.raises(InvalidInput, match="SLACK_BOT_TOKEN"):
        SlackAdapter(engine, SlackSettings(_env_file=None, slack_bot_token=None))
    no_secret = SlackSettings(
        _env_file=None,
        slack_bot_token=BOT_TOKEN,
        slack_api_url=emulator.api_url,
    )
    with pytest.raises(InvalidInput, match="SLACK_SIGNING_SECRET"):
        await run_slack(engine, no_secret, web_app=web.Application())


async def test_wrong_tokens_and_unreachable_api_fail_in_one_line(
    emulator: SlackEmulator, engine: Engine
) -> None:
    from bot.errors import Unauthorized, Unreachable

    good = slack_settings(emulator, socket=True)
    bad_bot = good.model_copy(update={"slack_bot_token": SecretStr("xoxb-wrong")})
    with pytest.raises(Unauthorized, match=r"SLACK_BOT_TOKEN \(invalid_auth\)"):
        await run_slack(engine, bad_bot)
    bad_app = good.model_copy(update={"slack_app_token": SecretStr("xapp-wrong")})
    with pytest.raises(Unauthorized, match=r"SLACK_APP_TOKEN \(invalid_auth\)"):
        await run_slack(engine, bad_app)
    nowhere = good.model_copy(update={"slack_api_url": f"http://127.0.0.1:{free_port()}/api/"})
    with pytest.raises(Unreachable, match="Cannot reach the Slack API"):
        await run_slack(engine, nowhere)
    assert not [r for r in emulator.records if r.kind == "socket_connected"]


# --- a real image from the test registry --------------------------------------------------------


@pytest.fixture
def registry_image(registry: Any) -> Iterator[str]:
    from tests.fixtures.registry import make_layer, push_image

    os_release = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
    files = {"etc/os-release": os_release, "bin/sh": b"#!shell\n"}
    # The history line is user-controlled text that the explanation shows.
    history = [{"created_by": "/bin/sh -c echo <!channel> <@U0EVERYONE> && make"}]
    push_image(
        registry.pusher(),
        "demo/slack",
        "v1",
        [make_layer(files)],
        config_extra={"history": history},
    )
    yield f"{registry.host}/demo/slack:v1"


async def test_slash_command_explains_an_image_from_the_test_registry(
    emulator: SlackEmulator,
    knowledge_engine: Engine,
    registry_image: str,
    tmp_path: Path,
) -> None:
    from bot.image.explain import Explainer

    host = registry_image.split("/", 1)[0]
    explainer = Explainer(Settings(_env_file=None, insecure_registries=[host], cache_dir=tmp_path))
    engine = Engine(knowledge=knowledge_engine.knowledge, explainer=explainer)
    task = asyncio.create_task(run_slack(engine, slack_settings(emulator, socket=True)))
    try:
        await connected(emulator, task)
        command = emulator.command(registry_image)
        ack = await emulator.wait_ack(await emulator.socket_command(command))
        assert "Inspecting" in ack.data["payload"]["text"]
        post = await emulator.wait_for(
            lambda r: (
                r.kind == "response_url"
                and "demo/slack" in all_text(r)
                and "Inspecting" not in all_text(r)
            ),
            within=60,
        )
        assert post.ok, post.error
        assert ack.seq < post.seq
        assert post.data["response_type"] == "in_channel"
        text = all_text(post)
        assert "demo/slack" in text
        assert "debian" in text.lower()
        assert "echo &lt;!channel&gt; &lt;@U0EVERYONE&gt; &amp;&amp; make" in text
        assert "<!channel>" not in text and "<@U0" not in text
        # The same image through a mention, answered in the thread.
        event = emulator.mention(f"explain {registry_image}")
        await emulator.socket_event(event)
        (threaded,) = await emulator.wait_post("C0GENERAL", within=60)
        assert threaded.ok, threaded.error
        assert threaded.data["thread_ts"] == event["ts"]
        await emulator.wait_for(lambda r: r.name == "chat.update", within=60)
        (final,) = emulator.current("C0GENERAL")
        assert "debian" in json.dumps(final).lower()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await engine.aclose()
