"""The Slack adapter: slack-bolt's AsyncApp in Socket Mode or HTTP mode.

It translates Slack events into engine calls and replies into Block Kit; it holds no
business logic.

- ``/image-explain IMAGE``: acknowledged at once with an ephemeral "Looking at …", then the
  explanation is posted to the channel through the command's ``response_url``.
- ``@dockwise <question>`` (or ``@dockwise explain IMAGE``) in a channel: answered in a
  thread under the question. Direct messages work the same without the mention; the
  answer goes to the DM (into the thread if the message was in one).
- Every delivery of an event (first, Slack retry with ``X-Slack-Retry-Num``, Socket Mode
  redelivery, or the same event at another replica) claims its ``event_id`` in a ledger
  (``bot.deliveries``: Redis with ``DOCKWISE_REDIS_URL``, else in-process) before it is
  processed; a delivery whose event is claimed by a live process or already answered is
  acknowledged and dropped. The claim is marked done once the reply was posted and
  released when posting failed, so a retry answers a question whose first delivery died
  or could not be answered, and no question is answered twice.
- The bot's own messages and message subtypes (edits, joins, bot messages) are ignored.
- Failures become a friendly message in the thread; the adapter keeps running.
- Errors the asker caused are shown to the asker only: ``response_type: "ephemeral"`` for
  commands and clicks, ``chat.postEphemeral`` for mentions.
- An explanation shows a placeholder ("Inspecting IMAGE …"), edits it while it runs
  (``chat.update``, or the command's ``response_url`` with ``replace_original``) and
  replaces it with the result.
- With a job queue (roles ``web`` and ``gateway``) an explanation asked by mention or DM
  is handed over: this process posts the placeholder and attaches a delivery naming it
  (``Placeholder.target()``: team, channel, placeholder ts, thread, who sees errors) to
  the image's job, and returns; the worker that runs the job edits the placeholder with
  the progress and replaces it with the result (``SlackPlatform.deliver``, with the bot
  token of that workspace). Slash commands hand over their ``response_url`` the same way.
- Buttons (``block_actions`` with ``dockwise_*`` action ids) go to ``Engine.action``; the
  reply is posted in the thread of the clicked message (feedback thanks: ephemeral).
- ``app_home_opened`` publishes the Home tab; the message shortcut
  ``explain_image_in_message`` explains the first image reference in a message;
  ``link_shared`` unfurls hub.docker.com, ghcr.io and quay.io image links.

Modes: Socket Mode when ``SLACK_APP_TOKEN`` is set, else HTTP mode (Events API and slash
commands at ``POST /slack/events``, signature and 5-minute replay checks on).
``DOCKWISE_SLACK_API_URL`` points the Web API (and ``apps.connections.open``) elsewhere.

Workspaces: one (``SLACK_BOT_TOKEN``), or any number through bolt's OAuth flow when
``SLACK_CLIENT_ID`` and ``SLACK_CLIENT_SECRET`` are set without a bot token
(``adapters.slack_oauth``): ``GET /slack/install`` sends the installer to Slack's consent
page (``DOCKWISE_SLACK_AUTHORIZE_URL``, default Slack's), ``GET /slack/oauth_redirect``
takes the code back and stores the workspace's bot token (with its refresh token when
token rotation is on) on ``DOCKWISE_DATABASE_URL``. Each request then runs with its
workspace's token (rotated by bolt before it expires); ``tokens_revoked`` and
``app_uninstalled`` delete the workspace's tokens, so its later events are not answered.
"""

from __future__ import annotations

import asyncio
import html
import importlib
import logging
import re
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

import aiohttp
import typer
from aiohttp import web
from cachetools import LRUCache
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.error import BoltError
from slack_bolt.oauth.async_callback_options import (
    AsyncCallbackOptions,
    AsyncFailureArgs,
    AsyncSuccessArgs,
)
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError, SlackTokenRotationError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack_blocks import escape, render_blocks, render_messages, render_text
from adapters.slack_dockerfile import register as register_dockerfile_modal
from bot.chat import ChatAdapter
from bot.config import get_settings
from bot.deliveries import Claim, Ledger, Seen, make_ledger
from bot.engine import Asker, Engine
from bot.errors import InvalidInput, Unauthorized, Unreachable
from bot.links import IMAGE_LINK_HOSTS, find_image_reference, image_from_url
from bot.observability import register_secrets_from
from bot.progress import ExplainProgress, ProgressCallback, ProgressRelay
from bot.reply import Reply, ReplyKind

if TYPE_CHECKING:
    from adapters.slack_oauth import SlackStores, StoreAuthorize


def _oauth() -> ModuleType:
    """``adapters.slack_oauth`` (SQLAlchemy and the stores), imported when OAuth mode needs
    it: single-token mode and ``dockwise --help`` never pay for SQLAlchemy."""
    return importlib.import_module("adapters.slack_oauth")


def _database_errors() -> tuple[type[Exception], ...]:
    """What a failed store call raises (SQLAlchemy's base error), for ``except``."""
    errors: tuple[type[Exception], ...] = (_oauth().SQLAlchemyError,)
    return errors


__all__ = [
    "ADAPTER",
    "EVENTS_PATH",
    "SHORTCUT",
    "SlackAdapter",
    "SlackPlatform",
    "SlackSettings",
    "build_slack_app",
    "escape",
    "render_blocks",
    "render_messages",
    "run_slack",
]

log = logging.getLogger(__name__)


