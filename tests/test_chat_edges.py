"""Odd and hostile requests at the chat endpoints, as an independent client sends them.

Slack requests are signed raw HTTP to ``POST /slack/events`` through the real slack-bolt
(HTTP mode) against the Slack emulator; Discord interactions are signed raw JSON to
``POST /discord/interactions``. Each must get a sensible answer: never a 500 or a
traceback, and errors shown only to whoever caused them.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from adapters.slack import SlackSettings, run_slack
from bot.config import Settings
from bot.engine import Engine
from bot.knowledge import KnowledgeBase
from bot.observability import configure_logging
from bot.reply import ReplyKind
from tests.emulators.slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    Record,
    SlackEmulator,
    block_texts,
    buttons,
)


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


@pytest.fixture
async def emu() -> AsyncIterator[SlackEmulator]:
    emulator = SlackEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
def logs() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("INFO", json_output=True, stream=stream, environ={})
    return stream


async def slack_http(emu: SlackEmulator, engine: Engine) -> tuple[web.AppRunner, str]:
    """The bot in Slack HTTP mode on a loopback port; returns the runner and events URL."""
    settings = SlackSettings(
        _env_file=None,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=emu.api_url,
    )
    app = web.Application()
    await run_slack(engine, settings, web_app=app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"


def click(emu: SlackEmulator, action_id: str, value: str) -> dict[str, Any]:
    """A block_actions payload for a button the bot may or may not have made."""
    message = {"ts": emu.next_ts(), "text": "an answer", "blocks": []}
    button = {"action_id": action_id, "text": {"type": "plain_text", "text": "b"}, "value": value}
    return emu.block_action(message, button)


# --- Slack ------------------------------------------------------------------------------------


async def test_slack_bodies_bolt_cannot_read_get_400_not_a_500(
    emu: SlackEmulator, knowledge: KnowledgeBase, logs: io.StringIO
) -> None:
    engine = Engine(knowledge=knowledge)
    runner, url = await slack_http(emu, engine)
    form = "application/x-www-form-urlencoded"
    try:
        not_json = await emu.http_post(url, "payload=not-json", form)
        shapeless = click(emu, "dockwise_ask", "what is a container?")
        shapeless["actions"] = {"not": "a list"}
        wrong_shape = await emu.http_interactive(url, shapeless)
        unsigned = await emu.http_post(url, "{not json", "application/json", signature="v0=00")
        a_list = await emu.http_post(url, "[1, 2]", "application/json")
        callback = {"type": "event_callback", "event_id": "Ev1", "event": "not an object"}
        no_event = await emu.http_post(url, json.dumps(callback), "application/json")
        article = click(emu, "dockwise_full_article", "vm-vs-container")
        fine = await emu.http_interactive(url, article)
    finally:
        await runner.cleanup()
        await engine.aclose()
    assert not_json.data["status"] == 400, not_json.data
    assert wrong_shape.data["status"] == 400, wrong_shape.data
    assert unsigned.data["status"] in (400, 401), unsigned.data
    assert (a_list.data["status"], no_event.data["status"]) == (400, 400)
    assert fine.data["status"] == 200  # the endpoint still works
    assert "Traceback" not in logs.getvalue()
    assert "refused a request bolt could not read" in logs.getvalue()


async def test_slack_unknown_buttons_and_shortcuts_are_answered_privately(
    emu: SlackEmulator, knowledge: KnowledgeBase
) -> None:
    engine = Engine(knowledge=knowledge)
    runner, url = await slack_http(emu, engine)
    forged = click(emu, "dockwise_bogus", "x")
    foreign = click(emu, "someone_elses_button", "x")
    shortcut = emu.message_shortcut("docker pull nginx", callback_id="not_ours")
    try:
        statuses = [
            (await emu.http_interactive(url, payload)).data["status"]
            for payload in (forged, foreign, shortcut)
        ]
        for payload in (forged, foreign, shortcut):
            rid = str(payload["response_url"]).rsplit("/", 1)[1]

            def answered(record: Record, rid: str = rid) -> bool:
                return record.kind == "response_url" and record.name == rid

            await emu.wait_for(answered)
    finally:
        await runner.cleanup()
        await engine.aclose()
    assert statuses == [200, 200, 200]  # bolt's 404 would show the clicker a failed app
    answers = {r.name: r.data for r in emu.records if r.kind == "response_url"}
    for payload, needle in ((forged, "Unknown button"), (foreign, "Unknown button")):
        answer = answers[payload["response_url"].rsplit("/", 1)[1]]
        assert answer["response_type"] == "ephemeral" and needle in answer["text"], answer
    answer = answers[shortcut["response_url"].rsplit("/", 1)[1]]
    assert answer["response_type"] == "ephemeral" and "Explain image" in answer["text"]
    assert emu.current("C0GENERAL") == []  # nothing public


async def test_slack_shortcut_where_the_bot_is_not_a_member_answers_by_response_url(
    emu: SlackEmulator, knowledge: KnowledgeBase, registry: Any, tmp_path: Any
) -> None:
    """The message shortcut works in any channel; chat.postMessage does not (not_in_channel):
    the explanation then comes through the shortcut's response_url instead of nowhere."""
    from bot.image.explain import Explainer
    from tests.fixtures.registry import Pusher, make_layer, push_image

    os_release = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
    layer = make_layer({"etc/os-release": os_release})
    await asyncio.to_thread(push_image, Pusher(registry.url), "edges/app", "v1", [layer])
    reference = f"{registry.host}/edges/app:v1"
    settings = Settings(
        _env_file=None, cache_dir=tmp_path, insecure_registries=[registry.host], redis_url=None
    )
    engine = Engine(knowledge=knowledge, explainer=Explainer(settings=settings))
    emu.not_member.add("C0RANDOM")
    runner, url = await slack_http(emu, engine)
    shortcut = emu.message_shortcut(f"we ship `docker pull {reference}`", channel="C0RANDOM")
    rid = shortcut["response_url"].rsplit("/", 1)[1]
    try:
        ack = await emu.http_interactive(url, shortcut)
        answer = await emu.wait_for(lambda r: r.kind == "response_url" and r.name == rid, within=60)
    finally:
        await runner.cleanup()
        await engine.aclose()
    assert ack.data["status"] == 200
    assert answer.ok, answer.error
    assert answer.data["response_type"] == "in_channel"
    assert "Debian GNU/Linux 12" in "\n".join(block_texts([answer]))
    actions = [b for b in answer.data["blocks"] if b["type"] == "actions"]
    assert "dockwise_feedback_up" in [e["action_id"] for b in actions for e in b["elements"]]


