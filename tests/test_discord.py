"""The Discord adapter, driven through real discord.py against the emulator over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import sys
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.discord import (
    FAILURE_MESSAGE,
    DiscordSettings,
    DockwiseClient,
    build_discord_client,
    fetch_application_id,
    invite_url,
    run_discord,
    strip_mentions,
)
from adapters.discord_embeds import render_reply, split_text
from bot.config import Settings
from bot.engine import Engine
from bot.errors import Unauthorized
from bot.knowledge import KnowledgeBase
from bot.reply import Fact, Reply, ReplyKind, Section, Source
from tests.emulators.discord import (
    DiscordEmulator,
    DiscordError,
    embed_total,
    validate_message,
)

REPO_ROOT = str(Path(__file__).resolve().parents[1])

# Discord's documented permission bits (developer docs, "Permissions"), written out here
# independently of discord.Permissions.
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
READ_MESSAGE_HISTORY = 1 << 16
SEND_MESSAGES_IN_THREADS = 1 << 38


class ScriptedExplainer:
    """Stands in for the image explainer (a collaborator of the adapter, not under test):
    records each reference and answers with ``make(reference)``."""

    def __init__(self, make: Any, gate: asyncio.Event | None = None) -> None:
        self.make = make
        self.references: list[str] = []
        self.started = asyncio.Event()
        self.gate = gate

    async def explain(
        self, reference: str, *, source: str = "auto", platform: Any = None, progress: Any = None
    ) -> Reply:
        self.references.append(reference)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        result: Reply = self.make(reference)
        return result

    async def aclose(self) -> None:
        return None


def image_reply(reference: str) -> Reply:
    return Reply(
        kind=ReplyKind.IMAGE,
        title=f"{reference}: Debian user space, 3 layers",
        body=f"The image **{reference}** ships Debian's user space; the kernel is the host's.",
        facts=[Fact("Distro", "Debian 12"), Fact("User", "root")],
        sections=[Section("Advice", "- Run as a non-root user.")],
    )


def exploding(reference: str) -> Reply:
    raise RuntimeError(f"internal failure with token=hunter2 for {reference}")


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


@pytest.fixture
async def emulator() -> AsyncIterator[DiscordEmulator]:
    emu = DiscordEmulator()
    await emu.start()
    yield emu
    await emu.close()


def settings_for(emu: DiscordEmulator, **extra: Any) -> DiscordSettings:
    values: dict[str, Any] = {
        "discord_token": emu.token,
        "discord_api_url": emu.api_url,
        "discord_gateway_url": emu.gateway_url,
        "discord_guild_id": None,
        "discord_shard_count": None,
    }
    values.update(extra)
    return DiscordSettings(_env_file=None, **values)


@contextlib.asynccontextmanager
async def running(
    emu: DiscordEmulator, engine: Engine, sessions: int = 1, **extra: Any
) -> AsyncIterator[DockwiseClient]:
    client = build_discord_client(engine, settings_for(emu, **extra))
    task = asyncio.create_task(client.start(emu.token))
    ready = asyncio.create_task(emu.wait_ready(sessions))
    try:
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises what went wrong
            raise AssertionError("the client stopped before the gateway was ready")
        ready.result()
        yield client
    finally:
        ready.cancel()
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


def embeds_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for m in messages for e in m["embeds"]]


def text_of(messages: list[dict[str, Any]]) -> str:
    """Every piece of text a reader sees in these messages, in order."""
    parts: list[str] = []
    for message in messages:
        parts.append(message.get("content") or "")
        for embed in message["embeds"]:
            parts += [embed.get("title") or "", embed.get("description") or ""]
            for fld in embed.get("fields") or []:
                parts += [fld["name"], fld["value"]]
            parts.append((embed.get("footer") or {}).get("text") or "")
    return "\n".join(p for p in parts if p)


def first_embeds(emulator: DiscordEmulator, interaction: Any) -> list[dict[str, Any]]:
    """The embeds of the first message the interaction shows now (none yet: [])."""
    shown = emulator.shown(interaction)
    return list(shown[0]["embeds"]) if shown else []


def words(text: str) -> list[str]:
    return text.split()


# -- invite and application id ---------------------------------------------------------


def test_invite_url_asks_for_both_scopes_and_only_the_needed_permissions() -> None:
    url = urllib.parse.urlparse(invite_url(1234567890123))
    query = urllib.parse.parse_qs(url.query)
    assert (url.scheme, url.netloc, url.path) == ("https", "discord.com", "/oauth2/authorize")
    assert query["client_id"] == ["1234567890123"]
    assert set(query["scope"][0].split()) == {"bot", "applications.commands"}
    expected = (
        VIEW_CHANNEL | SEND_MESSAGES | SEND_MESSAGES_IN_THREADS | EMBED_LINKS | READ_MESSAGE_HISTORY
    )
    assert int(query["permissions"][0]) == expected


async def test_fetch_application_id_asks_discord(emulator: DiscordEmulator) -> None:
    assert await fetch_application_id(settings_for(emulator)) == int(emulator.application_id)
    assert emulator.calls_to("GET", "/oauth2/applications/@me")


async def test_fetch_application_id_with_a_bad_token_is_a_clear_error(
    emulator: DiscordEmulator,
) -> None:
    with pytest.raises(Unauthorized, match="DISCORD_TOKEN"):
        await fetch_application_id(settings_for(emulator, discord_token="wrong-token"))


async def test_discord_invite_command_prints_the_url_for_this_bot(
    emulator: DiscordEmulator, tmp_path: Any
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DISCORD_TOKEN": emulator.token,
        "DOCKWISE_DISCORD_API_URL": emulator.api_url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "discord-invite",
        cwd=tmp_path,
        env={**env, "PYTHONPATH": REPO_ROOT},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    query = urllib.parse.parse_qs(urllib.parse.urlparse(out.decode().strip()).query)
    assert query["client_id"] == [emulator.application_id]
    assert emulator.token not in out.decode() + err.decode()


def test_strip_mentions_handles_both_forms() -> None:
    assert strip_mentions("<@42> why  FROM ubuntu? <@!42>", 42) == "why FROM ubuntu?"
    assert strip_mentions("<@43> hi", 42) == "<@43> hi"


# -- commands --------------------------------------------------------------------------


async def test_commands_sync_globally(emulator: DiscordEmulator, knowledge: KnowledgeBase) -> None:
    async with running(emulator, Engine(knowledge=knowledge)):
        commands = {c["name"]: c for c in emulator.commands[None]}
    assert set(commands) == {"ask", "image-explain", "dockerfile-explain", "Explain image"}
    assert guild_commands_absent(emulator)
    for name, option in (("ask", "question"), ("image-explain", "image")):
        (opt,) = commands[name]["options"]
        assert (opt["name"], opt["type"], opt["required"]) == (option, 3, True)
        assert opt["min_length"] == 1 and opt["max_length"] >= 100
    assert commands["image-explain"]["options"][0]["autocomplete"] is True
    assert commands["ask"]["options"][0].get("autocomplete", False) is False
    # The message context-menu command: type 3, no description, no options.
    menu = commands["Explain image"]
    assert (menu["type"], menu["description"], menu.get("options", [])) == (3, "", [])
    # /dockerfile-explain takes no options: it answers with a modal.
    assert commands["dockerfile-explain"].get("options", []) == []


def guild_commands_absent(emu: DiscordEmulator) -> bool:
    return emu.guild_id not in emu.commands


async def test_commands_sync_to_the_development_guild(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    engine = Engine(knowledge=knowledge)
    async with running(emulator, engine, discord_guild_id=int(emulator.guild_id)):
        assert {c["name"] for c in emulator.commands[emulator.guild_id]} == {
            "ask",
            "image-explain",
            "dockerfile-explain",
            "Explain image",
        }
        assert None not in emulator.commands  # nothing pushed globally
        interaction = await emulator.slash_command("ask", {"question": "is a container a VM?"})
        await emulator.wait_for(lambda: interaction.followups)
    assert (
        interaction.followups[0]["embeds"][0]["title"] == engine.ask("is a container a VM?").title
    )


@pytest.mark.parametrize("where", ["channel", "dm"])
async def test_ask_defers_then_follows_up_with_the_answer(
    emulator: DiscordEmulator, knowledge: KnowledgeBase, where: str
) -> None:
    engine = Engine(knowledge=knowledge)
    question = "why do Dockerfiles start FROM ubuntu?"
    expected = engine.ask(question)
    async with running(emulator, engine):
        interaction = await emulator.slash_command("ask", {"question": question}, where=where)
        await emulator.wait_for(lambda: interaction.followups)
    assert interaction.followups[0]["channel_id"] == interaction.channel_id
    callback = emulator.calls_to("POST", f"/interactions/{interaction.id}/")
    followups = emulator.calls_to(
        "POST", f"/webhooks/{emulator.application_id}/{interaction.token}"
    )
    assert [c.body["type"] for c in callback] == [5]  # one deferred "thinking" acknowledgement
    assert callback[0].status == 200
    assert emulator.calls.index(callback[0]) < emulator.calls.index(followups[0])
    assert all(c.status == 200 for c in followups)
    shown = text_of(interaction.followups)
    assert expected.title in shown
    first_paragraph = expected.body.split("\n\n")[0]
    assert " ".join(words(first_paragraph)) in " ".join(words(shown))
    for source in expected.sources:
        assert f"({source.url})" in shown


async def test_image_explain_command_explains_the_reference(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    explainer = ScriptedExplainer(image_reply)
    engine = Engine(knowledge=knowledge, explainer=cast(Any, explainer))
    async with running(emulator, engine):
        interaction = await emulator.slash_command("image-explain", {"image": "python:3.12-slim"})
        await emulator.wait_for(lambda: first_embeds(emulator, interaction))
    assert explainer.references == ["python:3.12-slim"]
    (callback,) = emulator.calls_to("POST", "/interactions/")
    assert callback.body["type"] == 4  # the placeholder, replaced by the result
    assert callback.body["data"]["content"] == "Inspecting `python:3.12-slim` …"
    (shown,) = emulator.shown(interaction)
    assert shown["content"] == ""
    (embed,) = shown["embeds"]
    assert embed["title"] == "python:3.12-slim: Debian user space, 3 layers"
    assert {f["name"]: f["value"] for f in embed["fields"]}["Distro"] == "Debian 12"


# -- messages --------------------------------------------------------------------------


async def test_mention_is_answered_as_a_reply_without_the_mention(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    explainer = ScriptedExplainer(image_reply)
    engine = Engine(knowledge=knowledge, explainer=cast(Any, explainer))
    bot_id = emulator.bot_user["id"]
    async with running(emulator, engine):
        asked = await emulator.user_message(f"<@!{bot_id}> explain debian:bookworm-slim")
        await emulator.wait_for(lambda: emulator.replies_to(asked["id"]))
    assert explainer.references == ["debian:bookworm-slim"]
    (reply,) = emulator.replies_to(asked["id"])
    assert reply["channel_id"] == emulator.channel_id
    assert reply["message_reference"]["message_id"] == asked["id"]
    assert reply["embeds"][0]["title"] == "debian:bookworm-slim: Debian user space, 3 layers"
    assert reply["mentions"] == []  # the reply does not ping the asker either
    typing = emulator.calls_to("POST", f"/channels/{emulator.channel_id}/typing")
    sent = emulator.calls_to("POST", f"/channels/{emulator.channel_id}/messages")
    assert typing and emulator.calls.index(typing[0]) < emulator.calls.index(sent[0])


async def test_a_question_deleted_before_the_answer_still_gets_it(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    gate = asyncio.Event()
    explainer = ScriptedExplainer(image_reply, gate=gate)
    engine = Engine(knowledge=knowledge, explainer=cast(Any, explainer))
    async with running(emulator, engine):
        asked = await emulator.user_message(f"{emulator.mention()} explain alpine:3.20")
        await asyncio.wait_for(explainer.started.wait(), 15)
        await emulator.delete_user_message(asked["id"])
        gate.set()
        await emulator.wait_for(lambda: any(m["embeds"] for m in emulator.current_messages()))
    (answer,) = emulator.current_messages()  # the placeholder, replaced by the answer
    assert "message_reference" not in answer
    assert answer["channel_id"] == emulator.channel_id
    assert answer["embeds"][0]["title"] == "alpine:3.20: Debian user space, 3 layers"


async def test_without_embed_links_the_answer_comes_as_plain_text(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    engine = Engine(knowledge=knowledge, explainer=cast(Any, ScriptedExplainer(huge_reply)))
    emulator.embed_links = False
    async with running(emulator, engine):
        asked = await emulator.user_message(f"{emulator.mention()} explain big/image:1")
        await emulator.wait_for(lambda: "END-OF-REPLY" in text_of(emulator.replies_to(asked["id"])))
    refused = [c for c in emulator.calls if c.path.startswith("/channels/") and c.status == 400]
    assert [c.response["code"] for c in refused] == [50006]
    messages = emulator.replies_to(asked["id"])
    assert all(0 < len(m["content"]) <= 2000 and not m["embeds"] for m in messages)
    shown = text_of(messages)
    expected = huge_reply("big/image:1")
    assert re.findall(r"\bP\d{4}\b", shown) == [f"P{i:04d}" for i in range(120)]
    assert words(expected.body) == [
        w for w in words(shown) if re.fullmatch(r"P\d{4}|word\d+x\d+", w)
    ]
    assert all(f"<{s.url}>" in shown for s in expected.sources)


async def test_mention_in_a_thread_is_answered_in_the_thread(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    engine = Engine(knowledge=knowledge)
    question = "is a container a VM?"
    async with running(emulator, engine):
        asked = await emulator.user_message(f"{emulator.mention()} {question}", where="thread")
        await emulator.wait_for(lambda: emulator.replies_to(asked["id"]))
    (reply,) = emulator.replies_to(asked["id"])
    assert reply["channel_id"] == emulator.thread_id
    assert reply["embeds"][0]["title"] == engine.ask(question).title


async def test_direct_message_needs_no_mention(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    engine = Engine(knowledge=knowledge)
    question = "what is FROM scratch?"
    async with running(emulator, engine):
        asked = await emulator.user_message(question, where="dm")
        await emulator.wait_for(lambda: emulator.replies_to(asked["id"]))
    (reply,) = emulator.replies_to(asked["id"])
    assert reply["channel_id"] == emulator.dm_channel_id
    assert reply["embeds"][0]["title"] == engine.ask(question).title


async def test_ignores_unaddressed_messages_other_bots_and_itself(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    engine = Engine(knowledge=knowledge)
    other_bot = emulator.new_user("ci", bot=True)
    async with running(emulator, engine):
        chatter = await emulator.user_message("is a container a VM?")  # no mention
        everyone = await emulator.user_message("@everyone is a container a VM?")
        from_bot = await emulator.user_message(f"{emulator.mention()} hi", author=other_bot)
        from_self = await emulator.user_message(
            f"{emulator.mention()} hi", author=emulator.bot_user
        )
        # Gateway events are handled in order: once this one is answered, the earlier
        # ones have been seen (and must have been ignored).
        last = await emulator.user_message(f"{emulator.mention()} is a container a VM?")
        await emulator.wait_for(lambda: emulator.replies_to(last["id"]))
    for ignored in (chatter, everyone, from_bot, from_self):
        assert emulator.replies_to(ignored["id"]) == []
    assert len(emulator.messages) == 1


async def test_echoed_user_text_never_pings(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    def echo(reference: str) -> Reply:
        return Reply(kind=ReplyKind.IMAGE, title=f"About {reference}", body=f"You said {reference}")

    engine = Engine(knowledge=knowledge, explainer=cast(Any, ScriptedExplainer(echo)))
    victim = emulator.owner["id"]
    loud = f"@everyone @here <@{victim}> <@&{emulator.guild_id}>"
    async with running(emulator, engine):
        interaction = await emulator.slash_command("image-explain", {"image": loud})
        asked = await emulator.user_message(f"{emulator.mention()} hey @everyone <@{victim}>")
        await emulator.wait_for(
            lambda: interaction.acknowledged and emulator.replies_to(asked["id"])
        )
    # Not an image reference: refused privately (flag 64); nothing reached the channel.
    assert interaction.original is not None and interaction.original["flags"] == 64
    sent = [c for c in emulator.calls if c.method == "POST" and c.status == 200 and c.body]
    sent = [c for c in sent if "embeds" in c.body or "content" in c.body]
    assert len(sent) >= 1
    for call in sent:
        allowed = call.body["allowed_mentions"]
        assert allowed["parse"] == []
        assert not allowed.get("users") and not allowed.get("roles")
        assert not allowed.get("replied_user")
    for message in emulator.messages:
        assert message["mention_everyone"] is False and message["mentions"] == []


async def test_engine_failure_is_a_friendly_message_and_the_bot_keeps_going(
    emulator: DiscordEmulator, knowledge: KnowledgeBase, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(knowledge=knowledge, explainer=cast(Any, ScriptedExplainer(exploding)))
    async with running(emulator, engine):
        interaction = await emulator.slash_command("image-explain", {"image": "alpine:3.20"})
        await emulator.wait_for(lambda: interaction.followups)
        asked = await emulator.user_message(f"{emulator.mention()} explain alpine:3.20")
        await emulator.wait_for(lambda: emulator.replies_to(asked["id"]))
        question = await emulator.user_message(f"{emulator.mention()} is a container a VM?")
        await emulator.wait_for(lambda: emulator.replies_to(question["id"]))
    for failed in (interaction.followups, emulator.replies_to(asked["id"])):
        shown = text_of(failed)
        assert FAILURE_MESSAGE in shown
        assert "hunter2" not in shown and "Traceback" not in shown
    (answer,) = emulator.replies_to(question["id"])
    assert answer["embeds"][0]["title"] == engine.ask("is a container a VM?").title
    assert "the engine failed" in caplog.text


# -- long replies ----------------------------------------------------------------------


def huge_reply(reference: str) -> Reply:
    paragraphs = [f"P{i:04d} " + " ".join(f"word{i}x{j}" for j in range(30)) for i in range(120)]
    body = "\n\n".join(paragraphs)
    assert len(body) > 20_000
    return Reply(
        kind=ReplyKind.IMAGE,
        title=f"Everything about {reference}",
        body=body,
        facts=[Fact(f"Fact {i}", f"value-{i}") for i in range(30)],
        sections=[
            Section("Layers", "\n".join(f"- L{i:03d} " + "x" * 60 for i in range(60))),
            Section("Advice", "- Use a smaller base image."),
        ],
        sources=[Source(f"Doc {i}", f"https://docs.example.org/{i}") for i in range(8)],
        suggestions=["what is FROM scratch?", "END-OF-REPLY"],
    )


def assert_complete(reply: Reply, messages: list[dict[str, Any]]) -> None:
    shown = text_of(messages)
    markers = re.findall(r"\bP\d{4}\b", shown)
    assert markers == [f"P{i:04d}" for i in range(120)]  # every paragraph, once, in order
    assert words(reply.body) == [w for w in words(shown) if re.fullmatch(r"P\d{4}|word\d+x\d+", w)]
    layer_lines = re.findall(r"- L\d{3} x+", shown)
    assert layer_lines == [f"- L{i:03d} " + "x" * 60 for i in range(60)]
    fields = {f["name"]: f["value"] for e in embeds_of(messages) for f in e.get("fields") or []}
    for fact in reply.facts:
        assert fields[fact.name] == fact.value
    for source in reply.sources:
        assert f"[{source.title}]({source.url})" in shown
    assert "END-OF-REPLY" in shown


async def test_a_huge_reply_is_split_within_limits_and_complete(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    engine = Engine(knowledge=knowledge, explainer=cast(Any, ScriptedExplainer(huge_reply)))
    expected = huge_reply("big/image:1")

    def done(messages: list[dict[str, Any]]) -> bool:
        return "END-OF-REPLY" in text_of(messages)

    async with running(emulator, engine):
        asked = await emulator.user_message(f"{emulator.mention()} explain big/image:1")
        await emulator.wait_for(lambda: done(emulator.replies_to(asked["id"])))
        interaction = await emulator.slash_command("image-explain", {"image": "big/image:1"})
        await emulator.wait_for(lambda: done(emulator.shown(interaction)))
    sends = [
        c for c in emulator.calls if c.method in ("POST", "PATCH") and c.body and "embeds" in c.body
    ]
    assert sends and all(c.status == 200 for c in sends)  # Discord accepted every message
    for messages in (emulator.replies_to(asked["id"]), emulator.shown(interaction)):
        assert len(messages) > 1
        assert messages[0]["embeds"][0]["title"] == expected.title
        assert_complete(expected, messages)
        for message in messages:
            assert len(message["embeds"]) <= 10
            assert sum(embed_total(e) for e in message["embeds"]) <= 6000


replies = st.builds(
    Reply,
    kind=st.sampled_from(list(ReplyKind)),
    title=st.text(min_size=0, max_size=400),
    body=st.one_of(
        st.text(max_size=300),
        st.tuples(  # long bodies: sizeable Markdown-ish paragraphs, repeated
            st.lists(
                st.text(alphabet=st.sampled_from(list("ab cd\n`*-[]()é")), min_size=50),
                min_size=1,
                max_size=5,
            ),
            st.integers(1, 80),
        ).map(lambda t: "\n\n".join(t[0] * t[1])),
    ),
    facts=st.lists(st.builds(Fact, st.text(max_size=300), st.text(max_size=1500)), max_size=40),
    sections=st.lists(
        st.builds(Section, st.text(max_size=300), st.text(max_size=6000)), max_size=6
    ),
    sources=st.lists(
        st.builds(Source, st.text(min_size=1, max_size=80), st.just("https://example.org/x")),
        max_size=30,
    ),
    suggestions=st.lists(st.text(max_size=200), max_size=20),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reply=replies)
def test_every_rendering_is_accepted_by_discord_and_loses_no_words(reply: Reply) -> None:
    rendered = render_reply(reply)
    for message in rendered:
        payload = {"embeds": [e.to_dict() for e in message.embeds]}
        try:
            validate_message(payload)
        except DiscordError as exc:  # pragma: no cover - shows Discord's complaint
            raise AssertionError(exc.body()) from exc
    shown = text_of([{"embeds": [e.to_dict() for e in m.embeds]} for m in rendered])
    for word in words(reply.body):
        assert word.strip("`") in shown or word in reply.title


@settings(max_examples=80, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab c\n`x")), max_size=5000),
    limit=st.integers(200, 1500),
)
def test_split_text_keeps_every_piece_within_the_limit(text: str, limit: int) -> None:
    pieces = split_text(text, limit)
    assert all(0 < len(p) <= limit for p in pieces)
    if "`" not in text:
        assert "".join(words("\n".join(pieces))) == "".join(words(text))


# -- running ---------------------------------------------------------------------------


async def test_run_discord_serves_until_cancelled(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    from discord.http import Route

    before = Route.BASE
    task = asyncio.create_task(run_discord(Engine(knowledge=knowledge), settings_for(emulator)))
    await emulator.wait_ready()
    asked = await emulator.user_message("is a container a VM?", where="dm")
    await emulator.wait_for(lambda: emulator.replies_to(asked["id"]))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await emulator.wait_for(lambda: all(s.ws.closed for s in emulator.sessions))
    assert before == Route.BASE  # the endpoint override does not outlive the client


async def test_the_bot_resumes_after_the_gateway_drops_it(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    engine = Engine(knowledge=knowledge)
    async with running(emulator, engine):
        first = emulator.sessions[0]
        await emulator.drop_connections()
        await emulator.wait_for(lambda: any(s.resumed for s in emulator.sessions))
        asked = await emulator.user_message(f"{emulator.mention()} is a container a VM?")
        await emulator.wait_for(lambda: emulator.replies_to(asked["id"]))
    resumed = next(s for s in emulator.sessions if s.resumed)
    assert resumed.session_id == first.session_id
    assert resumed.path == "/resume"  # the resume_gateway_url from READY, not the default
    assert first.path == "/gateway"


async def test_sharded_client_answers_on_its_shards(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    engine = Engine(knowledge=knowledge)
    async with running(emulator, engine, sessions=2, discord_shard_count=2):
        assert sorted(s.shard for s in emulator.sessions if s.identified) == [(0, 2), (1, 2)]
        asked = await emulator.user_message(f"{emulator.mention()} is a container a VM?")
        await emulator.wait_for(lambda: emulator.replies_to(asked["id"]))
    (reply,) = emulator.replies_to(asked["id"])
    assert reply["embeds"][0]["title"] == engine.ask("is a container a VM?").title


async def test_run_discord_with_a_bad_token_is_a_clear_error(
    emulator: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    settings_ = settings_for(emulator, discord_token="not-the-token")
    with pytest.raises(Unauthorized, match="DISCORD_TOKEN"):
        await run_discord(Engine(knowledge=knowledge), settings_)


# -- a real image from a real registry ---------------------------------------------------

HAVE_EXPLAINER = importlib.util.find_spec("bot.image.explain") is not None


@pytest.mark.skipif(not HAVE_EXPLAINER, reason="bot.image.explain is not written yet")
async def test_image_explain_of_a_registry_image(
    emulator: DiscordEmulator, knowledge: KnowledgeBase, registry: Any, tmp_path: Any
) -> None:
    from bot.image.explain import Explainer
    from tests.fixtures.registry import Pusher, make_layer, push_image

    os_release = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
    layer = make_layer({"etc/os-release": os_release, "etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
    await asyncio.to_thread(push_image, Pusher(registry.url), "discord/demo", "v1", [layer])
    reference = f"{registry.host}/discord/demo:v1"
    settings_ = Settings(
        _env_file=None, cache_dir=tmp_path, insecure_registries=[registry.host], redis_url=None
    )
    engine = Engine(knowledge=knowledge, explainer=Explainer(settings=settings_))
    try:
        async with running(emulator, engine):
            interaction = await emulator.slash_command("image-explain", {"image": reference})
            await emulator.wait_for(lambda: first_embeds(emulator, interaction), within=60)
            asked = await emulator.user_message(f"{emulator.mention()} explain {reference}")
            await emulator.wait_for(
                lambda: text_of(emulator.replies_to(asked["id"])).count("Debian"), within=60
            )
        expected = await engine.explain(reference)  # what the engine says, for comparison
    finally:
        await engine.aclose()
    assert expected.kind is ReplyKind.IMAGE, expected.body
    for messages in (emulator.shown(interaction), emulator.replies_to(asked["id"])):
        shown = text_of(messages)
        assert messages[0]["embeds"][0]["title"] == expected.title
        assert "Debian" in shown
        for fact in expected.facts:
            assert fact.value.strip()[:40] in shown


def test_buttons_of_a_digest_pinned_image_resolve_on_any_replica() -> None:
    """A section or feedback value naming ``name@sha256:<64 hex>`` is too long for a
    100-character custom_id as it is; its compact form must read back without this
    process's memory (another web replica, or after a restart)."""
    from adapters import discord_embeds as de
    from bot.actions import with_actions
    from bot.reply import Reply, ReplyKind, Section

    image = "ghcr.io/acme/python@sha256:" + "0123456789abcdef" * 4
    reply = with_actions(
        Reply(
            kind=ReplyKind.IMAGE,
            title="t",
            body="b",
            sections=[Section("Layers", "x"), Section("Packages", "y")],
        ),
        image=image,
    )
    wanted = [(a.action_id, a.value) for a in reply.actions]
    assert any(len(f"{a}:{v}") > de.CUSTOM_ID_MAX for a, v in wanted)
    ids = [
        b["custom_id"]
        for m in de.render_reply(reply)
        for row in m.components()
        for b in row["components"]
    ]
    assert all(len(i) <= de.CUSTOM_ID_MAX for i in ids)
    de._long_values.clear()  # what another replica (or a restart) knows of them
    resolved = [de.resolve_custom_id(i) for i in ids]
    assert None not in resolved  # element ids are per button; the values must be exact
    assert sorted(r[1] for r in resolved if r is not None) == sorted(v for _, v in wanted)
    # values that start like the markers still round-trip
    for value in ("#not-a-key", "~tilde"):
        assert de.resolve_custom_id(de.custom_id("dockwise_ask", value)) == (
            "dockwise_ask",
            value,
        )
