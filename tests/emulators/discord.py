"""A small Discord emulator (REST + gateway) on a loopback port, for driving real discord.py.

It answers the REST calls discord.py makes at login, for command sync and for replies, and
runs a gateway websocket (HELLO, IDENTIFY, heartbeat ACK, READY, GUILD_CREATE, RESUME)
into which tests inject ``MESSAGE_CREATE`` and ``INTERACTION_CREATE`` (slash commands,
autocomplete (type 4, answered with callback type 8), button clicks (component
interactions, type 3), message context-menu commands, and modal submissions (type 5, after
a command or click answered with a modal: callback type 9, validated and kept in
``Interaction.modal``)). Like Discord, it validates
what bots send (content, embed and component limits, empty messages, unknown references,
interaction acknowledgement) and answers violations with a 400 and Discord's error JSON,
so a reply the real Discord would reject fails here too. Everything is recorded in
``calls`` (every REST request, in order) and ``messages`` (every accepted message).

With ``interactions_url`` set (the bot's Interactions Endpoint URL), interactions are not
dispatched on the gateway but POSTed there like Discord's outgoing webhooks: signed with
the emulator's own Ed25519 key (``public_key`` is its hex public half) over
``X-Signature-Timestamp`` + the raw body, answered within ``response_timeout`` seconds,
the HTTP response taken as the interaction callback (validated as above) and recorded in
``deliveries``. Webhook calls for an interaction wait until its callback is in, as on
Discord, where the callback comes first.

Written from Discord's public API documentation; it does not import discord.py, so tests
do not check the adapter against the library it uses.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from aiohttp import WSMsgType, web
from nacl.signing import SigningKey

API_PREFIX = "/api/v10"
HEARTBEAT_INTERVAL_MS = 3_600_000  # an hour: tests never depend on heartbeat timing
BOT_TOKEN = "emulated-bot-token"  # a test credential, not a secret

# Discord's documented message limits.
CONTENT_MAX = 2000
EMBEDS_MAX = 10
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
AUTHOR_NAME_MAX = 256
EMBED_TOTAL_MAX = 6000

# Gateway opcodes.
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME, OP_HELLO, OP_HEARTBEAT_ACK = 0, 1, 2, 6, 10, 11

COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")
ROWS_MAX, ROW_BUTTONS_MAX, CUSTOM_ID_MAX, BUTTON_LABEL_MAX = 5, 5, 100, 80
CHOICES_MAX, CHOICE_NAME_MAX, CHOICE_VALUE_MAX = 25, 100, 100
MODAL_TITLE_MAX, MODAL_COMPONENTS_MAX, INPUT_LABEL_MAX, INPUT_PLACEHOLDER_MAX = 45, 5, 45, 100
INPUT_VALUE_MAX = 4000
EPHEMERAL = 64
T = TypeVar("T")


@dataclass
class Call:
    """One REST request the bot made, and what the emulator answered."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    status: int = 0
    response: Any = None


@dataclass
class Interaction:
    id: str
    token: str
    name: str
    channel_id: str
    guild_id: str | None
    acknowledged: int | None = None  # callback type once acknowledged
    original: dict[str, Any] | None = None
    followups: list[dict[str, Any]] = field(default_factory=list)
    type: int = 2  # 2 application command, 3 component, 4 autocomplete, 5 modal submit
    modal: dict[str, Any] | None = None  # the modal a type-9 callback opened
    choices: list[dict[str, Any]] | None = None  # an autocomplete's answer
    original_deleted: bool = False
    pending: bool = False  # sent to the Interactions Endpoint URL, no response yet


@dataclass
class Delivery:
    """One interaction POSTed to the bot's Interactions Endpoint URL, and its outcome."""

    payload: dict[str, Any]
    status: int = 0  # 0: no response within response_timeout
    response: Any = None
    error: str | None = None  # why Discord would show "This interaction failed"


@dataclass
class GatewaySession:
    ws: web.WebSocketResponse
    path: str = ""
    session_id: str = ""
    shard: tuple[int, int] = (0, 1)
    intents: int | None = None
    sequence: int = 0
    heartbeats: int = 0
    identified: bool = False
    resumed: bool = False


class DiscordError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            out["errors"] = self.errors
        return out


