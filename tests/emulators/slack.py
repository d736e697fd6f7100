"""A small Slack emulator on loopback for testing the Slack adapter with real slack-bolt.

It implements what dockwise uses, and checks requests the way Slack does so tests are
honest:

- Web API under ``api_url``: ``auth.test``, ``chat.postMessage``, ``chat.postEphemeral``,
  ``chat.update``, ``chat.delete``, ``chat.unfurl``, ``views.publish``, ``views.open``
  and ``apps.connections.open`` (bearer tokens checked; messages validated against Block
  Kit limits, answering ``invalid_blocks`` / ``msg_too_long`` / ``no_text`` like Slack;
  ``chat.update`` / ``chat.delete`` of an unknown ``ts`` answer ``message_not_found``;
  posts to a channel in ``not_member`` answer ``not_in_channel``).
  Channel messages are kept in ``messages`` (by ts) so edits and deletions are visible.
- ``response_url`` endpoints for slash commands, shortcuts and clicks (validated the same
  way; ``replace_original`` / ``delete_original`` act on the original, at most 5 uses).
- A Socket Mode websocket: sends ``hello`` on connect, then whatever envelopes the test
  sends (``events_api``, ``slash_commands``, ``interactive`` block_actions, shortcuts and
  view submissions), and records every ack.
- Modals: ``views.open`` needs a ``trigger_id`` the emulator issued (a command's or a
  click's) and a modal Slack would render (title, submit, input blocks and
  ``plain_text_input`` limits); opened views are kept in ``views`` (by id).
  ``view_submission`` builds what Slack sends when the user presses submit (the client's
  own checks included: a required input can't be empty, text stops at ``max_length``), and
  the ack of ``socket_view_submission`` closes the view or, with ``response_action:
  "errors"`` naming its input blocks, keeps it open showing the errors.
- A client for HTTP mode that signs requests (``v0`` HMAC-SHA256 of ``v0:{ts}:{body}``)
  and records the bot's HTTP responses (a slash command's ack is the response body).
- Workspaces and installs (OAuth v2, as Slack does it): ``GET /oauth/v2/authorize`` (the
  consent page: checks ``client_id``, ``scope`` and that ``redirect_uri`` is the app's
  registered Redirect URL, then redirects the browser there with ``code`` and ``state``,
  or ``error=access_denied``); ``oauth.v2.access`` (HTTP Basic or form client
  credentials) exchanges a code, once and within 10 minutes, for the workspace's bot token
  (``team``, ``bot_user_id``, ``scope``; with ``token_rotation`` on also ``refresh_token``
  and ``expires_in``) and, with ``grant_type=refresh_token``, refreshes it. Every token
  belongs to one workspace: ``auth.test`` answers for its workspace, and expired or
  revoked tokens answer ``token_expired`` / ``token_revoked``. ``uninstall`` and
  ``revoke_bot_tokens`` build the ``app_uninstalled`` / ``tokens_revoked`` events.

Everything received is recorded in order (``records``, each with a sequence number);
``wait_for`` waits on an ``asyncio.Condition`` until a record matching a predicate arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"
SIGNING_SECRET = "test-signing-secret"
TEAM_ID = "T0TEST"
APP_ID = "A0DOCKWISE"
BOT_USER_ID = "UBOT0001"
BOT_ID = "BBOT0001"
CLIENT_ID = "1111.2222"
CLIENT_SECRET = "test-client-secret-0123456789"
#: Slack's bot token lifetime with token rotation on (12 hours), in seconds.
TOKEN_LIFETIME = 43_200
CODE_LIFETIME = 600

MAX_BLOCKS = 50
MAX_TEXT = 40_000
LIMITS = {"header": 150, "section": 3000, "field": 2000, "fields": 10, "context": 10}
BUTTON_TEXT_MAX, BUTTON_VALUE_MAX, ACTION_ID_MAX, ACTIONS_MAX = 75, 2000, 255, 25
RESPONSE_URL_USES = 5
# Modal limits (Block Kit reference: view objects, input block, plain_text_input).
VIEW_TITLE_MAX, VIEW_BUTTON_MAX, VIEW_BLOCKS_MAX, PRIVATE_METADATA_MAX = 24, 24, 100, 3000
CALLBACK_ID_MAX, INPUT_LABEL_MAX, INPUT_HINT_MAX, PLACEHOLDER_MAX = 255, 2000, 2000, 150
PLAIN_TEXT_INPUT_MAX = 3000


@dataclass(frozen=True)
class Record:
    seq: int
    kind: str  # "api", "response_url", "ack", "http_response", "socket_connected"
    name: str  # API method, envelope id, response id, ...
    data: dict[str, Any]
    ok: bool = True
    error: str | None = None


def block_error(blocks: Any) -> str | None:
    """Why Slack would refuse these blocks (``None`` if it would accept them)."""
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict):
            return "invalid_blocks"
        kind = block.get("type")
        if kind == "divider":
            continue
        if kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                return "invalid_blocks"
        elif kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and not fields:
                return "invalid_blocks"
            if text is not None and not 0 < len(text.get("text", "")) <= LIMITS["section"]:
                return "invalid_blocks"
            if fields is not None and (
                len(fields) > LIMITS["fields"]
                or any(not 0 < len(f.get("text", "")) <= LIMITS["field"] for f in fields)
            ):
                return "invalid_blocks"
        elif kind == "actions":
            elements = block.get("elements") or []
            if not 0 < len(elements) <= ACTIONS_MAX:
                return "invalid_blocks"
            ids = [e.get("action_id") for e in elements]
            if len(set(ids)) != len(ids):  # Slack: action_id must be unique in a block
                return "invalid_blocks"
            for element in elements:
                text = element.get("text") or {}
                if (
                    element.get("type") != "button"
                    or text.get("type") != "plain_text"
                    or not 0 < len(text.get("text", "")) <= BUTTON_TEXT_MAX
                    or not 0 < len(str(element.get("action_id") or "")) <= ACTION_ID_MAX
                    or len(str(element.get("value") or "")) > BUTTON_VALUE_MAX
                ):
                    return "invalid_blocks"
        elif kind == "context":
            elements = block.get("elements") or []
            if not 0 < len(elements) <= LIMITS["context"]:
                return "invalid_blocks"
            if any(not 0 < len(e.get("text", "")) <= 3000 for e in elements):
                return "invalid_blocks"
        else:
            return "invalid_blocks"
    return None


def _plain(text: Any, limit: int) -> bool:
    return (
        isinstance(text, dict)
        and text.get("type") == "plain_text"
        and 0 < len(str(text.get("text") or "")) <= limit
    )


def view_error(view: Any) -> str | None:
    """Why ``views.open`` would refuse this modal (``None`` if Slack would open it).
    Checks the modal's own fields, its input blocks and their ``plain_text_input``s; other
    blocks go through ``block_error``."""
    if not isinstance(view, dict) or view.get("type") != "modal":
        return "invalid_arguments"
    if not _plain(view.get("title"), VIEW_TITLE_MAX):
        return "invalid_arguments"
    if len(str(view.get("callback_id") or "")) > CALLBACK_ID_MAX:
        return "invalid_arguments"
    if len(str(view.get("private_metadata") or "")) > PRIVATE_METADATA_MAX:
        return "invalid_arguments"
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or not 0 < len(blocks) <= VIEW_BLOCKS_MAX:
        return "invalid_blocks"
    inputs = [b for b in blocks if isinstance(b, dict) and b.get("type") == "input"]
    if inputs and not _plain(view.get("submit"), VIEW_BUTTON_MAX):
        return "invalid_arguments"  # a modal with inputs needs a submit button
    for key in ("submit", "close"):
        if key in view and not _plain(view[key], VIEW_BUTTON_MAX):
            return "invalid_arguments"
    for block in inputs:
        element = block.get("element") or {}
        if not _plain(block.get("label"), INPUT_LABEL_MAX):
            return "invalid_blocks"
        if "hint" in block and not _plain(block["hint"], INPUT_HINT_MAX):
            return "invalid_blocks"
        if element.get("type") != "plain_text_input" or not element.get("action_id"):
            return "invalid_blocks"
        if "placeholder" in element and not _plain(element["placeholder"], PLACEHOLDER_MAX):
            return "invalid_blocks"
        high = element.get("max_length", PLAIN_TEXT_INPUT_MAX)
        low = element.get("min_length", 0)
        if not (isinstance(high, int) and 1 <= high <= PLAIN_TEXT_INPUT_MAX):
            return "invalid_blocks"
        if not (isinstance(low, int) and 0 <= low <= min(high, PLAIN_TEXT_INPUT_MAX)):
            return "invalid_blocks"
    others = [b for b in blocks if not (isinstance(b, dict) and b.get("type") == "input")]
    return block_error(others) if others else None


def message_error(payload: dict[str, Any]) -> str | None:
    text, blocks = payload.get("text"), payload.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if not text and not blocks:
        return "no_text"
    if text and len(text) > MAX_TEXT:
        return "msg_too_long"
    if blocks is not None:
        return block_error(blocks)
    return None


@dataclass(frozen=True)
class Workspace:
    team_id: str
    name: str
    bot_user_id: str
    bot_id: str


@dataclass
class Token:
    """A token Slack issued: whose it is, until when (epoch seconds), revoked or not."""

    team_id: str
    kind: str  # "bot" or "refresh"
    expires_at: float | None = None
    revoked: bool = False


def sign(body: str, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class SlackEmulator:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self._seq = itertools.count(1)
        self._changed = asyncio.Condition()
        self._ts = itertools.count(1)
        self._ws: web.WebSocketResponse | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0
        self.messages: dict[str, dict[str, Any]] = {}  # ts -> current channel message
        self.response_uses: dict[str, int] = {}
        self.originals: dict[str, dict[str, Any] | None] = {}  # response id -> original
        self._envelope_urls: dict[str, str] = {}  # slash command envelope -> response_url
        self.triggers: set[str] = set()  # trigger_ids issued, each usable once
        self.not_member: set[str] = set()  # channels the bot is not in (posts: not_in_channel)
        self.views: dict[str, dict[str, Any]] = {}  # view id -> opened modal (+ "_open")
        self._submissions: dict[str, str] = {}  # envelope id -> view id submitted
        self.failing: dict[str, list[str]] = {}  # method -> errors for its next calls
        # Workspaces, tokens and installs (OAuth v2).
        self.workspaces: dict[str, Workspace] = {
            TEAM_ID: Workspace(TEAM_ID, "dockwise test", BOT_USER_ID, BOT_ID)
        }
        self.tokens: dict[str, Token] = {BOT_TOKEN: Token(TEAM_ID, "bot")}
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.redirect_url: str | None = None  # the app's registered Redirect URL
        self.token_rotation = False
        self.token_lifetime = TOKEN_LIFETIME
        self.deny_next_install = False
        # code -> team, redirect_uri, valid until, scopes granted
        self._codes: dict[str, tuple[str, str | None, float, str]] = {}
        self.scopes: dict[str, str] = {}  # team -> scopes granted at its install

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/response/{rid}", self._response_url)
        app.router.add_get("/link", self._socket)
        app.router.add_get("/oauth/v2/authorize", self._authorize)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    @property
    def authorize_url(self) -> str:
        """Slack's consent page (``https://slack.com/oauth/v2/authorize``)."""
        return f"{self.base}/oauth/v2/authorize"

    def new_response_url(self) -> str:
        return f"{self.base}/response/{uuid.uuid4().hex}"

    def next_ts(self) -> str:
        n = next(self._ts)
        return f"{1_700_000_000 + n}.{n:06d}"

    # --- recording ----------------------------------------------------------------------

    async def _record(
        self, kind: str, name: str, data: dict[str, Any], error: str | None = None
    ) -> Record:
        async with self._changed:
            record = Record(next(self._seq), kind, name, data, error is None, error)
            self.records.append(record)
            self._changed.notify_all()
        return record

    async def wait_for(self, predicate: Callable[[Record], bool], within: float = 15) -> Record:
        """The first record matching ``predicate``, waiting for it if needed."""

        async def find() -> Record:
            async with self._changed:
                while True:
                    for record in self.records:
                        if predicate(record):
                            return record
                    await self._changed.wait()

        return await asyncio.wait_for(find(), within)

    def posts(self, channel: str | None = None) -> list[Record]:
        """Accepted and refused chat.postMessage calls, optionally for one channel."""
        return [
            r
            for r in self.records
            if r.kind == "api"
            and r.name == "chat.postMessage"
            and (channel is None or r.data.get("channel") == channel)
        ]

    def refused(self) -> list[Record]:
        return [r for r in self.records if not r.ok]

    async def wait_post(self, channel: str, count: int = 1, within: float = 15) -> list[Record]:
        """Wait until ``count`` messages were posted to ``channel``; returns them all."""
        await self.wait_for(lambda r: len(self.posts(channel)) >= count, within)
        return self.posts(channel)

    # --- Web API ------------------------------------------------------------------------

    async def _payload(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            data = await request.json()
            return dict(data) if isinstance(data, dict) else {}
        form = await request.post()
        out: dict[str, Any] = {k: str(v) for k, v in form.items()}
        out.update({k: v for k, v in request.query.items()})
        for key in ("blocks",):
            if isinstance(out.get(key), str):
                out[key] = json.loads(out[key])
        return out

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        payload = await self._payload(request)
        if method == "oauth.v2.access":
            return await self._oauth_access(request, payload)
        if method == "api.test":  # needs no token
            await self._record("api", method, payload)
            return web.json_response({"ok": True, "args": {}})
        auth = request.headers.get("Authorization", "")
        if method == "apps.connections.open":
            error = None if auth == f"Bearer {APP_TOKEN}" else "invalid_auth"
        else:
            error = self._token_error(auth.removeprefix("Bearer "))
        if error is None and method != "apps.connections.open":
            payload["_team"] = self.tokens[auth.removeprefix("Bearer ")].team_id
        if error is not None:
            await self._record("api", method, payload, error)
            return web.json_response({"ok": False, "error": error})
        if method == "auth.test":
            await self._record("api", method, payload)
            workspace = self.workspaces[payload["_team"]]
            return web.json_response(
                {
                    "ok": True,
                    "url": f"https://{workspace.team_id.lower()}.slack.com/",
                    "team": workspace.name,
                    "user": "dockwise",
                    "team_id": workspace.team_id,
                    "user_id": workspace.bot_user_id,
                    "bot_id": workspace.bot_id,
                    "is_enterprise_install": False,
                }
            )
        if method == "apps.connections.open":
            await self._record("api", method, payload)
            return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"})
        if self.failing.get(method):
            injected = self.failing[method].pop(0)  # an injected failure: Slack having trouble
            await self._record("api", method, payload, injected)
            return web.json_response({"ok": False, "error": injected})
        if method in {"chat.postMessage", "chat.postEphemeral"}:
            error = "channel_not_found" if not payload.get("channel") else message_error(payload)
            if payload.get("channel") in self.not_member:
                error = "not_in_channel"
            if method == "chat.postEphemeral" and not payload.get("user"):
                error = "user_not_found"
            await self._record("api", method, payload, error)
            if error:
                return web.json_response({"ok": False, "error": error})
            ts = self.next_ts()
            payload["_ts"] = ts  # visible in the record: which message this post made
            if method == "chat.postMessage":
                self.messages[ts] = {**payload, "ts": ts}
                return web.json_response({"ok": True, "channel": payload["channel"], "ts": ts})
            return web.json_response({"ok": True, "message_ts": ts})
        if method in {"chat.update", "chat.delete"}:
            ts = str(payload.get("ts") or "")
            known = self.messages.get(ts)
            error = None
            if known is None or known.get("channel") != payload.get("channel"):
                error = "message_not_found"
            elif method == "chat.update":
                error = message_error(payload)
            await self._record("api", method, payload, error)
            if error:
                return web.json_response({"ok": False, "error": error})
            if method == "chat.delete":
                del self.messages[ts]
            else:
                assert known is not None
                known.update({k: v for k, v in payload.items() if k in ("text", "blocks")})
                known["edited"] = True
            return web.json_response({"ok": True, "channel": payload["channel"], "ts": ts})
        if method == "views.publish":
            raw_view = payload.get("view")
            view: dict[str, Any] = json.loads(raw_view) if isinstance(raw_view, str) else {}
            if isinstance(raw_view, dict):
                view = raw_view
            error = None
            if not payload.get("user_id") or view.get("type") != "home":
                error = "invalid_arguments"
            elif block_error(view.get("blocks") or []) or not view.get("blocks"):
                error = "invalid_blocks"
            await self._record("api", method, {**payload, "view": view}, error)
            if error:
                return web.json_response({"ok": False, "error": error})
            return web.json_response({"ok": True, "view": {"id": "V0HOME", **view}})
        if method == "views.open":
            raw_view = payload.get("view")
            opened: dict[str, Any] = json.loads(raw_view) if isinstance(raw_view, str) else {}
            if isinstance(raw_view, dict):
                opened = raw_view
            trigger = str(payload.get("trigger_id") or "")
            error = None
            if not trigger:
                error = "invalid_arguments"
            elif trigger not in self.triggers:
                error = "invalid_trigger_id"  # unknown, or already used
            else:
                error = view_error(opened)
            await self._record("api", method, {**payload, "view": opened}, error)
            if error:
                return web.json_response({"ok": False, "error": error})
            self.triggers.discard(trigger)
            view_id = "V" + uuid.uuid4().hex[:10].upper()
            shown = {**opened, "id": view_id, "team_id": TEAM_ID, "app_id": APP_ID}
            self.views[view_id] = {**shown, "_open": True, "_errors": None}
            return web.json_response({"ok": True, "view": shown})
        if method == "chat.unfurl":
            unfurls = payload.get("unfurls")
            if isinstance(unfurls, str):
                unfurls = json.loads(unfurls)
            error = None
            has_target = (payload.get("channel") and payload.get("ts")) or (
                payload.get("unfurl_id") and payload.get("source")
            )
            if not has_target:
                error = "invalid_arguments"
            elif not isinstance(unfurls, dict) or not unfurls:
                error = "invalid_unfurls_format"
            elif any(block_error(u.get("blocks") or []) for u in unfurls.values()):
                error = "invalid_blocks"
            await self._record("api", method, {**payload, "unfurls": unfurls}, error)
            if error:
                return web.json_response({"ok": False, "error": error})
            return web.json_response({"ok": True})
        await self._record("api", method, payload, "unknown_method")
        return web.json_response({"ok": False, "error": "unknown_method"})

    def _token_error(self, token: str) -> str | None:
        """Why Slack would refuse this bot token (None: it is valid now)."""
        known = self.tokens.get(token)
        if known is None or known.kind != "bot":
            return "invalid_auth"
        if known.revoked:
            return "token_revoked"
        if known.expires_at is not None and known.expires_at <= time.time():
            return "token_expired"
        return None

    # --- workspaces and installs (OAuth v2) ---------------------------------------------

    def add_workspace(self, team_id: str, name: str) -> Workspace:
        """A workspace the app can be installed in (its bot user gets its own ids)."""
        n = len(self.workspaces) + 1
        workspace = Workspace(team_id, name, f"UBOT{n:04d}", f"BBOT{n:04d}")
        self.workspaces[team_id] = workspace
        return workspace

    def tokens_of(self, team_id: str, kind: str = "bot") -> list[str]:
        """The tokens issued for a workspace, oldest first."""
        return [
            t for t, info in self.tokens.items() if info.team_id == team_id and info.kind == kind
        ]

    def expire(self, token: str) -> None:
        """The token's lifetime ends now (as 12 hours later with token rotation)."""
        self.tokens[token].expires_at = time.time()

    async def _authorize(self, request: web.Request) -> web.Response:
        """Slack's consent page, already approved by a signed-in admin of ``team`` (the
        first workspace when the link names none): redirect back with a code."""
        query = request.query
        error = None
        if query.get("client_id") != self.client_id:
            error = "invalid_client_id"
        elif not query.get("scope"):
            error = "invalid_scope"
        redirect = query.get("redirect_uri") or self.redirect_url
        if redirect is None or (self.redirect_url and redirect != self.redirect_url):
            error = error or "bad_redirect_uri"
        team_id = query.get("team") or TEAM_ID
        if team_id not in self.workspaces:
            error = error or "invalid_team"
        await self._record("authorize", team_id, dict(query), error)
        if error is not None or redirect is None:
            return web.Response(status=400, text=f"Slack: {error}")
        state = query.get("state", "")
        if self.deny_next_install:
            self.deny_next_install = False
            denied = urlencode({"error": "access_denied", "state": state})
            raise web.HTTPFound(f"{redirect}?{denied}")
        code = f"{team_id}.{uuid.uuid4().hex}"
        until = time.time() + CODE_LIFETIME
        self._codes[code] = (team_id, query.get("redirect_uri"), until, query["scope"])
        raise web.HTTPFound(f"{redirect}?{urlencode({'code': code, 'state': state})}")

    def _client_credentials(self, request: web.Request, payload: dict[str, Any]) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                basic = aiohttp.BasicAuth.decode(header)
            except ValueError:
                return False
            client_id, client_secret = basic.login, basic.password
        else:
            client_id = str(payload.get("client_id") or "")
            client_secret = str(payload.get("client_secret") or "")
        return client_id == self.client_id and hmac.compare_digest(
            client_secret, self.client_secret
        )

    def _issue(self, team_id: str) -> dict[str, Any]:
        """A new bot token (and with rotation its expiry and refresh token) for the team."""
        token = f"xoxb-{team_id}-{uuid.uuid4().hex}"
        if self.token_rotation:
            token = f"xoxe.{token}"
        granted: dict[str, Any] = {"access_token": token, "token_type": "bot"}
        expires_at = None
        if self.token_rotation:
            expires_at = time.time() + self.token_lifetime
            refresh = (self.tokens_of(team_id, "refresh") or [f"xoxe-1-{uuid.uuid4().hex}"])[-1]
            self.tokens[refresh] = Token(team_id, "refresh")
            granted.update(refresh_token=refresh, expires_in=self.token_lifetime)
        self.tokens[token] = Token(team_id, "bot", expires_at)
        return granted

    async def _oauth_access(self, request: web.Request, payload: dict[str, Any]) -> web.Response:
        """``oauth.v2.access``: a code (from the consent page) or a refresh token for the
        workspace's bot token."""
        shown = {k: v for k, v in payload.items() if k not in {"client_secret"}}
        error = None
        team_id = scope = ""
        if not self._client_credentials(request, payload):
            error = "invalid_client"
        elif payload.get("grant_type") == "refresh_token":
            known = self.tokens.get(str(payload.get("refresh_token") or ""))
            if known is None or known.kind != "refresh" or known.revoked:
                error = "invalid_refresh_token"
            else:
                team_id = known.team_id
                scope = self.scopes.get(team_id, "")
        else:
            issued = self._codes.pop(str(payload.get("code") or ""), None)
            if issued is None or issued[2] < time.time():
                error = "invalid_code"
            elif issued[1] is not None and payload.get("redirect_uri") != issued[1]:
                error = "bad_redirect_uri"  # must repeat the authorize request's
            else:
                team_id, scope = issued[0], issued[3]
                self.scopes[team_id] = scope
        await self._record("api", "oauth.v2.access", {**shown, "_team": team_id}, error)
        if error is not None:
            return web.json_response({"ok": False, "error": error})
        workspace = self.workspaces[team_id]
        return web.json_response(
            {
                "ok": True,
                "app_id": APP_ID,
                "scope": scope,
                **self._issue(team_id),
                "bot_user_id": workspace.bot_user_id,
                "team": {"id": team_id, "name": workspace.name},
                "enterprise": None,
                "is_enterprise_install": False,
                "authed_user": {"id": "U0ADMIN"},
            }
        )

    def uninstall(self, team_id: str) -> dict[str, Any]:
        """The app is removed from the workspace: its tokens stop working; returns the
        ``app_uninstalled`` event Slack then sends."""
        for info in self.tokens.values():
            if info.team_id == team_id:
                info.revoked = True
        return {"type": "app_uninstalled", "event_ts": self.next_ts()}

    def revoke_bot_tokens(self, team_id: str) -> dict[str, Any]:
        """An admin revokes the bot's tokens; returns the ``tokens_revoked`` event."""
        for token in self.tokens_of(team_id) + self.tokens_of(team_id, "refresh"):
            self.tokens[token].revoked = True
        return {
            "type": "tokens_revoked",
            "tokens": {"oauth": [], "bot": [self.workspaces[team_id].bot_user_id]},
            "event_ts": self.next_ts(),
        }

    async def _response_url(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        payload = await request.json()
        uses = self.response_uses[rid] = self.response_uses.get(rid, 0) + 1
        error = None if payload.get("delete_original") else message_error(payload)
        if uses > RESPONSE_URL_USES:
            error = "used_too_many_times"
        elif (payload.get("replace_original") or payload.get("delete_original")) and (
            self.originals.get(rid) is None
        ):
            error = "no_original"  # nothing in the channel to replace or delete
        await self._record("response_url", rid, payload, error)
        if error:
            return web.Response(status=404 if error == "no_original" else 400, text=error)
        if payload.get("delete_original"):
            self.originals[rid] = None
        elif payload.get("replace_original"):
            self.originals[rid] = {**(self.originals[rid] or {}), **payload}
        elif payload.get("response_type") == "in_channel" and rid not in self.originals:
            self.originals[rid] = payload
        return web.Response(text="ok")

    def set_original(self, response_url: str, message: dict[str, Any]) -> None:
        """What the response_url's original is (e.g. a command's in_channel ack)."""
        self.originals[response_url.rsplit("/", 1)[-1]] = message

    def original(self, response_url: str) -> dict[str, Any] | None:
        return self.originals.get(response_url.rsplit("/", 1)[-1])

    # --- Socket Mode --------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "connection_info": {"app_id": APP_ID},
                "debug_info": {"host": "emulator", "approximate_connection_time": 3600},
            }
        )
        await self._record("socket_connected", "hello", {})
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                self._ack_original(
                    self._envelope_urls.get(str(data.get("envelope_id"))), data.get("payload")
                )
                self._ack_submission(str(data.get("envelope_id")), data.get("payload"))
                await self._record("ack", str(data.get("envelope_id")), data)
        return ws

    async def wait_socket(self) -> None:
        await self.wait_for(lambda r: r.kind == "socket_connected")

    async def _send_envelope(self, envelope: dict[str, Any]) -> str:
        if self._ws is None:
            raise RuntimeError("no Socket Mode connection")
        await self._ws.send_json(envelope)
        return str(envelope["envelope_id"])

    async def socket_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_attempt: int = 0,
        team_id: str = TEAM_ID,
    ) -> str:
        """Deliver an Events API event over Socket Mode; returns the envelope id."""
        bot_user_id = self.workspaces[team_id].bot_user_id
        return await self._send_envelope(
            {
                "envelope_id": uuid.uuid4().hex,
                "type": "events_api",
                "accepts_response_payload": False,
                "retry_attempt": retry_attempt,
                "retry_reason": "timeout" if retry_attempt else "",
                "payload": event_callback(event, event_id or new_event_id(), team_id, bot_user_id),
            }
        )

    def _ack_original(self, response_url: str | None, ack: Any) -> None:
        """An ``in_channel`` ack posts a message: the response_url's original."""
        if response_url and isinstance(ack, dict) and ack.get("response_type") == "in_channel":
            self.set_original(response_url, ack)

    async def socket_command(self, command: dict[str, Any]) -> str:
        """Deliver a slash command over Socket Mode; returns the envelope id."""
        envelope_id = uuid.uuid4().hex
        self._envelope_urls[envelope_id] = str(command.get("response_url") or "")
        return await self._send_envelope(
            {
                "envelope_id": envelope_id,
                "type": "slash_commands",
                "accepts_response_payload": True,
                "payload": command,
            }
        )

    async def socket_interactive(self, payload: dict[str, Any]) -> str:
        """Deliver an interactive payload (block_actions, message_action) over Socket Mode."""
        return await self._send_envelope(
            {
                "envelope_id": uuid.uuid4().hex,
                "type": "interactive",
                "accepts_response_payload": False,
                "payload": payload,
            }
        )

    async def socket_view_submission(self, payload: dict[str, Any]) -> str:
        """Deliver a ``view_submission`` over Socket Mode (its ack may carry a
        ``response_action``); the ack then closes the view or shows its errors."""
        envelope_id = uuid.uuid4().hex
        self._submissions[envelope_id] = str(payload["view"]["id"])
        return await self._send_envelope(
            {
                "envelope_id": envelope_id,
                "type": "interactive",
                "accepts_response_payload": True,
                "payload": payload,
            }
        )

    def _ack_submission(self, envelope_id: str, ack: Any) -> None:
        """A submission's ack: no ``response_action`` (or ``clear``) closes the modal;
        ``errors`` keyed by the view's input block ids keeps it open with the errors."""
        view_id = self._submissions.pop(envelope_id, None)
        view = self.views.get(view_id or "")
        if view is None:
            return
        action = ack.get("response_action") if isinstance(ack, dict) else None
        if action == "errors":
            errors = ack.get("errors")
            inputs = {b.get("block_id") for b in view["blocks"] if b.get("type") == "input"}
            if not isinstance(errors, dict) or not errors or not set(errors) <= inputs:
                view["_errors"] = {"invalid": "response_action errors name no input block"}
                view["_bad_ack"] = True
                return
            view["_errors"] = dict(errors)
        elif action in (None, "clear"):
            view["_open"] = False
            view["_errors"] = None
        else:
            view["_bad_ack"] = True

    def new_trigger(self) -> str:
        """A trigger_id as Slack sends with commands and clicks (valid for one views.open)."""
        trigger = f"{next(self._ts)}.{uuid.uuid4().hex[:12]}"
        self.triggers.add(trigger)
        return trigger

    async def wait_ack(self, envelope_id: str) -> Record:
        return await self.wait_for(lambda r: r.kind == "ack" and r.name == envelope_id)

    def fail_next(self, method: str, count: int = 1, error: str = "fatal_error") -> None:
        """The next ``count`` calls of Web API ``method`` answer ``{"ok": false, error}``."""
        self.failing.setdefault(method, []).extend([error] * count)

    # --- HTTP mode ----------------------------------------------------------------------

    async def http_post(
        self,
        url: str,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        secret: str = SIGNING_SECRET,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Record:
        """POST a signed request to the bot; records and returns its response."""
        assert self._session is not None
        ts = int(time.time()) if timestamp is None else timestamp
        all_headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": signature or sign(body, ts, secret),
            **(headers or {}),
        }
        async with self._session.post(url, data=body.encode(), headers=all_headers) as resp:
            text = await resp.text()
            data: dict[str, Any] = {"status": resp.status, "body": text}
            data["headers"] = {k.lower(): v for k, v in resp.headers.items()}
            if text.startswith("{"):
                data["json"] = json.loads(text)
        return await self._record("http_response", url, data)

    async def http_event(
        self,
        url: str,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        team_id: str = TEAM_ID,
        **kwargs: Any,
    ) -> Record:
        workspace = self.workspaces[team_id]
        body = json.dumps(
            event_callback(event, event_id or new_event_id(), team_id, workspace.bot_user_id)
        )
        return await self.http_post(url, body, "application/json", **kwargs)

    async def http_command(self, url: str, command: dict[str, Any], **kwargs: Any) -> Record:
        record = await self.http_post(
            url, urlencode(command), "application/x-www-form-urlencoded", **kwargs
        )
        self._ack_original(str(command.get("response_url") or ""), record.data.get("json"))
        return record

    async def http_interactive(self, url: str, payload: dict[str, Any], **kwargs: Any) -> Record:
        """Interactive payloads arrive form-encoded as ``payload=<json>``, signed."""
        body = urlencode({"payload": json.dumps(payload)})
        return await self.http_post(url, body, "application/x-www-form-urlencoded", **kwargs)

    async def http_view_submission(
        self, url: str, payload: dict[str, Any], **kwargs: Any
    ) -> Record:
        """A ``view_submission`` in HTTP mode: its ack is the HTTP response (an empty body
        closes the view; ``response_action`` JSON acts as over Socket Mode)."""
        key = uuid.uuid4().hex
        self._submissions[key] = str(payload["view"]["id"])
        record = await self.http_interactive(url, payload, **kwargs)
        self._ack_submission(key, record.data.get("json"))
        return record

    # --- payload builders ---------------------------------------------------------------

    def mention(
        self,
        text: str,
        *,
        channel: str = "C0GENERAL",
        thread_ts: str | None = None,
        team_id: str = TEAM_ID,
    ) -> dict[str, Any]:
        event = {
            "type": "app_mention",
            "user": "U0ALICE",
            "text": f"<@{self.workspaces[team_id].bot_user_id}> {text}",
            "ts": self.next_ts(),
            "channel": channel,
            "event_ts": "",
        }
        event["event_ts"] = event["ts"]
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    def dm(
        self, text: str, *, channel: str = "D0ALICE", user: str = "U0ALICE", **extra: Any
    ) -> dict[str, Any]:
        ts = self.next_ts()
        return {
            "type": "message",
            "channel_type": "im",
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel": channel,
            **extra,
        }

    def command(
        self, text: str, *, channel: str = "C0GENERAL", command: str = "/image-explain"
    ) -> dict[str, Any]:
        return {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "team_domain": "dockwise-test",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": "U0ALICE",
            "user_name": "alice",
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "response_url": self.new_response_url(),
            "trigger_id": self.new_trigger(),
        }

    def block_action(
        self,
        message: dict[str, Any],
        button: dict[str, Any],
        *,
        user: str = "U0BOB",
        channel: str = "C0GENERAL",
        ephemeral: bool = False,
    ) -> dict[str, Any]:
        """A ``block_actions`` payload: ``user`` clicked ``button`` (an element the bot
        sent) in ``message`` (what the bot posted, with ``ts``)."""
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": message.get("ts"),
                "channel_id": channel,
                "is_ephemeral": ephemeral,
            },
            "trigger_id": self.new_trigger(),
            "team": {"id": TEAM_ID, "domain": "dockwise-test"},
            "channel": {"id": channel, "name": "general"},
            "message": {
                "type": "message",
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "text": message.get("text", ""),
                "ts": message.get("ts"),
                **({"thread_ts": message["thread_ts"]} if message.get("thread_ts") else {}),
                "blocks": message.get("blocks") or [],
            },
            "response_url": self.new_response_url(),
            "actions": [
                {
                    "type": "button",
                    "action_id": button["action_id"],
                    "block_id": "dockwise_actions",
                    "text": button["text"],
                    "value": button.get("value", ""),
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def message_shortcut(
        self,
        text: str,
        *,
        channel: str = "C0GENERAL",
        callback_id: str = "explain_image_in_message",
    ) -> dict[str, Any]:
        """A message shortcut (``message_action``) on a user's message saying ``text``."""
        ts = self.next_ts()
        return {
            "type": "message_action",
            "token": "legacy-verification-token",
            "action_ts": f"{time.time():.6f}",
            "team": {"id": TEAM_ID, "domain": "dockwise-test"},
            "user": {"id": "U0BOB", "name": "bob", "team_id": TEAM_ID},
            "channel": {"id": channel, "name": "general"},
            "callback_id": callback_id,
            "trigger_id": self.new_trigger(),
            "message_ts": ts,
            "message": {"type": "message", "user": "U0ALICE", "text": text, "ts": ts},
            "response_url": self.new_response_url(),
        }

    def view_submission(
        self, view_id: str, values: dict[str, str], *, user: str = "U0ALICE"
    ) -> dict[str, Any]:
        """What Slack sends when ``user`` presses submit on the open modal ``view_id``
        having typed ``values`` (action_id -> text) into its inputs. Like Slack's client it
        refuses to submit a required input left empty (``ValueError``) and cuts text at the
        input's ``max_length`` (a longer paste stops there)."""
        view = self.views[view_id]
        if not view["_open"]:
            raise ValueError("that modal is closed")
        state: dict[str, dict[str, Any]] = {}
        for block in view["blocks"]:
            if block.get("type") != "input":
                continue
            element = block["element"]
            text = values.get(element["action_id"], "")
            text = text[: element.get("max_length", PLAIN_TEXT_INPUT_MAX)]
            if not text and not block.get("optional", False):
                raise ValueError(f"Slack's client won't submit an empty {block['block_id']}")
            state[block["block_id"]] = {
                element["action_id"]: {"type": "plain_text_input", "value": text or None}
            }
        shown = {k: v for k, v in view.items() if not k.startswith("_")}
        return {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": "dockwise-test"},
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": TEAM_ID,
            },
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "trigger_id": self.new_trigger(),
            "view": {
                **shown,
                "state": {"values": state},
                "hash": uuid.uuid4().hex[:16],
                "root_view_id": view_id,
                "previous_view_id": None,
                "bot_id": BOT_ID,
            },
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def home_opened(self, user: str = "U0ALICE", tab: str = "home") -> dict[str, Any]:
        return {
            "type": "app_home_opened",
            "user": user,
            "channel": "D0HOME",
            "tab": tab,
            "event_ts": self.next_ts(),
        }

    def link_shared(self, urls: list[str], *, channel: str = "C0GENERAL") -> dict[str, Any]:
        from urllib.parse import urlsplit

        ts = self.next_ts()
        return {
            "type": "link_shared",
            "channel": channel,
            "is_bot_user_member": True,
            "user": "U0ALICE",
            "message_ts": ts,
            "unfurl_id": "C123456.7890.UNFURL",
            "source": "conversations_history",
            "event_ts": ts,
            "links": [{"domain": urlsplit(u).hostname, "url": u} for u in urls],
        }

    def current(self, channel: str) -> list[dict[str, Any]]:
        """The bot's messages now in ``channel`` (edits applied, deletions gone), in order."""
        return [m for _, m in sorted(self.messages.items()) if m.get("channel") == channel]

    def api_calls(self, method: str) -> list[Record]:
        return [r for r in self.records if r.kind == "api" and r.name == method]


def buttons(record_or_payload: Record | dict[str, Any]) -> list[dict[str, Any]]:
    """Every button element in a posted message (a record or a message payload)."""
    data = record_or_payload.data if isinstance(record_or_payload, Record) else record_or_payload
    return [
        element
        for block in data.get("blocks") or []
        if block.get("type") == "actions"
        for element in block.get("elements") or []
    ]


def new_event_id() -> str:
    return "Ev" + uuid.uuid4().hex[:12].upper()


def event_callback(
    event: dict[str, Any], event_id: str, team_id: str = TEAM_ID, bot_user_id: str = BOT_USER_ID
) -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "team_id": team_id,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [
            {"team_id": team_id, "user_id": bot_user_id, "is_bot": True, "enterprise_id": None}
        ],
        "is_ext_shared_channel": False,
    }


def block_texts(records: list[Record]) -> list[str]:
    """Every text (sections, fields, context elements, headers) of the posted messages."""
    out: list[str] = []
    for record in records:
        for block in record.data.get("blocks") or []:
            if "text" in block:
                out.append(block["text"]["text"])
            out += [f["text"] for f in block.get("fields", [])]
            out += [
                e["text"] if isinstance(e["text"], str) else e["text"]["text"]
                for e in block.get("elements", [])
                if "text" in e
            ]
    return out
