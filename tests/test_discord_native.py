"""Discord features users expect, through real discord.py against the Discord emulator:
buttons (component interactions), private errors (flag 64), feedback, progress (edits of
the original response), autocomplete (type 4 -> callback 8) and the "Explain image"
message command. The image explainer is ``StagedExplainer`` from the Slack tests (a
stand-in that reports progress and can be held at a stage)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from adapters.discord import DiscordSettings, DockwiseClient, build_discord_client
from bot.engine import WELL_KNOWN_IMAGES, Engine
from bot.knowledge import KnowledgeBase
from tests.emulators.discord import DiscordEmulator, Interaction
from tests.test_slack_native import StagedExplainer

EPHEMERAL = 64


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


@pytest.fixture
def explainer() -> StagedExplainer:
    return StagedExplainer()


@pytest.fixture
def engine(knowledge: KnowledgeBase, explainer: StagedExplainer) -> Engine:
    return Engine(knowledge=knowledge, explainer=cast(Any, explainer))


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    emulator = DiscordEmulator()
    await emulator.start()
    yield emulator
    await emulator.close()


@contextlib.asynccontextmanager
async def running(emu: DiscordEmulator, engine: Engine) -> AsyncIterator[DockwiseClient]:
    settings = DiscordSettings(
        _env_file=None,
        discord_token=emu.token,
        discord_api_url=emu.api_url,
        discord_gateway_url=emu.gateway_url,
    )
    client = build_discord_client(engine, settings)
    client.progress_min_interval = 0  # edit as fast as events come: nothing to wait out
    task = asyncio.create_task(client.start(emu.token))
    ready = asyncio.create_task(emu.wait_ready())
    try:
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
            raise AssertionError("the client stopped before the gateway was ready")
        yield client
    finally:
        ready.cancel()
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


def custom_ids(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message.get("components") or [] for c in row["components"]]


def shown_text(messages: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for message in messages:
        parts.append(message.get("content") or "")
        for embed in message["embeds"]:
            parts += [embed.get("title") or "", embed.get("description") or ""]
            parts += [f"{f['name']}\n{f['value']}" for f in embed.get("fields") or []]
    return "\n".join(parts)


async def first_shown(emu: DiscordEmulator, interaction: Interaction) -> dict[str, Any]:
    await emu.wait_for(lambda: any(m["embeds"] for m in emu.shown(interaction)))
    return emu.shown(interaction)[0]


# --- buttons ------------------------------------------------------------------------------


async def test_answer_buttons_and_clicks_answered_as_followups(
    emu: DiscordEmulator, engine: Engine, knowledge: KnowledgeBase
) -> None:
    async with running(emu, engine):
        asked = await emu.slash_command(
            "ask", {"question": "why do Dockerfiles start FROM ubuntu?"}
        )
        answer = await first_shown(emu, asked)
        ids = custom_ids(answer)
        assert ids[0] == "dockwise_full_article:why-base-image"
        assert ids[-2:] == [
            "dockwise_feedback_up:up|why-base-image",
            "dockwise_feedback_down:down|why-base-image",
        ]
        asks = [i for i in ids if i.startswith("dockwise_ask")]
        related = knowledge.articles["why-base-image"].related
        questions = [knowledge.articles[r].questions[0] for r in related][:3]
        assert asks and len(asks) == len(questions)
        for index, (custom_id, question) in enumerate(zip(asks, questions, strict=True)):
            prefix = "dockwise_ask" if index == 0 else f"dockwise_ask_{index + 1}"
            value = custom_id.split(":", 1)[1]
            assert custom_id.startswith(prefix + ":")
            if not value.startswith("#"):  # short enough to travel in the custom id
                assert value == question
        click = await emu.click(answer, ids[0])
        full = await first_shown(emu, click)
        assert click.acknowledged == 5  # deferred, then answered as a follow-up
        article = knowledge.articles["why-base-image"]
        assert full["embeds"][0]["title"] == article.title
        assert article.body.split("\n\n")[-1].split()[-1].strip("*`.") in shown_text([full])
        ask_click = await emu.click(answer, asks[-1])
        follow_up = await first_shown(emu, ask_click)
        expected = await Engine(knowledge=knowledge).handle(questions[len(asks) - 1])
        assert follow_up["embeds"][0]["title"] == expected.title
    bad = [c for c in emu.calls if c.status >= 400]
    assert bad == []


async def test_image_sections_and_feedback(emu: DiscordEmulator, engine: Engine) -> None:
    before = (
        REGISTRY.get_sample_value("dockwise_feedback_total", {"kind": "image", "vote": "up"}) or 0
    )
    async with running(emu, engine):
        explained = await emu.slash_command("image-explain", {"image": "debian:bookworm-slim"})
        reply = await first_shown(emu, explained)
        ids = custom_ids(reply)
        assert [i for i in ids if i.startswith("dockwise_section")] == [
            "dockwise_section:debian:bookworm-slim|Layers",
            "dockwise_section_2:debian:bookworm-slim|Advice",
        ]
        section = await first_shown(emu, await emu.click(reply, ids[1]))
        assert "Run as a non-root user." in shown_text([section])
        vote = await emu.click(reply, "dockwise_feedback_up:up|debian:bookworm-slim")
        await emu.wait_for(lambda: vote.acknowledged)
    assert vote.acknowledged == 4 and vote.original is not None
    assert vote.original["flags"] == EPHEMERAL
    assert "Thanks" in shown_text([vote.original])
    after = REGISTRY.get_sample_value("dockwise_feedback_total", {"kind": "image", "vote": "up"})
    assert after == before + 1


# --- private errors and progress --------------------------------------------------------------


async def test_errors_are_private(emu: DiscordEmulator, engine: Engine) -> None:
    async with running(emu, engine):
        malformed = await emu.slash_command("image-explain", {"image": "Not An Image!"})
        missing = await emu.slash_command("image-explain", {"image": "acme/missing:1"})
        await emu.wait_for(lambda: missing.followups and malformed.acknowledged)
    # A malformed reference is refused at once, privately.
    assert malformed.acknowledged == 4 and malformed.original is not None
    assert malformed.original["flags"] == EPHEMERAL
    # A failure found later: the public placeholder is deleted, the error sent privately.
    assert missing.original_deleted
    (private,) = missing.followups
    assert private["flags"] == EPHEMERAL
    assert "was not found" in shown_text([private])
    assert emu.shown(missing) == [private]


async def test_image_explain_placeholder_shows_progress_then_the_result(
    emu: DiscordEmulator, engine: Engine, explainer: StagedExplainer
) -> None:
    explainer.hold = asyncio.Event()
    async with running(emu, engine):
        interaction = await emu.slash_command("image-explain", {"image": "python:3.12-slim"})
        await emu.wait_for(
            lambda: (
                interaction.original is not None
                and "layer 1 of 2" in interaction.original["content"]
            )
        )
        assert interaction.acknowledged == 4
        assert interaction.original is not None
        assert interaction.original["content"].startswith("Inspecting `python:3.12-slim` …")
        assert "3.1 MB read" in interaction.original["content"]
        assert not interaction.original["embeds"]
        explainer.hold.set()
        final = await first_shown(emu, interaction)
    assert final["id"] == interaction.original["id"]  # the same message, edited
    assert final["content"] == ""
    assert final["embeds"][0]["title"] == "python:3.12-slim: Debian 12 user space"
    edits = emu.calls_to("PATCH", f"/webhooks/{emu.application_id}/")
    assert len(edits) >= 2  # at least one progress edit, then the result


async def test_mention_explanation_edits_its_placeholder(
    emu: DiscordEmulator, engine: Engine, explainer: StagedExplainer
) -> None:
    explainer.hold = asyncio.Event()
    async with running(emu, engine):
        asked = await emu.user_message(f"{emu.mention()} explain python:3.12-slim")
        await emu.wait_for(lambda: "layer 1 of 2" in shown_text(emu.replies_to(asked["id"])))
        (placeholder,) = emu.replies_to(asked["id"])
        explainer.hold.set()
        await emu.wait_for(lambda: any(m["embeds"] for m in emu.replies_to(asked["id"])))
    (reply,) = emu.replies_to(asked["id"])
    assert reply["id"] == placeholder["id"] and reply["edited_timestamp"]
    assert reply["embeds"][0]["title"] == "python:3.12-slim: Debian 12 user space"
    assert "dockwise_feedback_up:up|python:3.12-slim" in custom_ids(reply)


# --- autocomplete and the message command ------------------------------------------------------


async def test_image_autocomplete_offers_recent_then_well_known_images(
    emu: DiscordEmulator, engine: Engine
) -> None:
    async with running(emu, engine):
        done = await emu.slash_command("image-explain", {"image": "ghcr.io/acme/python-api:2"})
        await first_shown(emu, done)
        typed = await emu.autocomplete("image-explain", "image", "PYTHON")
        everything = await emu.autocomplete("image-explain", "image", "")
        await emu.wait_for(lambda: typed.choices is not None and everything.choices is not None)
    assert typed.acknowledged == 8 and typed.choices is not None
    values = [c["value"] for c in typed.choices]
    assert values[0] == "ghcr.io/acme/python-api:2"  # explained in this server just now
    assert values[1:] == [i for i in WELL_KNOWN_IMAGES if "python" in i]
    assert all(c["name"] == c["value"] for c in typed.choices)
    assert everything.choices is not None and len(everything.choices) == 25


async def test_explain_image_message_command(
    emu: DiscordEmulator, engine: Engine, explainer: StagedExplainer
) -> None:
    async with running(emu, engine):
        message = await emu.user_message("CI pulls docker pull node:22-alpine then runs tests")
        command = await emu.message_command("Explain image", message)
        reply = await first_shown(emu, command)
        chatter = await emu.user_message("lunch at 12:30?")
        nothing = await emu.message_command("Explain image", chatter)
        await emu.wait_for(lambda: nothing.acknowledged)
    assert explainer.calls == ["node:22-alpine"]
    assert reply["embeds"][0]["title"] == "node:22-alpine: Debian 12 user space"
    assert nothing.original is not None and nothing.original["flags"] == EPHEMERAL
    assert "no image reference" in shown_text([nothing.original])


async def test_a_button_whose_long_value_was_forgotten_gets_a_private_answer(
    emu: DiscordEmulator, engine: Engine
) -> None:
    async with running(emu, engine):
        asked = await emu.slash_command("ask", {"question": "is a container a VM?"})
        answer = await first_shown(emu, asked)
        forged = {
            **answer,
            "components": [
                {
                    "type": 1,
                    "components": [
                        {
                            "type": 2,
                            "style": 2,
                            "label": "old",
                            "custom_id": "dockwise_ask_2:#" + "0" * 24,
                        }
                    ],
                }
            ],
        }
        click = await emu.click(forged, "dockwise_ask_2:#" + "0" * 24)
        await emu.wait_for(lambda: click.acknowledged)
    assert click.original is not None and click.original["flags"] == EPHEMERAL
    assert "too old" in shown_text([click.original])