def _too_long(limit: int) -> dict[str, Any]:
    return {
        "_errors": [
            {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {limit} or fewer in length."}
        ]
    }


def _required() -> dict[str, Any]:
    return {"_errors": [{"code": "BASE_TYPE_REQUIRED", "message": "This field is required"}]}


def embed_total(embed: dict[str, Any]) -> int:
    """Characters Discord counts for an embed (title, description, fields, footer, author)."""
    total = len(embed.get("title") or "") + len(embed.get("description") or "")
    for fld in embed.get("fields") or []:
        total += len(fld.get("name") or "") + len(fld.get("value") or "")
    total += len((embed.get("footer") or {}).get("text") or "")
    total += len((embed.get("author") or {}).get("name") or "")
    return total


def validate_message(payload: dict[str, Any]) -> None:
    """Raise DiscordError as Discord would for a message body it rejects."""
    errors: dict[str, Any] = {}
    content = payload.get("content")
    if content is not None and not isinstance(content, str):
        errors["content"] = {"_errors": [{"code": "STRING_TYPE_CONVERT", "message": "bad"}]}
    elif content is not None and len(content) > CONTENT_MAX:
        errors["content"] = _too_long(CONTENT_MAX)
    embeds = payload.get("embeds") or []
    if len(embeds) > EMBEDS_MAX:
        errors["embeds"] = _too_long(EMBEDS_MAX)
    embed_errors: dict[str, Any] = {}
    for index, embed in enumerate(embeds[:EMBEDS_MAX]):
        these: dict[str, Any] = {}
        if len(embed.get("title") or "") > EMBED_TITLE_MAX:
            these["title"] = _too_long(EMBED_TITLE_MAX)
        if len(embed.get("description") or "") > EMBED_DESCRIPTION_MAX:
            these["description"] = _too_long(EMBED_DESCRIPTION_MAX)
        fields = embed.get("fields") or []
        if len(fields) > EMBED_FIELDS_MAX:
            these["fields"] = _too_long(EMBED_FIELDS_MAX)
        field_errors: dict[str, Any] = {}
        for findex, fld in enumerate(fields):
            problems: dict[str, Any] = {}
            name, value = fld.get("name"), fld.get("value")
            if not name:
                problems["name"] = _required()
            elif len(name) > FIELD_NAME_MAX:
                problems["name"] = _too_long(FIELD_NAME_MAX)
            if not value:
                problems["value"] = _required()
            elif len(value) > FIELD_VALUE_MAX:
                problems["value"] = _too_long(FIELD_VALUE_MAX)
            if problems:
                field_errors[str(findex)] = problems
        if field_errors:
            these["fields"] = field_errors
        if len((embed.get("footer") or {}).get("text") or "") > FOOTER_MAX:
            these["footer"] = {"text": _too_long(FOOTER_MAX)}
        if len((embed.get("author") or {}).get("name") or "") > AUTHOR_NAME_MAX:
            these["author"] = {"name": _too_long(AUTHOR_NAME_MAX)}
        if embed_total(embed) > EMBED_TOTAL_MAX:
            these["_errors"] = [
                {"code": "MAX_EMBED_SIZE_EXCEEDED", "message": "Embed size exceeds maximum size"}
            ]
        if these:
            embed_errors[str(index)] = these
    if embed_errors:
        errors["embeds"] = embed_errors
    elif sum(embed_total(e) for e in embeds) > EMBED_TOTAL_MAX:
        errors["embeds"] = {
            "_errors": [
                {"code": "MAX_EMBED_SIZE_EXCEEDED", "message": "Embed size exceeds maximum size"}
            ]
        }
    component_errors = _component_errors(payload.get("components"))
    if component_errors:
        errors["components"] = component_errors
    allowed = payload.get("allowed_mentions")
    if allowed is not None:
        parse = allowed.get("parse", [])
        if any(p not in ("users", "roles", "everyone") for p in parse) or (
            "users" in parse and allowed.get("users")
        ):
            errors["allowed_mentions"] = {
                "_errors": [{"code": "MUTUALLY_EXCLUSIVE", "message": "Invalid parse values"}]
            }
    if errors:
        raise DiscordError(400, 50035, "Invalid Form Body", errors)
    if not content and not embeds:
        raise DiscordError(400, 50006, "Cannot send an empty message")


def _text_inputs(modal: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """A modal's text inputs, each with its label when a Label component (type 18) holds it."""
    out: list[tuple[dict[str, Any], str | None]] = []
    for component in modal.get("components") or []:
        if component.get("type") == 1:
            out += [(c, None) for c in component.get("components") or []]
        elif component.get("type") == 18:
            out.append((component.get("component") or {}, component.get("label")))
    return out


def modal_errors(modal: Any) -> dict[str, Any] | None:
    """Why Discord would refuse a modal callback's ``data`` (``None`` if it would show it):
    custom id and title, 1 to 5 rows (an action row holding one text input, or a label
    component holding one), and each text input's style and length bounds."""
    if not isinstance(modal, dict):
        return {"data": _required()}
    if not 1 <= len(str(modal.get("custom_id") or "")) <= CUSTOM_ID_MAX:
        return {"custom_id": _too_long(CUSTOM_ID_MAX)}
    if not 1 <= len(str(modal.get("title") or "")) <= MODAL_TITLE_MAX:
        return {"title": _too_long(MODAL_TITLE_MAX)}
    rows = modal.get("components")
    if not isinstance(rows, list) or not 1 <= len(rows) <= MODAL_COMPONENTS_MAX:
        return {"components": _too_long(MODAL_COMPONENTS_MAX)}
    for row in rows:
        inner = row.get("components") if row.get("type") == 1 else [row.get("component")]
        if row.get("type") not in (1, 18) or not isinstance(inner, list) or len(inner) != 1:
            return {"components": _required()}
    for element, label in _text_inputs(modal):
        label = label if label is not None else element.get("label")
        high, low = element.get("max_length", INPUT_VALUE_MAX), element.get("min_length", 0)
        if (
            element.get("type") != 4
            or element.get("style") not in (1, 2)
            or not 1 <= len(str(element.get("custom_id") or "")) <= CUSTOM_ID_MAX
            or not 1 <= len(str(label or "")) <= INPUT_LABEL_MAX
            or len(str(element.get("placeholder") or "")) > INPUT_PLACEHOLDER_MAX
            or not (isinstance(high, int) and 1 <= high <= INPUT_VALUE_MAX)
            or not (isinstance(low, int) and 0 <= low <= high)
            or len(str(element.get("value") or "")) > high
        ):
            return {"components": {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH"}]}}
    return None


def _component_errors(components: Any) -> dict[str, Any] | None:
    """Discord's checks on action rows of buttons (the only components dockwise sends)."""
    if components is None:
        return None
    if not isinstance(components, list) or len(components) > ROWS_MAX:
        return _too_long(ROWS_MAX)
    ids: list[str] = []
    for index, row in enumerate(components):
        buttons = row.get("components") or []
        if row.get("type") != 1 or not 1 <= len(buttons) <= ROW_BUTTONS_MAX:
            return {str(index): {"components": _too_long(ROW_BUTTONS_MAX)}}
        for bindex, button in enumerate(buttons):
            custom_id = str(button.get("custom_id") or "")
            label = str(button.get("label") or "")
            if (
                button.get("type") != 2
                or button.get("style") not in (1, 2, 3, 4)
                or not 1 <= len(custom_id) <= CUSTOM_ID_MAX
                or not 1 <= len(label) <= BUTTON_LABEL_MAX
            ):
                return {str(index): {"components": {str(bindex): _required()}}}
            ids.append(custom_id)
    if len(set(ids)) != len(ids):
        return {"_errors": [{"code": "COMPONENT_CUSTOM_ID_DUPLICATED", "message": "Duplicate ids"}]}
    return None


class DiscordEmulator:
    """Discord's REST API and gateway for one bot, one guild with a channel and a thread."""

    def __init__(self, *, token: str = BOT_TOKEN) -> None:
        self.token = token
        self._ids = itertools.count(1_300_000_000_000_000_000)
        self.bot_user = self.new_user("dockwise", bot=True)
        self.application_id = self.new_id()
        self.owner = self.new_user("owner")
        self.member = self.new_user("learner")
        self.guild_id = self.new_id()
        self.channel_id = self.new_id()
        self.thread_id = self.new_id()
        self.dm_channel_id = self.new_id()
        self.calls: list[Call] = []
        self.messages: list[dict[str, Any]] = []  # accepted from the bot, in order
        self.user_messages: dict[str, dict[str, Any]] = {}  # injected, by id
        self.sessions: list[GatewaySession] = []
        self.commands: dict[str | None, list[dict[str, Any]]] = {}  # guild id (None: global)
        self.interactions: dict[str, Interaction] = {}
        # False: the bot lacks Embed Links in the channel, so Discord drops its embeds.
        self.embed_links = True
        # HTTP interactions: where to POST them (None: the gateway), signed with this key.
        self.interactions_url: str | None = None
        self.signing_key = SigningKey.generate()
        self.response_timeout = 3.0  # Discord's limit for the initial response
        self.deliveries: list[Delivery] = []
        # The next this many webhook calls are refused with 429 and retry_after 0.
        self.rate_limit_webhooks = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/resume", self._gateway)  # announced as resume_gateway_url
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        for session in self.sessions:
            await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def resume_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/resume"

    # -- waiting -------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], T], within: float = 15.0) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every recorded change)."""
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(predicate), within)

    async def wait_ready(self, sessions: int = 1) -> None:
        await self.wait_for(lambda: sum(s.identified for s in self.sessions) >= sessions)

    # -- objects -------------------------------------------------------------------------

    def new_id(self) -> str:
        return str(next(self._ids))

    def new_user(self, name: str, *, bot: bool = False) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": self.new_id(),
            "username": name,
            "discriminator": "0",
            "global_name": name,
            "avatar": None,
        }
        if bot:
            user["bot"] = True
        return user

    def _guild(self) -> dict[str, Any]:
        everyone = {
            "id": self.guild_id,
            "name": "@everyone",
            "permissions": str((1 << 10) | (1 << 11) | (1 << 14) | (1 << 16) | (1 << 38)),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
        }
        now = _timestamp()
        return {
            "id": self.guild_id,
            "name": "Container Learners",
            "icon": None,
            "owner_id": self.owner["id"],
            "roles": [everyone],
            "emojis": [],
            "stickers": [],
            "features": [],
            "member_count": 3,
            "large": False,
            "unavailable": False,
            "joined_at": now,
            "members": [{"user": self.bot_user, "roles": [], "joined_at": now, "flags": 0}],
            "voice_states": [],
            "presences": [],
            "channels": [
                {
                    "id": self.channel_id,
                    "type": 0,
                    "guild_id": self.guild_id,
                    "name": "help",
                    "position": 0,
                    "permission_overwrites": [],
                    "nsfw": False,
                    "parent_id": None,
                }
            ],
            "threads": [
                {
                    "id": self.thread_id,
                    "type": 11,
                    "guild_id": self.guild_id,
                    "parent_id": self.channel_id,
                    "owner_id": self.member["id"],
                    "name": "my Dockerfile question",
                    "member_count": 2,
                    "message_count": 0,
                    "thread_metadata": {
                        "archived": False,
                        "auto_archive_duration": 1440,
                        "archive_timestamp": now,
                        "locked": False,
                    },
                }
            ],
        }

    def _bot_message(
        self, channel_id: str, payload: dict[str, Any], *, webhook: bool = False
    ) -> dict[str, Any]:
        content = payload.get("content") or ""
        allowed = payload.get("allowed_mentions")
        # What Discord would ping, given the content and allowed_mentions (default: all).
        parse = ["users", "roles", "everyone"] if allowed is None else allowed.get("parse", [])
        explicit_users = [] if allowed is None else [str(u) for u in allowed.get("users", [])]
        mentioned_ids = re.findall(r"<@!?(\d+)>", content)
        pinged = [u for u in mentioned_ids if "users" in parse or u in explicit_users]
        message: dict[str, Any] = {
            "id": self.new_id(),
            "channel_id": channel_id,
            "author": self.bot_user,
            "content": content,
            "timestamp": _timestamp(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": "everyone" in parse
            and ("@everyone" in content or "@here" in content),
            "mentions": [{"id": u, "username": "someone", "discriminator": "0"} for u in pinged],
            "mention_roles": [],
            "attachments": [],
            "embeds": payload.get("embeds") or [],
            "components": payload.get("components") or [],
            "pinned": False,
            "type": 0,
            "flags": int(payload.get("flags") or 0) & EPHEMERAL if webhook else 0,
        }
        if channel_id != self.dm_channel_id:
            message["guild_id"] = self.guild_id
        reference = payload.get("message_reference")
        if reference is not None:
            message["type"] = 19
            message["message_reference"] = {  # Discord answers with string snowflakes
                k: str(v) if k.endswith("_id") else v for k, v in reference.items()
            }
            replied = self.user_messages.get(str(reference.get("message_id")))
            if replied is not None and (allowed is None or allowed.get("replied_user")):
                message["mentions"].append(replied["author"])
        if webhook:
            message["webhook_id"] = self.application_id
            message["application_id"] = self.application_id
        # Kept for assertions; not part of Discord's message object.
        message["_sent"] = payload
        return message

    # -- REST ----------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        parts = request.path[len(API_PREFIX) :].strip("/").split("/")
        if parts[:1] == ["webhooks"] and len(parts) >= 3:
            token = parts[2]
            waiting = next((i for i in self.interactions.values() if i.token == token), None)
            if waiting is not None and waiting.pending:
                await self.wait_for(lambda: not waiting.pending)
            if self.rate_limit_webhooks > 0:
                self.rate_limit_webhooks -= 1
                limited = {"message": "You are being rate limited.", "retry_after": 0.0}
                call = Call(request.method, request.path[len(API_PREFIX) :], {}, None, {})
                call.status, call.response = 429, {**limited, "global": False}
                self.calls.append(call)
                return web.json_response(call.response, status=429)
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
        call = Call(
            method=request.method,
            path=request.path[len(API_PREFIX) :],
            query=dict(request.query),
            body=body,
            headers=dict(request.headers),
        )
        try:
            status, response = self._handle(call)
        except DiscordError as exc:
            status, response = exc.status, exc.body()
        call.status, call.response = status, response
        self.calls.append(call)
        await self._notify()
        if status == 204:
            return web.Response(status=204)
        # discord.py only parses JSON when content-type is exactly application/json.
        return web.Response(
            status=status,
            body=json.dumps(response).encode(),
            headers={"Content-Type": "application/json"},
        )

    def _authorised(self, call: Call) -> None:
        if call.headers.get("Authorization") != f"Bot {self.token}":
            raise DiscordError(401, 0, "401: Unauthorized")

    def _handle(self, call: Call) -> tuple[int, Any]:
        method, parts = call.method, call.path.strip("/").split("/")
        if parts[:1] == ["interactions"] and len(parts) == 4 and parts[3] == "callback":
            return self._interaction_callback(parts[1], parts[2], call)
        if parts[:1] == ["webhooks"]:
            return self._webhook(method, parts[1:], call)
        self._authorised(call)
        if method == "GET" and parts == ["users", "@me"]:
            return 200, self.bot_user
        if method == "GET" and parts == ["oauth2", "applications", "@me"]:
            return 200, self._application()
        if method == "GET" and parts == ["gateway", "bot"]:
            return 200, {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        if method == "PUT" and parts[:1] == ["applications"] and parts[-1] == "commands":
            if parts[1] != self.application_id:
                raise DiscordError(403, 50001, "Missing Access")
            guild = parts[3] if len(parts) == 5 and parts[2] == "guilds" else None
            if guild is not None and guild != self.guild_id:
                raise DiscordError(403, 50001, "Missing Access")
            return 200, self._sync_commands(guild, call.body)
        if len(parts) == 3 and parts[0] == "channels":
            channel = parts[1]
            if channel not in (self.channel_id, self.thread_id, self.dm_channel_id):
                raise DiscordError(404, 10003, "Unknown Channel")
            if method == "POST" and parts[2] == "typing":
                return 204, None
            if method == "POST" and parts[2] == "messages":
                return 200, self._create_channel_message(channel, call.body or {})
        if len(parts) == 4 and parts[0] == "channels" and parts[2] == "messages":
            return self._edit_channel_message(method, parts[1], parts[3], call.body or {})
        raise DiscordError(404, 0, "404: Not Found")

    def _application(self) -> dict[str, Any]:
        return {
            "id": self.application_id,
            "name": "dockwise",
            "icon": None,
            "description": "Unblocks people learning containers",
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.owner,
            "verify_key": "00" * 32,
            "flags": 0,
            "team": None,
            "bot": self.bot_user,
        }

    def _sync_commands(self, guild: str | None, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, list):
            raise DiscordError(400, 50035, "Invalid Form Body", {"_errors": []})
        stored = []
        for index, command in enumerate(body):
            name = command.get("name", "")
            description = command.get("description", "")
            if command.get("type", 1) in (2, 3):  # context menus: any case, no description
                if not 1 <= len(name) <= 32 or description:
                    raise DiscordError(
                        400, 50035, "Invalid Form Body", {str(index): {"name": _required()}}
                    )
                stored.append(
                    {
                        **command,
                        "description": "",
                        "id": self.new_id(),
                        "application_id": self.application_id,
                        "version": self.new_id(),
                        **({"guild_id": guild} if guild else {}),
                    }
                )
                continue
            if not COMMAND_NAME.match(name) or name != name.lower():
                raise DiscordError(
                    400, 50035, "Invalid Form Body", {str(index): {"name": _required()}}
                )
            if not 1 <= len(description) <= 100:
                raise DiscordError(
                    400, 50035, "Invalid Form Body", {str(index): {"description": _required()}}
                )
            stored.append(
                {
                    **command,
                    "id": self.new_id(),
                    "application_id": self.application_id,
                    "version": self.new_id(),
                    "type": command.get("type", 1),
                    **({"guild_id": guild} if guild else {}),
                }
            )
        self.commands[guild] = stored
        return stored

    def _check_reference(self, channel: str, payload: dict[str, Any]) -> None:
        reference = payload.get("message_reference")
        if reference is None:
            return
        replied = self.user_messages.get(str(reference.get("message_id")))
        if replied is not None and replied.get("deleted"):
            replied = None
        if replied is None and reference.get("fail_if_not_exists") is False:
            del payload["message_reference"]  # Discord sends it as a plain message
            return
        if replied is None or replied["channel_id"] != channel:
            raise DiscordError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "message_reference": {
                        "_errors": [{"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": ""}]
                    }
                },
            )

    def _create_channel_message(self, channel: str, payload: dict[str, Any]) -> dict[str, Any]:
        validate_message(payload)
        if not self.embed_links:
            payload = {k: v for k, v in payload.items() if k != "embeds"}
            if not payload.get("content"):
                raise DiscordError(400, 50006, "Cannot send an empty message")
        self._check_reference(channel, payload)
        message = self._bot_message(channel, payload)
        self.messages.append(message)
        return message

    def current_messages(self) -> list[dict[str, Any]]:
        """Every bot message as it is now (edits applied, deleted ones gone), in order."""
        latest: dict[str, dict[str, Any]] = {}
        for message in self.messages:
            latest[message["id"]] = message
        return [m for m in latest.values() if not m.get("_deleted")]

    def _edit_channel_message(
        self, method: str, channel: str, message_id: str, payload: dict[str, Any]
    ) -> tuple[int, Any]:
        found = next(
            (
                m
                for m in reversed(self.messages)
                if m["id"] == message_id and m["channel_id"] == channel
            ),
            None,
        )
        if found is None or found.get("_deleted") or found["author"]["id"] != self.bot_user["id"]:
            raise DiscordError(404, 10008, "Unknown Message")
        if method == "DELETE":
            found["_deleted"] = True
            return 204, None
        if method != "PATCH":
            raise DiscordError(405, 0, "405: Method Not Allowed")
        if not self.embed_links and "embeds" in payload:
            payload = {**payload, "embeds": []}  # dropped, as in a new message
        merged = {**found, **payload}
        validate_message(merged)
        if not merged.get("content") and not merged.get("embeds"):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        edited = {**found, **{k: v for k, v in payload.items() if k != "flags"}}
        edited["content"] = edited.get("content") or ""  # null clears the content
        edited["edited_timestamp"] = _timestamp()
        edited["_edits"] = int(found.get("_edits", 0)) + 1
        self.messages.append(edited)
        return 200, edited

    def _interaction_callback(self, interaction_id: str, token: str, call: Call) -> tuple[int, Any]:
        interaction = self.interactions.get(interaction_id)
        if interaction is None or interaction.token != token:
            raise DiscordError(404, 10062, "Unknown interaction")
        if interaction.acknowledged is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        payload = call.body or {}
        kind = payload.get("type")
        allowed = {2: (4, 5, 9), 3: (4, 5, 6, 7, 9), 4: (8,), 5: (4, 5)}[interaction.type]
        if kind not in allowed:
            raise DiscordError(400, 50035, "Invalid Form Body", {"type": _required()})
        data = payload.get("data") or {}
        if kind == 9:
            errors = modal_errors(data)
            if errors is not None:
                raise DiscordError(400, 50035, "Invalid Form Body", {"data": errors})
            interaction.acknowledged = kind
            interaction.modal = data
            return 204, None
        if kind == 8:
            choices = data.get("choices")
            if not isinstance(choices, list) or len(choices) > CHOICES_MAX:
                raise DiscordError(400, 50035, "Invalid Form Body", {"choices": _too_long(25)})
            for choice in choices:
                name, value = str(choice.get("name") or ""), choice.get("value")
                if not 1 <= len(name) <= CHOICE_NAME_MAX or not isinstance(value, str):
                    raise DiscordError(400, 50035, "Invalid Form Body", {"choices": _required()})
                if len(value) > CHOICE_VALUE_MAX:
                    raise DiscordError(400, 50035, "Invalid Form Body", {"choices": _too_long(100)})
            interaction.acknowledged = kind
            interaction.choices = choices
            return 204, None
        if kind == 4:
            validate_message(data)
        interaction.acknowledged = kind
        original = self._bot_message(interaction.channel_id, data, webhook=True)
        original["type"] = 20
        original["_interaction"] = interaction.id
        original["flags"] = data.get("flags", 0) | (128 if kind == 5 else 0)  # 128: loading
        interaction.original = original
        if kind == 4:
            self.messages.append(original)
        if call.query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        return 200, {
            "interaction": {
                "id": interaction.id,
                "type": 2,
                "response_message_id": original["id"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(data.get("flags", 0) & 64),
            },
            "resource": {"type": kind, "message": original},
        }

    def _webhook(self, method: str, parts: list[str], call: Call) -> tuple[int, Any]:
        if len(parts) < 2 or parts[0] != self.application_id:
            raise DiscordError(404, 10015, "Unknown Webhook")
        interaction = next((i for i in self.interactions.values() if i.token == parts[1]), None)
        if interaction is None or interaction.acknowledged in (None, 9):  # a modal: no messages
            raise DiscordError(404, 10015, "Unknown Webhook")
        payload = call.body or {}
        if method == "POST" and len(parts) == 2:
            validate_message(payload)
            assert interaction.original is not None
            if (
                interaction.acknowledged == 5
                and not interaction.followups
                and not interaction.original_deleted
                and interaction.original.get("flags", 0) & 128
            ):
                # The first follow-up after a "thinking" defer replaces the loading message
                # (once the original was edited, it is no longer loading: a new message).
                message = self._bot_message(interaction.channel_id, payload, webhook=True)
                message["id"] = interaction.original["id"]
                message["type"] = 20
            else:
                message = self._bot_message(interaction.channel_id, payload, webhook=True)
            message["_interaction"] = interaction.id
            interaction.followups.append(message)
            self.messages.append(message)
            return 200, message
        if (
            parts[2:] == ["messages", "@original"]
            and interaction.original is not None
            and not interaction.original_deleted
        ):
            if method == "GET":
                return 200, interaction.original
            if method == "DELETE":
                interaction.original_deleted = True
                interaction.original["_deleted"] = True
                return 204, None
            if method == "PATCH":
                validate_message({**interaction.original, **payload})
                interaction.original.update({k: v for k, v in payload.items() if k != "flags"})
                interaction.original["content"] = interaction.original.get("content") or ""
                interaction.original["flags"] &= ~128
                self.messages.append(interaction.original)
                return 200, interaction.original
        raise DiscordError(404, 10008, "Unknown Message")

    # -- gateway -------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = GatewaySession(ws=ws, path=request.path, session_id=secrets.token_hex(8))
        self.sessions.append(session)
        await ws.send_json({"op": OP_HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            op, data = message.get("op"), message.get("d")
            if op == OP_HEARTBEAT:
                session.heartbeats += 1
                await ws.send_json({"op": OP_HEARTBEAT_ACK})
            elif op == OP_IDENTIFY:
                await self._identify(session, data)
            elif op == OP_RESUME:
                await self._resume(session, data)
            await self._notify()
        return ws

    async def _identify(self, session: GatewaySession, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        session.intents = data.get("intents")
        shard = data.get("shard") or [0, 1]
        session.shard = (int(shard[0]), int(shard[1]))
        await self._dispatch(
            session,
            "READY",
            {
                "v": 10,
                "user": self.bot_user,
                "guilds": [{"id": self.guild_id, "unavailable": True}]
                if self._shard_of(self.guild_id, session.shard[1]) == session.shard[0]
                else [],
                "session_id": session.session_id,
                "resume_gateway_url": self.resume_url,
                "shard": list(session.shard),
                "application": {"id": self.application_id, "flags": 0},
                "private_channels": [],
                "relationships": [],
            },
        )
        if self._shard_of(self.guild_id, session.shard[1]) == session.shard[0]:
            await self._dispatch(session, "GUILD_CREATE", self._guild())
        session.identified = True

    async def _resume(self, session: GatewaySession, data: dict[str, Any]) -> None:
        old = next((s for s in self.sessions if s.session_id == data.get("session_id")), None)
        if data.get("token") != self.token or old is None:
            await session.ws.send_json({"op": 9, "d": False})  # INVALID_SESSION
            return
        session.session_id, session.shard, session.intents = old.session_id, old.shard, old.intents
        session.sequence = int(data.get("seq") or 0)
        session.resumed = session.identified = True
        old.identified = False
        await self._dispatch(session, "RESUMED", {})

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway connection the way Discord does on a server hiccup."""
        for session in self.sessions:
            if not session.ws.closed:
                await session.ws.close(code=code, message=b"Unknown error")

    @staticmethod
    def _shard_of(guild_id: str | None, count: int) -> int:
        return 0 if guild_id is None else (int(guild_id) >> 22) % count

    async def _dispatch(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        session.sequence += 1
        await session.ws.send_json(
            {"op": OP_DISPATCH, "t": event, "s": session.sequence, "d": data}
        )

    async def dispatch(self, event: str, data: dict[str, Any], guild_id: str | None) -> None:
        """Send a dispatch to the identified session that owns ``guild_id`` (DMs: shard 0);
        interactions go to ``interactions_url`` instead when it is set."""
        if event == "INTERACTION_CREATE" and self.interactions_url is not None:
            await self.post_interaction(data)
            return
        targets = [
            s
            for s in self.sessions
            if s.identified
            and not s.ws.closed
            and self._shard_of(guild_id, s.shard[1]) == s.shard[0]
        ]
        if not targets:
            raise AssertionError("no identified gateway session to dispatch to")
        await self._dispatch(targets[-1], event, data)

    # -- HTTP interactions (outgoing webhooks) -------------------------------------------

    @property
    def public_key(self) -> str:
        """The application's public key as the developer portal shows it (hex)."""
        return self.signing_key.verify_key.encode().hex()

    def sign(self, timestamp: str, body: bytes) -> str:
        """Discord's ``X-Signature-Ed25519``: Ed25519 over timestamp + body, hex."""
        return self.signing_key.sign(timestamp.encode() + body).signature.hex()

    async def post_signed(
        self,
        body: bytes,
        *,
        timestamp: str | None = None,
        signature: str | None = None,
        sign: bool = True,
    ) -> tuple[int, Any]:
        """POST ``body`` to ``interactions_url`` with Discord's signature headers (the
        given ``timestamp``/``signature`` replace the honest ones; ``sign=False`` sends
        none). Returns (status, JSON or text); status 0 when no answer came within
        ``response_timeout`` seconds."""
        assert self.interactions_url is not None, "set interactions_url first"
        stamp = timestamp if timestamp is not None else str(int(datetime.now(UTC).timestamp()))
        headers = {"Content-Type": "application/json", "User-Agent": "Discord-Interactions/1.0"}
        if sign:
            headers["X-Signature-Timestamp"] = stamp
            headers["X-Signature-Ed25519"] = signature or self.sign(stamp, body)
        timeout = aiohttp.ClientTimeout(total=self.response_timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.interactions_url, data=body, headers=headers) as response,
            ):
                text = await response.text()
                try:
                    return response.status, json.loads(text)
                except ValueError:
                    return response.status, text
        except TimeoutError:
            return 0, None

    async def post_interaction(self, payload: dict[str, Any]) -> Delivery:
        """Send ``payload`` as Discord does and apply the response as its callback."""
        delivery = Delivery(payload=payload)
        interaction = self.interactions.get(str(payload.get("id")))
        if interaction is not None:
            interaction.pending = True
        try:
            delivery.status, delivery.response = await self.post_signed(
                json.dumps(payload).encode()
            )
            if delivery.status == 0:
                delivery.error = f"no response within {self.response_timeout} s"
            elif delivery.status != 200 or not isinstance(delivery.response, dict):
                delivery.error = f"HTTP {delivery.status}"
            elif interaction is not None:
                call = Call("POST", "(response)", {}, delivery.response, {})
                try:
                    call.status, call.response = self._interaction_callback(
                        interaction.id, interaction.token, call
                    )
                except DiscordError as exc:
                    delivery.error = exc.message
                    call.status, call.response = exc.status, exc.body()
                self.calls.append(call)
            elif payload.get("type") != 1 or delivery.response != {"type": 1}:
                delivery.error = "not a PONG"
        finally:
            if interaction is not None:
                interaction.pending = False
            self.deliveries.append(delivery)
            await self._notify()
        return delivery

    async def ping(self) -> Delivery:
        """Discord's PING (type 1), as sent when the endpoint URL is saved."""
        payload = {
            "id": self.new_id(),
            "application_id": self.application_id,
            "type": 1,
            "token": "itoken-" + secrets.token_hex(16),
            "version": 1,
        }
        return await self.post_interaction(payload)

    # -- what tests inject ---------------------------------------------------------------

    def mention(self) -> str:
        return f"<@{self.bot_user['id']}>"

    async def user_message(
        self,
        content: str,
        *,
        where: str = "channel",
        author: dict[str, Any] | None = None,
        mention_bot: bool = False,
    ) -> dict[str, Any]:
        """A user posts ``content`` in the channel, the thread or a DM (``where``)."""
        author = author or self.member
        channel = {"channel": self.channel_id, "thread": self.thread_id, "dm": self.dm_channel_id}[
            where
        ]
        mentions_bot = re.search(rf"<@!?{self.bot_user['id']}>", content) is not None
        mentioned = [self.bot_user] if mention_bot or mentions_bot else []
        message: dict[str, Any] = {
            "id": self.new_id(),
            "channel_id": channel,
            "author": author,
            "content": content,
            "timestamp": _timestamp(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": "@everyone" in content,
            "mentions": mentioned,
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        guild_id = None if where == "dm" else self.guild_id
        if guild_id is not None:
            message["guild_id"] = guild_id
            message["member"] = {"roles": [], "joined_at": _timestamp(), "flags": 0}
        self.user_messages[message["id"]] = message
        await self.dispatch("MESSAGE_CREATE", message, guild_id)
        return message

    async def slash_command(
        self, name: str, options: dict[str, str], *, where: str = "channel"
    ) -> Interaction:
        """A user runs ``/name`` with string options; the command must have been synced."""
        guild_id = None if where == "dm" else self.guild_id
        synced = self.commands.get(guild_id, []) + self.commands.get(None, [])
        command = next((c for c in synced if c["name"] == name), None)
        if command is None:
            raise AssertionError(f"/{name} was never synced to Discord")
        channel_id = self.dm_channel_id if guild_id is None else self.channel_id
        interaction = Interaction(
            id=self.new_id(),
            token="itoken-" + secrets.token_hex(16),
            name=name,
            channel_id=channel_id,
            guild_id=guild_id,
        )
        self.interactions[interaction.id] = interaction
        data: dict[str, Any] = {
            "id": command["id"],
            "name": name,
            "type": 1,
            "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()],
        }
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        payload: dict[str, Any] = {
            "id": interaction.id,
            "application_id": self.application_id,
            "type": 2,
            "data": data,
            "token": interaction.token,
            "version": 1,
            "locale": "en-US",
            "app_permissions": "0",
            "attachment_size_limit": 8 * 1024 * 1024,
            "entitlements": [],
            "authorizing_integration_owners": {"0": guild_id or "0"},
        }
        if guild_id is None:
            payload["user"] = self.member
            payload["channel"] = {"id": channel_id, "type": 1, "recipients": [self.member]}
            payload["channel_id"] = channel_id
            payload["context"] = 1
        else:
            payload["guild_id"] = guild_id
            payload["guild_locale"] = "en-US"
            payload["channel_id"] = channel_id
            payload["channel"] = {"id": channel_id, "type": 0, "guild_id": guild_id}
            payload["member"] = {
                "user": self.member,
                "roles": [],
                "joined_at": _timestamp(),
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": "0",
            }
            payload["context"] = 0
        await self.dispatch("INTERACTION_CREATE", payload, guild_id)
        return interaction

    def _interaction_payload(
        self, interaction: Interaction, kind: int, data: dict[str, Any], guild_id: str | None
    ) -> dict[str, Any]:
        channel_id = interaction.channel_id
        payload: dict[str, Any] = {
            "id": interaction.id,
            "application_id": self.application_id,
            "type": kind,
            "data": data,
            "token": interaction.token,
            "version": 1,
            "locale": "en-US",
            "app_permissions": "0",
            "attachment_size_limit": 8 * 1024 * 1024,
            "entitlements": [],
            "authorizing_integration_owners": {"0": guild_id or "0"},
            "channel_id": channel_id,
        }
        if guild_id is None:
            payload["user"] = self.member
            payload["channel"] = {"id": channel_id, "type": 1, "recipients": [self.member]}
            payload["context"] = 1
        else:
            payload["guild_id"] = guild_id
            payload["guild_locale"] = "en-US"
            payload["channel"] = {"id": channel_id, "type": 0, "guild_id": guild_id}
            payload["member"] = {
                "user": self.member,
                "roles": [],
                "joined_at": _timestamp(),
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": "0",
            }
            payload["context"] = 0
        return payload

    def _new_interaction(self, name: str, kind: int, guild_id: str | None) -> Interaction:
        channel_id = self.dm_channel_id if guild_id is None else self.channel_id
        interaction = Interaction(
            id=self.new_id(),
            token="itoken-" + secrets.token_hex(16),
            name=name,
            channel_id=channel_id,
            guild_id=guild_id,
            type=kind,
        )
        self.interactions[interaction.id] = interaction
        return interaction

    def _synced(self, name: str, kind: int, guild_id: str | None) -> dict[str, Any]:
        synced = self.commands.get(guild_id, []) + self.commands.get(None, [])
        command = next((c for c in synced if c["name"] == name and c.get("type", 1) == kind), None)
        if command is None:
            raise AssertionError(f"command {name!r} (type {kind}) was never synced to Discord")
        return command

    async def autocomplete(
        self, name: str, option: str, typed: str, *, where: str = "channel"
    ) -> Interaction:
        """A user types ``typed`` into ``option`` of ``/name`` (an autocomplete, type 4)."""
        guild_id = None if where == "dm" else self.guild_id
        command = self._synced(name, 1, guild_id)
        declared = next((o for o in command.get("options") or [] if o["name"] == option), None)
        if declared is None or not declared.get("autocomplete"):
            raise AssertionError(f"/{name} {option} was not synced with autocomplete")
        interaction = self._new_interaction(name, 4, guild_id)
        data = {
            "id": command["id"],
            "name": name,
            "type": 1,
            "options": [{"name": option, "type": 3, "value": typed, "focused": True}],
        }
        payload = self._interaction_payload(interaction, 4, data, guild_id)
        await self.dispatch("INTERACTION_CREATE", payload, guild_id)
        return interaction

    async def click(self, message: dict[str, Any], custom_id: str) -> Interaction:
        """A user clicks the button ``custom_id`` on the bot's ``message`` (type 3)."""
        ids = [c["custom_id"] for row in message.get("components") or [] for c in row["components"]]
        if custom_id not in ids:
            raise AssertionError(f"no button {custom_id!r} on that message")
        guild_id = message.get("guild_id")
        interaction = self._new_interaction(custom_id, 3, guild_id)
        interaction.channel_id = message["channel_id"]
        shown = {k: v for k, v in message.items() if not k.startswith("_")}
        data = {"custom_id": custom_id, "component_type": 2}
        payload = self._interaction_payload(interaction, 3, data, guild_id)
        payload["message"] = shown
        await self.dispatch("INTERACTION_CREATE", payload, guild_id)
        return interaction

    async def submit_modal(self, opened: Interaction, values: dict[str, str]) -> Interaction:
        """The user fills the modal ``opened`` answered with (callback type 9) and presses
        submit: a ``MODAL_SUBMIT`` interaction (type 5) carrying ``values`` (text input
        custom id -> text) in the modal's own component layout. Like Discord's client it
        refuses (``ValueError``) to submit a required input left empty or shorter than
        ``min_length``, and stops text at ``max_length``."""
        modal = opened.modal
        if modal is None:
            raise AssertionError("that interaction was not answered with a modal")
        interaction = self._new_interaction(str(modal["custom_id"]), 5, opened.guild_id)
        interaction.channel_id = opened.channel_id
        filled: dict[str, dict[str, Any]] = {}
        for element, _ in _text_inputs(modal):
            custom_id = element["custom_id"]
            text = values.get(custom_id, "")[: element.get("max_length", INPUT_VALUE_MAX)]
            if element.get("required", True) and len(text) < max(1, element.get("min_length", 0)):
                raise ValueError(f"Discord's client won't submit {custom_id!r} empty or short")
            filled[custom_id] = {"type": 4, "custom_id": custom_id, "value": text}
        rows: list[dict[str, Any]] = []
        for row in modal["components"]:
            if row["type"] == 1:
                inner = [filled[c["custom_id"]] for c in row["components"]]
                rows.append({"type": 1, "components": inner})
            else:
                rows.append({"type": 18, "component": filled[row["component"]["custom_id"]]})
        data = {"custom_id": modal["custom_id"], "components": rows}
        payload = self._interaction_payload(interaction, 5, data, opened.guild_id)
        await self.dispatch("INTERACTION_CREATE", payload, opened.guild_id)
        return interaction

    async def message_command(self, name: str, target: dict[str, Any]) -> Interaction:
        """A user picks the context-menu command ``name`` on ``target`` (type 3 command)."""
        guild_id = target.get("guild_id")
        command = self._synced(name, 3, guild_id)
        interaction = self._new_interaction(name, 2, guild_id)
        interaction.channel_id = target["channel_id"]
        shown = {k: v for k, v in target.items() if not k.startswith("_")}
        data = {
            "id": command["id"],
            "name": name,
            "type": 3,
            "target_id": target["id"],
            "resolved": {"messages": {target["id"]: shown}},
        }
        payload = self._interaction_payload(interaction, 2, data, guild_id)
        await self.dispatch("INTERACTION_CREATE", payload, guild_id)
        return interaction

    async def delete_user_message(self, message_id: str) -> None:
        """The user deletes their message (the bot is not told, as without that intent)."""
        self.user_messages[message_id]["deleted"] = True

    # -- queries -------------------------------------------------------------------------

    def shown(self, interaction: Interaction) -> list[dict[str, Any]]:
        """The interaction's messages as users see them now: the original response (unless
        deleted or still "thinking") and the follow-ups, in order."""
        original = interaction.original
        out: list[dict[str, Any]] = []
        followup_ids = {m["id"] for m in interaction.followups}
        if (
            original is not None
            and not interaction.original_deleted
            and not original.get("flags", 0) & 128
            and original["id"] not in followup_ids
        ):
            out.append(original)
        return out + interaction.followups

    def calls_to(self, method: str, prefix: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path.startswith(prefix)]

    def replies_to(self, message_id: str) -> list[dict[str, Any]]:
        """Bot messages replying to ``message_id`` and the ones that followed in the channel."""
        current = self.current_messages()
        for index, message in enumerate(current):
            reference = message.get("message_reference") or {}
            if str(reference.get("message_id")) == message_id:
                channel = message["channel_id"]
                return [
                    m
                    for m in current[index:]
                    if m["channel_id"] == channel and "_interaction" not in m
                ]
        return []


def _timestamp() -> str:
    return datetime.now(UTC).isoformat()