class SlackSettings(BaseSettings):
    """The Slack adapter's settings (``SlackPlatform.settings_model``): environment
    variables or ``.env``, empty values unset, like ``bot.config.Settings``."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    slack_bot_token: SecretStr | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    slack_api_url: str | None = Field(None, validation_alias="DOCKWISE_SLACK_API_URL")
    # OAuth mode (many workspaces): the app's credentials, where installs are kept
    slack_client_id: str | None = Field(None, validation_alias="SLACK_CLIENT_ID")
    slack_client_secret: SecretStr | None = Field(None, validation_alias="SLACK_CLIENT_SECRET")
    #: The public https://HOST/slack/oauth_redirect (Slack's first Redirect URL if unset).
    slack_redirect_uri: str | None = Field(None, validation_alias="SLACK_REDIRECT_URI")
    #: Slack's consent page (default https://slack.com/oauth/v2/authorize).
    slack_authorize_url: str | None = Field(None, validation_alias="DOCKWISE_SLACK_AUTHORIZE_URL")
    #: Installations: SQLite (default: slack.db in DOCKWISE_CACHE_DIR) or PostgreSQL.
    database_url: SecretStr | None = Field(None, validation_alias="DOCKWISE_DATABASE_URL")
    #: Refresh a rotating bot token this many minutes before it expires (bolt's default).
    slack_token_rotation_minutes: int = Field(
        120, ge=1, validation_alias="DOCKWISE_SLACK_TOKEN_ROTATION_MINUTES"
    )

    @property
    def oauth_enabled(self) -> bool:
        """Many workspaces: client id and secret set, and no single bot token."""
        return (
            self.slack_bot_token is None
            and self.slack_client_id is not None
            and self.slack_client_secret is not None
        )

    @property
    def slack_enabled(self) -> bool:
        """A bot token (or OAuth client credentials) plus an app token (Socket Mode) or a
        signing secret (HTTP mode)."""
        return (self.slack_bot_token is not None or self.oauth_enabled) and (
            self.slack_app_token is not None or self.slack_signing_secret is not None
        )


EVENTS_PATH = "/slack/events"
COMMAND = "/image-explain"
USAGE = (
    f"Usage: `{COMMAND} IMAGE`, e.g. `{COMMAND} python:3.12-slim` or "
    f"`{COMMAND} ghcr.io/org/app@sha256:…`. I'll show what the image carries: distro user "
    "space (or none), packages, shell, user, layers, size, secrets in ENV, and advice.\n"
    "You can also mention me with a question, e.g. `@dockwise why FROM ubuntu?`."
)
FRIENDLY_ERROR = (
    "Sorry, something went wrong on my side while answering that. Please try again in a moment."
)
SHORTCUT = "explain_image_in_message"
NOT_INSTALLED = "dockwise is no longer installed in this workspace. Ask an admin to add it again."
#: Why an installation failed, by bolt's failure reason: the page the installer sees.
INSTALL_FAILURES = {
    "access_denied": "The installation was cancelled in Slack. Nothing was installed.",
    "invalid_browser": "This install link was started in another browser (or its cookie "
    "expired). Start again from the install link in this browser.",
    "invalid_state": "This install link expired or was already used. Start again from the "
    "install link.",
    "missing_code": "Slack sent no authorization code. Start again from the install link.",
    "invalid_code": "Slack did not accept the authorization code (it expired, was used, "
    "or the app's client id / secret are wrong). Start again from the install link.",
    "storage_error": "dockwise could not save the installation. Please try again later.",
}
ACTION_PATTERN = re.compile(r"^dockwise_(?:full_article|ask|section|feedback)(?:_\w+)?$")
#: Every other action id and shortcut callback id: answered privately ("Unknown button")
#: instead of bolt's 404, which Slack shows the clicker as a failed app. Registered last.
ANY_ID = re.compile(r"(?s).*")
UNKNOWN_SHORTCUT = "I don't know that shortcut: use **Explain image** from a message's menu."
NO_IMAGE_IN_MESSAGE = (
    "I found no image reference in that message (like `python:3.12-slim`, "
    "`docker pull nginx` or a hub.docker.com link)."
)
HOME_INTRO = (
    "*dockwise* unblocks people learning containers. Ask it why Dockerfiles start "
    "`FROM ubuntu`, whether a container is a VM or which base image to pick, and it answers "
    "from short, sourced articles. Give it an image and it shows what the image really "
    "carries: the distribution's user space (or none), packages, shell, user, layers, "
    "size, secrets left in ENV, and what to improve."
)
HOME_EXAMPLES = [
    "@dockwise why do Dockerfiles start FROM ubuntu?",
    "@dockwise is a container a VM?",
    "@dockwise alpine or slim?",
    "@dockwise explain python:3.12-slim",
]
HOME_COMMANDS = [
    f"`{COMMAND} IMAGE`: explain an image, e.g. `{COMMAND} nginx:alpine`",
    "`/dockerfile-explain`: paste a Dockerfile into a box and get it explained",
    "Mention `@dockwise` with a question in a channel, or send it a direct message",
    "Message menu → *Explain image*: explain the first image named in a message",
    "Paste a hub.docker.com, ghcr.io or quay.io image link: dockwise previews it",
]
#: Seconds between progress edits, and between heartbeats while nothing changes.
PROGRESS_MIN_INTERVAL = 1.0
PROGRESS_HEARTBEAT = 2.0
#: response_url takes 5 uses: progress takes at most one, the rest is for the result.
RESPONSE_URL_USES = 5
RESPONSE_URL_PROGRESS_UPDATES = 1
#: Progress edits (chat.update, Tier 3: about 50 a minute per workspace) a job worker makes
#: to one placeholder, and the times it waits out HTTP 429 on a delivery's call.
PLACEHOLDER_PROGRESS_UPDATES = 10
DELIVERY_RATE_LIMIT_RETRIES = 3
#: How long the explanation waits for the ack to be on its way to Slack (ordering only).
ACK_GATE_TIMEOUT = 3.0
SEEN_EVENTS_MAX = 2048
#: OAuth mode: how many tokens' auth.test results (bot user id, team) are kept.
AUTHORIZE_CACHE_SIZE = 4096
#: Where the middleware leaves a delivery's ``bot.deliveries.Claim`` in bolt's context.
CLAIM = "dockwise_claim"
SEEN_EVENTS_TTL = 3600.0


class SeenEvents:
    """A bounded set of recently seen event ids, each remembered for ``ttl`` seconds."""

    def __init__(self, maxsize: int = SEEN_EVENTS_MAX, ttl: float = SEEN_EVENTS_TTL) -> None:
        self._items: OrderedDict[str, float] = OrderedDict()
        self._maxsize = maxsize
        self._ttl = ttl

    def add(self, key: str) -> bool:
        """Remember ``key``; False if it was already seen (and not yet expired)."""
        now = time.monotonic()
        while self._items:
            oldest, seen_at = next(iter(self._items.items()))
            if now - seen_at < self._ttl:
                break
            del self._items[oldest]
        if key in self._items:
            return False
        self._items[key] = now
        while len(self._items) > self._maxsize:
            self._items.popitem(last=False)
        return True

    def discard(self, key: str) -> None:
        """Forget ``key`` (its answer could not be posted: a retry may answer it)."""
        self._items.pop(key, None)


class _AckGates:
    """Hold back a slash command's explanation until its ack has been sent to Slack.

    Whoever delivers the request (HTTP route or Socket Mode handler) opens a gate keyed by
    the command's ``trigger_id`` before dispatching and releases it once the ack is on the
    wire; the listener waits on it, so "Looking at …" always arrives first.
    """

    def __init__(self) -> None:
        self._gates: dict[str, asyncio.Event] = {}

    def open(self, key: str | None) -> None:
        if key:
            self._gates[key] = asyncio.Event()

    def release(self, key: str | None) -> None:
        gate = self._gates.pop(key, None) if key else None
        if gate is not None:
            gate.set()

    async def wait(self, key: str | None) -> None:
        gate = self._gates.get(key) if key else None
        if gate is None:
            return
        try:
            await asyncio.wait_for(gate.wait(), ACK_GATE_TIMEOUT)
        except TimeoutError:
            self._gates.pop(key or "", None)


class RedactSecrets(logging.Filter):
    """Replace the Slack tokens and signing secret in log records (message and traceback)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [secret for secret in secrets if len(secret) >= 8]

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        record.msg = self._redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self._redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _redact_on(logger: logging.Logger, secrets: list[str]) -> None:
    for existing in logger.filters:
        if isinstance(existing, RedactSecrets):
            existing.secrets += [
                s for s in RedactSecrets(secrets).secrets if s not in existing.secrets
            ]
            return
    logger.addFilter(RedactSecrets(secrets))


_CONTROL = re.compile(r"<([^<>]*)>")


def _plain_control(body: str, bot_user_id: str | None) -> str:
    """One ``<…>`` sequence of Slack's message format as the plain text a user typed."""
    target, _, label = body.partition("|")
    if target.startswith("@"):
        if bot_user_id and target[1:] == bot_user_id:
            return " "
        return f"@{label or target[1:]}"
    if target.startswith("#"):
        return f"#{label or target[1:]}"
    if target.startswith("!"):
        name = target[1:].split("^", 1)[0]
        return label if label.startswith("@") else f"@{label or name}"
    if label:
        return label  # an auto-linked "ghcr.io/org/app:1" is shown as its label
    return target.removeprefix("mailto:")


def slack_to_plain(text: str, bot_user_id: str | None = None) -> str:
    """Slack message text as typed: the bot's mention removed, other mentions, channels
    and auto-links turned back into their labels, ``&lt;``/``&gt;``/``&amp;`` unescaped."""
    plain = _CONTROL.sub(lambda m: _plain_control(m.group(1), bot_user_id), text)
    plain = plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    if "```" in plain:  # a pasted code block (a Dockerfile): its lines matter
        return "\n".join(line.rstrip() for line in plain.strip().splitlines())
    return " ".join(plain.split())


def _api_base_url(settings: SlackSettings) -> str | None:
    if not settings.slack_api_url:
        return None
    url = settings.slack_api_url
    return url if url.endswith("/") else url + "/"


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


