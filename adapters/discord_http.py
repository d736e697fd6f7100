"""Discord HTTP interactions: ``POST /discord/interactions`` on the bot's web app.

Discord sends interactions to the "Interactions Endpoint URL" of the application instead
of the gateway when one is set, so slash commands scale with the web tier while gateway
pods keep mentions and DMs. Spec: Discord's developer docs, "Receiving and Responding"
(interactions) and "Interaction Object".

* Every request is verified with Ed25519 (PyNaCl) over ``X-Signature-Timestamp`` + the raw
  body against ``X-Signature-Ed25519`` and the application's public key
  (``DISCORD_PUBLIC_KEY``): a missing or bad signature, or a timestamp more than
  ``MAX_SKEW`` seconds from now, gets 401 and nothing is answered.
* PING (type 1) gets PONG. Unknown interaction types get 400.
* Application commands (type 2) are the gateway's: ``/ask``, ``/image-explain``, the
  "Explain image" message command and ``/dockerfile-explain`` (answered with its modal,
  callback type 9). Autocomplete (type 4) of ``/image-explain image`` is answered with
  callback type 8; modal submissions (type 5) and buttons (type 3, custom ids
  ``dockwise_*:<value>``) are handled like the gateway handles them.
* A reply the engine finishes within ``INLINE_DEADLINE`` seconds is the response itself
  (callback type 4); a slower one is deferred (type 5) and sent later by editing the
  original response (``PATCH /webhooks/{application}/{token}/messages/@original``), more
  messages as follow-ups (``POST /webhooks/{application}/{token}``). Explanations are
  always deferred and the original response shows their progress until the result.
* Errors the asker caused are private (flag 64): an immediate ephemeral response, or,
  after a deferral, the public placeholder deleted and an ephemeral follow-up.
* At shutdown, deferred answers still running get ``SHUTDOWN_GRACE`` seconds to finish.

``InteractionFollowups`` is the webhook side on its own (no public key or bot token): what
a worker process needs to answer a deferred interaction from its ``Context``
(application id, interaction token, asker).

The endpoint only translates: answers come from :class:`bot.engine.Engine` and are
rendered by :mod:`adapters.discord_embeds`, exactly as on the gateway. Request bodies and
interaction tokens are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from adapters.discord_dockerfile import EMPTY_ERROR, MAX_INPUT, MODAL_TITLE
from adapters.discord_embeds import RenderedMessage, render_plain, render_reply, resolve_custom_id
from bot.engine import Asker, Engine, error_reply
from bot.errors import DockwiseError, InvalidInput
from bot.links import find_image_reference
from bot.progress import ProgressRelay
from bot.reply import ACTION_FEEDBACK, Reply, ReplyKind

log = logging.getLogger("adapters.discord")

INTERACTIONS_PATH = "/discord/interactions"
DEFAULT_API_URL = "https://discord.com/api/v10"
#: Seconds a request's timestamp may differ from now (replayed requests are refused).
MAX_SKEW = 300
#: Seconds the engine gets to answer inside the request (Discord waits 3 s at most).
INLINE_DEADLINE = 2.0
EPHEMERAL = 64
NO_MENTIONS: dict[str, Any] = {"parse": []}

# Interaction types and callback types (Discord's "Interaction Object" and "Interaction
# Response Object").
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
PONG, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE = 1, 4, 5
AUTOCOMPLETE_RESULT, MODAL = 8, 9
CHAT_INPUT, MESSAGE_COMMAND = 1, 3

#: The ``/dockerfile-explain`` modal sent over HTTP: fixed ids, so its submission can land
#: on any web replica (the gateway's modal lives in one process's memory).
MODAL_CUSTOM_ID = "dockwise_dockerfile_modal"
MODAL_INPUT_ID = "dockerfile"
MODAL_PLACEHOLDER = 'FROM python:3.12-slim\nCOPY . /app\nCMD ["python", "/app/main.py"]'
EXPIRED_MODAL = "That form is too old for me to read: run /dockerfile-explain again."
UNKNOWN_COMMAND = "I don't know that command: try /ask or /image-explain."
MISSING_OPTION = "That command needs its {name} option."
#: Times a webhook call is retried after Discord answers 429 (honouring ``retry_after``).
RATE_LIMIT_RETRIES = 3
RETRY_AFTER_MAX = 10.0
#: Seconds ``close`` lets deferred answers still running finish before cancelling them
#: (below the web pods' 20 s termination grace period in deploy/kubernetes/scale/web.yaml).
SHUTDOWN_GRACE = 10.0
#: What a deferred answer cut off by shutdown leaves in its original response.
INTERRUPTED = "I was restarted before I could finish that: please ask again."


class SignatureError(Exception):
    """The request is not signed by Discord (the reason is safe to log)."""


def verify_signature(
    key: VerifyKey,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    *,
    now: float,
    max_skew: float = MAX_SKEW,
) -> None:
    """Check Discord's Ed25519 signature of ``timestamp + body`` (``signature`` is hex;
    ``timestamp`` Unix seconds as text; ``now`` Unix seconds). Raises ``SignatureError``
    when a header is missing, malformed, stale (more than ``max_skew`` seconds from ``now``)
    or the signature does not verify."""
    if not signature or not timestamp:
        raise SignatureError("missing signature headers")
    try:
        sent_at = int(timestamp)
        raw_signature = bytes.fromhex(signature)
    except ValueError:
        raise SignatureError("malformed signature headers") from None
    if abs(now - sent_at) > max_skew:
        raise SignatureError("stale timestamp")
    try:
        key.verify(timestamp.encode() + body, raw_signature)
    except (BadSignatureError, ValueError):
        raise SignatureError("bad signature") from None


def verify_key(public_key: str) -> VerifyKey:
    """The Ed25519 key from ``DISCORD_PUBLIC_KEY`` (64 hex characters); raises
    ``InvalidInput`` with a one-line message when it is not one."""
    try:
        raw = bytes.fromhex(public_key.strip())
        if len(raw) != 32:
            raise ValueError
        return VerifyKey(raw)
    except ValueError:
        raise InvalidInput(
            "DISCORD_PUBLIC_KEY must be the application's public key from the developer "
            "portal (64 hex characters)."
        ) from None


class WebhookError(Exception):
    """Discord refused a webhook call: ``status`` and Discord's error message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Context:
    """One interaction: what its follow-ups need, and who asked."""

    application_id: str
    token: str
    asker: Asker


