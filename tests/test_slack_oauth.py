"""Slack for many workspaces: bolt's OAuth flow, the SQL installation store, token
rotation and revocation, against the Slack emulator with real slack-bolt and slack_sdk.

Installs go the way a browser goes: ``GET /slack/install`` on the bot, redirected to the
emulator's consent page, redirected back to ``/slack/oauth_redirect`` with a code and the
state (carried in the bot's cookie). Stores run on SQLite and on the real PostgreSQL that
``.ci/services`` starts (skipped when the services are absent, like other services tests);
each test uses its own client id, so rows of other tests never match.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import frontmatter
import pytest
import sqlalchemy
import yaml
import yarl
from aiohttp import web
from pydantic import SecretStr
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import (
    INSTALL_FAILURES,
    NOT_INSTALLED,
    SlackAdapter,
    SlackPlatform,
    SlackSettings,
    run_slack,
)
from adapters.slack_oauth import SCOPES, SlackStores, async_database_url
from bot.engine import Engine
from bot.errors import InvalidInput, Unreachable
from tests.emulators.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    CLIENT_SECRET,
    SIGNING_SECRET,
    SlackEmulator,
    block_texts,
)
from tests.fixtures.registry import free_port

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "slack" / "manifest.yml"
WHY_BASE_IMAGE_TITLE = str(frontmatter.load(ROOT / "knowledge" / "why-base-image.md")["title"])
QUESTION = "why do Dockerfiles start FROM ubuntu?"
ACME, BETA = "T0ACME", "T0BETA"


@pytest.fixture(scope="module")
def knowledge() -> Engine:
    return Engine()


@pytest.fixture
def knowledge_engine(knowledge: Engine) -> Engine:
    """A fresh engine (fresh per-user rate limits) on the module's knowledge base."""
    return Engine(knowledge=knowledge.knowledge)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where installations go: a fresh SQLite file, or the services' PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'slack.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def emulator() -> AsyncIterator[SlackEmulator]:
    emu = SlackEmulator()
    emu.client_id = f"{uuid.uuid4().int % 10**12}.{uuid.uuid4().int % 10**12}"
    emu.add_workspace(ACME, "Acme")
    emu.add_workspace(BETA, "Beta")
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@dataclass
class OAuthBot:
    emulator: SlackEmulator
    adapter: SlackAdapter
    base: str

    @property
    def events(self) -> str:
        return f"{self.base}/slack/events"

    def browser(self) -> aiohttp.ClientSession:
        """A browser: keeps cookies for the bot's loopback origin (as it would for https)."""
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[self.base])
        return aiohttp.ClientSession(cookie_jar=jar)

    async def install(self, team: str) -> tuple[int, str]:
        """Install into ``team`` the way a browser does; the final page's status and text."""
        async with self.browser() as browser:
            url = f"{self.base}/slack/install"
            async with browser.get(url, params={"team": team}) as page:
                return page.status, await page.text()

    async def ask(self, team: str, channel: str, text: str = QUESTION) -> dict[str, Any]:
        """Mention the bot in ``team``; the bot's HTTP response to the event."""
        event = self.emulator.mention(text, channel=channel, team_id=team)
        record = await self.emulator.http_event(self.events, event, team_id=team)
        return record.data

    async def rows(self, table: str) -> int:
        """Rows of this app (its client id) in one of the store's tables."""
        stores = self.adapter.stores
        assert stores is not None
        query = sqlalchemy.text(f"SELECT count(*) FROM {table} WHERE client_id = :c")
        async with stores.engine.connect() as conn:
            result = await conn.execute(query, {"c": self.emulator.client_id})
            return int(result.scalar_one())


def oauth_settings(emulator: SlackEmulator, database_url: str, **extra: Any) -> SlackSettings:
    return SlackSettings(
        _env_file=None,
        slack_client_id=emulator.client_id,
        slack_client_secret=CLIENT_SECRET,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=emulator.api_url,
        slack_authorize_url=emulator.authorize_url,
        database_url=database_url,
        **extra,
    )