@dataclass(frozen=True, slots=True)
class Placeholder:
    """Where an explanation's answer goes in a conversation: ``channel``, the thread
    (``thread_ts``, None at the top level), who sees an error alone (``private_to``; None
    in a DM), the placeholder message being edited (``ts``, None until posted) and the
    workspace whose bot token edits it (``team``, ``enterprise`` for org-wide installs)."""

    channel: str
    thread_ts: str | None = None
    private_to: str | None = None
    ts: str | None = None
    team: str | None = None
    enterprise: str | None = None

    def target(self) -> dict[str, Any]:
        """As a delivery target (``bot.jobs.Delivery``): JSON, no token."""
        return {
            "channel": self.channel,
            "thread_ts": self.thread_ts,
            "private_to": self.private_to,
            "ts": self.ts,
            "team": self.team,
            "enterprise": self.enterprise,
        }

    @classmethod
    def of(cls, target: dict[str, Any]) -> Placeholder:
        """The placeholder a ``target()`` describes; raises ValueError without channel
        and ts."""
        if not target.get("channel") or not target.get("ts"):
            raise ValueError("a Slack placeholder delivery needs channel and ts")

        def text(name: str) -> str | None:
            value = target.get(name)
            return str(value) if value else None

        return cls(
            str(target["channel"]),
            text("thread_ts"),
            text("private_to"),
            str(target["ts"]),
            text("team"),
            text("enterprise"),
        )