async def test_slack_link_shared_with_junk_links_is_quiet(
    emu: SlackEmulator, knowledge: KnowledgeBase, logs: io.StringIO
) -> None:
    engine = Engine(knowledge=knowledge)
    runner, url = await slack_http(emu, engine)
    event = emu.link_shared(["https://example.com/"])
    event["links"] = ["not an object", 5, None, {"domain": "example.com", "url": "x"}]
    try:
        sent = await emu.http_event(url, event)
        home = await emu.http_event(url, emu.home_opened("U0CAROL"))
        await emu.wait_for(lambda r: r.name == "views.publish")  # handled after the links
    finally:
        await runner.cleanup()
        await engine.aclose()
    assert (sent.data["status"], home.data["status"]) == (200, 200)
    assert emu.api_calls("chat.unfurl") == []
    assert "unhandled error" not in logs.getvalue() and "Traceback" not in logs.getvalue()


# --- Discord ----------------------------------------------------------------------------------


async def test_discord_odd_autocomplete_and_message_command_shapes(
    knowledge: KnowledgeBase,
) -> None:
    from tests.emulators.discord import DiscordEmulator
    from tests.test_discord_interactions import serving

    emu = DiscordEmulator()
    await emu.start()
    engine = Engine(knowledge=knowledge)
    base = {"id": "1", "token": "itoken-edges", "application_id": emu.application_id}
    odd_autocomplete = [
        {"name": "image-explain", "type": 1, "options": 5},
        {"name": "image-explain", "type": 1, "options": ["x", {"focused": True, "value": 7}]},
        {"name": "image-explain", "type": 1},
    ]
    odd_targets: list[dict[str, Any]] = [
        {"resolved": ["not", "a", "map"]},
        {"resolved": {"messages": ["x"]}, "target_id": "7"},
        {"resolved": {"messages": {"7": {"content": 5, "embeds": "no"}}}, "target_id": "7"},
    ]
    try:
        async with serving(emu, engine, token=False):
            completions = [
                await emu.post_signed(json.dumps({**base, "type": 4, "data": data}).encode())
                for data in odd_autocomplete
            ]
            targets = [
                await emu.post_signed(
                    json.dumps(
                        {**base, "type": 2, "data": {"name": "Explain image", "type": 3, **t}}
                    ).encode()
                )
                for t in odd_targets
            ]
            modals = [
                await emu.post_signed(
                    json.dumps(
                        {
                            **base,
                            "type": 5,
                            "data": {"custom_id": "dockwise_dockerfile_modal", "components": c},
                        }
                    ).encode()
                )
                for c in ("x", ["x", {"components": "y"}, {"component": 5}])
            ]
            bad_options = await emu.post_signed(
                json.dumps(
                    {**base, "type": 2, "data": {"name": "ask", "type": 1, "options": "q"}}
                ).encode()
            )
    finally:
        await engine.aclose()
        await emu.close()
    for status, answer in completions:  # Discord takes only choices for autocomplete
        assert status == 200 and answer["type"] == 8, answer
        assert isinstance(answer["data"]["choices"], list)
    for status, answer in targets:
        assert status == 200 and answer["type"] == 4 and answer["data"]["flags"] == 64
        assert "no image reference" in json.dumps(answer), answer
    for status, answer in modals:  # an empty form, said privately
        assert status == 200 and answer["data"]["flags"] == 64, answer
        assert "Something went wrong" not in json.dumps(answer)
    status, answer = bad_options
    assert status == 200 and answer["data"]["flags"] == 64
    assert "needs its question option" in json.dumps(answer)


