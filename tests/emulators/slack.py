"""A small Slack emulator on loopback for testing the Slack adapter with real slack-bolt.

It implements what dockwise uses, and checks requests the way Slack does so tests are
honest:

- Web API under ``api_url``: ``auth.test``, ``chat.postMessage``, ``chat.postEphemeral``
  and ``apps.connections.open`` (bearer tokens checked; messages validated against Block
  Kit limits, answering ``invalid_blocks`` / ``msg_too_long`` / ``no_text`` like Slack).
- ``response_url`` endpoints for slash commands (validated the same way).
- A Socket Mode websocket: sends ``hello`` on connect, then whatever envelopes the test
  sends (``events_api``, ``slash_commands``), and records every ack.
- A client for HTTP mode that signs requests (``v0`` HMAC-SHA256 of ``v0:{ts}:{body}``)
  and records the bot's HTTP responses (a slash command's ack is the response body).

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

MAX_BLOCKS = 50
MAX_TEXT = 40_000
LIMITS = {"header": 150, "section": 3000, "field": 2000, "fields": 10, "context": 10}


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
        elif kind == "context":
            elements = block.get("elements") or []
            if not 0 < len(elements) <= LIMITS["context"]:
                return "invalid_blocks"
            if any(not 0 < len(e.get("text", "")) <= 3000 for e in elements):
                return "invalid_blocks"
        else:
            return "invalid_blocks"
    return None


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

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/response/{rid}", self._response_url)
        app.router.add_get("/link", self._socket)
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
        auth = request.headers.get("Authorization", "")
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if auth != f"Bearer {expected}":
            await self._record("api", method, payload, "invalid_auth")
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            await self._record("api", method, payload)
            return web.json_response(
                {
                    "ok": True,
                    "url": "https://dockwise-test.slack.com/",
                    "team": "dockwise test",
                    "user": "dockwise",
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "bot_id": BOT_ID,
                    "is_enterprise_install": False,
                }
            )
        if method == "apps.connections.open":
            await self._record("api", method, payload)
            return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"})
        if method in {"chat.postMessage", "chat.postEphemeral"}:
            error = "channel_not_found" if not payload.get("channel") else message_error(payload)
            await self._record("api", method, payload, error)
            if error:
                return web.json_response({"ok": False, "error": error})
            ts = self.next_ts()
            return web.json_response({"ok": True, "channel": payload["channel"], "ts": ts})
        await self._record("api", method, payload, "unknown_method")
        return web.json_response({"ok": False, "error": "unknown_method"})

    async def _response_url(self, request: web.Request) -> web.Response:
        payload = await request.json()
        error = message_error(payload)
        await self._record("response_url", request.match_info["rid"], payload, error)
        if error:
            return web.Response(status=400, text=error)
        return web.Response(text="ok")

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
        self, event: dict[str, Any], *, event_id: str | None = None, retry_attempt: int = 0
    ) -> str:
        """Deliver an Events API event over Socket Mode; returns the envelope id."""
        return await self._send_envelope(
            {
                "envelope_id": uuid.uuid4().hex,
                "type": "events_api",
                "accepts_response_payload": False,
                "retry_attempt": retry_attempt,
                "retry_reason": "timeout" if retry_attempt else "",
                "payload": event_callback(event, event_id or new_event_id()),
            }
        )

    async def socket_command(self, command: dict[str, Any]) -> str:
        """Deliver a slash command over Socket Mode; returns the envelope id."""
        return await self._send_envelope(
            {
                "envelope_id": uuid.uuid4().hex,
                "type": "slash_commands",
                "accepts_response_payload": True,
                "payload": command,
            }
        )

    async def wait_ack(self, envelope_id: str) -> Record:
        return await self.wait_for(lambda r: r.kind == "ack" and r.name == envelope_id)

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
        self, url: str, event: dict[str, Any], *, event_id: str | None = None, **kwargs: Any
    ) -> Record:
        body = json.dumps(event_callback(event, event_id or new_event_id()))
        return await self.http_post(url, body, "application/json", **kwargs)

    async def http_command(self, url: str, command: dict[str, Any], **kwargs: Any) -> Record:
        return await self.http_post(
            url, urlencode(command), "application/x-www-form-urlencoded", **kwargs
        )

    # --- payload builders ---------------------------------------------------------------

    def mention(
        self, text: str, *, channel: str = "C0GENERAL", thread_ts: str | None = None
    ) -> dict[str, Any]:
        event = {
            "type": "app_mention",
            "user": "U0ALICE",
            "text": f"<@{BOT_USER_ID}> {text}",
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
            "trigger_id": uuid.uuid4().hex,
        }


def new_event_id() -> str:
    return "Ev" + uuid.uuid4().hex[:12].upper()


def event_callback(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [
            {"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True, "enterprise_id": None}
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
            out += [e["text"] for e in block.get("elements", []) if "text" in e]
    return out