class SlackAdapter:
    """Owns the bolt app and the few pieces of state the adapter needs."""

    def __init__(
        self, engine: Engine, settings: SlackSettings, *, ledger: Ledger | None = None
    ) -> None:
        token = _secret(settings.slack_bot_token)
        if not token and not settings.oauth_enabled:
            raise InvalidInput(
                "SLACK_BOT_TOKEN is not set: the Slack adapter needs a bot token (one "
                "workspace) or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET (installs by OAuth)"
            )
        self.engine = engine
        self.settings = settings
        # Shared across replicas through DOCKWISE_REDIS_URL (the shared settings).
        self.ledger = ledger if ledger is not None else make_ledger(get_settings())
        self.answered = SeenEvents()
        secrets = [
            token,
            _secret(settings.slack_app_token),
            _secret(settings.slack_signing_secret),
            _secret(settings.slack_client_secret) if settings.oauth_enabled else None,
        ]
        bolt_logger = logging.getLogger("dockwise.slack.bolt")
        for logger in (log, bolt_logger):
            _redact_on(logger, [s for s in secrets if s])
        register_secrets_from(settings)  # and in every handler's output (tokens, URLs)
        self.gates = _AckGates()
        base_url = _api_base_url(settings)
        client = (
            AsyncWebClient(token=token, base_url=base_url)
            if base_url
            else AsyncWebClient(token=token)
        )
        #: OAuth mode: the installation and state stores (None with a single bot token).
        self.stores: SlackStores | None = None
        self._rotator: AsyncTokenRotator | None = None
        if token:
            self.app = AsyncApp(
                client=client,
                signing_secret=_secret(settings.slack_signing_secret) or "",
                logger=bolt_logger,
            )
        else:
            self.app = self._oauth_app(client, bolt_logger)
        self.progress_min_interval = PROGRESS_MIN_INTERVAL
        self.progress_heartbeat = PROGRESS_HEARTBEAT
        self.app.use(self._forget_revoked)
        self.app.use(self._skip_duplicates)
        self.app.command(COMMAND)(self._on_command)
        register_dockerfile_modal(self)  # /dockerfile-explain and its modal
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.action(ACTION_PATTERN)(self._on_action)
        self.app.shortcut(SHORTCUT)(self._on_shortcut)
        self.app.event("app_home_opened")(self._on_home_opened)
        self.app.event("link_shared")(self._on_link_shared)
        self.app.action(ANY_ID)(self._on_action)  # the engine refuses unknown ids privately
        self.app.shortcut(ANY_ID)(self._on_unknown_shortcut)
        self.app.error(self._on_error)

    def _oauth_app(self, client: AsyncWebClient, bolt_logger: logging.Logger) -> AsyncApp:
        """The bolt app for many workspaces: the OAuth flow on the SQL stores, tokens found
        per request (bot tokens only), rotated through ``client`` (so through
        ``DOCKWISE_SLACK_API_URL`` too) before they expire."""
        settings = self.settings
        client_id = str(settings.slack_client_id)
        client_secret = _secret(settings.slack_client_secret) or ""
        url = _secret(settings.database_url) or _oauth().default_database_url(
            get_settings().cache_dir
        )
        stores: SlackStores = _oauth().SlackStores(url, client_id, logger=bolt_logger)
        self.stores = stores
        minutes = settings.slack_token_rotation_minutes
        self._rotator = AsyncTokenRotator(
            client_id=client_id, client_secret=client_secret, client=client
        )
        oauth = AsyncOAuthSettings(
            client_id=client_id,
            client_secret=client_secret,
            scopes=list(_oauth().SCOPES),
            user_scopes=[],
            redirect_uri=settings.slack_redirect_uri,
            install_path=_oauth().INSTALL_PATH,
            redirect_uri_path=_oauth().REDIRECT_PATH,
            install_page_rendering_enabled=False,  # straight to Slack's consent page
            authorization_url=settings.slack_authorize_url,
            installation_store=stores.installations,
            installation_store_bot_only=True,
            token_rotation_expiration_minutes=minutes,
            state_store=stores.states,
            callback_options=AsyncCallbackOptions(
                success=self._installed, failure=self._install_failed
            ),
            logger=bolt_logger,
        )
        # bolt's default authorize would rotate tokens through slack.com whatever the API
        # URL: this one shares the app's client.
        authorize: StoreAuthorize = _oauth().StoreAuthorize(
            logger=bolt_logger,
            installation_store=stores.installations,
            client_id=client_id,
            client_secret=client_secret,
            token_rotation_expiration_minutes=minutes,
            bot_only=True,
            cache_enabled=True,  # auth.test once per token, not once per event
            client=client,
        )
        # bolt keeps every token's auth.test result; rotation makes new tokens twice a day
        authorize.authorize_result_cache = LRUCache(AUTHORIZE_CACHE_SIZE)  # type: ignore[assignment]
        return AsyncApp(
            client=client,
            signing_secret=_secret(settings.slack_signing_secret) or "",
            logger=bolt_logger,
            authorize=authorize,  # type: ignore[arg-type] # an AsyncAuthorize is accepted
            installation_store=stores.installations,
            installation_store_bot_only=True,
            oauth_settings=oauth,
            user_facing_authorize_error_message=NOT_INSTALLED,
        )

    # --- middleware ---------------------------------------------------------------------

    async def _skip_duplicates(
        self, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[None]]
    ) -> BoltResponse | None:
        event_id = req.body.get("event_id") if isinstance(req.body, dict) else None
        if isinstance(event_id, str) and event_id:
            claim = await Claim.take(self.ledger, event_id)
            if isinstance(claim, Seen):
                log.info(
                    "slack: skipping event %s, %s (retry %s, %s)",
                    event_id,
                    "already answered" if claim is Seen.DONE else "being answered",
                    _first(req, "x-slack-retry-num") or "0",
                    _first(req, "x-slack-retry-reason") or "-",
                )
                return BoltResponse(status=200, body="", headers={"x-slack-no-retry": "1"})
            req.context[CLAIM] = claim
        await next()
        return None

    async def _forget_revoked(
        self, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[None]]
    ) -> BoltResponse | None:
        """``tokens_revoked`` / ``app_uninstalled``: in OAuth mode delete the revoked tokens
        or the whole installation with bolt's listeners before acknowledging, so the
        workspace's next event finds nothing; a database failure answers 500 and Slack
        retries (deleting twice is harmless). With a single bot token: logged, nothing to
        delete (the token simply stops working)."""
        body = req.body if isinstance(req.body, dict) else {}
        event = body.get("event") if body.get("type") == "event_callback" else None
        kind = event.get("type") if isinstance(event, dict) else None
        if kind not in {"tokens_revoked", "app_uninstalled"}:
            await next()
            return None
        context = req.context
        if self.stores is None:
            log.warning("slack: %s in team %s: SLACK_BOT_TOKEN is void", kind, context.team_id)
            return BoltResponse(status=200, body="")
        try:
            if kind == "tokens_revoked":
                forget = self.app.default_tokens_revoked_event_listener()
                await forget(event=event, context=context)
            else:
                await self.app.default_app_uninstalled_event_listener()(context=context)
        except _database_errors() as exc:
            log.error("slack: could not forget team %s (%s)", context.team_id, _describe(exc))
            return BoltResponse(status=500, body="")
        log.info("slack: %s in team %s, its tokens are deleted", kind, context.team_id)
        return BoltResponse(status=200, body="")

    @asynccontextmanager
    async def _claimed(self, context: AsyncBoltContext) -> AsyncIterator[Claim | None]:
        """The delivery's claim (None for requests without an event id), renewed while the
        body runs and released unless the body marked it done."""
        claim = context.get(CLAIM)
        if not isinstance(claim, Claim):
            yield None
            return
        async with claim.keep_alive():
            yield claim

    # --- listeners ----------------------------------------------------------------------

    async def _on_command(
        self, ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient
    ) -> None:
        text = slack_to_plain(str(command.get("text") or ""))
        trigger = command.get("trigger_id")
        if not text or text.lower() in {"help", "-h", "--help", "?"}:
            await ack(response_type="ephemeral", **render_text(USAGE))
            self.gates.release(trigger)
            return
        refused = self.engine.check_reference(text)
        if refused is not None:  # the asker's mistake: only they see it
            await ack(response_type="ephemeral", **render_messages(refused)[0])
            self.gates.release(trigger)
            return
        # The placeholder is the ack itself, in the channel; the result replaces it.
        placeholder = ExplainProgress(text).text()
        await ack(response_type="in_channel", **render_text(placeholder))
        await self.gates.wait(trigger)
        asker = Asker(
            "slack", str(command.get("user_id") or ""), command.get("channel_id"), _team(command)
        )
        response_url = command.get("response_url")
        if self.engine.jobs is not None and response_url:
            # A job worker posts the result through response_url (SlackPlatform.deliver).
            target = {
                "response_url": str(response_url),
                "channel_id": str(command.get("channel_id") or ""),
                "user_id": str(command.get("user_id") or ""),
            }
            try:
                refused = await self.engine.explain_later(text, asker=asker, delivery_target=target)
            except Exception as exc:
                log.error("slack: engine failed: %s", type(exc).__name__, exc_info=exc)
                refused = Reply(
                    kind=ReplyKind.ERROR, title="Sorry, I couldn't answer", body=FRIENDLY_ERROR
                )
            if refused is not None:
                await self._post_command_reply(refused, command, client)
            return
        webhook = AsyncWebhookClient(url=str(response_url)) if response_url else None

        async def show(line: str) -> None:
            if webhook is not None:
                await webhook.send(replace_original=True, **render_text(line))

        relay = self._relay(
            show,
            shown=True,
            max_updates=RESPONSE_URL_PROGRESS_UPDATES,
            placeholder_text=placeholder,
        )
        reply = await self._guarded(self.engine.explain(text, asker=asker, progress=relay))
        await relay.close()
        await self._post_command_reply(
            reply, command, client, uses_left=RESPONSE_URL_USES - relay.updates
        )

    async def _on_mention(
        self, event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        async with self._claimed(context) as claim:
            if _ignored(event, context.bot_user_id):
                await _done(claim)
                return
            thread_ts = str(event.get("thread_ts") or event.get("ts") or "") or None
            await self._answer(event, client, context, thread_ts, claim)

    async def _on_message(
        self, event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        async with self._claimed(context) as claim:
            if event.get("channel_type") != "im" or _ignored(event, context.bot_user_id):
                await _done(claim)
                return
            thread_ts = event.get("thread_ts")
            await self._answer(event, client, context, str(thread_ts) if thread_ts else None, claim)

    async def _installed(self, args: AsyncSuccessArgs) -> BoltResponse:
        installation = args.installation
        log.info(
            "slack: installed in team %s (%s)%s",
            installation.team_id,
            installation.team_name or "?",
            ", rotating token" if installation.bot_refresh_token else "",
        )
        return await args.default.success(args)

    async def _install_failed(self, args: AsyncFailureArgs) -> BoltResponse:
        """A page saying in one sentence why the installation failed (nothing is stored)."""
        reason = args.reason
        text = INSTALL_FAILURES.get(reason, f"The installation failed ({reason}).")
        log.warning(
            "slack: an installation failed (%s)%s",
            reason,
            f": {args.error}" if args.error is not None else "",
        )
        install = html.escape(args.settings.install_path)
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>dockwise: "
            "installation failed</title></head><body><h1>dockwise was not installed</h1>"
            f"<p>{html.escape(text)}</p><p><a href='{install}'>Install again</a></p>"
            "</body></html>"
        )
        status = args.suggested_status_code
        return BoltResponse(
            status=status if 400 <= status < 600 else 400,
            body=page,
            headers={
                "Content-Type": "text/html; charset=utf-8",
                "Set-Cookie": [args.settings.state_utils.build_set_cookie_for_deletion()],
            },
        )

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error(
            "slack: unhandled error for %s: %s",
            body.get("type") or body.get("command"),
            type(error).__name__,
            exc_info=error,
        )

    # --- helpers ------------------------------------------------------------------------

    async def _answer(
        self,
        event: dict[str, Any],
        client: AsyncWebClient,
        context: AsyncBoltContext,
        thread_ts: str | None,
        claim: Claim | None = None,
    ) -> None:
        channel = str(event.get("channel") or "")
        message_key = f"{channel}:{event.get('ts')}"
        if not self.answered.add(message_key):
            await _done(claim)
            return  # the same message delivered as both app_mention and message.im
        text = slack_to_plain(str(event.get("text") or ""), context.bot_user_id)
        user = str(event.get("user") or "")
        asker = Asker("slack", user, channel, _team(event))
        private = event.get("channel_type") != "im"  # a DM is private already
        reference = self.engine.later_reference(text)
        if reference is not None:  # a job worker explains it and edits the placeholder
            place = Placeholder(
                channel=channel,
                thread_ts=thread_ts,
                private_to=user if private else None,
                team=context.team_id or asker.team,
                enterprise=context.enterprise_id,
            )
            delivered = await self._explain_later(client, place, reference, asker)
        else:
            delivered = await self._reply_with_progress(
                client,
                channel,
                thread_ts,
                user if private else None,
                lambda progress: self.engine.handle(text, asker=asker, progress=progress),
            )
        if delivered:
            await _done(claim)
        else:  # the claim is released too: a retry answers
            self.answered.discard(message_key)

    def _relay(
        self,
        show: Callable[[str], Awaitable[None]],
        *,
        shown: bool = False,
        max_updates: int | None = None,
        placeholder_text: str | None = None,
    ) -> ProgressRelay:
        return ProgressRelay(
            show,
            min_interval=self.progress_min_interval,
            heartbeat=self.progress_heartbeat,
            shown=shown,
            max_updates=max_updates,
            placeholder_text=placeholder_text,
            # one response_url edit: spend it on a long explanation's layers, not at 0 s
            first_after=self.progress_heartbeat if max_updates is not None else 0.0,
        )

    async def _reply_with_progress(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str | None,
        private_to: str | None,
        work: Callable[[ProgressCallback], Awaitable[Reply]],
        fallback: Callable[[Reply], Awaitable[bool]] | None = None,
    ) -> bool:
        """Run ``work``; if it reports progress, post a placeholder in the thread and edit
        it (``chat.update``), then replace it with the reply. An error reply goes to
        ``private_to`` alone (``chat.postEphemeral``) when set; the placeholder is removed.
        True when the reply reached Slack (at least its first message); when it did not,
        the placeholder is removed too and ``fallback`` (if any) gets the reply to send
        another way (a shortcut's response_url when the bot is not in the channel)."""
        placeholder: dict[str, str] = {}

        async def show(line: str) -> None:
            message = render_text(line)
            if "ts" not in placeholder:
                response = await client.chat_postMessage(
                    channel=channel, thread_ts=thread_ts, unfurl_links=False, **message
                )
                placeholder["ts"] = str(response["ts"])
            else:
                await client.chat_update(channel=channel, ts=placeholder["ts"], **message)

        relay = self._relay(show)
        reply = await self._guarded(work(relay))
        await relay.close()
        place = Placeholder(channel, thread_ts, private_to, ts=placeholder.get("ts"))
        return await self.finish_placeholder(client, place, reply, fallback)

    async def finish_placeholder(
        self,
        client: AsyncWebClient,
        place: Placeholder,
        reply: Reply,
        fallback: Callable[[Reply], Awaitable[bool]] | None = None,
    ) -> bool:
        """Replace the placeholder ``place.ts`` (if any) with ``reply``: its first message
        by ``chat.update``, the rest in the thread. An error reply removes the placeholder
        and goes to ``place.private_to`` alone (``chat.postEphemeral``) when set. True
        when the reply reached Slack (at least its first message); when it did not, the
        placeholder is removed too and ``fallback`` (if any) gets the reply to send
        another way (a shortcut's response_url when the bot is not in the channel)."""
        channel, thread_ts, ts = place.channel, place.thread_ts, place.ts
        messages = render_messages(reply)
        if reply.kind is ReplyKind.ERROR:
            if ts:
                await self._quietly(client.chat_delete(channel=channel, ts=ts))
            if place.private_to is not None:
                if await self._post_ephemeral(
                    client, channel, place.private_to, thread_ts, messages
                ):
                    return True
                return fallback is not None and await fallback(reply)
        elif ts:
            first, *rest = messages
            try:
                await client.chat_update(
                    channel=channel, ts=ts, text=first["text"], blocks=first["blocks"]
                )
                await self._post(client, channel, thread_ts, rest)
                return True
            except Exception as exc:
                log.error("slack: chat.update failed: %s", _describe(exc))
        if await self._post(client, channel, thread_ts, messages):
            return True
        if ts:
            await self._quietly(client.chat_delete(channel=channel, ts=ts))
        return fallback is not None and await fallback(reply)

    async def _explain_later(
        self, client: AsyncWebClient, place: Placeholder, reference: str, asker: Asker
    ) -> bool:
        """Post the placeholder ("Inspecting IMAGE …") and hand the explanation to the job
        queue with a delivery naming it (``Engine.explain_later``): the worker that ends
        the job edits it with the progress and replaces it with the reply
        (``SlackPlatform.deliver``); this process does not wait. A refusal (rate limit,
        busy queue) replaces the placeholder here. True when the ask was handed over or
        answered, False when nothing reached Slack (a retry answers)."""
        try:
            posted = await client.chat_postMessage(
                channel=place.channel,
                thread_ts=place.thread_ts,
                unfurl_links=False,
                **render_text(ExplainProgress(reference).text()),
            )
        except Exception as exc:
            log.error("slack: chat.postMessage failed: %s", _describe(exc))
            await self._post_plain_error(client, place.channel, place.thread_ts)
            return False
        place = replace(place, ts=str(posted["ts"]))
        try:
            refused = await self.engine.explain_later(
                reference, asker=asker, delivery_target=place.target()
            )
        except Exception as exc:
            log.error("slack: engine failed: %s", type(exc).__name__, exc_info=exc)
            refused = Reply(
                kind=ReplyKind.ERROR, title="Sorry, I couldn't answer", body=FRIENDLY_ERROR
            )
        if refused is None:
            return True
        return await self.finish_placeholder(client, place, refused)

    async def _post_ephemeral(
        self,
        client: AsyncWebClient,
        channel: str,
        user: str,
        thread_ts: str | None,
        messages: list[dict[str, Any]],
    ) -> bool:
        """Post ``messages`` privately; True when at least the first one was posted."""
        for n, message in enumerate(messages):
            try:
                await client.chat_postEphemeral(
                    channel=channel,
                    user=user,
                    thread_ts=thread_ts,
                    text=message["text"],
                    blocks=message["blocks"],
                )
            except Exception as exc:
                log.error("slack: chat.postEphemeral failed: %s", _describe(exc))
                return n > 0
        return True

    async def _quietly(self, call: Awaitable[Any]) -> None:
        try:
            await call
        except Exception as exc:
            log.warning("slack: clean-up call failed: %s", _describe(exc))

    # --- buttons, shortcut, home, unfurls -------------------------------------------------

    async def _on_action(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
        respond: Any,
    ) -> None:
        await ack()
        action_id = str(action.get("action_id") or "")
        value = str(action.get("value") or "")
        user = str((body.get("user") or {}).get("id") or "")
        container = body.get("container") or {}
        channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
        message = body.get("message") or {}
        thread_ts = message.get("thread_ts") or message.get("ts") or container.get("message_ts")
        asker = Asker("slack", user, channel or None, _team(body))
        reply = await self._guarded(self.engine.action(action_id, value, asker=asker))
        log.info("slack: button %s pressed", action_id[:80])
        if reply.kind is ReplyKind.ERROR or action_id.startswith("dockwise_feedback"):
            await self._respond_private(respond, reply)
            return
        if container.get("is_ephemeral") or not channel or not thread_ts:
            for rendered in render_messages(reply):
                await self._quietly(
                    respond(response_type="ephemeral", replace_original=False, **rendered)
                )
            return
        for rendered in render_messages(reply):
            try:
                await client.chat_postMessage(
                    channel=channel,
                    thread_ts=str(thread_ts),
                    unfurl_links=False,
                    unfurl_media=False,
                    **rendered,
                )
            except SlackApiError as exc:  # not in the channel (a command's reply): respond
                log.info("slack: posting the click's reply failed: %s", _describe(exc))
                await self._quietly(
                    respond(response_type="in_channel", replace_original=False, **rendered)
                )

    async def _respond_private(self, respond: Any, reply: Reply) -> None:
        for rendered in render_messages(reply):
            await self._quietly(
                respond(response_type="ephemeral", replace_original=False, **rendered)
            )

    async def _on_shortcut(
        self,
        ack: AsyncAck,
        shortcut: dict[str, Any],
        client: AsyncWebClient,
        respond: Any,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        message = shortcut.get("message") or {}
        channel = str((shortcut.get("channel") or {}).get("id") or "")
        user = str((shortcut.get("user") or {}).get("id") or "")
        raw = str(message.get("text") or "")
        # A link written with a label (<https://hub.docker.com/_/nginx|our proxy>) shows
        # only the label as text: its address is searched too.
        targets = [m[1].partition("|")[0] for m in _CONTROL.finditer(raw) if "|" in m[1]]
        reference = find_image_reference("\n".join([slack_to_plain(raw), *targets]))
        if reference is None:
            await self._respond_private(
                respond,
                Reply(kind=ReplyKind.ERROR, title="No image there", body=NO_IMAGE_IN_MESSAGE),
            )
            return
        thread_ts = str(message.get("thread_ts") or message.get("ts") or "") or None
        asker = Asker("slack", user, channel, _team(shortcut))
        if self.engine.later_reference(f"explain {reference}") is not None:
            place = Placeholder(
                channel,
                thread_ts,
                user,
                team=context.team_id or asker.team,
                enterprise=context.enterprise_id,
            )
            await self._explain_later(client, place, reference, asker)
            return
        await self._reply_with_progress(
            client,
            channel,
            thread_ts,
            user,
            lambda progress: self.engine.explain(reference, asker=asker, progress=progress),
            fallback=lambda reply: self._respond_reply(respond, reply),
        )

    async def _respond_reply(self, respond: Any, reply: Reply) -> bool:
        """``reply`` through the request's response_url (works where the bot is not a
        channel member): in the channel, or to the asker alone for an error."""
        visibility = "ephemeral" if reply.kind is ReplyKind.ERROR else "in_channel"
        for n, rendered in enumerate(render_messages(reply)):
            try:
                await respond(response_type=visibility, replace_original=False, **rendered)
            except Exception as exc:
                log.error("slack: response_url post failed: %s", _describe(exc))
                return n > 0
        return True

    async def _on_unknown_shortcut(self, ack: AsyncAck, respond: Any) -> None:
        await ack()
        unknown = Reply(kind=ReplyKind.ERROR, title="Unknown shortcut", body=UNKNOWN_SHORTCUT)
        await self._respond_private(respond, unknown)

    async def _on_home_opened(
        self, event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        async with self._claimed(context) as claim:
            if event.get("tab", "home") == "home":
                try:
                    await client.views_publish(
                        user_id=str(event.get("user") or ""), view=home_view()
                    )
                except Exception as exc:
                    log.error("slack: views.publish failed: %s", _describe(exc))
                    return  # released: a retry publishes
            await _done(claim)

    async def _on_link_shared(
        self, event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        async with self._claimed(context) as claim:
            await self._unfurl(event, client)
            await _done(claim)

    async def _unfurl(self, event: dict[str, Any], client: AsyncWebClient) -> None:
        unfurls: dict[str, Any] = {}
        links = event.get("links")
        for link in (links if isinstance(links, list) else [])[:5]:
            if not isinstance(link, dict):
                continue
            url = str(link.get("url") or "")
            if str(link.get("domain") or "") not in IMAGE_LINK_HOSTS:
                continue
            reference = image_from_url(url)
            if reference is None:
                continue
            summary = await self._guarded(self.engine.summarize(reference))
            if summary.kind is ReplyKind.ERROR:
                log.info("slack: no unfurl for a link (%s)", summary.body[:80])
                continue
            unfurls[url] = {"blocks": [unfurl_block(summary)]}
        if not unfurls:
            return
        target: dict[str, Any] = {"unfurls": unfurls}
        if event.get("unfurl_id") and event.get("source"):
            target.update(unfurl_id=event["unfurl_id"], source=event["source"])
        else:
            target.update(channel=event.get("channel"), ts=event.get("message_ts"))
        try:
            await client.chat_unfurl(**target)
        except Exception as exc:
            log.error("slack: chat.unfurl failed: %s", _describe(exc))

    async def _guarded(self, call: Awaitable[Reply]) -> Reply:
        try:
            return await call
        except Exception as exc:
            log.error("slack: engine failed: %s", type(exc).__name__, exc_info=exc)
            return Reply(
                kind=ReplyKind.ERROR, title="Sorry, I couldn't answer", body=FRIENDLY_ERROR
            )

    async def _post(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str | None,
        messages: list[dict[str, Any]],
    ) -> bool:
        """Post ``messages`` in the thread; True when at least the first one was posted
        (on a failure a plain one-line apology is tried in the thread)."""
        for n, message in enumerate(messages):
            try:
                await client.chat_postMessage(
                    channel=channel,
                    thread_ts=thread_ts,
                    text=message["text"],
                    blocks=message["blocks"],
                    unfurl_links=False,
                    unfurl_media=False,
                )
            except Exception as exc:
                log.error("slack: chat.postMessage failed: %s", _describe(exc))
                await self._post_plain_error(client, channel, thread_ts)
                return n > 0
        return True

    async def _post_plain_error(
        self, client: AsyncWebClient, channel: str, thread_ts: str | None
    ) -> None:
        try:
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=FRIENDLY_ERROR)
        except Exception as exc:
            log.error("slack: could not report the failure either: %s", _describe(exc))

    async def _post_command_reply(
        self,
        reply: Reply,
        command: dict[str, Any],
        client: AsyncWebClient,
        *,
        uses_left: int = 5,
    ) -> None:
        """Replace the command's placeholder with the reply (the rest follows in the
        channel); an error removes the placeholder and is shown to the asker alone.
        ``uses_left``: what remains of the response_url's five uses; messages beyond it
        are posted with chat.postMessage (which needs the bot in the channel)."""
        messages = render_messages(reply)
        response_url = command.get("response_url")
        if not response_url:
            await self._post(client, str(command.get("channel_id") or ""), None, messages)
            return
        webhook = AsyncWebhookClient(url=str(response_url))
        error = reply.kind is ReplyKind.ERROR
        sends: list[dict[str, Any]] = []
        if error:
            sends.append({"delete_original": True})
            sends += [
                {"response_type": "ephemeral", "replace_original": False, **m} for m in messages
            ]
        else:
            for index, message in enumerate(messages):
                sends.append(
                    {"response_type": "in_channel", "replace_original": index == 0, **message}
                )
        overflow = [m for m in sends[max(0, uses_left) :] if "blocks" in m]
        for payload in sends[: max(0, uses_left)]:
            try:
                response = await webhook.send_dict(payload)
            except Exception as exc:
                log.error("slack: response_url post failed: %s", _describe(exc))
                return
            if response.status_code != 200:
                log.error("slack: response_url refused the reply (%s)", response.status_code)
                return
        if overflow:
            rest = [{"text": m["text"], "blocks": m["blocks"]} for m in overflow]
            if error:
                user = str(command.get("user_id") or "")
                channel = str(command.get("channel_id") or "")
                await self._post_ephemeral(client, channel, user, None, rest)
            else:
                await self._post(client, str(command.get("channel_id") or ""), None, rest)

    # --- transports ---------------------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler for ``POST /slack/events`` (events, slash commands,
        interactivity). A body bolt cannot read (not JSON, a payload of the wrong shape)
        gets 400 and one log line, never a 500 with a traceback."""
        try:
            bolt_request = await to_bolt_request(request)
        except (ValueError, LookupError, TypeError, AttributeError) as exc:  # not JSON, a list…
            return _malformed(type(exc).__name__)
        body = bolt_request.body
        if not isinstance(body, dict):
            return _malformed("body is not an object")
        if body.get("type") == "event_callback" and not isinstance(body.get("event"), dict):
            return _malformed("event is not an object")  # bolt's own middleware would 500
        trigger = _trigger_id(bolt_request)
        self.gates.open(trigger)
        try:
            try:
                bolt_response = await self.app.async_dispatch(bolt_request)
            except (LookupError, TypeError, AttributeError, ValueError) as exc:
                return _malformed(type(exc).__name__)
            response = await to_aiohttp_response(bolt_response)
            await response.prepare(request)
            await response.write_eof()
            return response
        finally:
            self.gates.release(trigger)

    async def handle_oauth(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler for ``GET /slack/install`` (a redirect to Slack's consent
        page, ``?team=T…`` preselects a workspace) and ``GET /slack/oauth_redirect`` (the
        code exchanged for the workspace's token, then Slack's success or a failure page)."""
        flow = self.app.oauth_flow
        if flow is None:
            raise web.HTTPNotFound()
        bolt_request = await to_bolt_request(request)
        try:
            if request.path == flow.install_path:
                bolt_response = await flow.handle_installation(bolt_request)
            else:
                bolt_response = await flow.handle_callback(bolt_request)
        except _database_errors() as exc:  # issuing a state needs the database
            log.error("slack: install page failed: %s", _describe(exc))
            return web.Response(
                status=503,
                text="dockwise cannot reach its database right now: try again in a minute.",
            )
        return await to_aiohttp_response(bolt_response)

    async def check_credentials(self) -> None:
        """Ask Slack who we are (auth.test): a wrong token or URL fails here, in one line.
        OAuth mode: create the installation tables (an unusable DOCKWISE_DATABASE_URL fails
        here) and check that the Web API answers (api.test)."""
        if self.stores is not None:
            await self.stores.create_tables()
            await self._call(self.app.client.api_test(), "Slack's api.test failed ({code})")
            return
        await self._call(
            self.app.client.auth_test(),
            "Slack refused SLACK_BOT_TOKEN ({code}): check the bot token (xoxb-…)",
        )

    async def bot_token(self, team_id: str | None, enterprise_id: str | None = None) -> str | None:
        """The bot token to call the Web API for a workspace (``team_id``, or the org's
        ``enterprise_id`` for an org-wide install): the single ``SLACK_BOT_TOKEN``, or in
        OAuth mode the installation's token, refreshed first (and saved) when token
        rotation is on and it expires within DOCKWISE_SLACK_TOKEN_ROTATION_MINUTES.
        None when the workspace has no installation (never installed, uninstalled,
        revoked) or its refresh was refused. Raises Unreachable when the database fails."""
        if self.stores is None:
            return _secret(self.settings.slack_bot_token)
        store = self.stores.installations
        try:
            bot = await store.async_find_bot(enterprise_id=enterprise_id, team_id=team_id)
        except _database_errors() as exc:
            raise Unreachable(f"Cannot read Slack installations ({type(exc).__name__})") from None
        if bot is None:
            return None
        if bot.bot_refresh_token and self._rotator is not None:
            try:
                refreshed = await self._rotator.perform_bot_token_rotation(
                    bot=bot, minutes_before_expiration=self.settings.slack_token_rotation_minutes
                )
            except SlackTokenRotationError as exc:
                log.error("slack: token refresh for team %s refused: %s", team_id, _describe(exc))
                return None
            if refreshed is not None:
                try:
                    await store.async_save_bot(refreshed)
                except BoltError as exc:  # the new token works; the next call refreshes again
                    log.error("slack: keeping the refreshed token failed: %s", exc)
                bot = refreshed
        return bot.bot_token

    async def aclose(self) -> None:
        """Release the installation database's connections (OAuth mode)."""
        if self.stores is not None:
            await self.stores.aclose()

    async def open_socket_url(self, app_token: str) -> str:
        """apps.connections.open: the websocket URL for Socket Mode (checks the app token)."""
        response = await self._call(
            self.app.client.apps_connections_open(app_token=app_token),
            "Slack refused SLACK_APP_TOKEN ({code}): it must be an app-level token (xapp-…) "
            "with the connections:write scope",
        )
        return str(response["url"])

    async def _call(self, request: Awaitable[Any], refused: str) -> Any:
        """One Web API call at start-up: refusals and network failures become one line."""
        try:
            return await request
        except SlackApiError as exc:
            raise Unauthorized(refused.format(code=_error_code(exc) or "refused")) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unreachable(
                f"Cannot reach the Slack API at {self.app.client.base_url} ({type(exc).__name__})"
            ) from None

    def socket_mode_handler(self) -> AsyncSocketModeHandler:
        token = _secret(self.settings.slack_app_token)
        if not token:
            raise InvalidInput("SLACK_APP_TOKEN is not set: Socket Mode needs an app-level token")
        return _GatedSocketModeHandler(self, token)


class _GatedSocketModeHandler(AsyncSocketModeHandler):
    """bolt's Socket Mode handler, releasing the ack gate once the ack envelope is sent."""

    def __init__(self, adapter: SlackAdapter, app_token: str) -> None:
        super().__init__(adapter.app, app_token, web_client=adapter.app.client)
        self.adapter = adapter

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        trigger = req.payload.get("trigger_id") if req.type == "slash_commands" else None
        self.adapter.gates.open(trigger)
        try:
            await super().handle(client, req)
        finally:
            self.adapter.gates.release(trigger)


async def _done(claim: Claim | None) -> None:
    if claim is not None:
        await claim.done()


def _team(body: dict[str, Any]) -> str | None:
    team = body.get("team_id") or body.get("team")
    if isinstance(team, dict):
        team = team.get("id")
    return str(team) if team else None


def home_view() -> dict[str, Any]:
    """The App Home tab: what dockwise does, examples, commands (``views.publish``)."""
    examples = "\n".join(f"• `{escape(e)}`" for e in HOME_EXAMPLES)
    commands = "\n".join(f"• {c}" for c in HOME_COMMANDS)
    return {
        "type": "home",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "dockwise", "emoji": True}},
            {"type": "section", "text": {"type": "mrkdwn", "text": HOME_INTRO}},
            {"type": "divider"},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Try*\n{examples}"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Commands*\n{commands}"}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": "Answers come with buttons: the full article, follow-up "
                        "questions and 👍 / 👎 (anonymous counts help improve the answers).",
                    }
                ],
            },
        ],
    }


