"""Dockerfile explanations and image comparisons in chat, through the real slack-bolt and
discord.py against the emulators, with the real engine and explainer.

What reaches chat: a mention (or DM) holding a fenced Dockerfile, "compare A and B" in a
mention, and ``/image-explain A vs B``. The compared images are pushed to the test registry:
B is A plus one layer that rewrites the dpkg database (a package removed, one upgraded).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.slack import run_slack
from bot.config import Settings
from bot.engine import Engine
from bot.image.explain import Explainer
from bot.knowledge import KnowledgeBase
from tests.emulators.discord import DiscordEmulator
from tests.emulators.slack import SlackEmulator
from tests.fixtures.registry import Pusher, RegistryServer, make_layer, push_image
from tests.test_discord import running, text_of
from tests.test_slack import all_text, connected, slack_settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "tests/data/dockerfiles/33-static-binary-on-debian.Dockerfile").read_text()
STATUS_A = (
    "Package: base-files\nStatus: install ok installed\nVersion: 12.4\nInstalled-Size: 340\n\n"
    "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nInstalled-Size: 13000\n\n"
    "Package: tzdata\nStatus: install ok installed\nVersion: 2024a\nInstalled-Size: 2500\n"
)
STATUS_B = (
    "Package: base-files\nStatus: install ok installed\nVersion: 12.5\nInstalled-Size: 341\n\n"
    "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nInstalled-Size: 13000\n"
)
OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


@pytest.fixture(scope="module")
def pair(registry: RegistryServer) -> tuple[str, str]:
    base = make_layer(
        {
            "etc/os-release": OS_RELEASE,
            "bin/sh": b"#!shell\n",
            "var/lib/dpkg/status": STATUS_A.encode(),
        }
    )
    slim = make_layer({"var/lib/dpkg/status": STATUS_B.encode()})
    pusher = Pusher(registry.url)
    push_image(pusher, "chat/full", "1", [base])
    push_image(pusher, "chat/slim", "1", [base, slim])
    return f"{registry.host}/chat/full:1", f"{registry.host}/chat/slim:1"


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


@pytest.fixture
def engine(knowledge: KnowledgeBase, registry: RegistryServer, tmp_path: Path) -> Engine:
    # Only the test registry is allowed: bases on Docker Hub are refused at once (and the
    # explanation says it couldn't inspect them), as in a locked-down deployment.
    settings = Settings(
        _env_file=None,
        cache_dir=tmp_path,
        insecure_registries=[registry.host],
        registry_allowlist=[registry.host],
        redis_url=None,
    )
    return Engine(knowledge=knowledge, explainer=Explainer(settings))  # closed by each test


async def close(engine: Engine) -> None:
    await engine.aclose()


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
        await close(engine)


async def test_slack_mention_with_a_fenced_dockerfile(slack: SlackEmulator) -> None:
    # Slack's composer puts the first line right after the fence.
    event = slack.mention(f"why is this image big?\n```{DOCKERFILE}```")
    await slack.socket_event(event)
    post = await slack.wait_for(lambda r: "Dockerfile: 2 stages" in all_text(r), within=60)
    assert post.ok, post.error
    text = all_text(post)
    assert "DW1004" in text and "from-scratch" in text
    assert "Couldn't inspect the base" in text  # docker.io is not allowed here


async def test_slack_dm_with_a_commented_dockerfile_as_slack_sends_it(
    slack: SlackEmulator,
) -> None:
    """A bare code block that starts with comments, with `&&` and `<<` escaped the way
    Slack escapes message text (&amp; &lt;), sent in a DM."""
    pasted = (
        "# build stage\nFROM golang:1.22 AS build\nCOPY . .\n"
        "RUN CGO_ENABLED=0 go build -o /app . &amp;&amp; test -x /app\n\n"
        "# runtime\nFROM debian:bookworm-slim\nCOPY --from=build /app /app\n"
        'USER 65532\nENTRYPOINT ["/app"]'
    )
    await slack.socket_event(slack.dm(f"what does this build?\n```{pasted}```"))
    post = await slack.wait_for(lambda r: "Dockerfile: 2 stages" in all_text(r), within=60)
    assert post.ok, post.error
    text = all_text(post)
    assert "line 7 `DW1004`" in text  # the runtime FROM: the comment lines count


async def test_slack_compare_by_mention_and_by_command(
    slack: SlackEmulator, pair: tuple[str, str]
) -> None:
    a, b = pair
    title = "chat/full:1 vs"
    event = slack.mention(f"compare {a} and {b}")
    await slack.socket_event(event)
    post = await slack.wait_for(lambda r: title in all_text(r), within=60)
    assert post.ok, post.error
    text = all_text(post)
    assert "Shared layers" in text and "is built on" in text
    assert "tzdata" in text and "12.4 → 12.5" in text
    command = slack.command(f"{a} vs {b}")
    await slack.socket_command(command)
    later = await slack.wait_for(
        lambda r: r.seq > post.seq and title in all_text(r) and "Shared layers" in all_text(r),
        within=60,
    )
    assert later.ok, later.error


# --------------------------------------------------------------------------- Discord


@pytest.fixture
async def discord_emu() -> AsyncIterator[DiscordEmulator]:
    emu = DiscordEmulator()
    await emu.start()
    yield emu
    await emu.close()


def discord_texts(emu: DiscordEmulator) -> str:
    return "\n".join(json.dumps(call.body) for call in emu.calls if call.body)


async def test_discord_mention_with_a_dockerfile_and_compare(
    discord_emu: DiscordEmulator, engine: Engine, pair: tuple[str, str]
) -> None:
    a, b = pair
    try:
        async with running(discord_emu, engine):
            asked = await discord_emu.user_message(
                f"{discord_emu.mention()} please look at\n```dockerfile\n{DOCKERFILE}```"
            )
            await discord_emu.wait_for(lambda: discord_emu.replies_to(asked["id"]), within=60)
            shown = text_of(discord_emu.replies_to(asked["id"]))
            assert "Dockerfile: 2 stages" in shown and "DW1004" in shown
            compared = await discord_emu.user_message(
                f"{discord_emu.mention()} compare {a} and {b}"
            )
            await discord_emu.wait_for(lambda: discord_emu.replies_to(compared["id"]), within=60)
            shown = text_of(discord_emu.replies_to(compared["id"]))
            assert "chat/full:1 vs" in shown and "Shared layers" in shown
            await discord_emu.slash_command("image-explain", {"image": f"{a} vs {b}"})
            await discord_emu.wait_for(
                lambda: discord_texts(discord_emu).count("Shared layers") >= 2, within=60
            )
    finally:
        await close(engine)


# --------------------------------------------------------------------------- Discord attachment


async def attached_message(emu: DiscordEmulator, content: str, url: str, size: int) -> str:
    """A user message with a ``Dockerfile`` attachment (served from ``url``), dispatched
    the way the emulator dispatches ``user_message``; returns its id."""
    from tests.emulators.discord import _timestamp

    message: dict[str, object] = {
        "id": emu.new_id(),
        "channel_id": emu.channel_id,
        "author": emu.member,
        "content": content,
        "timestamp": _timestamp(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [emu.bot_user],
        "mention_roles": [],
        "attachments": [
            {
                "id": emu.new_id(),
                "filename": "Dockerfile",
                "size": size,
                "url": url,
                "proxy_url": url,
                "content_type": "text/plain; charset=utf-8",
            }
        ],
        "embeds": [],
        "pinned": False,
        "type": 0,
        "flags": 0,
        "guild_id": emu.guild_id,
        "member": {"roles": [], "joined_at": _timestamp(), "flags": 0},
    }
    emu.user_messages[str(message["id"])] = message
    await emu.dispatch("MESSAGE_CREATE", message, emu.guild_id)
    return str(message["id"])


async def test_discord_dockerfile_attachment_with_a_mention(
    discord_emu: DiscordEmulator, engine: Engine
) -> None:
    from aiohttp import web

    files = {"Dockerfile": DOCKERFILE.encode(), "binary": b"\x7fELF\x00\x01\x02"}
    app = web.Application()

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=files[request.match_info["name"]])

    app.router.add_get("/files/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/files"
    try:
        async with running(discord_emu, engine):
            good = await attached_message(
                discord_emu,
                f"{discord_emu.mention()} what does this build?",
                f"{base}/Dockerfile",
                len(files["Dockerfile"]),
            )
            await discord_emu.wait_for(lambda: discord_emu.replies_to(good), within=60)
            shown = text_of(discord_emu.replies_to(good))
            assert "Dockerfile: 2 stages" in shown and "DW1004" in shown
            bad = await attached_message(
                discord_emu, discord_emu.mention(), f"{base}/binary", len(files["binary"])
            )
            await discord_emu.wait_for(lambda: discord_emu.replies_to(bad), within=60)
            shown = text_of(discord_emu.replies_to(bad))
            assert "binary file, not a Dockerfile" in shown
    finally:
        await runner.cleanup()
        await close(engine)


# --------------------------------------------------------------------------- platforms


async def test_compare_names_every_platform_of_an_index(
    engine: Engine, registry: RegistryServer, pair: tuple[str, str]
) -> None:
    """An index of six platforms next to a one-platform image: four are named and the
    row says how many more there are (the JSON keeps all six)."""
    from tests.fixtures.registry import push_index

    pusher = Pusher(registry.url)
    arches = ["amd64", "arm64", "arm/v7", "ppc64le", "s390x", "riscv64"]
    images = [
        push_image(
            pusher,
            "chat/multi",
            None,
            [make_layer({"etc/os-release": OS_RELEASE, "bin/sh": b"#!shell\n", "a": a.encode()})],
            platform=f"linux/{a}",
        )
        for a in arches
    ]
    push_index(pusher, "chat/multi", "1", images)
    try:
        reply = await engine.handle(f"compare {registry.host}/chat/multi:1 and {pair[0]}")
        assert reply.data is not None, reply.body
        assert reply.data["a"]["platforms"] == [f"linux/{a}" for a in arches]
        (row,) = [f.value for f in reply.facts if f.name == "Platforms"]
        assert row.startswith("linux/amd64, linux/arm64, linux/arm/v7, linux/ppc64le (+2 more)")
        assert row.endswith("|  linux/amd64")
    finally:
        await close(engine)