# --- feedback on every image reply ------------------------------------------------------------


def feedback_count(kind: str, vote: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("dockwise_feedback_total", {"kind": kind, "vote": vote})
    return value or 0.0


async def test_slack_comparison_and_dockerfile_replies_carry_feedback_and_sections(
    emu: SlackEmulator, knowledge: KnowledgeBase, registry: Any, tmp_path: Any, logs: io.StringIO
) -> None:
    """A comparison (``A vs B``) and a Dockerfile explanation are image replies too: 👍/👎
    (counted as kind image), and the comparison's section buttons open its sections."""
    from bot.image.explain import Explainer
    from tests.fixtures.registry import Pusher, make_layer, push_image

    pusher = Pusher(registry.url)
    os_release = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
    base = make_layer({"etc/os-release": os_release})
    extra = make_layer({"app/run": b"#!/bin/sh\necho hi\n"})
    await asyncio.to_thread(push_image, pusher, "edges/base", "v1", [base])
    await asyncio.to_thread(push_image, pusher, "edges/base", "v2", [base, extra])
    a, b = f"{registry.host}/edges/base:v1", f"{registry.host}/edges/base:v2"
    settings = Settings(
        _env_file=None, cache_dir=tmp_path, insecure_registries=[registry.host], redis_url=None
    )
    engine = Engine(knowledge=knowledge, explainer=Explainer(settings=settings))
    runner, url = await slack_http(emu, engine)
    dockerfile = '```\nFROM scratch\nCOPY app /app\nENTRYPOINT ["/app"]\n```'
    try:
        await emu.http_event(url, emu.mention(f"compare {a} and {b}"))
        await emu.wait_for(lambda r: len(emu.current("C0GENERAL")) >= 1, within=60)
        await emu.http_event(url, emu.mention(f"what about this one?\n{dockerfile}"))
        await emu.wait_for(lambda r: len(emu.current("C0GENERAL")) >= 2, within=60)
        replies = emu.current("C0GENERAL")
        by_title = {m["blocks"][0]["text"]["text"]: m for m in replies}
        compared = next(m for t, m in by_title.items() if "edges/base" in t)
        explained = next(m for t, m in by_title.items() if "edges/base" not in t)
        compare_ids = {e["action_id"]: e for e in buttons(compared)}
        dockerfile_ids = {e["action_id"]: e for e in buttons(explained)}
        before = feedback_count("image", "up")
        for reply, button in (
            (compared, compare_ids["dockwise_feedback_up"]),
            (explained, dockerfile_ids["dockwise_feedback_up"]),
        ):
            await emu.http_interactive(url, emu.block_action(reply, button))
        packages = compare_ids["dockwise_section"]
        await emu.http_interactive(url, emu.block_action(compared, packages))
        await emu.wait_for(lambda r: len(emu.current("C0GENERAL")) >= 3, within=60)
        forged = click(emu, "dockwise_feedback_up", "up|my secret plans for friday")
        await emu.http_interactive(url, forged)
        rid = str(forged["response_url"]).rsplit("/", 1)[1]
        refused = await emu.wait_for(lambda r: r.kind == "response_url" and r.name == rid)
    finally:
        await runner.cleanup()
        await engine.aclose()
    assert compare_ids["dockwise_feedback_up"]["value"] == f"up|{a} vs {b}"
    assert dockerfile_ids["dockwise_feedback_down"]["value"] == "down|Dockerfile"
    assert packages["value"] == f"{a} vs {b}|Packages"
    assert feedback_count("image", "up") == before + 2
    opened = emu.current("C0GENERAL")[2]
    assert opened["blocks"][0]["text"]["text"].endswith(": Packages")
    assert refused.data["response_type"] == "ephemeral"
    assert "not one I made" in refused.data["text"]
    assert "secret plans" not in logs.getvalue()
    assert feedback_count("image", "up") == before + 2  # the forged vote is not counted


async def test_slack_unfurls_real_registry_links_without_any_layer(
    emu: SlackEmulator, knowledge: KnowledgeBase, registry: Any, tmp_path: Any
) -> None:
    """hub.docker.com, ghcr.io and quay.io links, served by a real registry as those
    registries' mirror, are unfurled from the manifest and config alone: the images' layer
    blobs are removed from the registry before the links are shared, and still every link
    gets its one-line summary."""
    from bot.image.explain import Explainer
    from tests.fixtures.registry import Pusher, make_layer, push_image

    pusher = Pusher(registry.url)
    pushed = {}
    for repo in ("acme/unfurl", "ghorg/unfurl", "quayorg/unfurl"):
        layer = make_layer({f"etc/{repo.split('/')[0]}": repo.encode()})
        pushed[repo] = await asyncio.to_thread(
            push_image,
            pusher,
            repo,
            "1.0",
            [layer],
            config_extra={"config": {"User": "app", "Cmd": ["/bin/serve"]}},
        )
        for digest in pushed[repo].layer_digests:  # a layer read would now fail (404)
            link = registry.root / "data/docker/registry/v2/repositories" / repo
            (link / "_layers/sha256" / digest.split(":", 1)[1] / "link").unlink()
    mirror = f"http://{registry.host}"
    settings = Settings(
        _env_file=None,
        cache_dir=tmp_path,
        insecure_registries=[registry.host],
        registry_mirrors=[f"docker.io={mirror}", f"ghcr.io={mirror}", f"quay.io={mirror}"],
        redis_url=None,
    )
    engine = Engine(knowledge=knowledge, explainer=Explainer(settings=settings))
    urls = [
        "https://hub.docker.com/r/acme/unfurl/tags?name=1.0",
        "https://ghcr.io/ghorg/unfurl:1.0",
        "https://quay.io/repository/quayorg/unfurl/tag/1.0",
        "http://quay.io/quayorg/unfurl:1.0",  # Slack's link for a pasted quay.io/…:1.0
    ]
    runner, url = await slack_http(emu, engine)
    try:
        assert (await emu.http_event(url, emu.link_shared(urls))).data["status"] == 200
        unfurl = await emu.wait_for(lambda r: r.name == "chat.unfurl", within=60)
        whole = await engine.explain(f"{registry.host}/acme/unfurl:1.0")  # needs the layer
    finally:
        await runner.cleanup()
        await engine.aclose()
    assert unfurl.ok, unfurl.error
    lines = {u: v["blocks"][0]["text"]["text"] for u, v in unfurl.data["unfurls"].items()}
    assert set(lines) == set(urls), lines
    for line in lines.values():
        for part in ("linux/amd64", "1 layers", "user app", "runs `/bin/serve`"):
            assert part in line, line
    assert lines[urls[1]].startswith("*ghcr.io/ghorg/unfurl:1.0*")
    assert whole.kind is ReplyKind.ERROR  # the layer really is gone: only the config was read


async def test_slack_shortcut_finds_an_image_behind_a_labelled_link(
    emu: SlackEmulator, knowledge: KnowledgeBase, tmp_path: Any
) -> None:
    """A link written with a label shows only the label; the shortcut still finds the
    image at its address (here refused by the allowlist: the refusal names the image)."""
    from bot.image.explain import Explainer

    settings = Settings(
        _env_file=None, cache_dir=tmp_path, registry_allowlist=["127.0.0.1:9"], redis_url=None
    )
    engine = Engine(knowledge=knowledge, explainer=Explainer(settings=settings))
    runner, url = await slack_http(emu, engine)
    shortcut = emu.message_shortcut("we run <https://hub.docker.com/r/acme/proxy|our proxy> now")
    try:
        await emu.http_interactive(url, shortcut)
        private = await emu.wait_for(lambda r: r.name == "chat.postEphemeral")
    finally:
        await runner.cleanup()
        await engine.aclose()
    assert "acme/proxy" in private.data["text"], private.data["text"]
    assert "no image reference" not in private.data["text"]
