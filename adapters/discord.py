"""The Discord adapter (discord.py 2.x): slash commands, mentions and DMs.

* ``/ask question:<text>`` and ``/image-explain image:<ref>`` are application commands. The
  bot defers at once (Discord allows 3 seconds) and sends the answer as follow-ups.
  ``/dockerfile-explain`` opens a modal (:mod:`adapters.discord_dockerfile`).
* A message that mentions the bot is answered as a reply to it (in a thread, the reply
  stays in the thread); direct messages need no mention. ``explain IMAGE`` works in both.
* Replies are embeds rendered by :mod:`adapters.discord_embeds`, split to fit Discord's
  limits. Every send disables mentions, so echoed user text never pings anyone.

The adapter only translates: every answer comes from :class:`bot.engine.Engine`.

* With ``DISCORD_PUBLIC_KEY`` (and ``DISCORD_APPLICATION_ID``), the same commands are also
  served over HTTP at ``POST /discord/interactions`` (:mod:`adapters.discord_http`) in
  the ``all`` and ``web`` roles; the gateway runs in the ``all`` and ``gateway`` roles when
  ``DISCORD_TOKEN`` is set, on ``DISCORD_SHARD_COUNT`` shards (``DISCORD_SHARD_IDS``: the
  ones this process runs).

* Errors the asker caused are private: an ephemeral (flag 64) follow-up, the public
  "thinking"/placeholder response deleted first.
* ``/image-explain`` answers "Inspecting IMAGE …" at once, edits that response with the
  progress and then with the result; its ``image`` option autocompletes (images explained
  in this server recently, then well-known official images). The message context-menu
  command "Explain image" explains the first image reference in a message.
* Buttons (custom ids ``dockwise_*:<value>``) come back as component interactions; the
  engine's reply is a follow-up (feedback thanks: ephemeral).
* With a job queue (the ``gateway`` role) explanations are handed over: a mention's or
  DM's placeholder reply (``message_target``: channel and message ids) or a slash
  command's interaction token is attached to the image's job as a delivery, and the
  worker running the job edits it with the progress and the result
  (``DiscordPlatform.deliver``: over REST with the bot token, no gateway shard, or on the
  interaction's webhook).

``DOCKWISE_DISCORD_API_URL`` (the REST base, like ``https://discord.com/api/v10``) and
``DOCKWISE_DISCORD_GATEWAY_URL`` point the client at another Discord, such as the test
emulator. discord.py keeps both in class attributes (``discord.http.Route.BASE`` and
``DiscordWebSocket.DEFAULT_GATEWAY``), so the client sets them when it logs in and restores
them when it closes. Resumes use the ``resume_gateway_url`` the gateway itself announces.

This module is ``adapters.discord``; ``import discord`` below is an absolute import and
resolves to the discord.py package, not to this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import aiohttp
import discord
import typer
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.discord_dockerfile import add_dockerfile_command, with_attached_dockerfile
from adapters.discord_embeds import (
    Button,
    RenderedMessage,
    render_plain,
    render_reply,
    resolve_custom_id,
)
from bot.chat import ChatAdapter
from bot.engine import Asker, Engine, error_reply
from bot.errors import DockwiseError, InvalidInput, Unauthorized, Unreachable
from bot.links import find_image_reference
from bot.progress import ExplainProgress, ProgressRelay
from bot.reply import ACTION_FEEDBACK, Reply, ReplyKind

if TYPE_CHECKING:
    from adapters.discord_http import DiscordInteractions, InteractionFollowups

log = logging.getLogger(__name__)

#: Sends message number ``index`` of a reply: embeds (and buttons), or plain ``content``
#: when not None.
Sender = Callable[[int, RenderedMessage, str | None], Awaitable[None]]

INVITE_SCOPES = ("bot", "applications.commands")
NO_MENTIONS = discord.AllowedMentions.none()
FAILURE_MESSAGE = "Something went wrong on my side while answering. Please try again in a moment."
ASK_EXAMPLE = "e.g. why do Dockerfiles start FROM ubuntu?"
IMAGE_EXAMPLE = "e.g. python:3.12-slim or ghcr.io/org/app:1.0"
CONTEXT_MENU = "Explain image"
NO_IMAGE_IN_MESSAGE = (
    "I found no image reference in that message (like `python:3.12-slim`, "
    "`docker pull nginx` or a hub.docker.com link)."
)
EXPIRED_BUTTON = "That button is too old for me to follow: ask the question again."
PROGRESS_MIN_INTERVAL = 1.0
PROGRESS_HEARTBEAT = 2.0
#: Progress edits a job worker makes to one placeholder message.
MESSAGE_PROGRESS_UPDATES = 10


class Buttons(discord.ui.View):
    """A reply's buttons. Not stored in discord.py's view store (clicks go through
    ``on_interaction`` by custom id), so they keep working after a restart."""

    def __init__(self, rows: list[list[Button]]) -> None:
        super().__init__(timeout=None)
        for index, row in enumerate(rows):
            for button in row:
                self.add_item(
                    discord.ui.Button(
                        style=discord.ButtonStyle(button.style),
                        label=button.label,
                        custom_id=button.custom_id,
                        row=index,
                    )
                )

    def is_dispatchable(self) -> bool:
        return False


def _view(rendered: RenderedMessage) -> dict[str, Any]:
    return {"view": Buttons(rendered.rows)} if rendered.rows else {}


def invite_permissions() -> discord.Permissions:
    """The least the bot needs: see channels, read history, send messages and embeds."""
    return discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        embed_links=True,
        read_message_history=True,
    )


class DiscordSettings(BaseSettings):
    """The Discord adapter's settings (``DiscordPlatform.settings_model``): environment
    variables or ``.env``, empty values unset, like ``bot.config.Settings``."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    discord_token: SecretStr | None = Field(None, validation_alias="DISCORD_TOKEN")
    discord_guild_id: int | None = Field(None, validation_alias="DISCORD_GUILD_ID")
    discord_api_url: str | None = Field(None, validation_alias="DOCKWISE_DISCORD_API_URL")
    discord_gateway_url: str | None = Field(None, validation_alias="DOCKWISE_DISCORD_GATEWAY_URL")
    discord_shard_count: int | None = Field(None, validation_alias="DISCORD_SHARD_COUNT")
    #: Which of the ``DISCORD_SHARD_COUNT`` shards this process runs: ``"0,1"`` (default: all).
    discord_shard_ids: str | None = Field(None, validation_alias="DISCORD_SHARD_IDS")
    #: The application's Ed25519 public key (hex): enables ``POST /discord/interactions``.
    discord_public_key: str | None = Field(None, validation_alias="DISCORD_PUBLIC_KEY")
    discord_application_id: str | None = Field(None, validation_alias="DISCORD_APPLICATION_ID")

    @field_validator("discord_application_id")
    @classmethod
    def _application_id(cls, value: str | None) -> str | None:
        """A snowflake (digits), surrounding spaces dropped: a wrong value would make every
        interaction, PING included, "for another application"."""
        if value is None:
            return None
        value = value.strip()
        if not value.isascii() or not value.isdigit():
            raise ValueError(
                "DISCORD_APPLICATION_ID must be the Application ID from the developer "
                "portal (a number like 123456789012345678)"
            )
        return value

    @field_validator("discord_public_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        """64 hex characters, checked when the settings are read (before anything loads)."""
        if value is None:
            return None
        from adapters.discord_http import verify_key

        try:
            verify_key(value)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @property
    def discord_enabled(self) -> bool:
        """A bot token (gateway), or HTTP interactions (public key and application id)."""
        return self.discord_token is not None or (
            self.discord_public_key is not None and self.discord_application_id is not None
        )


def invite_url(application_id: int) -> str:
    """The OAuth2 URL that adds the bot (with its slash commands) to a server."""
    return discord.utils.oauth_url(
        application_id, permissions=invite_permissions(), scopes=INVITE_SCOPES
    )


def strip_mentions(text: str, user_id: int) -> str:
    """``text`` without mentions of ``user_id`` (``<@ID>`` or ``<@!ID>``), spaces tidied."""
    without = re.sub(rf"<@!?{user_id}>", " ", text)
    return re.sub(r"[ \t]+", " ", without).strip()


class _Endpoints:
    """Points discord.py's REST base and default gateway elsewhere, and back again."""

    def __init__(self, api_url: str | None, gateway_url: str | None) -> None:
        self.api_url = api_url.rstrip("/") if api_url else None
        self.gateway_url = yarl.URL(gateway_url) if gateway_url else None
        self._saved: tuple[str, yarl.URL] | None = None

    def apply(self) -> None:
        if self._saved is None:
            self._saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
        if self.api_url is not None:
            Route.BASE = self.api_url
        if self.gateway_url is not None:
            DiscordWebSocket.DEFAULT_GATEWAY = self.gateway_url

    def restore(self) -> None:
        if self._saved is not None:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None


def _token(settings: DiscordSettings) -> str:
    if settings.discord_token is None:
        raise InvalidInput(
            "DISCORD_TOKEN is not set: put the bot token from the developer portal there."
        )
    token = settings.discord_token.get_secret_value().strip()
    if not token:
        raise InvalidInput(
            "DISCORD_TOKEN is empty: put the bot token from the developer portal there."
        )
    return token


class DockwiseClient(discord.Client):
    """The dockwise bot: answers slash commands, mentions and DMs from the engine."""

    def __init__(self, engine: Engine, settings: DiscordSettings, **options: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = False  # privileged; mentions and DMs still carry content
        super().__init__(intents=intents, allowed_mentions=NO_MENTIONS, **options)
        self.engine = engine
        self.settings = settings
        self.tree = app_commands.CommandTree(self)
        self._endpoints = _Endpoints(settings.discord_api_url, settings.discord_gateway_url)
        self.progress_min_interval = PROGRESS_MIN_INTERVAL
        self.progress_heartbeat = PROGRESS_HEARTBEAT
        self._add_commands()

    # -- lifecycle -----------------------------------------------------------------------

    async def login(self, token: str) -> None:
        self._endpoints.apply()
        await super().login(token)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self._endpoints.restore()

    async def setup_hook(self) -> None:
        """Register the slash commands: in one guild (instant, for development) or globally."""
        guild_id = self.settings.discord_guild_id
        try:
            if guild_id is not None:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
                log.info("synced %d slash commands to guild %s", len(synced), guild_id)
            else:
                synced = await self.tree.sync()
                log.info("synced %d global slash commands", len(synced))
        except discord.HTTPException as exc:
            # Mentions and DMs still work; commands need the applications.commands scope.
            log.warning("could not sync slash commands (HTTP %s): %s", exc.status, exc.text)

    # -- slash commands ------------------------------------------------------------------

    def _add_commands(self) -> None:
        @self.tree.command(name="ask", description="Ask a question about containers")
        @app_commands.describe(question=ASK_EXAMPLE)
        async def ask(
            interaction: discord.Interaction, question: app_commands.Range[str, 1, 4000]
        ) -> None:
            asker = _asker(interaction.user.id, interaction.channel_id, interaction.guild_id)
            await self.answer_interaction(
                interaction, lambda: self.engine.handle(question, asker=asker)
            )

        @self.tree.command(name="image-explain", description="Explain a container image")
        @app_commands.describe(image=IMAGE_EXAMPLE)
        async def image_explain(
            interaction: discord.Interaction, image: app_commands.Range[str, 1, 512]
        ) -> None:
            await self.explain_interaction(interaction, image)

        @image_explain.autocomplete("image")
        async def image_choices(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            team = str(interaction.guild_id) if interaction.guild_id else None
            return [
                app_commands.Choice(name=ref, value=ref)
                for ref in self.engine.image_choices(current, team=team)
            ]

        async def explain_message(
            interaction: discord.Interaction, message: discord.Message
        ) -> None:
            texts = [message.content] + [
                part
                for embed in message.embeds
                for part in (embed.title, embed.description)
                if part
            ]
            reference = find_image_reference("\n".join(t for t in texts if t))
            if reference is None:
                no_image = Reply(
                    kind=ReplyKind.ERROR, title="No image there", body=NO_IMAGE_IN_MESSAGE
                )
                await self._send_private(interaction, no_image)
                return
            await self.explain_interaction(interaction, reference)

        self.tree.add_command(app_commands.ContextMenu(name=CONTEXT_MENU, callback=explain_message))
        add_dockerfile_command(self)  # /dockerfile-explain and its modal

    async def explain_interaction(self, interaction: discord.Interaction, image: str) -> None:
        """Refuse a malformed reference privately; else answer "Inspecting IMAGE …" at
        once, edit it with the progress, then with the result (errors: private)."""
        refused = self.engine.check_reference(image)
        if refused is not None:
            await self._send_private(interaction, refused)
            return
        placeholder = ExplainProgress(image).text()
        try:
            await interaction.response.send_message(placeholder, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            log.warning("could not acknowledge interaction (HTTP %s)", exc.status)
            return

        asker = _asker(interaction.user.id, interaction.channel_id, interaction.guild_id)
        if self.engine.jobs is not None:  # a job worker edits the response (the token's)
            from adapters.discord_http import Context, delivery_target

            ctx = Context(str(interaction.application_id), interaction.token, asker)
            try:
                later = await self.engine.explain_later(
                    image, asker=asker, delivery_target=delivery_target(ctx)
                )
            except Exception:
                log.exception("the engine failed while answering")
                later = error_reply(FAILURE_MESSAGE)
            if later is not None:  # not queued: refused, or a comparison answered here
                await self._finish_interaction(interaction, later, public_original=True)
            return

        async def show(line: str) -> None:
            await interaction.edit_original_response(content=line)

        relay = self._relay(show, shown=True, placeholder_text=placeholder)
        reply = await self.compute(lambda: self.engine.explain(image, asker=asker, progress=relay))
        await relay.close()
        await self._finish_interaction(interaction, reply, public_original=True)

    def _relay(
        self,
        show: Callable[[str], Awaitable[None]],
        *,
        shown: bool = False,
        placeholder_text: str | None = None,
    ) -> ProgressRelay:
        return ProgressRelay(
            show,
            min_interval=self.progress_min_interval,
            heartbeat=self.progress_heartbeat,
            shown=shown,
            placeholder_text=placeholder_text,
        )

    async def _send_private(self, interaction: discord.Interaction, reply: Reply) -> None:
        """The reply as an ephemeral (flag 64) interaction response or follow-up."""
        messages = render_reply(reply) or [RenderedMessage()]
        try:
            for rendered in messages:
                if not interaction.response.is_done():
                    await interaction.response.send_message(
                        embeds=rendered.embeds, ephemeral=True, allowed_mentions=NO_MENTIONS
                    )
                else:
                    await interaction.followup.send(
                        embeds=rendered.embeds, ephemeral=True, allowed_mentions=NO_MENTIONS
                    )
        except discord.HTTPException as exc:
            log.warning("Discord refused a private reply (HTTP %s): %s", exc.status, exc.text)

    async def _finish_interaction(
        self, interaction: discord.Interaction, reply: Reply, *, public_original: bool
    ) -> None:
        """Send the reply (the placeholder, if ``public_original``, is replaced by its
        first message). An error deletes the original response and goes privately."""
        if reply.kind is ReplyKind.ERROR:
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            await self._send_private(interaction, reply)
            return

        async def send(index: int, rendered: RenderedMessage, content: str | None) -> None:
            if index == 0 and public_original:
                if content is None:
                    await interaction.edit_original_response(
                        content=None, embeds=rendered.embeds, **_view(rendered)
                    )
                else:
                    await interaction.edit_original_response(content=content, embeds=[])
            elif content is None:
                await interaction.followup.send(
                    embeds=rendered.embeds, allowed_mentions=NO_MENTIONS, **_view(rendered)
                )
            else:
                await interaction.followup.send(content, allowed_mentions=NO_MENTIONS)

        await self._deliver(reply, send)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Button clicks (component interactions with ``dockwise_*`` custom ids)."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        raw = str(data.get("custom_id") or "")
        parsed = resolve_custom_id(raw)
        if parsed is None:
            if raw.startswith("dockwise_"):  # a long value from before a restart
                await self._send_private(interaction, error_reply(EXPIRED_BUTTON))
            return
        element_id, value = parsed
        asker = _asker(interaction.user.id, interaction.channel_id, interaction.guild_id)
        log.info("discord: button %s pressed", element_id)
        if element_id.startswith(ACTION_FEEDBACK):
            reply = await self.compute(lambda: self.engine.action(element_id, value, asker=asker))
            await self._send_private(interaction, reply)
            return
        try:
            await interaction.response.defer(thinking=True)
        except discord.HTTPException as exc:
            log.warning("could not acknowledge a click (HTTP %s)", exc.status)
            return
        reply = await self.compute(lambda: self.engine.action(element_id, value, asker=asker))
        await self._finish_interaction(interaction, reply, public_original=False)

    async def answer_interaction(
        self, interaction: discord.Interaction, work: Callable[[], Awaitable[Reply]]
    ) -> None:
        """Defer now (the 3-second window), compute the reply, send it as follow-ups."""
        try:
            await interaction.response.defer(thinking=True)
        except discord.HTTPException as exc:
            log.warning("could not acknowledge interaction (HTTP %s)", exc.status)
            return
        reply = await self.compute(work)
        await self._finish_interaction(interaction, reply, public_original=False)

    # -- messages ------------------------------------------------------------------------

    def addressed_text(self, message: discord.Message) -> str | None:
        """The text meant for the bot (mention removed), or None if the message isn't for it."""
        me = self.user
        if me is None or message.author.bot or message.author.id == me.id:
            return None
        is_dm = isinstance(message.channel, discord.DMChannel)
        mentioned = any(user.id == me.id for user in message.mentions)
        if not (is_dm or mentioned):
            return None
        return strip_mentions(message.content, me.id)

    async def on_message(self, message: discord.Message) -> None:
        text = self.addressed_text(message)
        if text is None:
            return
        text = await with_attached_dockerfile(message, text)
        with contextlib.suppress(discord.HTTPException):  # the indicator is a nicety
            await message.channel.typing()
        guild_id = message.guild.id if message.guild is not None else None
        asker = _asker(message.author.id, message.channel.id, guild_id)
        # The first message replies to the question (a plain message if it was deleted
        # meanwhile); the rest continue in the same channel or thread.
        reference = message.to_reference(fail_if_not_exists=False)
        later = self.engine.later_reference(text)
        if later is not None:  # a job worker explains it and edits the placeholder
            await self._explain_later(message, reference, later, asker)
            return
        placeholder: list[discord.Message] = []

        async def show(line: str) -> None:  # an explanation's progress
            if not placeholder:
                placeholder.append(
                    await message.channel.send(
                        line,
                        reference=reference,
                        mention_author=False,
                        allowed_mentions=NO_MENTIONS,
                    )
                )
            else:
                await placeholder[0].edit(content=line)

        relay = self._relay(show)
        reply = await self.compute(lambda: self.engine.handle(text, asker=asker, progress=relay))
        await relay.close()
        await finish_placeholder(
            message.channel, reference, placeholder[0] if placeholder else None, reply
        )

    async def _explain_later(
        self,
        message: discord.Message,
        reference: discord.MessageReference,
        image: str,
        asker: Asker,
    ) -> None:
        """Reply "Inspecting IMAGE …" and hand the explanation to the job queue with a
        delivery naming that message (``message_target``): the worker that ends the job
        edits it with the progress and the reply over REST (``DiscordPlatform.deliver``);
        this process does not wait. A refusal (rate limit, busy queue) is sent here."""
        try:
            placeholder = await message.channel.send(
                ExplainProgress(image).text(),
                reference=reference,
                mention_author=False,
                allowed_mentions=NO_MENTIONS,
            )
        except discord.HTTPException as exc:
            log.warning("Discord refused the placeholder (HTTP %s): %s", exc.status, exc.text)
            return
        target = message_target(message, placeholder)
        try:
            refused = await self.engine.explain_later(image, asker=asker, delivery_target=target)
        except Exception:
            log.exception("the engine failed while answering")
            refused = error_reply(FAILURE_MESSAGE)
        if refused is not None:
            await finish_placeholder(message.channel, reference, placeholder, refused)

    # -- shared --------------------------------------------------------------------------

    async def compute(self, work: Callable[[], Awaitable[Reply]]) -> Reply:
        """Run the engine; a bug becomes a friendly reply (logged), never a crash."""
        try:
            return await work()
        except DockwiseError as exc:
            return error_reply(str(exc))
        except Exception:
            log.exception("the engine failed while answering")
            return error_reply(FAILURE_MESSAGE)

    async def _deliver(self, reply: Reply, send: Sender) -> None:
        """``deliver_reply``."""
        await deliver_reply(reply, send)


async def deliver_reply(reply: Reply, send: Sender) -> None:
    """Send the rendered reply; if Discord refuses the embeds, fall back to plain text."""
    messages = render_reply(reply)
    sent = 0
    try:
        for rendered in messages:
            await send(sent, rendered, None)
            sent += 1
        if messages:
            return
    except discord.HTTPException as exc:
        log.warning("Discord refused a reply embed (HTTP %s): %s", exc.status, exc.text)
        if sent:
            return  # part of the answer is out; a plain repeat would duplicate it
    try:
        for index, content in enumerate(render_plain(reply)):
            await send(index, RenderedMessage(), content)
    except discord.HTTPException as exc:
        log.warning("Discord refused a plain reply (HTTP %s): %s", exc.status, exc.text)


async def finish_placeholder(
    channel: discord.abc.Messageable,
    reference: discord.MessageReference | None,
    placeholder: discord.Message | discord.PartialMessage | None,
    reply: Reply,
) -> None:
    """Send ``reply`` in ``channel``: its first message replaces ``placeholder`` (or,
    without one, replies to ``reference``), the rest follow. An error deletes the
    placeholder first (a channel has no private messages)."""
    if placeholder is not None and reply.kind is ReplyKind.ERROR:
        with contextlib.suppress(discord.HTTPException):
            await placeholder.delete()
        placeholder = None

    async def send(index: int, rendered: RenderedMessage, content: str | None) -> None:
        kwargs: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
        if index == 0 and placeholder is not None:
            if content is None:
                await placeholder.edit(content=None, embeds=rendered.embeds, **_view(rendered))
            else:
                await placeholder.edit(content=content, embeds=[])
            return
        if index == 0 and reference is not None:
            kwargs["reference"] = reference
            kwargs["mention_author"] = False
        if content is None:
            await channel.send(embeds=rendered.embeds, **kwargs, **_view(rendered))
        else:
            await channel.send(content, **kwargs)

    await deliver_reply(reply, send)


class DockwiseShardedClient(DockwiseClient, discord.AutoShardedClient):
    """The same bot over several gateway shards (``DISCORD_SHARD_COUNT``)."""


def message_target(message: discord.Message, placeholder: discord.Message) -> dict[str, Any]:
    """A delivery target (``bot.jobs.Delivery``, JSON, no token) for the ``placeholder``
    answering ``message``: what a worker needs to edit it over REST with the bot token
    and, for a reply in several messages or an error, to post in the same channel."""
    return {
        "channel_id": str(placeholder.channel.id),
        "message_id": str(placeholder.id),
        "question_id": str(message.id),
        "guild_id": str(message.guild.id) if message.guild is not None else None,
        "user": str(message.author.id),
    }


def _asker(user_id: int, channel_id: int | None, guild_id: int | None = None) -> Asker:
    return Asker(
        "discord",
        str(user_id),
        str(channel_id) if channel_id is not None else None,
        str(guild_id) if guild_id is not None else None,
    )


def shard_ids(settings: DiscordSettings) -> list[int] | None:
    """``DISCORD_SHARD_IDS`` (``"0,2"``) as a list, or None for every shard. Raises
    ``InvalidInput`` unless each id is a whole number below ``DISCORD_SHARD_COUNT``."""
    raw = settings.discord_shard_ids
    if raw is None or not raw.strip():
        return None
    count = settings.discord_shard_count
    if count is None:
        raise InvalidInput("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the total shards).")
    try:
        ids = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError:
        raise InvalidInput(
            f"DISCORD_SHARD_IDS must be a comma list of shard numbers like 0,1 (got {raw[:40]!r})."
        ) from None
    if not ids or ids[0] < 0 or ids[-1] >= count:
        raise InvalidInput(f"DISCORD_SHARD_IDS must be numbers from 0 to {count - 1}.")
    return ids


def build_discord_client(engine: Engine, settings: DiscordSettings) -> DockwiseClient:
    """The bot client for these settings: sharded when ``DISCORD_SHARD_COUNT`` is set (all
    its shards, or only ``DISCORD_SHARD_IDS``)."""
    if settings.discord_shard_count is not None:
        if settings.discord_shard_count < 1:
            raise InvalidInput("DISCORD_SHARD_COUNT must be at least 1.")
        return DockwiseShardedClient(
            engine,
            settings,
            shard_count=settings.discord_shard_count,
            shard_ids=shard_ids(settings),
        )
    if settings.discord_shard_ids:
        shard_ids(settings)  # raises: ids without a count
    return DockwiseClient(engine, settings)


async def run_discord(engine: Engine, settings: DiscordSettings) -> None:
    """Log in and serve until cancelled; discord.py reconnects on its own."""
    token = _token(settings)
    client = build_discord_client(engine, settings)
    try:
        async with client:
            await client.start(token)
    except discord.LoginFailure:
        raise Unauthorized("Discord rejected DISCORD_TOKEN: copy the bot token again.") from None
    except discord.GatewayNotFound:
        raise Unreachable("Discord's gateway is unreachable; try again later.") from None
    except (OSError, aiohttp.ClientError) as exc:
        raise Unreachable(f"Cannot reach Discord: {type(exc).__name__}") from None


class DiscordPlatform(ChatAdapter):
    """Discord in the adapter contract (``bot.chat``)."""

    name = "discord"
    settings_model = DiscordSettings
    how_to_configure = (
        "for Discord set DISCORD_TOKEN (gateway) and/or DISCORD_PUBLIC_KEY and "
        "DISCORD_APPLICATION_ID (HTTP interactions)"
    )

    def __init__(self, engine: Engine, settings: Any) -> None:
        super().__init__(engine, settings)
        self.interactions: DiscordInteractions | None = None
        self._webhooks: InteractionFollowups | None = None  # deliveries from job workers
        self._rest: discord.Client | None = None  # bot-token REST, for placeholder edits
        self._rest_endpoints: _Endpoints | None = None
        self._rest_lock = asyncio.Lock()
        self.gateway = False

    @classmethod
    def configured(cls, settings: Any) -> bool:
        return isinstance(settings, DiscordSettings) and settings.discord_enabled

    @classmethod
    def register_cli(cls, app: typer.Typer) -> None:
        app.command("discord-invite")(discord_invite)

    def render(self, reply: Reply) -> list[dict[str, Any]]:
        return [message.to_dict() for message in render_reply(reply)]

    def _followups(self) -> InteractionFollowups:
        if self._webhooks is None:
            from adapters.discord_http import InteractionFollowups

            self._webhooks = InteractionFollowups(self.settings.discord_api_url)
        return self._webhooks

    def progress_updates(self, target: dict[str, Any]) -> int | None:
        """A placeholder message: ``MESSAGE_PROGRESS_UPDATES`` edits (Discord allows about
        5 edits per 5 s in a channel, shared by every answer there); an interaction's
        original response: no cap (its webhook has its own limit, waited out)."""
        return MESSAGE_PROGRESS_UPDATES if target.get("message_id") else None

    async def _rest_client(self) -> discord.Client:
        """A discord.py client logged in over REST only (no gateway shard): what a worker
        edits placeholders with (discord.py waits out rate limits). Raises InvalidInput
        without DISCORD_TOKEN, Unauthorized when Discord rejects it."""
        async with self._rest_lock:
            if self._rest is None:
                token = _token(self.settings)
                endpoints = _Endpoints(
                    self.settings.discord_api_url, self.settings.discord_gateway_url
                )
                client = discord.Client(
                    intents=discord.Intents.none(), allowed_mentions=NO_MENTIONS
                )
                endpoints.apply()
                try:
                    await client.login(token)
                except discord.LoginFailure:
                    await client.close()
                    endpoints.restore()
                    raise Unauthorized(
                        "Discord rejected DISCORD_TOKEN: copy the bot token again."
                    ) from None
                self._rest, self._rest_endpoints = client, endpoints
            return self._rest

    async def _placeholder_of(
        self, target: dict[str, Any]
    ) -> tuple[discord.PartialMessageable, discord.PartialMessage]:
        """The channel and placeholder message a ``message_target`` names; raises
        ValueError when it names none."""
        try:
            channel_id, message_id = int(target["channel_id"]), int(target["message_id"])
            guild = int(target["guild_id"]) if target.get("guild_id") else None
        except (KeyError, TypeError, ValueError):
            raise ValueError("a Discord message delivery needs channel_id and message_id") from None
        client = await self._rest_client()
        channel = client.get_partial_messageable(channel_id, guild_id=guild)
        return channel, channel.get_partial_message(message_id)

    async def deliver(self, target: dict[str, Any], reply: Reply) -> None:
        """Post a finished explanation to ``target``, from any process (a job worker):

        - an interaction (``adapters.discord_http.delivery_target``: application id,
          interaction token, asker; HTTP interactions and gateway slash commands): the
          original response is edited (``InteractionFollowups.finish``), no bot token;
        - a mention's or DM's placeholder (``message_target``): edited over REST with the
          bot token into the reply's first message, the rest sent in the same channel;
          an error deletes it and replies to the question.

        Raises ValueError for a target of neither kind, ``discord.HTTPException`` when
        Discord refuses the edit."""
        if target.get("message_id"):
            channel, placeholder = await self._placeholder_of(target)
            question = target.get("question_id")
            reference = (
                discord.MessageReference(
                    message_id=int(question), channel_id=channel.id, fail_if_not_exists=False
                )
                if question
                else None
            )
            await finish_placeholder(channel, reference, placeholder, reply)
            return
        from adapters.discord_http import context_of

        await self._followups().finish(context_of(target), reply)

    async def show_progress(self, target: dict[str, Any], line: str) -> None:
        """Show ``line`` in the placeholder: an interaction's original response, or a
        mention's placeholder message (edited over REST)."""
        if target.get("message_id"):
            _channel, placeholder = await self._placeholder_of(target)
            await placeholder.edit(content=line)
            return
        from adapters.discord_http import NO_MENTIONS as NO_MENTIONS_JSON
        from adapters.discord_http import context_of

        await self._followups().edit_original(
            context_of(target), {"content": line, "allowed_mentions": NO_MENTIONS_JSON}
        )

    async def setup(self, web_app: Any) -> None:
        """Roles ``all``/``web`` mount ``POST /discord/interactions`` when
        ``DISCORD_PUBLIC_KEY`` is set; roles ``all``/``gateway`` run the gateway client
        when ``DISCORD_TOKEN`` is set. Raises ``InvalidInput`` for an empty token or a
        malformed public key. A ``gateway`` role without a token runs no Discord (Discord
        is then served over HTTP interactions by the web role)."""
        settings: DiscordSettings = self.settings
        if settings.discord_token is not None:
            _token(settings)  # an empty token fails before anything starts
        self.gateway = self.role in ("all", "gateway") and settings.discord_token is not None
        if self.role == "gateway" and not self.gateway:  # Discord over HTTP interactions only:
            log.info("discord: no DISCORD_TOKEN, so this gateway role runs no Discord shard")
        if self.role in ("all", "web") and settings.discord_public_key is not None:
            from adapters.discord_http import DiscordInteractions

            self.interactions = DiscordInteractions(
                self.engine,
                public_key=settings.discord_public_key,
                application_id=settings.discord_application_id,
                api_url=settings.discord_api_url,
            )
            self.interactions.mount(web_app)
        elif self.role == "web":
            log.info("discord: DISCORD_PUBLIC_KEY is not set, so this web role has no Discord")
        if self.gateway:  # bad shard settings fail before anything starts
            if settings.discord_shard_count is not None and settings.discord_shard_count < 1:
                raise InvalidInput("DISCORD_SHARD_COUNT must be at least 1.")
            shard_ids(settings)

    async def run(self) -> None:
        """The gateway client (roles ``all``/``gateway``); otherwise HTTP interactions
        only: with a token, the slash commands are registered once, then it waits."""
        if self.gateway:
            await run_discord(self.engine, self.settings)
            return
        if self.interactions is not None and self.settings.discord_token is not None:
            await sync_commands(self.engine, self.settings)
        await asyncio.Event().wait()  # serve HTTP until cancelled

    async def stop(self) -> None:
        await super().stop()
        if self.interactions is not None:
            await self.interactions.close()
        if self._webhooks is not None:
            await self._webhooks.close()
        if self._rest is not None:
            await self._rest.close()
            self._rest = None
        if self._rest_endpoints is not None:
            self._rest_endpoints.restore()
            self._rest_endpoints = None


ADAPTER = DiscordPlatform


async def sync_commands(engine: Engine, settings: DiscordSettings) -> None:
    """Register the slash commands without a gateway connection (log in over REST, which
    runs ``setup_hook``, then close): what a web-only deployment does at start. Failures
    are logged, not raised: interactions for already registered commands still work."""
    client = DockwiseClient(engine, settings)
    try:
        await client.login(_token(settings))
    except discord.LoginFailure:
        log.warning("Discord rejected DISCORD_TOKEN: slash commands were not registered")
    except (discord.HTTPException, OSError, aiohttp.ClientError) as exc:
        log.warning("could not register slash commands: %s", type(exc).__name__)
    finally:
        await client.close()


async def fetch_application_id(settings: DiscordSettings) -> int:
    """The bot's application id, asked from Discord (``GET /oauth2/applications/@me``)."""
    token = _token(settings)
    endpoints = _Endpoints(settings.discord_api_url, settings.discord_gateway_url)
    client = discord.Client(intents=discord.Intents.none())
    endpoints.apply()
    try:
        await client.login(token)  # fetches /users/@me and /oauth2/applications/@me
        if client.application_id is None:
            raise Unreachable("Discord did not say which application this token belongs to.")
        return client.application_id
    except discord.LoginFailure:
        raise Unauthorized("Discord rejected DISCORD_TOKEN: copy the bot token again.") from None
    except discord.HTTPException as exc:
        raise Unreachable(f"Discord answered HTTP {exc.status} for the application.") from None
    except (OSError, aiohttp.ClientError) as exc:
        raise Unreachable(f"Cannot reach Discord: {type(exc).__name__}") from None
    finally:
        await client.close()
        endpoints.restore()


def discord_invite(
    application_id: Annotated[
        int | None, typer.Option(help="The Discord application id (asked from Discord if unset).")
    ] = None,
) -> None:
    """Print the OAuth2 URL that adds the bot to a Discord server."""
    from bot.cli import fail

    if application_id is None:
        settings = DiscordSettings()
        if settings.discord_token is None:
            fail("set DISCORD_TOKEN or pass --application-id", code=2)
        try:
            application_id = asyncio.run(fetch_application_id(settings))
        except DockwiseError as exc:
            fail(str(exc))
    typer.echo(invite_url(application_id))