def delivery_target(ctx: Context) -> dict[str, Any]:
    """``ctx`` as a JSON-ready delivery target (``bot.jobs.Delivery``): what a worker
    needs to finish the deferred interaction (no bot token)."""
    return {
        "application_id": ctx.application_id,
        "token": ctx.token,
        "user": ctx.asker.user,
        "channel": ctx.asker.channel,
        "team": ctx.asker.team,
    }


def context_of(target: dict[str, Any]) -> Context:
    """The ``Context`` a ``delivery_target`` describes; raises ValueError when it lacks
    the application id or token."""
    if not target.get("application_id") or not target.get("token"):
        raise ValueError("a Discord delivery needs application_id and token")
    channel, team = target.get("channel"), target.get("team")
    return Context(
        str(target["application_id"]),
        str(target["token"]),
        Asker(
            "discord",
            str(target.get("user") or "unknown"),
            str(channel) if channel else None,
            str(team) if team else None,
        ),
    )


@dataclass(slots=True)
class Answer:
    """The HTTP response (an interaction callback) and work to run once it is sent."""

    body: dict[str, Any]
    after: Callable[[], Awaitable[None]] | None = None


@dataclass(slots=True)
class _Acked:
    """Set once the callback is written, so no webhook call overtakes it."""

    event: asyncio.Event = field(default_factory=asyncio.Event)


def message_payload(rendered: RenderedMessage, *, flags: int = 0) -> dict[str, Any]:
    """A rendered message as webhook/callback ``data`` (mentions disabled)."""
    payload = rendered.to_dict()
    payload["allowed_mentions"] = NO_MENTIONS
    if flags:
        payload["flags"] = flags
    return payload


def private(reply: Reply) -> Answer:
    """``reply`` (an error) as an immediate ephemeral response."""
    first = (render_reply(reply) or [RenderedMessage()])[0]
    return Answer({"type": CHANNEL_MESSAGE, "data": message_payload(first, flags=EPHEMERAL)})