@pytest.fixture
async def oauth_bot(
    emulator: SlackEmulator, knowledge_engine: Engine, database_url: str
) -> AsyncIterator[OAuthBot]:
    """The bot in HTTP and OAuth mode: ``run_slack`` adds its routes to an aiohttp app we
    serve; the app's registered Redirect URL is the bot's /slack/oauth_redirect."""
    app = web.Application()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    emulator.redirect_url = f"{base}/slack/oauth_redirect"
    settings = oauth_settings(emulator, database_url, slack_redirect_uri=emulator.redirect_url)
    adapter = await run_slack(knowledge_engine, settings, web_app=app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield OAuthBot(emulator, adapter, base)
    finally:
        await runner.cleanup()
        await adapter.aclose()


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line at DEBUG as the deployed bot writes them (``configure_logging``)."""
    from bot.observability import configure_logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    stream = io.StringIO()
    configure_logging("DEBUG", json_output=True, stream=stream)
    try:
        yield stream
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


# --- installs ---------------------------------------------------------------------------------


async def test_two_workspaces_install_and_each_is_answered_with_its_own_token(
    oauth_bot: OAuthBot,
) -> None:
    emulator = oauth_bot.emulator
    for team in (ACME, BETA):
        status, page = await oauth_bot.install(team)
        assert status == 200 and "Thank you!" in page, page
    # The consent page was asked for the manifest's bot scopes, with the registered URL.
    authorizes = [r for r in emulator.records if r.kind == "authorize"]
    assert [r.name for r in authorizes] == [ACME, BETA] and all(r.ok for r in authorizes)
    assert all(r.data["scope"] == ",".join(SCOPES) for r in authorizes)
    assert all(r.data["redirect_uri"] == emulator.redirect_url for r in authorizes)
    # One bot token per workspace, stored; a worker gets each team's own.
    tokens = {team: await oauth_bot.adapter.bot_token(team) for team in (ACME, BETA)}
    assert tokens == {ACME: emulator.tokens_of(ACME)[-1], BETA: emulator.tokens_of(BETA)[-1]}
    assert tokens[ACME] != tokens[BETA] and BOT_TOKEN not in tokens.values()
    assert await oauth_bot.adapter.bot_token("T0NEVER") is None
    assert await oauth_bot.rows("slack_bots") == 2
    # Each workspace asks; each is answered in its own channel with its own token.
    for team, channel in ((ACME, "C0ACME"), (BETA, "C0BETA")):
        response = await oauth_bot.ask(team, channel)
        assert response["status"] == 200
        posts = await emulator.wait_post(channel)
        assert [p.data["_team"] for p in posts] == [team]
        assert posts[0].ok and WHY_BASE_IMAGE_TITLE in " ".join(block_texts(posts))
    # Asked again: answered with the same token, which bolt checked once (auth.test at the
    # install and at the first event), not on every event.
    await oauth_bot.ask(ACME, "C0ACME")
    assert (await emulator.wait_post("C0ACME", 2))[1].data["_team"] == ACME
    checks = [r.data["_team"] for r in emulator.api_calls("auth.test")]
    assert sorted(checks) == [ACME, ACME, BETA, BETA]
    # The mention of each team's own bot user was recognised (the question was understood)
    # and nothing was refused anywhere.
    assert not emulator.refused()


async def test_the_redirect_refuses_state_mismatch_replay_bad_code_and_cancel(
    oauth_bot: OAuthBot,
) -> None:
    emulator = oauth_bot.emulator

    async def to_consent(browser: aiohttp.ClientSession) -> str:
        """/slack/install → the consent page → the bot's redirect URL (not yet opened)."""
        async with browser.get(
            f"{oauth_bot.base}/slack/install", params={"team": ACME}, allow_redirects=False
        ) as install:
            assert install.status == 302
            consent = install.headers["Location"]
        assert consent.startswith(emulator.authorize_url)
        async with browser.get(consent, allow_redirects=False) as approved:
            assert approved.status == 302
            return approved.headers["Location"]

    def with_query(url: str, **changes: str) -> str:
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
        return f"{parts.scheme}://{parts.netloc}{parts.path}?" + "&".join(
            f"{k}={v}" for k, v in query.items()
        )

    async def page(browser: aiohttp.ClientSession, url: str) -> tuple[int, str]:
        async with browser.get(url, allow_redirects=False) as response:
            return response.status, await response.text()

    def says(text: str, reason: str) -> bool:
        return INSTALL_FAILURES[reason].split(" (")[0].split(".")[0] in text.replace("&#x27;", "'")

    async with oauth_bot.browser() as browser:
        back = await to_consent(browser)
        # A state that is not the one this browser was given.
        status, text = await page(browser, with_query(back, state="forged"))
        assert status == 400 and says(text, "invalid_browser"), text
    async with oauth_bot.browser() as other:  # the redirect opened in another browser
        status, text = await page(other, back)
        assert status == 400 and says(text, "invalid_browser"), text
    async with oauth_bot.browser() as browser:
        back = await to_consent(browser)
        # A code Slack never issued, with the right state.
        status, text = await page(browser, with_query(back, code="T0ACME.forged"))
        assert status == 401 and says(text, "invalid_code"), text
        # The failure page dropped the state cookie: the real code can't follow.
        status, text = await page(browser, back)
        assert status == 400 and says(text, "invalid_browser"), text
        # The state was used up by that attempt: even with its cookie put back, no.
        state = parse_qs(urlsplit(back).query)["state"][0]
        browser.cookie_jar.update_cookies(
            {"slack-app-oauth-state": state}, yarl.URL(oauth_bot.base)
        )
        status, text = await page(browser, back)
        assert status == 401 and says(text, "invalid_state"), text
    async with oauth_bot.browser() as browser:
        emulator.deny_next_install = True  # the admin presses "Cancel" on Slack's page
        status, text = await page(browser, await to_consent(browser))
        assert status == 400 and says(text, "access_denied"), text
    # Nothing was stored, and no page showed a traceback.
    assert await oauth_bot.adapter.bot_token(ACME) is None
    assert await oauth_bot.rows("slack_bots") == 0
    assert await oauth_bot.rows("slack_installations") == 0
    exchanges = emulator.api_calls("oauth.v2.access")
    assert [r.error for r in exchanges] == ["invalid_code"]


# --- revocation, uninstall -----------------------------------------------------------------------


async def test_tokens_revoked_and_app_uninstalled_forget_the_workspace(
    oauth_bot: OAuthBot,
) -> None:
    emulator = oauth_bot.emulator
    for team in (ACME, BETA):
        assert (await oauth_bot.install(team))[0] == 200
    # An admin of Acme revokes the bot's tokens; Slack sends tokens_revoked.
    revoked = emulator.revoke_bot_tokens(ACME)
    response = await emulator.http_event(oauth_bot.events, revoked, team_id=ACME)
    assert response.data["status"] == 200
    assert await oauth_bot.adapter.bot_token(ACME) is None
    # Acme's next question is refused before any listener runs (no token to answer with).
    refused = await oauth_bot.ask(ACME, "C0ACME")
    assert refused["status"] == 200 and refused["body"] == NOT_INSTALLED
    # Beta is still answered; Acme got nothing, and no call used a dead token.
    await oauth_bot.ask(BETA, "C0BETA")
    assert (await emulator.wait_post("C0BETA"))[0].data["_team"] == BETA
    assert emulator.posts("C0ACME") == [] and not emulator.refused()

    # Beta uninstalls the app; Slack sends app_uninstalled: everything of Beta is deleted.
    response = await emulator.http_event(oauth_bot.events, emulator.uninstall(BETA), team_id=BETA)
    assert response.data["status"] == 200
    assert await oauth_bot.adapter.bot_token(BETA) is None
    assert await oauth_bot.rows("slack_installations") == 1  # Acme's install record only
    assert await oauth_bot.rows("slack_bots") == 0
    refused = await oauth_bot.ask(BETA, "C0BETA2")
    assert refused["status"] == 200 and refused["body"] == NOT_INSTALLED
    assert emulator.posts("C0BETA2") == [] and not emulator.refused()

    # Acme installs again: answered again, with the new token.
    assert (await oauth_bot.install(ACME))[0] == 200
    await oauth_bot.ask(ACME, "C0ACME3")
    posts = await emulator.wait_post("C0ACME3")
    assert posts[0].ok and posts[0].data["_team"] == ACME
    assert await oauth_bot.adapter.bot_token(ACME) == emulator.tokens_of(ACME)[-1]


async def test_a_database_failure_is_retried_not_taken_for_an_uninstall(
    oauth_bot: OAuthBot,
) -> None:
    """The bots table is unreadable (renamed away): the event gets a 500, so Slack delivers
    it again, and nobody is told the app is gone; once the table is back, the retry is
    answered."""
    emulator = oauth_bot.emulator
    stores = oauth_bot.adapter.stores
    assert stores is not None and (await oauth_bot.install(ACME))[0] == 200
    event = emulator.mention(QUESTION, channel="C0ACME", team_id=ACME)

    async def rename(old: str, new: str) -> None:
        async with stores.engine.begin() as conn:
            await conn.execute(sqlalchemy.text(f"ALTER TABLE {old} RENAME TO {new}"))

    await rename("slack_oauth_states", "slack_oauth_states_away")
    try:  # no install link can be issued: a clear 503, no traceback page
        install = f"{oauth_bot.base}/slack/install"
        async with oauth_bot.browser() as browser, browser.get(install) as page:
            assert page.status == 503 and "try again" in await page.text()
    finally:
        await rename("slack_oauth_states_away", "slack_oauth_states")
    await rename("slack_bots", "slack_bots_away")
    try:
        first = await emulator.http_event(oauth_bot.events, event, event_id="EvDB1", team_id=ACME)
        assert first.data["status"] == 500 and NOT_INSTALLED not in first.data["body"]
        with pytest.raises(Unreachable, match="Cannot read Slack installations"):
            await oauth_bot.adapter.bot_token(ACME)
    finally:
        await rename("slack_bots_away", "slack_bots")
    retry = await emulator.http_event(
        oauth_bot.events,
        event,
        event_id="EvDB1",
        team_id=ACME,
        headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_error"},
    )
    assert retry.data["status"] == 200
    posts = await emulator.wait_post("C0ACME")
    assert len(posts) == 1 and posts[0].ok and posts[0].data["_team"] == ACME


# --- token rotation ------------------------------------------------------------------------------


async def test_an_expiring_token_is_refreshed_before_it_is_used(oauth_bot: OAuthBot) -> None:
    emulator = oauth_bot.emulator
    emulator.token_rotation = True
    # Tokens live one hour: less than the 120 minutes before expiry when bolt refreshes.
    emulator.token_lifetime = 3600
    assert (await oauth_bot.install(ACME))[0] == 200
    (first,) = emulator.tokens_of(ACME)
    assert first.startswith("xoxe.xoxb-")
    emulator.expire(first)  # and it is dead already: only a refreshed token can answer

    await oauth_bot.ask(ACME, "C0ACME")
    posts = await emulator.wait_post("C0ACME")
    assert posts[0].ok and posts[0].data["_team"] == ACME
    refreshes = [r for r in emulator.api_calls("oauth.v2.access") if r.data.get("grant_type")]
    assert [(r.ok, r.data["grant_type"]) for r in refreshes] == [(True, "refresh_token")]
    second = emulator.tokens_of(ACME)[-1]
    assert second != first and not emulator.refused()

    # A worker outside bolt's context refreshes the same way and gets a working token.
    token = await oauth_bot.adapter.bot_token(ACME)
    assert token not in (None, first, second) and token == emulator.tokens_of(ACME)[-1]
    client = AsyncWebClient(token=token, base_url=emulator.api_url)
    assert (await client.auth_test())["team_id"] == ACME

    # Tokens that live long (Slack's 12 hours) are used as they are, not refreshed.
    emulator.token_lifetime = 43_200
    assert (await oauth_bot.install(BETA))[0] == 200
    await oauth_bot.ask(BETA, "C0BETA")
    assert (await emulator.wait_post("C0BETA"))[0].ok
    refreshes = [r for r in emulator.api_calls("oauth.v2.access") if r.data.get("_team") == BETA]
    assert [r.data.get("grant_type") for r in refreshes] == [None]  # the install only


# --- Socket Mode ---------------------------------------------------------------------------------


async def test_socket_mode_with_installs_by_oauth(
    emulator: SlackEmulator, knowledge_engine: Engine, tmp_path: Path
) -> None:
    """Events over Socket Mode, installs on the serve app's HTTP routes (``dockwise serve``
    passes its web app to ``setup``)."""
    app = web.Application()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    emulator.redirect_url = f"{base}/slack/oauth_redirect"
    settings = oauth_settings(
        emulator, f"sqlite:///{tmp_path / 'slack.db'}", slack_app_token=APP_TOKEN
    )
    platform = SlackPlatform(knowledge_engine, settings)
    await platform.setup(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    bot = OAuthBot(emulator, platform.adapter, base)
    task = platform.start()
    try:
        await emulator.wait_socket()
        assert (await bot.install(BETA))[0] == 200
        await emulator.socket_event(
            emulator.mention(QUESTION, channel="C0B", team_id=BETA), team_id=BETA
        )
        posts = await emulator.wait_post("C0B")
        assert posts[0].ok and posts[0].data["_team"] == BETA
        assert await platform.bot_token(BETA) == emulator.tokens_of(BETA)[-1]
        assert not task.done() and not emulator.refused()
    finally:
        await platform.stop()
        await runner.cleanup()


# --- secrets ------------------------------------------------------------------------------------


async def test_secrets_never_reach_the_logs(
    oauth_bot: OAuthBot, captured_logs: io.StringIO, database_url: str
) -> None:
    emulator = oauth_bot.emulator
    emulator.token_rotation = True
    emulator.token_lifetime = 3600
    assert (await oauth_bot.install(ACME))[0] == 200
    await oauth_bot.ask(ACME, "C0ACME")
    await emulator.wait_post("C0ACME")
    failed = f"{oauth_bot.base}/slack/oauth_redirect?code=x&state=y"  # it logs too
    async with oauth_bot.browser() as browser, browser.get(failed) as response:
        assert response.status == 400
    logged = captured_logs.getvalue()
    assert "installed in team T0ACME" in logged and "an installation failed" in logged
    secrets = [CLIENT_SECRET, SIGNING_SECRET, *emulator.tokens]
    password = urlsplit(database_url).password
    if password:
        secrets.append(password)
    assert len(emulator.tokens_of(ACME)) >= 2 and emulator.tokens_of(ACME, "refresh")
    # The exchanges that carry secrets were logged (slack_sdk at DEBUG), masked.
    assert "oauth.v2.access" in logged and "refresh_token" in logged
    leaked = [s for s in secrets if s in logged]
    assert not leaked, f"{len(leaked)} secrets in the logs"


# --- configuration --------------------------------------------------------------------------------


def test_scopes_and_events_are_the_manifest_s() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert list(SCOPES) == manifest["oauth_config"]["scopes"]["bot"]
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert {"app_uninstalled", "tokens_revoked"} <= set(events)


def test_modes_and_configured() -> None:
    oauth = SlackSettings(
        _env_file=None,
        slack_client_id="1.2",
        slack_client_secret=SecretStr("s" * 12),
        slack_signing_secret=SecretStr("t" * 12),
    )
    assert oauth.oauth_enabled and SlackPlatform.configured(oauth)
    # A bot token wins: one workspace, exactly as before.
    single = oauth.model_copy(update={"slack_bot_token": SecretStr("xoxb-1")})
    assert not single.oauth_enabled and SlackPlatform.configured(single)
    # Client credentials alone (no signing secret, no app token) are not enough.
    no_transport = oauth.model_copy(update={"slack_signing_secret": None})
    assert not SlackPlatform.configured(no_transport)
    half = oauth.model_copy(update={"slack_client_secret": None})
    assert not half.oauth_enabled and not SlackPlatform.configured(half)
    assert "SLACK_CLIENT_ID" in SlackPlatform.how_to_configure


async def test_single_token_mode_has_no_install_routes_and_no_store(
    emulator: SlackEmulator, knowledge_engine: Engine, tmp_path: Path
) -> None:
    settings = SlackSettings(
        _env_file=None,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=emulator.api_url,
        slack_client_id=emulator.client_id,  # ignored next to a bot token
        slack_client_secret=CLIENT_SECRET,
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
    )
    app = web.Application()
    adapter = await run_slack(knowledge_engine, settings, web_app=app)
    assert adapter.stores is None and not (tmp_path / "unused.db").exists()
    assert await adapter.bot_token("T0ANY") == BOT_TOKEN
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert paths == {"/slack/events"}
    assert [r.name for r in emulator.api_calls("auth.test")] == ["auth.test"]
    # tokens_revoked / app_uninstalled are acknowledged (nothing stored to delete), and
    # questions are answered as before.
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    events = f"http://127.0.0.1:{port}/slack/events"
    try:
        for event in (
            {"type": "tokens_revoked", "tokens": {"bot": ["U1"]}},
            {"type": "app_uninstalled"},
        ):
            assert (await emulator.http_event(events, event)).data["status"] == 200
        await emulator.http_event(events, emulator.mention(QUESTION))
        posts = await emulator.wait_post("C0GENERAL")
        assert posts[0].ok and WHY_BASE_IMAGE_TITLE in " ".join(block_texts(posts))
    finally:
        await runner.cleanup()


def test_install_url_command(tmp_path: Path) -> None:
    """``dockwise slack-install-url``: the link to share, from --base-url or the redirect
    URL; a clear one-line refusal in single-token mode."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_"))}
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path))
    env.update(SLACK_CLIENT_ID="1.2", SLACK_CLIENT_SECRET=CLIENT_SECRET)

    def dockwise(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot", "slack-install-url", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**env, **extra},
            timeout=120,
        )

    given = dockwise("--base-url", "https://dw.example/")
    assert (given.returncode, given.stdout) == (0, "https://dw.example/slack/install\n")
    derived = dockwise(SLACK_REDIRECT_URI="https://dw.example/x/slack/oauth_redirect")
    assert (derived.returncode, derived.stdout) == (0, "https://dw.example/x/slack/install\n")
    single = dockwise(SLACK_BOT_TOKEN=BOT_TOKEN)
    assert single.returncode == 2 and single.stderr.startswith("dockwise: error: installs by")
    assert len(single.stderr.strip().splitlines()) == 1 and "one workspace" in single.stderr
    assert CLIENT_SECRET not in given.stderr + derived.stderr + single.stderr


def test_install_url_refuses_a_base_that_is_not_an_https_link() -> None:
    """The printed link is shared with workspace admins: a base without a scheme or host
    (``dw.example``), or another scheme (``javascript:``), is refused in one line, not
    printed as ``dw.example/slack/install``."""
    from adapters.slack import install_url

    oauth = SlackSettings(
        _env_file=None,
        slack_client_id="1.2",
        slack_client_secret=SecretStr("s" * 12),
        slack_signing_secret=SecretStr("t" * 12),
    )
    assert install_url(oauth, "http://127.0.0.1:3000") == "http://127.0.0.1:3000/slack/install"
    for bad in ("dw.example", "javascript:alert(1)", "https://", "ftp://dw.example"):
        with pytest.raises(InvalidInput, match="https://") as caught:
            install_url(oauth, bad)
        assert "\n" not in str(caught.value)
    redirect = oauth.model_copy(update={"slack_redirect_uri": "dw.example/slack/oauth_redirect"})
    with pytest.raises(InvalidInput, match="SLACK_REDIRECT_URI"):
        install_url(redirect)


def test_database_urls() -> None:
    assert async_database_url("sqlite:////var/cache/dockwise/slack.db").drivername == (
        "sqlite+aiosqlite"
    )
    for url in (
        "postgresql://u:p@db/dockwise",
        "postgres://u:p@db/dockwise",
        "postgresql+psycopg://u:p@db/dockwise",
    ):
        converted = async_database_url(url)
        assert converted.drivername == "postgresql+psycopg" and converted.password == "p"
    for bad, says in (
        ("mysql://u:hunter2secret@db/x", "SQLite or PostgreSQL"),
        ("postgresql+asyncpg://u:hunter2secret@db/x", "asyncpg"),
        ("not a url", "not a database URL"),
        ("postgresql+psycopg://u:hunter2secret@db:notaport/x", "not a database URL"),
        ("postgresql+psycopg://u:hunter2secret@[::1/x", "not a database URL"),
    ):
        with pytest.raises(InvalidInput, match=says) as caught:
            async_database_url(bad)
        assert "hunter2secret" not in str(caught.value) and "\n" not in str(caught.value)


async def test_an_unusable_database_fails_at_start_in_one_line(
    emulator: SlackEmulator, knowledge_engine: Engine, tmp_path: Path
) -> None:
    nowhere = f"postgresql+psycopg://dockwise:hunter2secret@127.0.0.1:{free_port()}/dockwise"
    with pytest.raises(Unreachable, match="Cannot use the Slack installation database") as e:
        await run_slack(
            knowledge_engine, oauth_settings(emulator, nowhere), web_app=web.Application()
        )
    assert "hunter2secret" not in str(e.value) and "\n" not in str(e.value)
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the SQLite database's directory should be
    stores = SlackStores(f"sqlite:///{tmp_path / 'slack.db'}", "1.2")
    await stores.create_tables()  # a fresh file works, and creating again is harmless
    await stores.create_tables()
    await stores.aclose()
    with pytest.raises(Unreachable, match="is not a directory"):
        SlackStores(f"sqlite:///{blocked / 'slack.db'}", "1.2")


async def test_the_default_database_is_sqlite_in_the_cache_dir(
    emulator: SlackEmulator,
    knowledge_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.config import get_settings

    monkeypatch.setenv("DOCKWISE_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    try:
        settings = oauth_settings(emulator, "unused").model_copy(update={"database_url": None})
        adapter = await run_slack(knowledge_engine, settings, web_app=web.Application())
        await adapter.aclose()
    finally:
        get_settings.cache_clear()
    assert (tmp_path / "cache" / "slack.db").is_file()
    assert json.dumps(sorted(p.name for p in (tmp_path / "cache").iterdir())) == '["slack.db"]'
    assert re.search(r"api\.test", " ".join(r.name for r in emulator.api_calls("api.test")))


# --- a job worker's deliveries ----------------------------------------------------------------


async def test_a_worker_edits_each_workspace_s_placeholder_with_that_workspace_s_token(
    oauth_bot: OAuthBot, database_url: str, knowledge_engine: Engine
) -> None:
    """A worker process (role ``worker``: no routes, no listener) finds the bot token of
    the placeholder's workspace in the installation store by team id, edits the
    placeholder with the progress and replaces it with the reply; a workspace that
    uninstalled meanwhile gets nothing and the delivery fails with one line."""
    from adapters.slack import Placeholder
    from bot.errors import Unauthorized
    from bot.reply import Reply, ReplyKind

    emulator = oauth_bot.emulator
    for team in (ACME, BETA):
        assert (await oauth_bot.install(team))[0] == 200
    worker = SlackPlatform(knowledge_engine, oauth_settings(emulator, database_url))
    worker.role = "worker"
    reply = Reply(kind=ReplyKind.IMAGE, title="acme/app:1: Debian user space", body="Debian 12.")
    try:
        for team, channel in ((ACME, "C0ACME"), (BETA, "C0BETA")):
            # The asking replica's placeholder, posted with the workspace's own token.
            asker = AsyncWebClient(token=emulator.tokens_of(team)[-1], base_url=emulator.api_url)
            posted = await asker.chat_postMessage(channel=channel, text="Inspecting `acme/app:1` …")
            place = Placeholder(channel, None, "U0ALICE", str(posted["ts"]), team)
            assert worker.progress_updates(place.target()) == 10
            await worker.show_progress(place.target(), "Inspecting `acme/app:1` … looking up")
            await worker.deliver(place.target(), reply)
            edits = [r for r in emulator.api_calls("chat.update") if r.data["ts"] == place.ts]
            assert [r.ok for r in edits] == [True, True]
            assert [r.data["_team"] for r in edits] == [team, team]
            (current,) = emulator.current(channel)
            assert (
                "Debian user space" in json.dumps(current) and "Inspecting" not in current["text"]
            )
        # Beta uninstalls while its explanation runs: nothing is posted with a dead token.
        await emulator.http_event(oauth_bot.events, emulator.uninstall(BETA), team_id=BETA)
        gone = Placeholder("C0BETA", None, "U0ALICE", "1700000099.000099", BETA).target()
        with pytest.raises(Unauthorized, match=f"not installed in Slack team {BETA}"):
            await worker.deliver(gone, reply)
        assert not emulator.refused()
    finally:
        await worker.stop()
