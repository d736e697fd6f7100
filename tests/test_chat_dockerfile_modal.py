"""``/dockerfile-explain``: a command that opens a modal, whose submission is explained.

Through the real slack-bolt (Socket Mode) and discord.py against the emulators, with the real
engine (BuildKit's parser, the real hadolint). Only a registry that doesn't exist is on the
allowlist, so the bases (Docker Hub) are refused at once and never looked up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.discord_dockerfile import EMPTY_ERROR as DISCORD_EMPTY_ERROR
from adapters.discord_dockerfile import MAX_INPUT as DISCORD_MAX_INPUT
from adapters.slack import run_slack
from adapters.slack_dockerfile import (
    BLOCK_ID,
    CALLBACK_ID,
    EMPTY_ERROR,
    INPUT_ID,
    MAX_INPUT,
    dockerfile_modal,
)
from bot.config import Settings
from bot.engine import Engine
from bot.image.explain import Explainer
from bot.knowledge import KnowledgeBase
from tests.emulators.discord import EPHEMERAL, DiscordEmulator, Interaction, modal_errors
from tests.emulators.slack import Record, SlackEmulator, view_error
from tests.test_discord import running, text_of
from tests.test_slack import all_text, connected, slack_settings

DOCKERFILE = """\
FROM debian:latest AS build
RUN echo hello > /hello
FROM scratch
COPY --from=build /hello /hello
CMD ["/hello"]
"""
UNPARSABLE = "hello, can you look at my app?\nit is slow"


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


@pytest.fixture
async def engine(knowledge: KnowledgeBase, tmp_path: Path) -> AsyncIterator[Engine]:
    settings = Settings(
        _env_file=None,
        cache_dir=tmp_path,
        registry_allowlist=["registry.invalid"],  # Docker Hub refused at once: no lookups
        redis_url=None,
    )
    engine = Engine(knowledge=knowledge, explainer=Explainer(settings))
    yield engine
    await engine.aclose()


# --------------------------------------------------------------------------- emulator limits


def test_emulators_refuse_modals_slack_and_discord_would_refuse() -> None:
    good = dockerfile_modal("C0GENERAL", "https://hooks.slack.test/x")
    assert view_error(good) is None
    too_long = json.loads(json.dumps(good))
    too_long["blocks"][0]["element"]["max_length"] = 3001
    assert view_error(too_long) == "invalid_blocks"
    long_title = {**good, "title": {"type": "plain_text", "text": "x" * 25}}
    assert view_error(long_title) == "invalid_arguments"
    no_submit = {k: v for k, v in good.items() if k != "submit"}
    assert view_error(no_submit) == "invalid_arguments"
    row = {"type": 4, "custom_id": "t", "style": 2, "label": "Dockerfile", "max_length": 4000}
    modal = {"custom_id": "m", "title": "Explain a Dockerfile", "components": [row]}
    assert modal_errors(modal) is not None  # a text input must sit in a row or a label
    modal["components"] = [{"type": 1, "components": [row]}]
    assert modal_errors(modal) is None
    modal["components"] = [{"type": 1, "components": [{**row, "max_length": 4001}]}]
    assert modal_errors(modal) is not None
    modal["components"] = [{"type": 18, "label": "Dockerfile", "component": row}]
    assert modal_errors(modal) is None
    assert modal_errors({**modal, "title": "x" * 46}) is not None


# --------------------------------------------------------------------------- Slack


@pytest.fixture
async def slack(engine: Engine) -> AsyncIterator[SlackEmulator]:
    emu = SlackEmulator()
    await emu.start()
    task = asyncio.create_task(run_slack(engine, slack_settings(emu, socket=True)))
    try:
        await connected(emu, task)
        yield emu
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await emu.stop()


async def open_modal(slack: SlackEmulator, channel: str = "C0GENERAL") -> tuple[str, Record]:
    """Run ``/dockerfile-explain`` in ``channel``; the opened view's id and views.open call."""
    before, known = len(slack.records), set(slack.views)
    envelope = await slack.socket_command(
        slack.command("", channel=channel, command="/dockerfile-explain")
    )
    ack = await slack.wait_ack(envelope)
    assert not ack.data.get("payload")  # acknowledged with nothing shown in the channel
    opened = await slack.wait_for(
        lambda r: r.seq > before and r.kind == "api" and r.name == "views.open"
    )
    assert opened.ok, opened.error
    (view_id,) = set(slack.views) - known
    return view_id, opened


async def submit(slack: SlackEmulator, view_id: str, text: str) -> Record:
    """Submit ``text`` in the modal; returns the ack of the submission."""
    envelope = await slack.socket_view_submission(slack.view_submission(view_id, {INPUT_ID: text}))
    return await slack.wait_ack(envelope)