def unfurl_block(summary: Reply) -> dict[str, Any]:
    """One section: the image in bold and its one-line summary (config-level facts)."""
    text = f"*{escape(summary.title)}*: {escape(summary.body)}"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _malformed(reason: str) -> web.Response:
    log.warning("slack: refused a request bolt could not read (%s)", reason)
    return web.json_response({"error": "malformed request"}, status=400)


def _first(req: AsyncBoltRequest, name: str) -> str:
    values = req.headers.get(name) or [""]
    return values[0]


def _trigger_id(req: AsyncBoltRequest) -> str | None:
    if not isinstance(req.raw_body, str) or "command=" not in req.raw_body:
        return None
    values = parse_qs(req.raw_body).get("trigger_id")
    return values[0] if values else None


def _ignored(event: dict[str, Any], bot_user_id: str | None) -> bool:
    """Own messages, other bots' messages and subtypes (edits, joins, ...) get no answer."""
    if event.get("subtype") or event.get("bot_id") or event.get("bot_profile"):
        return True
    return bot_user_id is not None and event.get("user") == bot_user_id


def _error_code(exc: Exception) -> str | None:
    """Slack's error code (``invalid_auth``, ``channel_not_found``, ...) if there is one."""
    response = getattr(exc, "response", None)
    try:
        error = response.get("error") if response is not None else None
    except Exception:
        return None
    return str(error) if error else None


