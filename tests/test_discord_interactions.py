"""Discord HTTP interactions (``POST /discord/interactions``): the adapter's real aiohttp
server, driven by the Discord emulator acting as Discord (interactions signed with a real
Ed25519 key, the responses applied as callbacks, the interaction webhooks served).

The image explainer is ``StagedExplainer`` from the Slack tests (a stand-in reporting
progress), except in the registry test, which explains a real image from a real registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from nacl.signing import SigningKey

from adapters.discord import DiscordPlatform, DiscordSettings, shard_ids, sync_commands
from adapters.discord_http import INTERACTIONS_PATH, INTERRUPTED, MODAL_CUSTOM_ID
from bot.config import Settings
from bot.engine import WELL_KNOWN_IMAGES, Engine
from bot.errors import InvalidInput
from bot.knowledge import KnowledgeBase
from bot.reply import ReplyKind
from bot.server import build_web_app
from tests.emulators.discord import DiscordEmulator, Interaction
from tests.test_discord_native import custom_ids, shown_text
from tests.test_slack_native import StagedExplainer

EPHEMERAL = 64
QUESTION = "why do Dockerfiles start FROM ubuntu?"


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


def settings_for(emu: DiscordEmulator, *, token: bool = True, **extra: Any) -> DiscordSettings:
    values: dict[str, Any] = {
        "discord_token": emu.token if token else None,
        "discord_api_url": emu.api_url,
        "discord_gateway_url": emu.gateway_url,
        "discord_public_key": emu.public_key,
        "discord_application_id": emu.application_id,
    }
    values.update(extra)
    return DiscordSettings(_env_file=None, **values)


@contextlib.asynccontextmanager
async def serving(
    emu: DiscordEmulator, engine: Engine, *, role: Any = "web", token: bool = True, **extra: Any
) -> AsyncIterator[DiscordPlatform]:
    """The adapter as ``dockwise serve --role ROLE`` runs it: set up on the bot's web app,
    served on a loopback port (the emulator's Interactions Endpoint URL), then started."""
    adapter = DiscordPlatform(engine, settings_for(emu, token=token, **extra))
    adapter.role = role
    app = build_web_app()
    await adapter.setup(app)
    if adapter.interactions is not None:
        adapter.interactions.progress_min_interval = 0  # edit as fast as events come
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    emu.interactions_url = f"http://127.0.0.1:{port}{INTERACTIONS_PATH}"
    task = adapter.start()
    try:
        if token and role in ("web", "all"):  # commands registered (web: over REST)
            waiting = asyncio.create_task(emu.wait_for(lambda: emu.commands.get(None)))
            done, _ = await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                waiting.cancel()
                task.result()
                raise AssertionError("the adapter stopped before registering commands")
        yield adapter
        if adapter.interactions is not None:
            await adapter.interactions.drain()
    finally:
        await adapter.stop()
        await runner.cleanup()


def payload_of(emu: DiscordEmulator, interaction: Interaction, kind: int, data: Any) -> bytes:
    return json.dumps(emu._interaction_payload(interaction, kind, data, emu.guild_id)).encode()


def ask_body(emu: DiscordEmulator) -> tuple[Interaction, bytes]:
    """A signed-able ``/ask`` interaction Discord might send (not sent yet)."""
    interaction = emu._new_interaction("ask", 2, emu.guild_id)
    command = emu._synced("ask", 1, emu.guild_id)
    data = {
        "id": command["id"],
        "name": "ask",
        "type": 1,
        "options": [{"name": "question", "type": 3, "value": QUESTION}],
    }
    return interaction, payload_of(emu, interaction, 2, data)


def webhook_calls(emu: DiscordEmulator) -> list[Any]:
    return [c for c in emu.calls if c.path.startswith("/webhooks/")]


async def first_shown(emu: DiscordEmulator, interaction: Interaction) -> dict[str, Any]:
    await emu.wait_for(lambda: any(m["embeds"] for m in emu.shown(interaction)), within=60)
    return emu.shown(interaction)[0]


# --- verification ----------------------------------------------------------------------------


async def test_ping_is_answered_with_pong(emu: DiscordEmulator, engine: Engine) -> None:
    async with serving(emu, engine):
        delivery = await emu.ping()
    assert (delivery.status, delivery.response, delivery.error) == (200, {"type": 1}, None)
    assert emu.sessions == []  # the web role opens no gateway connection


async def test_bad_or_missing_signatures_get_401_and_no_answer(
    emu: DiscordEmulator, engine: Engine, explainer: StagedExplainer
) -> None:
    async with serving(emu, engine):
        interaction, body = ask_body(emu)
        stamp = str(int(time.time()))
        other_key = SigningKey.generate()
        forged = other_key.sign(stamp.encode() + body).signature.hex()
        tampered = body.replace(QUESTION.encode(), b"what is a layer?")
        honest_for_other_body = emu.sign(stamp, body)
        refused = [
            await emu.post_signed(body, timestamp=stamp, signature=forged),
            await emu.post_signed(tampered, timestamp=stamp, signature=honest_for_other_body),
            await emu.post_signed(body, sign=False),
            await emu.post_signed(body, timestamp=stamp, signature="zz-not-hex"),
            await emu.post_signed(body, timestamp="yesterday"),
        ]
        accepted = await emu.post_signed(body, timestamp=stamp)  # the honest one, last
    assert [status for status, _ in refused] == [401] * 5
    assert accepted[0] == 200 and accepted[1]["type"] == 4
    assert webhook_calls(emu) == []
    assert interaction.acknowledged is None  # the emulator never saw a callback applied
    assert explainer.calls == []


async def test_a_stale_timestamp_gets_401(emu: DiscordEmulator, engine: Engine) -> None:
    async with serving(emu, engine):
        _, body = ask_body(emu)
        stale = str(int(time.time()) - 6 * 60)  # signed correctly, but six minutes old
        future = str(int(time.time()) + 6 * 60)
        status_stale, _ = await emu.post_signed(body, timestamp=stale)
        status_future, _ = await emu.post_signed(body, timestamp=future)
        fresh = str(int(time.time()) - 60)
        status_fresh, _ = await emu.post_signed(body, timestamp=fresh)
    assert (status_stale, status_future, status_fresh) == (401, 401, 200)


async def test_unknown_types_and_non_json_get_400(emu: DiscordEmulator, engine: Engine) -> None:
    odd = {  # signed, but shaped unlike anything Discord sends
        "type": 2,
        "id": "1",
        "token": "itoken-odd",
        "application_id": emu.application_id,
        "data": {"name": "Explain image", "type": 3, "resolved": ["not", "a", "map"]},
    }
    async with serving(emu, engine):
        unknown = json.dumps({"type": 99, "id": "1", "application_id": emu.application_id})
        status_unknown, _ = await emu.post_signed(unknown.encode())
        status_garbage, _ = await emu.post_signed(b"not json at all")
        status_odd, answer = await emu.post_signed(json.dumps(odd).encode())
    assert (status_unknown, status_garbage) == (400, 400)
    assert status_odd == 200 and answer["type"] == 4  # a private apology, not a 500
    assert answer["data"]["flags"] == EPHEMERAL


async def test_odd_asker_shapes_are_answered_not_a_500(
    emu: DiscordEmulator, engine: Engine
) -> None:
    """Signed, but who asked is shaped unlike Discord's member/user/channel objects."""
    shapes: list[tuple[dict[str, Any], tuple[str, ...]]] = [  # (set these, drop those)
        ({"member": "not an object"}, ()),
        ({"member": {"user": ["a", "list"]}}, ()),
        ({"user": 42}, ("member",)),
        ({"channel": "not an object"}, ("channel_id",)),
    ]
    async with serving(emu, engine):
        answers = []
        for overrides, dropped in shapes:
            _, body = ask_body(emu)
            payload = {**json.loads(body), **overrides}
            for key in dropped:
                payload.pop(key, None)
            answers.append(await emu.post_signed(json.dumps(payload).encode()))
    for status, answer in answers:  # the question is answered (asker "unknown")
        assert status == 200 and isinstance(answer, dict), (status, answer)
        assert answer["type"] == 4 and answer["data"]["embeds"]


# --- commands --------------------------------------------------------------------------------


async def test_a_question_is_answered_inline(
    emu: DiscordEmulator, engine: Engine, knowledge: KnowledgeBase
) -> None:
    async with serving(emu, engine):
        asked = await emu.slash_command("ask", {"question": QUESTION})
    expected = await Engine(knowledge=knowledge).handle(QUESTION)
    assert asked.acknowledged == 4  # the answer is the response itself
    assert asked.original is not None and asked.original["flags"] == 0
    assert asked.original["embeds"][0]["title"] == expected.title
    assert custom_ids(asked.original)[0] == "dockwise_full_article:why-base-image"
    assert webhook_calls(emu) == []
    assert [d.error for d in emu.deliveries] == [None]
    synced = {c["name"] for c in emu.commands[None]}  # registered over REST by the web role
    assert {"ask", "image-explain", "dockerfile-explain", "Explain image"} <= synced


async def test_a_slow_answer_is_deferred_then_edited_in(
    emu: DiscordEmulator, engine: Engine, knowledge: KnowledgeBase
) -> None:
    async with serving(emu, engine) as adapter:
        assert adapter.interactions is not None
        adapter.interactions.inline_deadline = 0  # every answer counts as slow
        asked = await emu.slash_command("ask", {"question": QUESTION})
        assert asked.acknowledged == 5
        answer = await first_shown(emu, asked)
    expected = await Engine(knowledge=knowledge).handle(QUESTION)
    assert asked.original is not None and answer["id"] == asked.original["id"]  # edited
    assert answer["embeds"][0]["title"] == expected.title
    assert [c.method for c in webhook_calls(emu)] == ["PATCH"]


async def test_a_rate_limited_edit_is_retried(
    emu: DiscordEmulator, engine: Engine, knowledge: KnowledgeBase
) -> None:
    emu.rate_limit_webhooks = 2
    async with serving(emu, engine) as adapter:
        assert adapter.interactions is not None
        adapter.interactions.inline_deadline = 0
        asked = await emu.slash_command("ask", {"question": QUESTION})
        answer = await first_shown(emu, asked)
    expected = await Engine(knowledge=knowledge).handle(QUESTION)
    assert answer["embeds"][0]["title"] == expected.title
    assert [(c.method, c.status) for c in webhook_calls(emu)] == [
        ("PATCH", 429),
        ("PATCH", 429),
        ("PATCH", 200),
    ]


async def test_image_explanation_is_deferred_with_progress_then_edited(
    emu: DiscordEmulator, engine: Engine, explainer: StagedExplainer
) -> None:
    explainer.hold = asyncio.Event()
    async with serving(emu, engine):
        interaction = await emu.slash_command("image-explain", {"image": "python:3.12-slim"})
        assert interaction.acknowledged == 5
        await emu.wait_for(
            lambda: (
                interaction.original is not None
                and "layer 1 of 2" in interaction.original["content"]
            )
        )
        explainer.hold.set()
        final = await first_shown(emu, interaction)
    assert final["content"] == ""
    assert final["embeds"][0]["title"] == "python:3.12-slim: Debian 12 user space"
    assert custom_ids(final)  # the section and feedback buttons
    edits = [c for c in webhook_calls(emu) if c.method == "PATCH"]
    assert len(edits) >= 2 and all(c.status == 200 for c in edits)


async def test_registry_image_explained_over_http(
    emu: DiscordEmulator, knowledge: KnowledgeBase, registry: Any, tmp_path: Any
) -> None:
    from adapters.discord_embeds import render_reply
    from bot.image.explain import Explainer
    from tests.fixtures.registry import Pusher, make_layer, push_image

    os_release = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
    layer = make_layer({"etc/os-release": os_release, "etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
    await asyncio.to_thread(push_image, Pusher(registry.url), "discord/http", "v1", [layer])
    reference = f"{registry.host}/discord/http:v1"
    settings_ = Settings(
        _env_file=None, cache_dir=tmp_path, insecure_registries=[registry.host], redis_url=None
    )
    engine = Engine(knowledge=knowledge, explainer=Explainer(settings=settings_))
    try:
        async with serving(emu, engine):
            interaction = await emu.slash_command("image-explain", {"image": reference})
            shown = await first_shown(emu, interaction)
        expected = await engine.explain(reference)  # cached by now: the engine's own reply
    finally:
        await engine.aclose()
    assert interaction.acknowledged == 5
    assert expected.kind is ReplyKind.IMAGE, expected.body
    want = render_reply(expected)[0].to_dict()
    assert shown["embeds"] == want["embeds"]
    assert shown["components"] == want["components"]
    assert "Debian" in shown_text([shown])


async def test_shutting_down_lets_a_running_explanation_finish(
    emu: DiscordEmulator, engine: Engine, explainer: StagedExplainer
) -> None:
    """A web pod stopping (update, scale-down) answers what it deferred before it goes."""
    explainer.hold = asyncio.Event()
    async with serving(emu, engine) as adapter:
        assert adapter.interactions is not None
        explained = await emu.slash_command("image-explain", {"image": "python:3.12-slim"})
        await explainer.at_layer_one.wait()
        explainer.hold.set()  # the explanation can finish now, but has not resumed yet
        await adapter.interactions.close()  # what the server's cleanup runs at shutdown
        shown = emu.shown(explained)
    assert explained.acknowledged == 5
    assert shown and shown[0]["embeds"][0]["title"] == "python:3.12-slim: Debian 12 user space"


async def test_an_explanation_cut_off_by_shutdown_says_so(
    emu: DiscordEmulator, engine: Engine, explainer: StagedExplainer
) -> None:
    """Past the grace period the asker is told to ask again, not left with the progress."""
    explainer.hold = asyncio.Event()  # never set: the explanation outlives the grace
    async with serving(emu, engine) as adapter:
        assert adapter.interactions is not None
        adapter.interactions.shutdown_grace = 0
        explained = await emu.slash_command("image-explain", {"image": "python:3.12-slim"})
        await explainer.at_layer_one.wait()
        await adapter.interactions.close()
        shown = emu.shown(explained)
    assert shown and shown[0]["content"] == INTERRUPTED and not shown[0]["embeds"]


async def test_a_huge_explanation_is_split_over_the_original_and_followups(
    emu: DiscordEmulator, knowledge: KnowledgeBase
) -> None:
    from tests.test_discord import ScriptedExplainer, assert_complete, huge_reply, text_of

    engine = Engine(knowledge=knowledge, explainer=cast(Any, ScriptedExplainer(huge_reply)))
    expected = huge_reply("big/image:1")
    async with serving(emu, engine):
        interaction = await emu.slash_command("image-explain", {"image": "big/image:1"})
        await emu.wait_for(lambda: "END-OF-REPLY" in text_of(emu.shown(interaction)))
    messages = emu.shown(interaction)
    assert interaction.original is not None and len(messages) > 1
    assert messages[0]["id"] == interaction.original["id"]  # the deferred response, edited
    assert messages[0]["embeds"][0]["title"] == expected.title
    assert_complete(expected, messages)
    sends = [c for c in webhook_calls(emu) if c.body and "embeds" in c.body]
    assert [c.method for c in sends] == ["PATCH"] + ["POST"] * (len(messages) - 1)
    assert all(c.status == 200 for c in sends)  # Discord accepted every message


async def test_buttons_answer_like_the_gateway(
    emu: DiscordEmulator, engine: Engine, knowledge: KnowledgeBase
) -> None:
    async with serving(emu, engine):
        asked = await emu.slash_command("ask", {"question": QUESTION})
        assert asked.original is not None
        ids = custom_ids(asked.original)
        full = await emu.click(asked.original, ids[0])
        vote = await emu.click(asked.original, ids[-2])
    article = knowledge.articles["why-base-image"]
    assert full.acknowledged == 4 and full.original is not None
    assert full.original["flags"] == 0  # a new public message
    assert full.original["embeds"][0]["title"] == article.title
    assert vote.acknowledged == 4 and vote.original is not None
    assert vote.original["flags"] == EPHEMERAL
    assert "Thanks" in shown_text([vote.original])
    assert [d.error for d in emu.deliveries] == [None, None, None]


async def test_autocomplete_and_the_dockerfile_modal(
    emu: DiscordEmulator, knowledge: KnowledgeBase, tmp_path: Any
) -> None:
    from bot.image.explain import Explainer
    from tests.test_chat_dockerfile_modal import DOCKERFILE

    settings_ = Settings(
        _env_file=None,
        cache_dir=tmp_path,
        registry_allowlist=["registry.invalid"],  # Docker Hub refused at once: no lookups
        redis_url=None,
    )
    engine = Engine(knowledge=knowledge, explainer=Explainer(settings_))
    try:
        async with serving(emu, engine):
            typed = await emu.autocomplete("image-explain", "image", "pyth")
            command = await emu.slash_command("dockerfile-explain", {})
            assert command.acknowledged == 9 and command.modal is not None
            assert command.modal["custom_id"] == MODAL_CUSTOM_ID
            submitted = await emu.submit_modal(command, {"dockerfile": DOCKERFILE})
            shown = await first_shown(emu, submitted)
            blank = await emu.submit_modal(command, {"dockerfile": "  \n "})
    finally:
        await engine.aclose()
    assert typed.acknowledged == 8 and typed.choices
    assert [c["value"] for c in typed.choices] == [r for r in WELL_KNOWN_IMAGES if "pyth" in r]
    assert "Dockerfile: 2 stages" in shown_text([shown]) and "DL3007" in shown_text([shown])
    assert not shown["flags"] & EPHEMERAL  # public
    assert blank.acknowledged == 4 and blank.original is not None
    assert blank.original["flags"] == EPHEMERAL


async def test_bad_input_gets_a_private_one_line_error(
    emu: DiscordEmulator, engine: Engine
) -> None:
    async with serving(emu, engine):
        malformed = await emu.slash_command("image-explain", {"image": "Not An Image!"})
        missing = await emu.slash_command("image-explain", {"image": "acme/missing:1"})
        await emu.wait_for(lambda: missing.followups)
        words = emu._bot_message(emu.channel_id, {"content": "no image in here, just words"})
        no_image = await emu.message_command("Explain image", words)
        pull = emu._bot_message(emu.channel_id, {"content": "try `docker pull python:3.12-slim`"})
        from_message = await emu.message_command("Explain image", pull)
        explained = await first_shown(emu, from_message)
    assert malformed.acknowledged == 4 and malformed.original is not None
    assert malformed.original["flags"] == EPHEMERAL
    (embed,) = malformed.original["embeds"]
    assert "\n" not in embed["description"].strip() and "Traceback" not in embed["description"]
    # Found out after the deferral: the placeholder goes, the error comes privately.
    assert missing.acknowledged == 5 and missing.original_deleted
    (private,) = missing.followups
    assert private["flags"] == EPHEMERAL and "was not found" in shown_text([private])
    assert "\n" not in private["embeds"][0]["description"].strip()
    assert no_image.acknowledged == 4 and no_image.original is not None
    assert no_image.original["flags"] == EPHEMERAL
    # The "Explain image" message command finds the reference and explains it publicly.
    assert from_message.acknowledged == 5
    assert explained["embeds"][0]["title"] == "python:3.12-slim: Debian 12 user space"


async def test_secrets_never_reach_the_logs(
    emu: DiscordEmulator,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(emu, engine):
        asked = await emu.slash_command("ask", {"question": QUESTION})
        explained = await emu.slash_command("image-explain", {"image": "python:3.12-slim"})
        await first_shown(emu, explained)
        _, body = ask_body(emu)
        await emu.post_signed(body, signature=secrets.token_hex(64))  # refused: logged
    assert "refused an interaction request (bad signature)" in caplog.text
    out, err = capsys.readouterr()  # structlog's own lines
    logged = caplog.text + "".join(str(r.args) for r in caplog.records) + out + err
    for secret in (emu.token, asked.token, explained.token):
        assert secret not in logged


# --- roles, tokenless mode and shards -----------------------------------------------------------


async def test_without_a_token_the_web_role_serves_interactions_only(
    emu: DiscordEmulator, engine: Engine
) -> None:
    settings = settings_for(emu, token=False)
    assert DiscordPlatform.configured(settings)
    assert not DiscordPlatform.configured(settings_for(emu, token=False, discord_public_key=None))
    await sync_commands(engine, settings_for(emu))  # e.g. done once by a gateway pod
    calls_before = len(emu.calls)
    async with serving(emu, engine, token=False) as adapter:
        asked = await emu.slash_command("ask", {"question": QUESTION})
        assert adapter.ready()  # waiting, not failed
    assert asked.acknowledged == 4
    assert emu.sessions == [] and len(emu.calls) == calls_before + 1  # just the callback


async def test_roles_choose_gateway_or_http(emu: DiscordEmulator, engine: Engine) -> None:
    async with serving(emu, engine, role="gateway") as adapter:
        await emu.wait_ready()
        assert adapter.interactions is None
        assert emu.interactions_url is not None
        async with (
            aiohttp.ClientSession() as session,
            session.post(emu.interactions_url, data=b"{}") as response,
        ):
            assert response.status == 404  # no route in the gateway role
    sessions = len(emu.sessions)
    # Discord over HTTP only (no token): the gateway role, there for Slack Socket Mode,
    # runs no Discord shard instead of failing.
    async with serving(emu, engine, role="gateway", token=False) as http_only:
        assert not http_only.gateway and http_only.interactions is None
        assert http_only.ready()
    assert len(emu.sessions) == sessions
    worker = DiscordPlatform(engine, settings_for(emu))
    worker.role = "worker"
    await worker.setup(build_web_app())
    assert worker.interactions is None and not worker.gateway


async def test_gateway_shards_from_settings(emu: DiscordEmulator, engine: Engine) -> None:
    async with serving(emu, engine, role="gateway", discord_shard_count=3, discord_shard_ids="2,0"):
        await emu.wait_ready(sessions=2)
        assert sorted(s.shard for s in emu.sessions if s.identified) == [(0, 3), (2, 3)]
    assert shard_ids(settings_for(emu, discord_shard_count=3, discord_shard_ids="1")) == [1]
    for count, ids in ((2, "2"), (None, "0"), (2, "one")):
        with pytest.raises(InvalidInput, match="DISCORD_SHARD"):
            shard_ids(settings_for(emu, discord_shard_count=count, discord_shard_ids=ids))


async def test_the_all_role_runs_the_gateway_and_the_endpoint(
    emu: DiscordEmulator, engine: Engine
) -> None:
    async with serving(emu, engine, role="all") as adapter:
        await emu.wait_ready()  # the gateway, which registered the commands
        assert adapter.gateway and adapter.interactions is not None
        asked = await emu.slash_command("ask", {"question": QUESTION})  # over HTTP
        pong = await emu.ping()
    assert asked.acknowledged == 4 and pong.response == {"type": 1}


def test_the_application_id_is_read_as_a_number(emu: DiscordEmulator) -> None:
    padded = settings_for(emu, discord_application_id=f" {emu.application_id}\n")
    assert padded.discord_application_id == emu.application_id  # as pasted, spaces dropped
    with pytest.raises(ValueError, match="DISCORD_APPLICATION_ID"):
        settings_for(emu, discord_application_id=emu.public_key)  # the wrong value pasted


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DISCORD_APPLICATION_ID", "my-bot"), ("DISCORD_PUBLIC_KEY", "not-a-hex-key")],
)
def test_a_bad_discord_setting_stops_serve_with_one_line(
    tmp_path: Any, variable: str, value: str
) -> None:
    import os
    import subprocess
    import sys

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SLACK_"))},
        "DISCORD_PUBLIC_KEY": SigningKey.generate().verify_key.encode().hex(),
        "DISCORD_APPLICATION_ID": "123456789012345678",
        variable: value,
        "DOCKWISE_CACHE_DIR": str(tmp_path),
        "DOCKWISE_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dockwise: error: "), done.stderr
    assert variable in lines[0]