async def test_slack_command_opens_a_modal_with_a_multiline_input(slack: SlackEmulator) -> None:
    view_id, opened = await open_modal(slack, channel="C0BUILDS")
    view = opened.data["view"]
    assert view["type"] == "modal" and view["callback_id"] == CALLBACK_ID
    (block,) = view["blocks"]
    element = block["element"]
    assert (block["type"], block["block_id"]) == ("input", BLOCK_ID)
    assert element["type"] == "plain_text_input" and element["multiline"] is True
    assert element["max_length"] == MAX_INPUT == 3000
    assert "3,000" in block["hint"]["text"]
    meta = json.loads(view["private_metadata"])
    assert meta["channel"] == "C0BUILDS" and meta["response_url"].startswith(slack.base)
    assert slack.views[view_id]["_open"]
    assert slack.posts() == []  # nothing is said in the channel yet


async def test_slack_submitted_dockerfile_is_explained_in_the_channel(
    slack: SlackEmulator,
) -> None:
    view_id, _ = await open_modal(slack, channel="C0BUILDS")
    ack = await submit(slack, view_id, DOCKERFILE)
    assert not ack.data.get("payload")  # a plain ack: the modal closes
    assert not slack.views[view_id]["_open"]
    (post,) = await slack.wait_post("C0BUILDS", within=60)
    assert post.ok, post.error
    text = all_text(post)
    assert "Dockerfile: 2 stages" in text
    assert "DL3007" in text  # hadolint: FROM debian:latest
    assert "Couldn't inspect the base" in text  # Docker Hub is not on the allowlist
    assert slack.api_calls("chat.postEphemeral") == []


async def test_slack_longer_dockerfile_is_explained_as_far_as_it_fits(
    slack: SlackEmulator,
) -> None:
    view_id, _ = await open_modal(slack)
    long = DOCKERFILE + "".join(f"RUN echo step {n:04d}\n" for n in range(400))
    assert len(long) > MAX_INPUT
    await submit(slack, view_id, long)  # Slack's client stops the text at 3,000 characters
    (post,) = await slack.wait_post("C0GENERAL", within=60)
    assert post.ok, post.error
    assert "Dockerfile: 2 stages" in all_text(post)


async def test_slack_blank_submission_keeps_the_modal_open_with_an_error(
    slack: SlackEmulator,
) -> None:
    view_id, _ = await open_modal(slack)
    with pytest.raises(ValueError, match="empty"):
        slack.view_submission(view_id, {INPUT_ID: ""})  # Slack's client won't send it
    ack = await submit(slack, view_id, "  \n\t\n ")
    assert ack.data["payload"] == {"response_action": "errors", "errors": {BLOCK_ID: EMPTY_ERROR}}
    view = slack.views[view_id]
    assert view["_open"] and view["_errors"] == {BLOCK_ID: EMPTY_ERROR}
    assert not view.get("_bad_ack")
    # The user fixes it in the same modal.
    await submit(slack, view_id, DOCKERFILE)
    (post,) = await slack.wait_post("C0GENERAL", within=60)
    assert "DL3007" in all_text(post)
    assert not slack.views[view_id]["_open"]


async def test_slack_unparsable_submission_is_a_private_one_line_error(
    slack: SlackEmulator,
) -> None:
    view_id, _ = await open_modal(slack)
    ack = await submit(slack, view_id, UNPARSABLE)
    assert not ack.data.get("payload")
    private = await slack.wait_for(lambda r: r.kind == "api" and r.name == "chat.postEphemeral")
    assert private.ok, private.error
    assert (private.data["channel"], private.data["user"]) == ("C0GENERAL", "U0ALICE")
    assert "Line 1 is not a Dockerfile instruction ('HELLO,')" in all_text(private)
    assert "Traceback" not in all_text(private)
    assert slack.posts() == []  # nothing in the channel


async def test_slack_channel_the_bot_is_not_in_gets_the_answer_by_response_url(
    slack: SlackEmulator,
) -> None:
    slack.not_member.add("C0ELSEWHERE")
    view_id, opened = await open_modal(slack, channel="C0ELSEWHERE")
    await submit(slack, view_id, DOCKERFILE)
    refused = await slack.wait_for(lambda r: r.name == "chat.postMessage", within=60)
    assert refused.error == "not_in_channel"
    response_url = json.loads(opened.data["view"]["private_metadata"])["response_url"]
    rid = response_url.rsplit("/", 1)[-1]
    answer = await slack.wait_for(lambda r: r.kind == "response_url" and r.name == rid)
    assert answer.ok, answer.error
    assert answer.data["response_type"] == "in_channel"
    assert "DL3007" in all_text(answer)
    # An error for the asker alone takes the same way, privately.
    again, opened = await open_modal(slack, channel="C0ELSEWHERE")
    await submit(slack, again, UNPARSABLE)
    rid = json.loads(opened.data["view"]["private_metadata"])["response_url"].rsplit("/", 1)[-1]
    private = await slack.wait_for(lambda r: r.kind == "response_url" and r.name == rid)
    assert private.data["response_type"] == "ephemeral"
    assert "doesn't look like a Dockerfile" in all_text(private)