def _describe(exc: Exception) -> str:
    """A log-safe description: the exception type and Slack's error code, never tokens."""
    error = _error_code(exc)
    return f"{type(exc).__name__}" + (f" ({error})" if error else "")


# --- public API ------------------------------------------------------------------------


def build_slack_app(engine: Engine, settings: SlackSettings) -> AsyncApp:
    """The configured bolt app (listeners and middleware registered)."""
    return SlackAdapter(engine, settings).app


class SlackPlatform(ChatAdapter):
    """Slack in the adapter contract (``bot.chat``): Socket Mode or HTTP mode."""

    name = "slack"
    settings_model = SlackSettings
    how_to_configure = (
        "for Slack set SLACK_BOT_TOKEN (or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET for "
        "installs by OAuth) plus SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET "
        "(HTTP mode)"
    )

    def __init__(
        self, engine: Engine, settings: SlackSettings, *, ledger: Ledger | None = None
    ) -> None:
        super().__init__(engine, settings)
        self.adapter = SlackAdapter(engine, settings, ledger=ledger)

    @classmethod
    def configured(cls, settings: Any) -> bool:
        return isinstance(settings, SlackSettings) and settings.slack_enabled

    @classmethod
    def register_cli(cls, app: typer.Typer) -> None:
        app.command("slack-install-url")(slack_install_url)

    def render(self, reply: Reply) -> list[dict[str, Any]]:
        return render_messages(reply)

    #: The slash command's response_url takes 5 posts: one progress line, 4 for the reply.
    max_progress_updates = RESPONSE_URL_PROGRESS_UPDATES

    def progress_updates(self, target: dict[str, Any]) -> int | None:
        """A command's response_url: ``RESPONSE_URL_PROGRESS_UPDATES``; a placeholder
        message: ``PLACEHOLDER_PROGRESS_UPDATES`` (chat.update is rate limited per
        workspace)."""
        if target.get("response_url"):
            return RESPONSE_URL_PROGRESS_UPDATES
        return PLACEHOLDER_PROGRESS_UPDATES

    async def _client_for(self, place: Placeholder) -> AsyncWebClient:
        """A Web API client with the bot token of ``place``'s workspace (the single token,
        or the installation's in OAuth mode), waiting out rate limits (HTTP 429). Raises
        Unauthorized when the workspace has no installation (uninstalled, revoked)."""
        token = await self.adapter.bot_token(place.team, place.enterprise)
        if not token:
            raise Unauthorized(f"dockwise is not installed in Slack team {place.team}")
        base_url = _api_base_url(self.settings)
        handlers = [
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=DELIVERY_RATE_LIMIT_RETRIES),
        ]
        if base_url:
            return AsyncWebClient(token=token, base_url=base_url, retry_handlers=handlers)
        return AsyncWebClient(token=token, retry_handlers=handlers)

    async def deliver(self, target: dict[str, Any], reply: Reply) -> None:
        """Post a finished explanation to ``target``, from any process (a job worker):

        - a mention's or DM's placeholder (``Placeholder.target()``, what ``_answer``
          queued): replaced by the reply's first message (``chat.update``), the rest in
          the thread, an error shown to the asker alone (``chat.postEphemeral``; in a DM,
          in the thread); the bot token is the workspace's (``bot_token``);
        - a ``/image-explain`` command (``{"response_url", "channel_id", "user_id"}``,
          what ``_on_command`` queued): as the command would, the placeholder replaced,
          an error shown to the asker alone. The response_url needs no token; messages
          beyond its uses go by chat.postMessage (bot token).

        Raises Unauthorized when the workspace is no longer installed, Unreachable when
        Slack did not take the reply, ValueError for a target of neither kind."""
        if not target.get("response_url"):
            place = Placeholder.of(target)
            client = await self._client_for(place)
            if not await self.adapter.finish_placeholder(client, place, reply):
                raise Unreachable("Slack did not take the reply")
            return
        command = {
            "response_url": target.get("response_url"),
            "channel_id": target.get("channel_id"),
            "user_id": target.get("user_id"),
        }
        await self.adapter._post_command_reply(
            reply,
            command,
            self.adapter.app.client,
            uses_left=RESPONSE_URL_USES - RESPONSE_URL_PROGRESS_UPDATES,
        )

    async def show_progress(self, target: dict[str, Any], line: str) -> None:
        """Replace the placeholder with ``line``: a command's through its response_url,
        a mention's by ``chat.update``."""
        response_url = target.get("response_url")
        if response_url:
            webhook = AsyncWebhookClient(url=str(response_url))
            await webhook.send(replace_original=True, **render_text(line))
            return
        place = Placeholder.of(target)
        client = await self._client_for(place)
        await client.chat_update(channel=place.channel, ts=str(place.ts), **render_text(line))

    @property
    def socket_mode(self) -> bool:
        """Whether this process holds a Socket Mode connection: an app token is set and the
        role takes long-lived connections (``all``, ``gateway``); ``web`` serves HTTP only."""
        return self.settings.slack_app_token is not None and self.role in ("all", "gateway")

    @property
    def _idle(self) -> bool:
        """Nothing of Slack runs in this role (a worker; a gateway without an app token)."""
        return self.role == "worker" or (self.role == "gateway" and not self.socket_mode)

    async def setup(self, web_app: web.Application | None) -> None:
        if self._idle:
            return
        if not self.socket_mode and self.settings.slack_signing_secret is None:
            raise InvalidInput(
                "SLACK_SIGNING_SECRET is not set: HTTP mode needs it (or set SLACK_APP_TOKEN "
                "for Socket Mode)"
            )
        await self.adapter.check_credentials()
        if not self.socket_mode and web_app is not None:
            web_app.router.add_post(EVENTS_PATH, self.adapter.handle_http)
        if self.settings.oauth_enabled:
            install_path: str = _oauth().INSTALL_PATH
            if web_app is None:
                log.warning("slack: OAuth mode without an HTTP server: no %s", install_path)
            else:
                web_app.router.add_get(install_path, self.adapter.handle_oauth)
                web_app.router.add_get(_oauth().REDIRECT_PATH, self.adapter.handle_oauth)
                log.info("slack: OAuth mode, install at %s", install_path)

    async def bot_token(self, team_id: str | None, enterprise_id: str | None = None) -> str | None:
        """The workspace's bot token (``SlackAdapter.bot_token``): for posting from a job
        worker outside bolt's request context."""
        return await self.adapter.bot_token(team_id, enterprise_id)

    async def stop(self) -> None:
        await super().stop()
        await self.adapter.aclose()

    async def run(self) -> None:
        if not self.socket_mode:  # the routes added in setup() do the work (or none: idle)
            await asyncio.Event().wait()
            return
        # The SDK retries a refused connection forever; ask once first for a clear error.
        url = await self.adapter.open_socket_url(_secret(self.settings.slack_app_token) or "")
        handler = self.adapter.socket_mode_handler()
        handler.client.wss_uri = url
        try:
            await handler.connect_async()  # type: ignore[no-untyped-call]
            log.info("slack: connected in Socket Mode")
            await asyncio.Event().wait()
        finally:
            await handler.close_async()  # type: ignore[no-untyped-call]