def _object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def asker_of(payload: dict[str, Any]) -> Asker:
    """Who sent the interaction: ``member.user`` in a server, ``user`` in a DM (a field
    that is not an object counts as absent: user id ``"unknown"``)."""
    member = _object(payload.get("member"))
    user = _object(member.get("user")) or _object(payload.get("user"))
    channel = payload.get("channel_id") or _object(payload.get("channel")).get("id")
    guild = payload.get("guild_id")
    return Asker(
        "discord",
        str(user.get("id") or "unknown"),
        str(channel) if channel else None,
        str(guild) if guild else None,
    )


def options_of(data: dict[str, Any]) -> dict[str, Any]:
    """A chat command's top-level options by name."""
    options = data.get("options")
    return {
        str(o.get("name")): o.get("value")
        for o in (options if isinstance(options, list) else [])
        if isinstance(o, dict)
    }


def modal_values(data: dict[str, Any]) -> dict[str, str]:
    """A submitted modal's text inputs by custom id (action rows or label components)."""
    out: dict[str, str] = {}
    rows = data.get("components")
    for row in rows if isinstance(rows, list) else []:
        row = _object(row)
        inner = row.get("components") or ([row["component"]] if row.get("component") else [])
        for element in inner if isinstance(inner, list) else []:
            if isinstance(element, dict) and "custom_id" in element:
                out[str(element["custom_id"])] = str(element.get("value") or "")
    return out


def dockerfile_modal() -> dict[str, Any]:
    """The ``/dockerfile-explain`` modal (callback type 9 ``data``)."""
    text_input = {
        "type": 4,
        "custom_id": MODAL_INPUT_ID,
        "style": 2,
        "label": "Dockerfile",
        "placeholder": MODAL_PLACEHOLDER,
        "max_length": MAX_INPUT,
        "required": True,
    }
    return {
        "custom_id": MODAL_CUSTOM_ID,
        "title": MODAL_TITLE,
        "components": [{"type": 1, "components": [text_input]}],
    }


async def compute(work: Callable[[], Awaitable[Reply]]) -> Reply:
    """Run the engine; a bug becomes a friendly reply (logged), never a crash."""
    from adapters.discord import FAILURE_MESSAGE

    try:
        return await work()
    except DockwiseError as exc:
        return error_reply(str(exc))
    except Exception:
        log.exception("the engine failed while answering")
        return error_reply(FAILURE_MESSAGE)