async def test_slack_modal_in_http_mode(engine: Engine) -> None:
    emu = SlackEmulator()
    await emu.start()
    app = web.Application()
    await run_slack(engine, slack_settings(emu, socket=False), web_app=app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        ack = await emu.http_command(url, emu.command("", command="/dockerfile-explain"))
        assert ack.data["status"] == 200 and not ack.data["body"]
        opened = await emu.wait_for(lambda r: r.kind == "api" and r.name == "views.open")
        assert opened.ok, opened.error
        (view_id,) = emu.views
        blank = await emu.http_view_submission(url, emu.view_submission(view_id, {INPUT_ID: " "}))
        assert blank.data["json"]["response_action"] == "errors"
        assert emu.views[view_id]["_open"]
        done = await emu.http_view_submission(
            url, emu.view_submission(view_id, {INPUT_ID: DOCKERFILE})
        )
        assert done.data["status"] == 200 and not done.data["body"]
        assert not emu.views[view_id]["_open"]
        (post,) = await emu.wait_post("C0GENERAL", within=60)
        assert "Dockerfile: 2 stages" in all_text(post) and "DL3007" in all_text(post)
    finally:
        await runner.cleanup()
        await emu.stop()


async def test_slack_views_open_needs_a_fresh_trigger(slack: SlackEmulator) -> None:
    """The emulator is honest: a trigger_id opens one view (so the bot must use the one
    the command brought, at once)."""
    _, opened = await open_modal(slack)
    trigger = opened.data["trigger_id"]
    assert trigger not in slack.triggers  # used up


# --------------------------------------------------------------------------- Discord


@pytest.fixture
async def discord_emu() -> AsyncIterator[DiscordEmulator]:
    emu = DiscordEmulator()
    await emu.start()
    yield emu
    await emu.close()


def text_input(modal: dict[str, Any]) -> dict[str, Any]:
    (row,) = modal["components"]
    return dict(row["components"][0] if row["type"] == 1 else row["component"])


async def open_discord_modal(emu: DiscordEmulator) -> Interaction:
    command = await emu.slash_command("dockerfile-explain", {})
    await emu.wait_for(lambda: command.modal)
    return command


async def test_discord_command_opens_a_modal_and_explains_the_submission(
    discord_emu: DiscordEmulator, engine: Engine
) -> None:
    async with running(discord_emu, engine):
        command = await open_discord_modal(discord_emu)
        assert command.acknowledged == 9 and command.modal is not None
        element = text_input(command.modal)
        assert element["type"] == 4 and element["style"] == 2  # paragraph
        assert element["max_length"] == DISCORD_MAX_INPUT == 4000
        assert discord_emu.shown(command) == []  # a modal is no message
        submitted = await discord_emu.submit_modal(command, {element["custom_id"]: DOCKERFILE})
        await discord_emu.wait_for(lambda: submitted.followups, within=60)
        shown = text_of(discord_emu.shown(submitted))
        assert "Dockerfile: 2 stages" in shown and "DL3007" in shown
        assert not submitted.followups[0].get("flags", 0) & EPHEMERAL  # public


async def test_discord_blank_and_unparsable_submissions_are_private_errors(
    discord_emu: DiscordEmulator, engine: Engine
) -> None:
    async with running(discord_emu, engine):
        command = await open_discord_modal(discord_emu)
        assert command.modal is not None
        custom_id = text_input(command.modal)["custom_id"]
        with pytest.raises(ValueError, match="empty"):
            await discord_emu.submit_modal(command, {custom_id: ""})  # the client won't
        blank = await discord_emu.submit_modal(command, {custom_id: "   \n  "})
        await discord_emu.wait_for(lambda: blank.original)
        assert blank.acknowledged == 4 and blank.original is not None
        assert blank.original["flags"] & EPHEMERAL
        assert DISCORD_EMPTY_ERROR in text_of([blank.original])

        again = await open_discord_modal(discord_emu)
        assert again.modal is not None
        bad = await discord_emu.submit_modal(
            again, {text_input(again.modal)["custom_id"]: UNPARSABLE}
        )
        await discord_emu.wait_for(lambda: bad.followups, within=60)
        (private,) = bad.followups
        assert private["flags"] & EPHEMERAL
        assert "doesn't look like a Dockerfile" in text_of([private])
        assert bad.original_deleted  # the public "thinking" message is gone