ADAPTER = SlackPlatform


def install_url(settings: SlackSettings, base_url: str | None = None) -> str:
    """The public ``https://HOST/slack/install`` link that installs the bot in a workspace
    (OAuth mode): ``base_url`` + ``/slack/install``, or derived from SLACK_REDIRECT_URI.
    Raises InvalidInput in single-token mode or when neither is known."""
    if not settings.oauth_enabled:
        raise InvalidInput(
            "installs by OAuth need SLACK_CLIENT_ID and SLACK_CLIENT_SECRET and no "
            "SLACK_BOT_TOKEN (with a bot token dockwise serves that one workspace)"
        )
    install_path: str = _oauth().INSTALL_PATH
    redirect_path: str = _oauth().REDIRECT_PATH
    base = base_url
    redirect = settings.slack_redirect_uri
    if base is None and redirect and redirect.rstrip("/").endswith(redirect_path):
        base = redirect.rstrip("/")[: -len(redirect_path)]
    if not base:
        raise InvalidInput("set SLACK_REDIRECT_URI or pass --base-url https://YOUR-HOST")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        where = "--base-url" if base_url is not None else "SLACK_REDIRECT_URI"
        raise InvalidInput(f"{where} must be a link like https://YOUR-HOST (got {base[:60]!r})")
    return base.rstrip("/") + install_path