class InteractionFollowups:
    """Sends on interactions' webhooks (``{api_url}/webhooks/{application}/{token}``): what
    answers a deferred interaction later, here or in a worker process (no bot token or
    public key needed; a token lasts 15 minutes). ``api_url`` is the REST base
    (``DOCKWISE_DISCORD_API_URL``, default Discord's v10 API)."""

    def __init__(self, api_url: str | None = None) -> None:
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def finish(self, ctx: Context, reply: Reply) -> None:
        """Send a deferred reply: its first message replaces the original response, the
        rest are follow-ups; an error deletes the original and goes privately. If Discord
        refuses the embeds before any is shown, the reply is sent as plain text."""
        if reply.kind is ReplyKind.ERROR:
            with contextlib.suppress(WebhookError):
                await self.delete_original(ctx)
            first = (render_reply(reply) or [RenderedMessage()])[0]
            try:
                await self.followup(ctx, message_payload(first, flags=EPHEMERAL))
            except WebhookError as exc:
                log.warning("Discord refused a private reply (%s)", exc)
            return
        sent = 0
        try:
            for rendered in render_reply(reply):
                payload = message_payload(rendered)
                if sent == 0:
                    await self.edit_original(ctx, {"content": "", **payload})
                else:
                    await self.followup(ctx, payload)
                sent += 1
            if sent:
                return
        except WebhookError as exc:
            log.warning("Discord refused a reply embed (%s)", exc)
            if sent:
                return  # part of the answer is out; a plain repeat would duplicate it
        try:
            for index, content in enumerate(render_plain(reply)):
                plain = {"content": content, "allowed_mentions": NO_MENTIONS}
                if index == 0:
                    await self.edit_original(ctx, {**plain, "embeds": [], "components": []})
                else:
                    await self.followup(ctx, plain)
        except WebhookError as exc:
            log.warning("Discord refused a plain reply (%s)", exc)

    async def edit_original(self, ctx: Context, payload: dict[str, Any]) -> None:
        await self._webhook(ctx, "PATCH", "/messages/@original", payload)

    async def delete_original(self, ctx: Context) -> None:
        await self._webhook(ctx, "DELETE", "/messages/@original", None)

    async def followup(self, ctx: Context, payload: dict[str, Any]) -> None:
        await self._webhook(ctx, "POST", "", payload)

    async def _webhook(
        self, ctx: Context, method: str, tail: str, payload: dict[str, Any] | None
    ) -> None:
        """One call on the interaction's webhook (no bot token needed); waits out 429s.
        Raises ``WebhookError`` (status and Discord's message; never the URL, which holds
        the interaction token)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        url = f"{self.api_url}/webhooks/{ctx.application_id}/{ctx.token}{tail}"
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                async with self._session.request(method, url, json=payload) as response:
                    if response.status < 400:
                        return
                    text = await response.text()
                    try:
                        error = json.loads(text)
                    except ValueError:
                        error = {}
                    if not isinstance(error, dict):
                        error = {}
                    if response.status == 429 and attempt < RATE_LIMIT_RETRIES:
                        wait = float(error.get("retry_after") or 1.0)
                        await asyncio.sleep(min(max(wait, 0.0), RETRY_AFTER_MAX))
                        continue
                    message = str(error.get("message") or response.reason or "error")[:200]
                    raise WebhookError(response.status, message)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise WebhookError(0, type(exc).__name__) from None
        raise WebhookError(429, "still rate limited")


class DiscordInteractions:
    """The ``POST /discord/interactions`` endpoint for one application.

    ``public_key`` is the hex Ed25519 key (``DISCORD_PUBLIC_KEY``); ``application_id``, when
    given, must match the interactions' ``application_id`` (else 401); ``api_url`` is the
    REST base webhooks are called on (``DOCKWISE_DISCORD_API_URL``). Raises
    ``InvalidInput`` for a malformed key."""

    def __init__(
        self,
        engine: Engine,
        *,
        public_key: str,
        application_id: str | None = None,
        api_url: str | None = None,
    ) -> None:
        self.engine = engine
        self.key = verify_key(public_key)
        self.application_id = application_id
        self.followups = InteractionFollowups(api_url)
        self.inline_deadline = INLINE_DEADLINE
        self.max_skew: float = MAX_SKEW
        self.progress_min_interval = 1.0
        self.progress_heartbeat = 2.0
        self.shutdown_grace = SHUTDOWN_GRACE
        self._tasks: set[asyncio.Task[None]] = set()

    def mount(self, app: web.Application) -> None:
        """Add the route to ``app`` (before it starts) and close with it."""
        app.router.add_post(INTERACTIONS_PATH, self.handle)
        app.on_cleanup.append(lambda _app: self.close())

    async def close(self) -> None:
        """Give deferred answers still running up to ``shutdown_grace`` seconds to finish
        (an update or scale-down must not leave an asker "thinking" forever), cancel what
        is left and close the webhook session."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.shutdown_grace)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.followups.close()

    async def drain(self) -> None:
        """Wait for every follow-up started so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- HTTP ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            verify_signature(
                self.key,
                request.headers.get("X-Signature-Ed25519"),
                request.headers.get("X-Signature-Timestamp"),
                body,
                now=time.time(),
                max_skew=self.max_skew,
            )
        except SignatureError as exc:
            log.warning("discord: refused an interaction request (%s)", exc)
            return web.json_response({"error": "invalid request signature"}, status=401)
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError
        except ValueError:
            return web.json_response({"error": "the body is not a JSON object"}, status=400)
        kind = payload.get("type")
        app_id = str(payload.get("application_id") or "")
        if self.application_id is not None and app_id and app_id != self.application_id:
            log.warning("discord: an interaction for another application was refused")
            return web.json_response({"error": "wrong application"}, status=401)
        if kind == PING:
            return web.json_response({"type": PONG})
        token = payload.get("token")
        if kind not in (APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT):
            unknown = f"unknown interaction type {str(kind)[:20]}"
            return web.json_response({"error": unknown}, status=400)
        if not isinstance(token, str) or not (app_id or self.application_id):
            return web.json_response({"error": "the interaction has no token"}, status=400)
        context = Context(app_id or str(self.application_id), token, asker_of(payload))
        raw_data = payload.get("data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        try:
            answer = await self._answer(int(kind), data, payload, context)
        except Exception:  # a payload shape we did not expect: answer, don't crash
            from adapters.discord import FAILURE_MESSAGE

            log.exception("discord: could not handle an interaction of type %s", kind)
            answer = private(error_reply(FAILURE_MESSAGE))
            if kind == AUTOCOMPLETE:  # Discord takes nothing but choices here
                answer = Answer({"type": AUTOCOMPLETE_RESULT, "data": {"choices": []}})
        response = web.json_response(answer.body)
        if answer.after is not None:
            acked = _Acked()
            deferred = answer.body.get("type") == DEFERRED_CHANNEL_MESSAGE
            self._spawn(self._after_ack(acked, answer.after, context if deferred else None))
            try:
                await response.prepare(request)
                await response.write_eof()
            finally:
                acked.event.set()
        return response

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_ack(
        self,
        acked: _Acked,
        after: Callable[[], Awaitable[None]],
        deferred: Context | None = None,
    ) -> None:
        """Run ``after`` once the callback is out. A ``deferred`` answer cancelled (by
        ``close``) replaces its original response with ``INTERRUPTED``, best effort."""
        await acked.event.wait()
        try:
            await after()
        except asyncio.CancelledError:
            if deferred is not None:
                with contextlib.suppress(WebhookError, TimeoutError):
                    async with asyncio.timeout(2):
                        await self.followups.edit_original(
                            deferred,
                            {"content": INTERRUPTED, "embeds": [], "components": []},
                        )
            raise
        except Exception:
            log.exception("discord: a deferred answer failed")

    # -- dispatch --------------------------------------------------------------------------

    async def _answer(
        self, kind: int, data: dict[str, Any], payload: dict[str, Any], ctx: Context
    ) -> Answer:
        if kind == AUTOCOMPLETE:
            return self._autocomplete(data, payload)
        if kind == MESSAGE_COMPONENT:
            return await self._click(data, ctx)
        if kind == MODAL_SUBMIT:
            return await self._modal(data, ctx)
        return await self._command(data, ctx)

    async def _command(self, data: dict[str, Any], ctx: Context) -> Answer:
        from adapters.discord import CONTEXT_MENU, NO_IMAGE_IN_MESSAGE
        from adapters.discord_dockerfile import COMMAND as DOCKERFILE_COMMAND

        name, command_type = data.get("name"), data.get("type", CHAT_INPUT)
        log.info("discord: command %s over HTTP", str(name)[:40])
        options = options_of(data)
        if command_type == CHAT_INPUT and name == "ask":
            question = options.get("question")
            if not isinstance(question, str):
                return private(error_reply(MISSING_OPTION.format(name="question")))
            return await self._reply(ctx, lambda: self.engine.handle(question, asker=ctx.asker))
        if command_type == CHAT_INPUT and name == "image-explain":
            image = options.get("image")
            if not isinstance(image, str):
                return private(error_reply(MISSING_OPTION.format(name="image")))
            return self._explain(ctx, image)
        if command_type == CHAT_INPUT and name == DOCKERFILE_COMMAND:
            return Answer({"type": MODAL, "data": dockerfile_modal()})
        if command_type == MESSAGE_COMMAND and name == CONTEXT_MENU:
            messages = _object(_object(data.get("resolved")).get("messages"))
            target = _object(messages.get(str(data.get("target_id"))))
            embeds = target.get("embeds")
            texts = [str(target.get("content") or "")] + [
                str(part)
                for embed in (embeds if isinstance(embeds, list) else [])
                if isinstance(embed, dict)
                for part in (embed.get("title"), embed.get("description"))
                if part
            ]
            reference = find_image_reference("\n".join(t for t in texts if t))
            if reference is None:
                return private(
                    Reply(kind=ReplyKind.ERROR, title="No image there", body=NO_IMAGE_IN_MESSAGE)
                )
            return self._explain(ctx, reference)
        return private(error_reply(UNKNOWN_COMMAND))

    def _autocomplete(self, data: dict[str, Any], payload: dict[str, Any]) -> Answer:
        options = data.get("options")
        focused = next(
            (
                o
                for o in (options if isinstance(options, list) else [])
                if isinstance(o, dict) and o.get("focused")
            ),
            None,
        )
        choices: list[dict[str, str]] = []
        if data.get("name") == "image-explain" and focused is not None:
            guild = payload.get("guild_id")
            typed = str(focused.get("value") or "")
            refs = self.engine.image_choices(typed, team=str(guild) if guild else None)
            choices = [{"name": ref, "value": ref} for ref in refs[:25]]
        return Answer({"type": AUTOCOMPLETE_RESULT, "data": {"choices": choices}})

    async def _click(self, data: dict[str, Any], ctx: Context) -> Answer:
        from adapters.discord import EXPIRED_BUTTON

        raw = str(data.get("custom_id") or "")
        parsed = resolve_custom_id(raw)
        if parsed is None:
            return private(error_reply(EXPIRED_BUTTON))
        element_id, value = parsed
        log.info("discord: button %s pressed", element_id)
        if element_id.startswith(ACTION_FEEDBACK):  # thanks, privately
            reply = await compute(lambda: self.engine.action(element_id, value, asker=ctx.asker))
            first = (render_reply(reply) or [RenderedMessage()])[0]
            return Answer(
                {"type": CHANNEL_MESSAGE, "data": message_payload(first, flags=EPHEMERAL)}
            )
        return await self._reply(
            ctx, lambda: self.engine.action(element_id, value, asker=ctx.asker)
        )

    async def _modal(self, data: dict[str, Any], ctx: Context) -> Answer:
        if data.get("custom_id") != MODAL_CUSTOM_ID:
            return private(error_reply(EXPIRED_MODAL))
        text = modal_values(data).get(MODAL_INPUT_ID, "")
        if not text.strip():
            return private(error_reply(EMPTY_ERROR))
        return await self._reply(ctx, lambda: self.engine.explain_dockerfile(text, asker=ctx.asker))

    # -- answering -------------------------------------------------------------------------

    async def _reply(self, ctx: Context, work: Callable[[], Awaitable[Reply]]) -> Answer:
        """Inline (callback 4) when the engine answers within ``inline_deadline``; else
        deferred (callback 5) and sent by editing the original response."""
        task = asyncio.create_task(compute(work))
        done, _ = await asyncio.wait({task}, timeout=self.inline_deadline)
        if task not in done:

            async def later() -> None:
                await self.followups.finish(ctx, await task)

            return Answer({"type": DEFERRED_CHANNEL_MESSAGE}, after=later)
        reply = task.result()
        if reply.kind is ReplyKind.ERROR:
            return private(reply)
        messages = render_reply(reply)
        if not messages:
            return private(error_reply("I had nothing to say to that."))
        first, rest = messages[0], messages[1:]

        async def more() -> None:
            for rendered in rest:
                await self.followups.followup(ctx, message_payload(rendered))

        return Answer(
            {"type": CHANNEL_MESSAGE, "data": message_payload(first)},
            after=more if rest else None,
        )

    def _explain(self, ctx: Context, image: str) -> Answer:
        """Refuse a malformed reference privately; else defer, show the progress in the
        original response, then replace it with the result."""
        refused = self.engine.check_reference(image)
        if refused is not None:
            return private(refused)

        async def run() -> None:
            if self.engine.jobs is not None:  # a job worker finishes it (DiscordPlatform.deliver)
                from adapters.discord import FAILURE_MESSAGE

                try:
                    refused = await self.engine.explain_later(
                        image, asker=ctx.asker, delivery_target=delivery_target(ctx)
                    )
                except Exception:
                    log.exception("the engine failed while answering")
                    refused = error_reply(FAILURE_MESSAGE)
                if refused is not None:  # not queued: bad input, rate limit, busy
                    await self.followups.finish(ctx, refused)
                return

            async def show(line: str) -> None:
                await self.followups.edit_original(
                    ctx, {"content": line, "allowed_mentions": NO_MENTIONS}
                )

            relay = ProgressRelay(
                show,
                min_interval=self.progress_min_interval,
                heartbeat=self.progress_heartbeat,
            )
            try:
                reply = await compute(
                    lambda: self.engine.explain(image, asker=ctx.asker, progress=relay)
                )
            finally:
                await relay.close()
            await self.followups.finish(ctx, reply)

        return Answer({"type": DEFERRED_CHANNEL_MESSAGE}, after=run)


__all__ = [
    "INTERACTIONS_PATH",
    "INTERRUPTED",
    "MODAL_CUSTOM_ID",
    "Context",
    "DiscordInteractions",
    "InteractionFollowups",
    "SignatureError",
    "verify_key",
    "verify_signature",
]