def slack_install_url(
    base_url: Annotated[
        str | None,
        typer.Option(help="Where dockwise is reachable, e.g. https://dockwise.example.com."),
    ] = None,
) -> None:
    """Print the link that installs the Slack bot in a workspace (installs by OAuth)."""
    from bot.cli import fail

    try:
        typer.echo(install_url(SlackSettings(), base_url))
    except InvalidInput as exc:
        fail(str(exc), code=2)


async def run_slack(
    engine: Engine,
    settings: SlackSettings,
    *,
    web_app: web.Application | None = None,
    host: str | None = None,
    port: int | None = None,
    ledger: Ledger | None = None,
) -> SlackAdapter:
    """Run the Slack adapter.

    - Socket Mode (``SLACK_APP_TOKEN`` set): connects and runs until cancelled.
    - HTTP mode with ``web_app``: adds ``POST /slack/events`` to that aiohttp app and
      returns at once (the caller runs the app, e.g. ``dockwise serve``).
    - HTTP mode without ``web_app``: serves ``POST /slack/events`` on ``host:port``
      (default ``DOCKWISE_HOST:DOCKWISE_PORT``) until cancelled.

    Returns the adapter (only reached in HTTP mode with ``web_app``).
    """
    platform = SlackPlatform(engine, settings, ledger=ledger)
    if platform.socket_mode:
        await platform.setup(None)
        await platform.run()
        return platform.adapter  # pragma: no cover - run() only ends by cancellation
    if web_app is not None:
        await platform.setup(web_app)
        return platform.adapter
    own = web.Application()
    await platform.setup(own)
    runner = web.AppRunner(own)
    await runner.setup()
    shared = get_settings()
    host = host if host is not None else shared.host
    port = port if port is not None else shared.port
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("slack: HTTP mode on %s:%s%s", host, port, EVENTS_PATH)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
    return platform.adapter  # pragma: no cover - the wait above only ends by cancellation
